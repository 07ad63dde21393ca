"""HTTP/1.1 for request/response attempts: a small keep-alive client on `h11`.

httpx's connection pool looks at every connection for every request and writes headers and
body in separate sends; with 64 attempts in flight that cost several milliseconds of CPU per
request. This client keeps the idle connections of each origin in a LIFO list, writes a request
in one send (TCP_NODELAY), and hands the response body to the attempt as it arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator, Sequence

import h11

from perdure.runtime.remote.options import RemoteOptions
from perdure.runtime.remote.request import Origin

_READ = 64 * 1024


class Http1Error(Exception):
    """The exchange failed; `connected` says whether a connection was made at all."""

    def __init__(self, message: str, *, connected: bool) -> None:
        super().__init__(message)
        self.connected = connected


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.h11 = h11.Connection(our_role=h11.CLIENT)

    @property
    def usable(self) -> bool:
        return not self.writer.is_closing() and not self.reader.at_eof()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


class Exchange:
    """One request's response: `status`, `headers` (lower-case names), then `body()` chunks.

    `release()` returns the connection to the pool when the response was read to its end.
    """

    def __init__(self, client: Http1Client, origin: Origin, connection: _Connection) -> None:
        self._client = client
        self._origin = origin
        self._connection = connection
        self.status = 0
        self.headers: dict[str, str] = {}
        self._released = False

    async def _next_event(self, idle: float) -> object:
        """The next h11 event, reading as needed; a read silent for `idle` s raises TimeoutError."""
        conn = self._connection
        while True:
            event = conn.h11.next_event()
            if event is not h11.NEED_DATA:
                return event
            async with asyncio.timeout(idle):
                data = await conn.reader.read(_READ)
            conn.h11.receive_data(data)  # b"": the peer closed (h11 raises if mid-message)

    async def head(self, idle: float) -> None:
        while True:
            event = await self._next_event(idle)
            if isinstance(event, h11.Response):
                self.status = event.status_code
                self.headers = {k.decode().lower(): v.decode("latin-1") for k, v in event.headers}
                return
            if isinstance(event, h11.ConnectionClosed):
                raise Http1Error("the connection closed before a response", connected=True)

    async def body(self, idle: float) -> AsyncIterator[bytes]:
        while True:
            event = await self._next_event(idle)
            if isinstance(event, h11.Data):
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                return
            elif isinstance(event, h11.ConnectionClosed):
                raise Http1Error("the connection closed in the middle of the response", connected=True)

    def release(self) -> None:
        """Back to the pool if both sides finished cleanly, else closed."""
        if self._released:
            return
        self._released = True
        conn = self._connection
        reusable = conn.h11.our_state is h11.DONE and conn.h11.their_state is h11.DONE and conn.usable
        if reusable:
            conn.h11.start_next_cycle()
        else:
            conn.close()
        self._client.give_back(self._origin, conn if reusable else None)


class Http1Client:
    """Keep-alive HTTP/1.1 connections per origin, at most `max_http1_connections` each."""

    def __init__(self, options: RemoteOptions) -> None:
        self._options = options
        self._idle: dict[Origin, list[_Connection]] = {}
        self._slots: dict[Origin, asyncio.Semaphore] = {}
        self._tls: ssl.SSLContext | None = None
        self.opened = 0  # connections made so far

    async def post(
        self, origin: Origin, path: str, headers: Sequence[tuple[str, str]], body: bytes
    ) -> Exchange:
        """Send a POST and read its response head; raises `Http1Error`, `TimeoutError`."""
        slots = self._slots.setdefault(origin, asyncio.Semaphore(self._options.max_http1_connections))
        await slots.acquire()
        try:
            return await self._post(origin, path, headers, body)
        except BaseException:
            slots.release()
            raise

    async def _post(
        self, origin: Origin, path: str, headers: Sequence[tuple[str, str]], body: bytes
    ) -> Exchange:
        request = h11.Request(
            method="POST",
            target=path,
            headers=[("host", origin.authority), ("content-length", str(len(body))), *headers],
        )
        while True:
            reused, connection = self._take(origin)
            if connection is None:
                connection = await self._connect(origin)
            exchange = Exchange(self, origin, connection)
            try:
                wire = connection.h11.send(request) + (connection.h11.send(h11.Data(data=body)) or b"")
                connection.writer.write(wire + (connection.h11.send(h11.EndOfMessage()) or b""))
                await exchange.head(self._options.response_timeout)
                return exchange
            except (Http1Error, h11.RemoteProtocolError, ConnectionError) as e:
                connection.close()
                if reused and not exchange.status:
                    continue  # a kept-alive connection the server had closed: nothing was processed
                raise Http1Error(f"the request failed: {e}", connected=True) from e

    def give_back(self, origin: Origin, connection: _Connection | None) -> None:
        """An exchange is over: keep its connection for the next request (None: it was closed)."""
        if connection is not None:
            self._idle.setdefault(origin, []).append(connection)
        self._slots[origin].release()

    def _take(self, origin: Origin) -> tuple[bool, _Connection | None]:
        idle = self._idle.get(origin)
        while idle:
            connection = idle.pop()
            if connection.usable:
                return True, connection
            connection.close()
        return False, None

    async def _connect(self, origin: Origin) -> _Connection:
        try:
            tls = self._tls_context() if origin.scheme == "https" else None
            async with asyncio.timeout(self._options.connect_timeout):
                reader, writer = await asyncio.open_connection(
                    origin.host, origin.port, ssl=tls, server_hostname=origin.host if tls else None
                )
        except TimeoutError:
            raise Http1Error(
                f"connection timed out after {self._options.connect_timeout:g} s", connected=False
            ) from None
        except OSError as e:
            raise Http1Error(str(e), connected=False) from e
        self.opened += 1
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return _Connection(reader, writer)

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            context = self._options.tls_context()
            context.set_alpn_protocols(["http/1.1"])
            self._tls = context
        return self._tls

    async def close(self) -> None:
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()
