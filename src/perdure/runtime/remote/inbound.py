"""Reading what a deployment sends: frames decoded as they arrive, up to the attempt's end."""

from __future__ import annotations

from typing import Any

from google.protobuf.message import DecodeError

from perdure.protocol import messages as pm
from perdure.protocol.codec import REQUESTED_ACK, FrameDecoder, ProtocolError, message_type
from perdure.runtime.remote.failures import TransportError

_ENDS = {pm.TYPE_OF[pm.EndMessage], pm.TYPE_OF[pm.SuspensionMessage], pm.TYPE_OF[pm.ErrorMessage]}
_PROPOSE_RUN = pm.TYPE_OF[pm.ProposeRunCompletionMessage]


class Inbound:
    """Decodes a response body fed in chunks; `ended` once End, Suspension or Error was read.

    Run proposals that request an ack (V7) are remembered in `acks_requested`. Bytes after
    the ending message are ignored.
    """

    def __init__(self, uri: str) -> None:
        self._uri = uri
        self._decoder = FrameDecoder()
        self.ended = False
        self.acks_requested: set[int] = set()

    def feed(self, data: bytes) -> list[Any]:
        """The complete messages in `data` (with what came before); raises TransportError."""
        if self.ended:
            return []
        messages: list[Any] = []
        try:
            for message, flags in self._decoder.feed(data):
                code = message_type(message)
                if code == _PROPOSE_RUN and flags & REQUESTED_ACK:
                    self.acks_requested.add(message.result_completion_id)
                messages.append(message)
                if code in _ENDS:
                    self.ended = True
                    break
        except ProtocolError as e:
            raise TransportError(
                pm.PROTOCOL_VIOLATION, f"deployment {self._uri} sent a bad frame: {e}"
            ) from e
        except DecodeError as e:
            raise TransportError(
                pm.PROTOCOL_VIOLATION, f"deployment {self._uri} sent a frame that does not decode: {e}"
            ) from e
        return messages
