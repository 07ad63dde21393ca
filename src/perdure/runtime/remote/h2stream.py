"""One HTTP/2 stream with both directions open at once: what a bidirectional attempt talks over.

Inbound data is handed back to the peer's flow-control window only as it is read, so what waits
unread is bounded by the stream window. Outbound data waits in the stream's outbox until the
peer's windows let the connection send it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Protocol


class StreamError(Exception):
    """The stream failed before its response ended.

    `refused` when the deployment certainly did not process it (GOAWAY below its id, or
    REFUSED_STREAM): the request can be sent again on another connection.
    """

    def __init__(self, text: str, *, refused: bool = False) -> None:
        super().__init__(text)
        self.refused = refused


class _Carrier(Protocol):
    """What a stream needs from its connection."""

    def queue(self, stream: Stream) -> None: ...
    def consumed(self, stream: Stream, size: int) -> None: ...
    def reset(self, stream: Stream) -> None: ...


Head = tuple[int, dict[str, str]]


class Stream:
    def __init__(self, carrier: _Carrier, stream_id: int) -> None:
        self.id = stream_id
        self._carrier = carrier
        self._head: asyncio.Future[Head] = asyncio.get_running_loop().create_future()
        self._chunks: deque[tuple[bytes, int]] = deque()  # data, flow-controlled length
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self.remote_ended = False
        self.error: StreamError | None = None
        self.outbox: deque[memoryview] = deque()
        self.unsent = 0
        self.end_requested = False
        self.local_ended = False

    @property
    def done(self) -> bool:
        """Closed both ways, or failed: the connection no longer tracks it."""
        return self.error is not None or (self.remote_ended and self.local_ended)

    # ---- the attempt's side

    async def response(self) -> Head:
        """The response status and headers (names lower-case); raises StreamError."""
        return await asyncio.shield(self._head)

    async def read(self) -> bytes:
        """The next chunk of the response body, b"" at its end; raises StreamError.

        A response the peer ended reads to its end even if the stream failed afterwards (the
        connection broke while our request body was still being sent)."""
        while not self._chunks:
            if self.remote_ended:
                return b""
            if self.error is not None:
                raise self.error
            self._readable.clear()
            await self._readable.wait()
        data, size = self._chunks.popleft()
        self._carrier.consumed(self, size)
        return data

    def write(self, data: bytes) -> None:
        """Queue `data` for sending (never blocks); raises StreamError if the stream failed."""
        if self.error is not None:
            raise self.error
        if self.end_requested:
            raise StreamError("the request body is already closed")
        if data:
            self.outbox.append(memoryview(data))
            self.unsent += len(data)
            self._carrier.queue(self)

    async def drain(self, below: int) -> None:
        """Wait until fewer than `below` queued bytes are left unsent."""
        while self.unsent >= below:
            if self.error is not None:
                raise self.error
            self._writable.clear()
            await self._writable.wait()

    def end(self) -> None:
        """Close the request body once everything queued is sent."""
        if not self.end_requested and self.error is None:
            self.end_requested = True
            self._carrier.queue(self)

    def cancel(self, reason: str) -> None:
        """Reset the stream (RST_STREAM CANCEL); readers and writers get StreamError(reason)."""
        if not self.done:
            self._carrier.reset(self)
            self.fail(StreamError(reason))

    async def finish(self, grace: float) -> None:
        """Close our side and let the deployment close its own within `grace` s, else reset."""
        self.end()
        try:
            async with asyncio.timeout(grace):
                while await self.read():
                    pass  # nothing more is expected after the attempt ended: discard
        except (TimeoutError, StreamError):
            pass
        self.cancel("closed after the attempt ended")

    # ---- the connection's side

    def on_head(self, head: Head) -> None:
        if not self._head.done():
            self._head.set_result(head)

    def on_data(self, data: bytes, size: int) -> None:
        self._chunks.append((data, size))
        self._readable.set()

    def on_end(self) -> None:
        self.remote_ended = True
        if not self._head.done():
            self._head.set_exception(StreamError("the response ended before its headers"))
            self._head.exception()  # retrieved: nobody may be waiting for it
        self._readable.set()

    def on_sent(self) -> None:
        self._writable.set()

    def fail(self, error: StreamError) -> None:
        if self.error is not None:
            return
        self.error = error
        self.outbox.clear()
        self.unsent = 0
        if not self._head.done():
            self._head.set_exception(error)
            self._head.exception()
        self._readable.set()
        self._writable.set()
