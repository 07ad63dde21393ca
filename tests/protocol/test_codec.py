"""Framing and message round trips: every message type survives encode → decode unchanged."""

from __future__ import annotations

import struct

import pytest

from perdure.protocol import messages as pm
from perdure.protocol.codec import (
    HEADER,
    REQUESTED_ACK,
    FrameDecoder,
    ProtocolError,
    RawMessage,
    decode_frames,
    encode_frame,
    encode_raw,
)

SAMPLES = [
    pm.StartMessage(
        id=b"\x01" * 24,
        debug_id="inv_1x",
        known_entries=3,
        key="alice",
        partial_state=True,
        state_map=[pm.StateEntry(key=b"k", value=b"v")],
        retry_count_since_last_stored_entry=2,
        duration_since_last_stored_entry=1500,
        random_seed=42,
    ),
    pm.SuspensionMessage(waiting_completions=[1, 2], waiting_signals=[1]),
    pm.SuspensionMessage(
        awaiting_on=pm.Future(waiting_completions=[3], nested_futures=[pm.Future(waiting_signals=[17])])
    ),
    pm.ErrorMessage(code=570, message="mismatch", related_command_index=4, next_retry_delay=100),
    pm.EndMessage(),
    pm.ProposeRunCompletionMessage(result_completion_id=1, value=b'"x"'),
    pm.ProposeRunCompletionMessage(result_completion_id=1, failure=pm.Failure(code=500, message="boom")),
    pm.InputCommand(headers=[pm.Header(key="a", value="b")], value=pm.Value(content=b"{}")),
    pm.OutputCommand(value=pm.Value(content=b"1")),
    pm.OutputCommand(failure=pm.Failure(code=404, message="nope")),
    pm.GetEagerStateCommand(key=b"k", void=pm.Void()),
    pm.SetStateCommand(key=b"k", value=pm.Value(content=b"1")),
    pm.SleepCommand(wake_up_time=1_700_000_000_000, result_completion_id=2, name="nap"),
    pm.CallCommand(
        service_name="s",
        handler_name="h",
        parameter=b"p",
        key="k",
        idempotency_key="i",
        invocation_id_notification_idx=3,
        result_completion_id=4,
    ),
    pm.OneWayCallCommand(service_name="s", handler_name="h", invoke_time=5, invocation_id_notification_idx=5),
    pm.RunCommand(result_completion_id=6, name="step"),
    pm.RunCompletion(completion_id=6, value=pm.Value(content=b"1")),
    pm.SleepCompletion(completion_id=2, void=pm.Void()),
    pm.CallInvocationIdCompletion(completion_id=3, invocation_id="inv_1abc"),
    pm.CallCompletion(completion_id=4, failure=pm.Failure(code=409, message="cancelled")),
    pm.SignalNotification(idx=17, value=pm.Value(content=b"ok")),
]


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: type(m).__name__)
def test_round_trip(message: object) -> None:
    [(decoded, flags)] = decode_frames(encode_frame(message))
    assert decoded == message and flags == 0


def test_header_layout_is_type_flags_length_big_endian() -> None:
    frame = encode_frame(pm.RunCommand(result_completion_id=1), flags=REQUESTED_ACK)
    assert frame[:8] == struct.pack(">HHI", 0x0411, 0x8000, len(frame) - 8)


def test_incremental_decoding_across_arbitrary_chunk_boundaries() -> None:
    stream = b"".join(encode_frame(m) for m in SAMPLES)
    decoder = FrameDecoder()
    out = []
    for i in range(0, len(stream), 7):
        out.extend(m for m, _ in decoder.feed(stream[i : i + 7]))
    assert out == SAMPLES and decoder.pending == 0


def test_custom_commands_are_kept_verbatim_and_unknown_types_rejected() -> None:
    [(raw, _)] = decode_frames(encode_raw(0xFC01, b"\x01\x02"))
    assert raw == RawMessage(0xFC01, b"\x01\x02")
    assert encode_frame(raw) == encode_raw(0xFC01, b"\x01\x02")  # replayed verbatim
    with pytest.raises(ProtocolError, match="unknown message type 0x0999"):
        decode_frames(encode_raw(0x0999, b""))


def test_truncated_and_oversized_frames_are_errors() -> None:
    with pytest.raises(ProtocolError, match="trailing bytes"):
        decode_frames(encode_frame(pm.EndMessage()) + b"\x00\x01")
    with pytest.raises(ProtocolError, match="exceeds"):
        list(FrameDecoder(max_message_size=10).feed(HEADER.pack(0x0400, 0, 11)))
