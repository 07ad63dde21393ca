"""A request/response attempt: Start and the journal in one request body, frames streamed back.

Nothing can be sent once the body is closed, so notifications are ignored: the deployment
suspends when it needs a result and the engine starts a new attempt with a longer journal.
Sent with httpx, over HTTP/1.1 or HTTP/2 (h2c with prior knowledge for http:// URIs).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx

from perdure.engine.actions import StartAttempt
from perdure.runtime.clock import Clock
from perdure.runtime.remote import failures
from perdure.runtime.remote.attempt import Attempt, Sink
from perdure.runtime.remote.failures import TransportError
from perdure.runtime.remote.options import RemoteOptions
from perdure.runtime.remote.request import Invocation, opening_frames


class Clients:
    """One httpx client per HTTP version, made when first needed."""

    def __init__(self, options: RemoteOptions) -> None:
        self._options = options
        self._clients: dict[str, httpx.AsyncClient] = {}

    def get(self, http_version: str) -> httpx.AsyncClient:
        version = "2" if http_version == "2" else "1.1"
        client = self._clients.get(version)
        if client is None:
            o = self._options
            client = httpx.AsyncClient(
                http1=version == "1.1",
                http2=version == "2",
                timeout=httpx.Timeout(
                    connect=o.connect_timeout, read=o.response_timeout, write=o.response_timeout, pool=None
                ),
                limits=httpx.Limits(max_connections=o.max_http1_connections if version == "1.1" else None),
                verify=o.tls_context(),
                trust_env=False,  # deployments are reached directly, never through a proxy from the env
            )
            self._clients[version] = client
        return client

    async def close(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()


class UnaryAttempt(Attempt):
    def __init__(
        self,
        action: StartAttempt,
        target: Invocation,
        sink: Sink,
        *,
        client: httpx.AsyncClient,
        clock: Clock,
        options: RemoteOptions,
    ) -> None:
        super().__init__(action, target, sink)
        self._client = client
        self._clock = clock
        self._options = options
        self._exit = contextlib.AsyncExitStack()
        self._body: AsyncIterator[bytes] | None = None  # the response body, read in run and close

    async def run(self) -> None:
        target = self.target
        body = b"".join(opening_frames(self.action))
        try:
            response = await self._exit.enter_async_context(
                self._client.stream("POST", target.url, content=body, headers=list(target.headers))
            )
            self.touch()
            await self._check_head(response)
            self._body = response.aiter_raw()
            async for chunk in self._body:
                self.received(chunk)
                if self.inbound.ended:
                    return
        except httpx.ConnectError as e:
            raise failures.unreachable(target.uri, e) from e
        except httpx.ConnectTimeout as e:
            raise failures.unreachable(target.uri, f"connection timed out ({e})") from e
        except httpx.TimeoutException as e:
            raise TransportError(
                failures.TIMED_OUT,
                f"deployment {target.uri}: no response data for {self._options.response_timeout:g} s",
            ) from e
        except httpx.HTTPError as e:
            raise failures.broken(target.uri, f"the request failed: {failures.describe(e)}") from e
        raise failures.no_end(target.uri)

    async def _check_head(self, response: httpx.Response) -> None:
        target = self.target
        if response.status_code != 200:
            limit = self._options.error_body_limit
            body = bytearray()
            with contextlib.suppress(httpx.HTTPError):
                async for chunk in response.aiter_raw():
                    body += chunk
                    if len(body) >= limit:
                        break
            raise failures.http_status(
                target.uri,
                response.status_code,
                response.headers.get,
                bytes(body[:limit]),
                target.version,
                self._clock.now_ms(),
            )
        got = response.headers.get("content-type")
        if (got or "").split(";")[0].strip().lower() != target.content_type:
            raise failures.wrong_content_type(target.uri, got, target.content_type)

    async def close(self, graceful: bool) -> None:
        if graceful and self._body is not None:
            # Read to the end (the deployment closes right after End) so the connection is reused.
            with contextlib.suppress(httpx.HTTPError, TimeoutError):
                async with asyncio.timeout(self._options.close_grace):
                    async for _ in self._body:
                        pass
        with contextlib.suppress(httpx.HTTPError, OSError):
            await self._exit.aclose()
