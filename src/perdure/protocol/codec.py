"""Framing of protocol messages: an 8-byte big-endian header, then the protobuf payload.

Header layout (Restate service protocol): message type (u16), flags (u16; the top bit is
REQUESTED_ACK), payload length (u32).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

from google.protobuf.message import DecodeError

from perdure.protocol import messages as pm

HEADER = struct.Struct(">HHI")
REQUESTED_ACK = 0x8000
MAX_MESSAGE_SIZE = 32 * 1024 * 1024


class ProtocolError(Exception):
    """A frame or message that does not follow the service protocol (code 571)."""


def encode_frame(message: Any, *, flags: int = 0) -> bytes:
    """One frame; `RawMessage`s (custom commands) go out with their own type and payload."""
    payload: bytes = message.SerializeToString()
    return HEADER.pack(message_type(message), flags, len(payload)) + payload


def encode_raw(type_code: int, payload: bytes, *, flags: int = 0) -> bytes:
    return HEADER.pack(type_code, flags, len(payload)) + payload


def decode_payload(type_code: int, payload: bytes) -> Any:
    """Decode one payload; unknown (custom) types come back as `RawMessage`."""
    cls = pm.BY_TYPE.get(type_code)
    if cls is None:
        if type_code >= pm.CUSTOM_MIN:
            return RawMessage(type_code, payload)
        raise ProtocolError(f"unknown message type 0x{type_code:04x}")
    try:
        return cls.FromString(payload)
    except DecodeError as e:  # every caller handles ProtocolError: a bad frame is a 571, not a crash
        raise ProtocolError(f"cannot decode a {pm.NAME_OF.get(type_code, cls.__name__)}: {e}") from None


class RawMessage:
    """An SDK-defined custom command (0xFC00+): stored and replayed verbatim."""

    __slots__ = ("payload", "type_code")

    def __init__(self, type_code: int, payload: bytes) -> None:
        self.type_code = type_code
        self.payload = payload

    def SerializeToString(self) -> bytes:  # noqa: N802 - mirrors the protobuf method
        return self.payload

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RawMessage) and (other.type_code, other.payload) == (
            self.type_code,
            self.payload,
        )

    def __hash__(self) -> int:
        return hash((self.type_code, self.payload))


_TYPE_OF = pm.TYPE_OF


def message_type(message: Any) -> int:
    code = _TYPE_OF.get(type(message))
    if code is None:
        if isinstance(message, RawMessage):
            return message.type_code
        raise ProtocolError(f"{type(message).__name__} is not a protocol message")
    return code


class FrameDecoder:
    """Incremental decoder: feed bytes as they arrive, iterate complete (message, flags)."""

    def __init__(self, max_message_size: int = MAX_MESSAGE_SIZE) -> None:
        self._buffer = bytearray()
        self._max = max_message_size

    def feed(self, data: bytes) -> Iterator[tuple[Any, int]]:
        self._buffer += data
        while len(self._buffer) >= HEADER.size:
            type_code, flags, length = HEADER.unpack_from(self._buffer)
            if length > self._max:
                raise ProtocolError(f"message of {length} bytes exceeds the {self._max}-byte limit")
            end = HEADER.size + length
            if len(self._buffer) < end:
                return
            payload = bytes(self._buffer[HEADER.size : end])
            del self._buffer[:end]
            yield decode_payload(type_code, payload), flags

    @property
    def pending(self) -> int:
        """Bytes received but not yet part of a complete frame."""
        return len(self._buffer)


def decode_frames(data: bytes) -> list[tuple[Any, int]]:
    """Decode a complete byte string of frames; trailing partial data is an error."""
    decoder = FrameDecoder()
    frames = list(decoder.feed(data))
    if decoder.pending:
        raise ProtocolError(f"{decoder.pending} trailing bytes after the last complete frame")
    return frames
