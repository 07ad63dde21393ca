"""A request/response attempt over HTTP/1.1: Start and the journal in one request body, frames
streamed back.

Nothing can be sent once the body is closed, so notifications are ignored: the deployment
suspends when it needs a result and the engine starts a new attempt with a longer journal.
(Request/response deployments reached over HTTP/2 run on the HTTP/2 pool: `bidi.BidiAttempt`
with its request body closed after the journal.)
"""

from __future__ import annotations

from perdure.engine.actions import StartAttempt
from perdure.runtime.clock import Clock
from perdure.runtime.remote import failures
from perdure.runtime.remote.attempt import Attempt, Sink
from perdure.runtime.remote.failures import TransportError
from perdure.runtime.remote.http1 import Exchange, Http1Client, Http1Error
from perdure.runtime.remote.options import RemoteOptions
from perdure.runtime.remote.request import Invocation, opening_frames, origin_of


class UnaryAttempt(Attempt):
    def __init__(
        self,
        action: StartAttempt,
        target: Invocation,
        sink: Sink,
        *,
        client: Http1Client,
        clock: Clock,
        options: RemoteOptions,
    ) -> None:
        super().__init__(action, target, sink)
        self._client = client
        self._clock = clock
        self._options = options
        self._origin = origin_of(target.url)
        self._exchange: Exchange | None = None

    async def run(self) -> None:
        target, timeout = self.target, self._options.response_timeout
        body = b"".join(opening_frames(self.action))
        try:
            self._exchange = exchange = await self._client.post(
                self._origin, target.path, target.headers, body
            )
            self.touch()
            await self._check_head(exchange)
            async for chunk in exchange.body(timeout):
                self.received(chunk)
                if self.inbound.ended:
                    return
        except Http1Error as e:
            if not e.connected:
                raise failures.unreachable(target.uri, e) from e
            raise failures.broken(target.uri, str(e)) from e
        except TimeoutError as e:
            raise TransportError(
                failures.TIMED_OUT, f"deployment {target.uri}: no response data for {timeout:g} s"
            ) from e
        except OSError as e:
            raise failures.broken(target.uri, f"the request failed: {failures.describe(e)}") from e
        raise failures.no_end(target.uri)

    async def _check_head(self, exchange: Exchange) -> None:
        target = self.target
        if exchange.status != 200:
            limit = self._options.error_body_limit
            body = bytearray()
            try:
                async for chunk in exchange.body(self._options.connect_timeout):
                    body += chunk
                    if len(body) >= limit:
                        break
            except (Http1Error, TimeoutError, OSError):
                pass
            raise failures.http_status(
                target.uri,
                exchange.status,
                exchange.headers.get,
                bytes(body[:limit]),
                target.version,
                self._clock.now_ms(),
            )
        got = exchange.headers.get("content-type")
        if (got or "").split(";")[0].strip().lower() != target.content_type:
            raise failures.wrong_content_type(target.uri, got, target.content_type)

    async def close(self, graceful: bool) -> None:
        exchange = self._exchange
        if exchange is None:
            return
        if graceful:
            # Read to the end (the deployment closes right after End) so the connection is reused.
            try:
                async for _ in exchange.body(self._options.close_grace):
                    pass
            except (Http1Error, TimeoutError, OSError):
                pass
        exchange.release()
