"""HTTP/2 connections per deployment origin, shared by the bidirectional attempts.

A stream goes on the first connection with room (our cap and the peer's
SETTINGS_MAX_CONCURRENT_STREAMS); when every connection is full another is opened. Attempts that
arrive while a connection is being made wait for it instead of each opening their own.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence

from perdure.runtime.remote.h2connection import ConnectError, Connection
from perdure.runtime.remote.h2stream import Stream
from perdure.runtime.remote.options import RemoteOptions
from perdure.runtime.remote.request import Origin, origin_of


class Pool:
    def __init__(self, options: RemoteOptions) -> None:
        self._options = options
        self._connections: dict[Origin, list[Connection]] = {}
        self._connecting: dict[Origin, asyncio.Task[Connection]] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._tls: ssl.SSLContext | None = None
        self.opened = 0  # connections made so far

    @property
    def connections(self) -> int:
        """Connections open now."""
        return sum(len(c) for c in self._connections.values())

    async def open_stream(self, uri: str, path: str, headers: Sequence[tuple[str, str]]) -> Stream:
        """A new stream to `uri`'s origin, request headers sent; raises ConnectError."""
        try:
            origin = origin_of(uri)
        except ValueError as e:
            raise ConnectError(str(e)) from e
        while True:
            for connection in self._connections.get(origin, ()):
                if connection.available:
                    return connection.open_stream(path, headers)
            task = self._connecting.get(origin)
            if task is None:
                task = asyncio.get_running_loop().create_task(self._connect(origin))
                task.add_done_callback(_retrieve)
                self._connecting[origin] = task
            # Shielded: an attempt aborted while waiting must not cancel the others' connection.
            await asyncio.shield(task)

    async def _connect(self, origin: Origin) -> Connection:
        try:
            try:
                tls = self._tls_context() if origin.scheme == "https" else None
            except OSError as e:  # ssl.SSLError is one, and an unreadable ca_file
                raise ConnectError(str(e)) from e
            connection = await Connection.open(origin, self._options, self._closed, tls)
        finally:
            del self._connecting[origin]
        self._connections.setdefault(origin, []).append(connection)
        self.opened += 1
        return connection

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            context = self._options.tls_context()
            context.set_alpn_protocols(["h2"])
            self._tls = context
        return self._tls

    def _closed(self, connection: Connection) -> None:
        connections = self._connections.get(connection.origin, [])
        if connection in connections:
            connections.remove(connection)
        if not connections:
            self._connections.pop(connection.origin, None)
        task = asyncio.get_running_loop().create_task(connection.wait_closed())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        """Close every connection (their streams fail) and wait for the sockets to close."""
        connecting = list(self._connecting.values())
        for task in connecting:
            task.cancel()
        await asyncio.gather(*connecting, return_exceptions=True)
        for connections in list(self._connections.values()):
            for connection in list(connections):
                connection.close("the invoker is stopping")
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)


def _retrieve(task: asyncio.Task[Connection]) -> None:
    """Mark a failed connect as seen even when every attempt waiting for it was aborted."""
    if not task.cancelled():
        task.exception()
