"""A scripted HTTP/2 (h2c) server for the transport's edge cases: GOAWAY, resets, windows, drops.

Each request runs the test's `handler(stream)`; the stream reads protocol frames and answers with
whatever the test scripts. Only loopback, one event loop, no TLS.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings

from perdure.protocol.codec import FrameDecoder, encode_frame

Handler = Callable[["ServerStream"], Awaitable[None]]


class ServerStream:
    def __init__(self, conn: ServerConnection, stream_id: int, headers: dict[str, str]) -> None:
        self.conn = conn
        self.id = stream_id
        self.headers = headers
        self._data: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._decoder = FrameDecoder()
        self._frames: list[tuple[Any, int]] = []

    async def frame(self) -> tuple[Any, int] | None:
        """The next (message, flags) of the request body, None at its end (waits at most 5 s)."""
        async with asyncio.timeout(5):
            while not self._frames:
                data = await self._data.get()
                if data is None:
                    return None
                self._frames.extend(self._decoder.feed(data))
        return self._frames.pop(0)

    async def frames(self, count: int) -> list[Any]:
        got = []
        for _ in range(count):
            item = await self.frame()
            assert item is not None, "the request body ended early"
            got.append(item[0])
        return got

    def respond(self, status: int = 200, content_type: str | None = None) -> None:
        ct = content_type or self.headers.get("content-type", "")
        self.conn.h2.send_headers(self.id, [(":status", str(status)), ("content-type", ct)])
        self.conn.flush()

    async def send(self, *messages: Any, flags: int = 0, end: bool = False) -> None:
        data = b"".join(encode_frame(m, flags=flags) for m in messages)
        await self.send_bytes(data, end=end)

    async def send_bytes(self, data: bytes, *, end: bool = False) -> None:
        h2c = self.conn.h2
        while data:
            room = min(h2c.local_flow_control_window(self.id), h2c.max_outbound_frame_size, len(data))
            if room <= 0:
                await self.conn.window_opened()
                continue
            h2c.send_data(self.id, data[:room])
            data = data[room:]
            self.conn.flush()
        if end:
            h2c.end_stream(self.id)
            self.conn.flush()

    def reset(self, code: int = 2) -> None:
        self.conn.h2.reset_stream(self.id, code)
        self.conn.flush()


class ServerConnection:
    def __init__(
        self, server: ScriptedServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        )
        self.h2.local_settings = h2.settings.Settings(client=False, initial_values=server.settings)
        self.streams: dict[int, ServerStream] = {}
        self._window = asyncio.Event()
        self.frozen = asyncio.Event()  # set: stop reading the socket (a peer that hangs)
        self.pings = 0

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data and not self.writer.is_closing():
            self.writer.write(data)

    async def window_opened(self) -> None:
        self._window.clear()
        await self._window.wait()

    def goaway(self, last_stream_id: int) -> None:
        self.h2.close_connection(error_code=0, last_stream_id=last_stream_id)
        self.flush()

    def drop(self) -> None:
        self.writer.transport.abort()

    async def serve(self) -> None:
        self.h2.initiate_connection()
        if self.server.connection_window > 65_535:
            self.h2.increment_flow_control_window(self.server.connection_window - 65_535)
        self.flush()
        tasks: list[asyncio.Task[None]] = []
        try:
            while True:
                data = await self.reader.read(65536)
                if not data:
                    break
                if self.frozen.is_set():
                    continue  # read and ignore: no PING ack, no WINDOW_UPDATE, nothing
                for event in self.h2.receive_data(data):
                    self._handle(event, tasks)
                self.flush()
        except (OSError, h2.exceptions.ProtocolError):
            pass
        finally:
            for task in tasks:
                task.cancel()
            self.writer.close()

    def _handle(self, event: Any, tasks: list[asyncio.Task[None]]) -> None:
        if isinstance(event, h2.events.RequestReceived):
            headers = {str(k): str(v) for k, v in event.headers}  # str already: header_encoding
            stream = ServerStream(self, event.stream_id, headers)
            self.streams[event.stream_id] = stream
            self.server.requests.append(stream)
            tasks.append(asyncio.get_running_loop().create_task(self._run(stream)))
        elif isinstance(event, h2.events.DataReceived):
            self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            if event.stream_id in self.streams:
                self.streams[event.stream_id]._data.put_nowait(event.data)
        elif isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
            if event.stream_id in self.streams:
                self.streams[event.stream_id]._data.put_nowait(None)
            if isinstance(event, h2.events.StreamReset):
                self.server.resets.append(event.stream_id)
        elif isinstance(event, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
            self._window.set()
        elif isinstance(event, h2.events.PingReceived):
            self.pings += 1

    async def _run(self, stream: ServerStream) -> None:
        try:
            await self.server.handler(stream)
        except Exception as e:  # the test sees it as a failed attempt; keep the reason
            self.server.errors.append(e)
            with contextlib.suppress(Exception):
                stream.reset()


class ScriptedServer:
    def __init__(
        self, handler: Handler, settings: dict[Any, int] | None = None, connection_window: int = 65_535
    ) -> None:
        self.handler = handler
        self.connection_window = connection_window
        self.settings = {h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 100, **(settings or {})}
        self.connections: list[ServerConnection] = []
        self.requests: list[ServerStream] = []
        self.resets: list[int] = []
        self.errors: list[Exception] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = ServerConnection(self, reader, writer)
        self.connections.append(conn)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await conn.serve()
        finally:
            self._tasks.discard(task)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for conn in self.connections:
                conn.writer.transport.abort()
            if self._tasks:
                await asyncio.wait(list(self._tasks), timeout=2)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2)
