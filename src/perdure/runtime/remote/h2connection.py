"""An HTTP/2 client connection (h2c with prior knowledge, or TLS with ALPN "h2") over asyncio.

The `h2` library is sans-I/O; this class feeds it the socket's bytes, routes its events to
`Stream`s, and writes what it wants sent. Outbound data moves from the streams' outboxes only as
the peer's flow-control windows (and a bounded transport buffer) allow, split to the peer's
frame size. After a GOAWAY no new stream is opened; streams the peer will not process fail as
refused, the others finish, then the connection closes.

A write that fails (EPIPE after the peer reset the connection) makes asyncio stop reading the
socket at once; what the peer sent before its reset is still in the kernel and is read out
before the connection is failed (`_Protocol`), so a response the deployment finished is reported
as such rather than as a lost connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Callable, Sequence
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from h2.errors import ErrorCodes

from perdure.runtime.remote.failures import describe
from perdure.runtime.remote.h2stream import Stream, StreamError
from perdure.runtime.remote.options import RemoteOptions
from perdure.runtime.remote.request import Origin

log = logging.getLogger("perdure.remote")

_DEFAULT_WINDOW = 65_535
_TRANSPORT_HIGH_WATER = 256 * 1024  # bytes handed to the socket but not yet written
_LAST_STREAM_ID = 2**31 - 1
_UNREAD_LIMIT = 16 * 1024 * 1024  # at most this much is read out of a broken socket


class ConnectError(Exception):
    """No usable HTTP/2 connection could be made (refused, timed out, TLS, not HTTP/2)."""


class Connection:
    """Use `await Connection.open(origin, options)`; then `open_stream` while `available`."""

    def __init__(
        self,
        origin: Origin,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        options: RemoteOptions,
        on_closed: Callable[[Connection], None],
        protocol: _Protocol | None = None,
    ) -> None:
        self.origin = origin
        self._reader = reader
        self._writer = writer
        self._protocol = protocol
        self._options = options
        self._on_closed = on_closed
        self._h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self._h2.local_settings = h2.settings.Settings(
            client=True,
            initial_values={
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: options.stream_window,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: 2**16,
            },
        )
        self._streams: dict[int, Stream] = {}
        self._sending: dict[Stream, None] = {}  # streams with something queued, in order
        self._settings = asyncio.Event()
        self._ping_acked = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._drainer: asyncio.Task[None] | None = None
        loop = asyncio.get_running_loop()
        self._last_received = loop.time()
        self._idle_since = loop.time()
        self.closed = False
        self.draining = False  # GOAWAY received: no new streams
        self.opened_streams = 0  # the connection is recycled after options.recycle_after_streams
        self._pump_soon = False
        self._flush_scheduled = False
        self._unflushed = 0  # DATA bytes handed to h2 since the last write to the socket
        self.close_reason = ""

    @classmethod
    async def open(
        cls,
        origin: Origin,
        options: RemoteOptions,
        on_closed: Callable[[Connection], None],
        tls: ssl.SSLContext | None = None,
    ) -> Connection:
        """Connect and exchange SETTINGS; raises ConnectError."""
        try:
            async with asyncio.timeout(options.connect_timeout):
                reader, writer, protocol = await _open(origin, tls)
        except TimeoutError as e:
            raise ConnectError(f"connection timed out after {options.connect_timeout:g} s") from e
        except OSError as e:
            raise ConnectError(describe(e)) from e
        if tls is not None:
            ssl_object = writer.get_extra_info("ssl_object")
            alpn = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
            if alpn != "h2":
                writer.close()
                raise ConnectError(f"TLS peer did not agree to HTTP/2 (ALPN: {alpn})")
        connection = cls(origin, reader, writer, options, on_closed, protocol)
        connection._start()
        try:
            async with asyncio.timeout(options.connect_timeout):
                await connection._settings.wait()
        except TimeoutError:
            connection.close("no HTTP/2 SETTINGS from the peer")
            raise ConnectError(f"no HTTP/2 SETTINGS within {options.connect_timeout:g} s") from None
        except BaseException:  # cancelled (the pool is closing): leave no socket behind
            connection.close("connect cancelled")
            raise
        if connection.closed:
            raise ConnectError(f"not an HTTP/2 (h2c) server: {connection.close_reason}")
        return connection

    def _start(self) -> None:
        self._h2.initiate_connection()
        extra = self._options.connection_window - _DEFAULT_WINDOW
        if extra > 0:
            self._h2.increment_flow_control_window(extra)
        self._flush()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._read_loop()), loop.create_task(self._keepalive())]

    # ---- streams

    @property
    def streams(self) -> int:
        return len(self._streams)

    @property
    def available(self) -> bool:
        """A new stream may be opened now."""
        if self.closed or self.draining or self.recycled:
            return False
        limit = min(self._options.max_streams_per_connection, self._h2.remote_settings.max_concurrent_streams)
        return len(self._streams) < limit and self._h2.open_outbound_streams < limit

    @property
    def recycled(self) -> bool:
        """No new streams: it has had its share (or used up its stream ids); closes when idle."""
        return (
            self.opened_streams >= self._options.recycle_after_streams
            or self._h2.highest_outbound_stream_id >= _LAST_STREAM_ID - 2
        )

    def open_stream(self, path: str, headers: Sequence[tuple[str, str]]) -> Stream:
        """Send a POST's headers and return its stream, request body still open."""
        stream_id = self._h2.get_next_available_stream_id()
        pseudo = [
            (":method", "POST"),
            (":scheme", self.origin.scheme),
            (":authority", self.origin.authority),
            (":path", path),
        ]
        try:
            self._h2.send_headers(stream_id, [*pseudo, *headers])
        except h2.exceptions.ProtocolError as e:  # the connection is not usable after all
            self.close(f"cannot open a stream: {describe(e)}")
            raise StreamError(f"cannot open a stream: {describe(e)}") from e
        stream = Stream(self, stream_id)
        self._streams[stream_id] = stream
        self.opened_streams += 1
        self._flush_soon()  # with the journal queued right after it, in one write
        return stream

    def queue(self, stream: Stream) -> None:
        """`stream` has data or the end of its body to send: sent at the end of this loop turn,
        with whatever other streams queue meanwhile (one socket write for many notifications)."""
        if stream.id in self._streams:
            self._sending[stream] = None
            if not self._pump_soon:
                self._pump_soon = True
                asyncio.get_running_loop().call_soon(self._deferred_pump)

    def _deferred_pump(self) -> None:
        self._pump_soon = False
        self.pump()

    def pump(self) -> None:
        """Send what the streams have queued, as far as windows and the transport buffer allow: the
        frames of every stream in one write (one segment for the deployment to read, not one each)."""
        if self._send() and self._sending:
            self._drain_then_pump()

    def _send(self) -> bool:
        """One pump; True when it stopped at the bound (what is left waits for the socket)."""
        if self.closed:
            return False
        for stream in list(self._sending):
            if self._transport_full():
                break
            try:
                self._send_from(stream)
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError) as e:
                stream.fail(StreamError(f"cannot send on the stream: {describe(e)}"))
                self._forget(stream)
        full = self._transport_full()  # before the write: what this pump queued counts
        self._flush()
        return full

    def _send_from(self, stream: Stream) -> None:
        sent = 0
        while stream.outbox and not self._transport_full():
            room = min(self._h2.local_flow_control_window(stream.id), self._h2.max_outbound_frame_size)
            if room <= 0:
                break  # until a WINDOW_UPDATE
            chunk = stream.outbox[0]
            if len(chunk) > room:
                self._h2.send_data(stream.id, chunk[:room])
                stream.outbox[0] = chunk[room:]
                size = room
            else:
                self._h2.send_data(stream.id, chunk)
                stream.outbox.popleft()
                size = len(chunk)
            sent += size
            self._unflushed += size
        if sent:
            stream.unsent -= sent
            stream.on_sent()
        if stream.outbox:
            return
        self._sending.pop(stream, None)
        if stream.end_requested and not stream.local_ended:
            self._h2.end_stream(stream.id)
            stream.local_ended = True
            if stream.done:
                self._forget(stream)

    def consumed(self, stream: Stream, size: int) -> None:
        """`size` bytes of `stream` were read: give them back to the peer's window."""
        if self.closed or size <= 0:
            return
        with contextlib.suppress(h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            self._h2.acknowledge_received_data(size, stream.id)
            self._flush_soon()

    def reset(self, stream: Stream) -> None:
        if not self.closed:
            with contextlib.suppress(h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                self._h2.reset_stream(stream.id, ErrorCodes.CANCEL)
                self._flush()
        self._forget(stream)

    def _forget(self, stream: Stream) -> None:
        self._sending.pop(stream, None)
        if self._streams.pop(stream.id, None) is None:
            return
        if not self._streams:
            self._idle_since = asyncio.get_running_loop().time()
            if self.draining:
                self.close("GOAWAY received and every stream finished")
            elif self.recycled:
                self.close(f"recycled after {self.opened_streams} streams")

    # ---- I/O

    def _flush(self) -> None:
        self._unflushed = 0
        data = self._h2.data_to_send()
        if data and not self._writer.is_closing():
            self._writer.write(data)

    def _flush_soon(self) -> None:
        """Write what h2 holds at the end of this loop turn (window updates, new streams' headers)."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._deferred_flush)

    def _deferred_flush(self) -> None:
        self._flush_scheduled = False
        if not self.closed and not self._pump_soon:  # else the pump writes it with its DATA
            self._flush()

    def _transport_full(self) -> bool:
        """What the socket has not taken yet, and what h2 holds for the next write, reach the bound."""
        return self._unflushed + self._writer.transport.get_write_buffer_size() >= _TRANSPORT_HIGH_WATER

    def _drain_then_pump(self) -> None:
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        """Wait until the socket has taken what it holds, send more; repeat while data waits."""
        while not self.closed:
            with contextlib.suppress(OSError):
                await self._writer.drain()
            if not (self._send() and self._sending):
                return

    async def _read_loop(self) -> None:
        try:
            while True:
                data = await self._reader.read(65_536)
                if not data:
                    lost = self._protocol.lost if self._protocol is not None else None
                    raise lost or ConnectionError("the peer closed the connection")
                self._last_received = asyncio.get_running_loop().time()
                for event in self._h2.receive_data(data):
                    self._handle(event)
                self._flush()
        except (OSError, h2.exceptions.ProtocolError) as e:
            self.close(f"connection lost: {describe(e)}")
        except Exception as e:  # a bug here must not leave streams waiting forever
            log.exception("HTTP/2 connection to %s failed", self.origin.authority)
            self.close(f"connection failed: {describe(e)}")

    def _handle(self, event: Any) -> None:
        stream = self._streams.get(getattr(event, "stream_id", 0) or 0)
        if isinstance(event, h2.events.ResponseReceived) and stream is not None:
            stream.on_head(_head(event.headers))
        elif isinstance(event, h2.events.DataReceived):
            if stream is not None:
                stream.on_data(event.data, event.flow_controlled_length)
            else:
                self._h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded) and stream is not None:
            stream.on_end()
            if stream.done:
                self._forget(stream)
        elif isinstance(event, h2.events.StreamReset) and stream is not None:
            refused = event.error_code == ErrorCodes.REFUSED_STREAM
            stream.fail(StreamError(f"stream reset by the peer ({_code(event.error_code)})", refused=refused))
            self._forget(stream)
        elif isinstance(event, h2.events.WindowUpdated):
            self.pump()
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            self._settings.set()
            self.pump()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._goaway(event)
        elif isinstance(event, h2.events.PingAckReceived):
            self._ping_acked.set()

    def _goaway(self, event: h2.events.ConnectionTerminated) -> None:
        self.draining = True
        last = event.last_stream_id if event.last_stream_id is not None else 0
        what = f"GOAWAY ({_code(event.error_code)}, last stream {last})"
        for stream in [s for s in self._streams.values() if s.id > last]:
            stream.fail(StreamError(f"{what}: the stream was not processed", refused=True))
            self._forget(stream)
        if self.closed:
            return
        # h2 treats a received GOAWAY as the end of the connection, but streams at or below
        # last_stream_id may still finish (RFC 9113 §6.8): keep the state machine open for them.
        self._h2.state_machine.state = h2.connection.ConnectionState.CLIENT_OPEN
        self.close_reason = what
        if not self._streams:
            self.close(what)

    async def _keepalive(self) -> None:
        """PING a connection that carries streams but has been silent; close one idle too long."""
        options = self._options
        loop = asyncio.get_running_loop()
        while not self.closed:
            await asyncio.sleep(min(options.keepalive_interval, options.idle_connection_timeout))
            now = loop.time()
            if not self._streams:
                if now - self._idle_since >= options.idle_connection_timeout:
                    self.close("idle")
                continue
            if now - self._last_received < options.keepalive_interval:
                continue
            self._ping_acked.clear()
            self._h2.ping(b"perdure!")
            self._flush()
            try:
                async with asyncio.timeout(options.keepalive_timeout):
                    await self._ping_acked.wait()
            except TimeoutError:
                self.close(f"no answer to PING within {options.keepalive_timeout:g} s")

    def close(self, reason: str = "closed") -> None:
        """Close now: every stream still on it fails with StreamError(reason)."""
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        with contextlib.suppress(Exception):
            self._h2.close_connection()
            self._flush()
        self._writer.close()
        for stream in list(self._streams.values()):
            stream.fail(StreamError(reason))
        self._streams.clear()
        self._sending.clear()
        self._settings.set()
        current = asyncio.current_task()
        for task in [*self._tasks, self._drainer]:
            if task is not None and task is not current:
                task.cancel()
        self._on_closed(self)

    async def wait_closed(self) -> None:
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()


class _Protocol(asyncio.StreamReaderProtocol):
    """A StreamReaderProtocol that, when the connection breaks, hands over what was received first.

    asyncio ends a socket transport on the first failed write (EPIPE, ECONNRESET) and stops
    reading it, and `StreamReader.read` raises a stored exception before returning buffered
    bytes. A deployment that answers without reading the whole request body and closes (hypercorn
    does) leaves its complete response in our socket, yet the next write fails. So on an error
    the bytes still in the kernel are read out (plain TCP only: over TLS they are records the
    SSL layer can no longer decrypt) and the reader ends like a close; the error is kept in
    `lost` for the reader of the end of the stream to raise.
    """

    def __init__(self, reader: asyncio.StreamReader) -> None:
        super().__init__(reader)
        self._reader = reader
        self._transport: asyncio.BaseTransport | None = None
        self.lost: OSError | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        super().connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if isinstance(exc, OSError):
            self.lost = exc
            rest = _unread(self._transport)
            if rest:
                self._reader.feed_data(rest)
            exc = None  # the reader reads what arrived, then its end; `lost` says why
        super().connection_lost(exc)


def _unread(transport: asyncio.BaseTransport | None) -> bytes:
    """What a plain TCP transport's socket (still open during `connection_lost`) holds unread."""
    if transport is None or transport.get_extra_info("sslcontext") is not None:
        return b""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return b""
    chunks: list[bytes] = []
    size = 0
    try:
        with sock.dup() as raw:
            while size < _UNREAD_LIMIT:
                chunk = raw.recv(65_536, socket.MSG_DONTWAIT)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
    except OSError:  # nothing more (EAGAIN), or the reset itself once the data is read
        pass
    return b"".join(chunks)


async def _open(
    origin: Origin, tls: ssl.SSLContext | None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, _Protocol]:
    """`asyncio.open_connection` with `_Protocol`."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    protocol = _Protocol(reader)
    transport, _ = await loop.create_connection(
        lambda: protocol, origin.host, origin.port, ssl=tls, server_hostname=origin.host if tls else None
    )
    return reader, asyncio.StreamWriter(transport, protocol, reader, loop), protocol


def _head(headers: Sequence[tuple[bytes, bytes]]) -> tuple[int, dict[str, str]]:
    fields = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in headers}
    status = fields.pop(":status", "0")
    return int(status) if status.isdigit() else 0, fields


def _code(code: Any) -> str:
    try:
        return ErrorCodes(code).name
    except ValueError:
        return f"error {code}"
