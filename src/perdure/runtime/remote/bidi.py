"""A bidirectional attempt: one HTTP/2 stream, request body open while the handler runs.

Notifications are written as the engine journals them, commands are emitted as they arrive, so a
handler with `ctx.run`, sleeps and calls completes in one attempt. A run proposal that asks for an
ack (V7) is answered with `ProposeRunCompletionAck` instead of the stored result. Inactivity
closes the request body (the deployment then suspends); if it has not ended `abort` later the
stream is reset and the attempt fails.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

from perdure.engine.actions import StartAttempt
from perdure.protocol import messages as pm
from perdure.protocol.codec import encode_frame
from perdure.runtime.clock import Clock
from perdure.runtime.remote import failures
from perdure.runtime.remote.attempt import Attempt, Sink
from perdure.runtime.remote.failures import TransportError
from perdure.runtime.remote.h2connection import ConnectError
from perdure.runtime.remote.h2stream import Stream, StreamError
from perdure.runtime.remote.options import RemoteOptions
from perdure.runtime.remote.pool import Pool
from perdure.runtime.remote.request import Invocation, opening_frames

_RUN_COMPLETION = pm.TYPE_OF[pm.RunCompletion]
_OPENING_BUFFER = 1024 * 1024  # journal bytes queued ahead of the peer's window
_REFUSED_RETRIES = 2  # a stream refused by GOAWAY/REFUSED_STREAM is sent again at once


class BidiAttempt(Attempt):
    def __init__(
        self,
        action: StartAttempt,
        target: Invocation,
        sink: Sink,
        *,
        pool: Pool,
        clock: Clock,
        options: RemoteOptions,
        timeouts_ms: tuple[int, int],
        request_response: bool = False,
    ) -> None:
        """`request_response`: the request body ends after the journal (a REQUEST_RESPONSE
        deployment over HTTP/2); the abort timeout then bounds how long the response may take."""
        super().__init__(action, target, sink)
        self._pool = pool
        self._clock = clock
        self._options = options
        self._inactivity_ms, self._abort_ms = timeouts_ms
        self._stream: Stream | None = None
        self._early: list[Any] = []  # notifications that came before the journal was written
        self._unconfirmed: list[Any] = []  # notifications written before the response head
        self._opened = False  # Start and the journal are written
        self._confirmed = False  # the response head arrived: the stream cannot be refused now
        self._request_closed = request_response
        self._failure: TransportError | None = None
        self._active_ms = clock.now_ms()
        self._watchdog: asyncio.Task[None] | None = None

    async def run(self) -> None:
        self._watchdog = asyncio.get_running_loop().create_task(self._watch())
        try:
            stream = await self._open()
            await self._read(stream)
        except StreamError as e:
            raise self._failure or failures.broken(self.target.uri, str(e)) from e

    async def _open(self) -> Stream:
        """Open the stream, write Start + journal, check the response head.

        A stream the deployment refused without processing it is sent again at once.
        """
        target = self.target
        for tries in range(_REFUSED_RETRIES + 1):
            try:
                stream = await self._pool.open_stream(target.uri, target.path, target.headers)
            except ConnectError as e:
                raise failures.unreachable(target.uri, e) from e
            self._stream = stream
            if self._failure is not None:
                raise self._failure
            try:
                for data in opening_frames(self.action):
                    stream.write(data)
                    await stream.drain(_OPENING_BUFFER)
                self._opened = True
                early, self._early = self._early, []
                self._write(early)
                if self._request_closed:
                    stream.end()
                status, headers = await stream.response()
            except StreamError as e:
                if e.refused and tries < _REFUSED_RETRIES and self._failure is None:
                    # not processed: what was written goes again on the next stream
                    self._opened = False
                    self._early = self._unconfirmed + self._early
                    self._unconfirmed = []
                    continue
                raise
            self._unconfirmed = []
            self._confirmed = True
            self._activity()
            await self._check_head(stream, status, headers)
            return stream
        raise AssertionError("unreachable")

    async def _check_head(self, stream: Stream, status: int, headers: dict[str, str]) -> None:
        target = self.target
        if status != 200:
            stream.end()  # some servers (the Python SDK's 404) finish the response only after the request
            body = bytearray()
            with contextlib.suppress(TimeoutError, StreamError):
                async with asyncio.timeout(self._options.connect_timeout):
                    while len(body) < self._options.error_body_limit and (data := await stream.read()):
                        body += data
            raise failures.http_status(
                target.uri,
                status,
                headers.get,
                bytes(body[: self._options.error_body_limit]),
                target.version,
                self._clock.now_ms(),
            )
        got = headers.get("content-type")
        if (got or "").split(";")[0].strip().lower() != target.content_type:
            raise failures.wrong_content_type(target.uri, got, target.content_type)

    async def _read(self, stream: Stream) -> None:
        while not self.inbound.ended:
            if self._failure is not None:
                raise self._failure
            data = await stream.read()
            if not data:
                raise self._failure or failures.no_end(self.target.uri)
            self._activity()
            self.received(data)

    def notify(self, messages: Sequence[Any]) -> None:
        if self._request_closed or self.inbound.ended:
            return  # the deployment suspends; the next attempt replays these from the journal
        if not self._opened:
            self._early.extend(messages)
            return
        self._write(messages)

    def _write(self, messages: Sequence[Any]) -> None:
        stream = self._stream
        if stream is None or not messages:
            return
        if not self._confirmed:
            self._unconfirmed.extend(messages)
        try:
            for message in messages:
                stream.write(encode_frame(self._ack_instead(message)))
        except StreamError:
            return  # the reading side reports the failure
        self._activity()
        if stream.unsent > self._options.max_unsent_bytes:
            self._abort(
                failures.broken(
                    self.target.uri, f"it does not read its request body ({stream.unsent} bytes wait)"
                )
            )

    def _ack_instead(self, message: Any) -> Any:
        """V7: a run result the deployment asked an ack for is acknowledged, not echoed."""
        if pm.TYPE_OF.get(type(message)) == _RUN_COMPLETION:
            cid = message.completion_id
            if cid in self.inbound.acks_requested:
                self.inbound.acks_requested.discard(cid)
                return pm.ProposeRunCompletionAckMessage(completion_id=cid)
        return message

    # ---- timeouts

    def _activity(self) -> None:
        self.touch()
        self._active_ms = self._clock.now_ms()

    async def _watch(self) -> None:
        clock = self._clock
        while clock.now_ms() < self._active_ms + self._inactivity_ms:
            await clock.sleep_until(self._active_ms + self._inactivity_ms)
        self._request_closed = True
        if self._stream is not None and self._opened:
            self._stream.end()
        await clock.sleep_until(clock.now_ms() + self._abort_ms)
        self._abort(
            TransportError(
                failures.TIMED_OUT,
                f"deployment {self.target.uri}: aborted after {self._abort_ms / 1000:g} s without "
                "End, Suspension or Error once the request body was closed for inactivity",
            )
        )

    def _abort(self, failure: TransportError) -> None:
        if self._failure is None:
            self._failure = failure
        if self._stream is not None:
            self._stream.cancel(failure.text)

    # ---- ending

    def cancel(self) -> None:
        if self._stream is not None:
            self._stream.cancel("attempt aborted")

    async def close(self, graceful: bool) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
        if self._stream is not None:
            if graceful:
                await self._stream.finish(self._options.close_grace)
            else:
                self._stream.cancel("attempt failed")
