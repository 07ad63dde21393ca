"""A deployment that answers without reading the whole request body and then resets the connection
(hypercorn does, when request data reaches a stream it already closed): our next write fails with
EPIPE/ECONNRESET, yet the response it sent first is what the stream reports."""

from __future__ import annotations

import asyncio
import select
import socket
import struct

import h2.config
import h2.connection
import h2.events

from perdure.runtime.remote import RemoteOptions
from perdure.runtime.remote.h2connection import Connection
from perdure.runtime.remote.request import origin_of


async def _receive_until(sock: socket.socket, server: h2.connection.H2Connection, kind: type) -> None:
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(5):
        while True:
            data = await loop.sock_recv(sock, 65_536)
            assert data, "the client closed the connection"
            if any(isinstance(e, kind) for e in server.receive_data(data)):
                return


async def test_response_sent_before_a_reset_survives_a_failed_write() -> None:
    loop = asyncio.get_running_loop()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    port = listener.getsockname()[1]
    closed: list[Connection] = []
    opening = loop.create_task(
        Connection.open(origin_of(f"http://127.0.0.1:{port}"), RemoteOptions(), closed.append)
    )
    peer, _ = await loop.sock_accept(listener)
    server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    server.initiate_connection()
    await loop.sock_sendall(peer, server.data_to_send())
    await _receive_until(peer, server, h2.events.RemoteSettingsChanged)
    connection = await opening
    try:
        stream = connection.open_stream("/wrongtype", [("content-type", "application/x")])
        stream.write(b"the journal")
        await _receive_until(peer, server, h2.events.DataReceived)

        # The whole response, then a reset (SO_LINGER 0), all before the client's loop runs again.
        server.send_headers(1, [(":status", "200"), ("content-type", "text/html")])
        server.send_data(1, b"<html>hello</html>", end_stream=True)
        peer.setblocking(True)
        peer.sendall(server.data_to_send())
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        peer.close()  # on loopback the reset is delivered within this call
        # Block (the loop must not read) until the response is in our socket, then write.
        ours = connection._writer.get_extra_info("socket")
        assert select.select([ours.fileno()], [], [], 5)[0]
        stream.write(b"more of the journal")
        connection.pump()  # this write fails (reset by peer): asyncio stops reading the socket
        assert connection._writer.is_closing()

        status, headers = await asyncio.wait_for(stream.response(), 5)
        assert (status, headers["content-type"]) == (200, "text/html")
        assert await stream.read() == b"<html>hello</html>"
        assert await stream.read() == b""
        async with asyncio.timeout(5):
            await connection.wait_closed()
        assert closed == [connection]
        assert connection.close_reason.startswith("connection lost: ")
    finally:
        connection.close()
        listener.close()
