"""Forwarding to a neighbour's peer socket (`perdure.runtime.peers`), piece by piece: the HTTP/1.1
exchange over a Unix socket, what it reports when the peer cannot be reached or breaks off, and the
id a forwarding node chooses, which makes a repeat after a lost answer find the call, not make a
second one. The two-node behaviour end to end is tests/cluster/test_forwarding.py."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import pytest

import perdure
from perdure import ObjectContext, VirtualObject
from perdure.errors import InvalidInputError
from perdure.protocol import ids
from perdure.runtime import peers
from perdure.runtime.http import serve
from perdure.testing import Harness

seen: list[dict[str, Any]] = []


async def echo_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    seen.append(
        {"path": scope["path"], "query": scope["query_string"], "headers": scope["headers"], "body": body}
    )
    await send({"type": "http.response.start", "status": 201, "headers": [(b"x-answer", b"yes")]})
    await send({"type": "http.response.body", "body": b"got " + body})


async def test_a_request_goes_over_the_unix_socket_and_the_connection_is_kept(tmp_path: Path) -> None:
    seen.clear()
    path = tmp_path / "peer.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    served = await serve(echo_app, sock=sock)
    forwarder = peers.Forwarder("node-a")
    try:
        assert served.url == f"unix:{path}"
        for n in range(2):
            status, headers, body = await forwarder.forward(
                path,
                "POST",
                b"/counter/k/add?x=1",
                [(b"content-type", b"application/json"), (b"content-length", b"99"), (b"host", b"client")],
                b'"r%d"' % n,
                invocation_id="inv_1" if n else None,
            )
            assert (status, body) == (201, b'got "r%d"' % n)
            assert (b"x-answer", b"yes") in headers
            # chunked (no content-length from the app): framing, date and server are not relayed
            assert {k for k, _ in headers} >= {b"transfer-encoding", b"date", b"server"}
            assert peers.relayed(headers) == [(b"x-answer", b"yes")]
        first, second = seen
        assert (first["path"], first["query"]) == ("/counter/k/add", b"x=1")
        sent = dict(first["headers"])
        assert sent[b"content-length"] == b"4" and sent[b"host"] == b"perdure-peer"
        assert sent[peers.FORWARDED] == b"node-a" and peers.ASSIGNED_ID not in sent
        assert dict(second["headers"])[peers.ASSIGNED_ID] == b"inv_1"
        assert len(forwarder._idle[path]) == 1  # one connection, used twice
        (kept,) = forwarder._idle[path]
        kept.idle_since -= peers.IDLE_REUSED_S  # idle too long: uvicorn may be closing it now
        await forwarder.forward(path, "POST", b"/x", [], b"3")
        assert forwarder._idle[path] != [kept] and kept.writer.is_closing()
    finally:
        forwarder.close()
        await served.stop()


async def test_no_peer_is_unreachable_and_a_broken_exchange_says_so(tmp_path: Path) -> None:
    forwarder = peers.Forwarder("node-a")
    with pytest.raises(peers.Unreachable):
        await forwarder.forward(tmp_path / "nobody.sock", "POST", b"/x", [], b"1")

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")  # takes the request, then dies before answering
        writer.close()

    path = tmp_path / "dies.sock"
    server = await asyncio.start_unix_server(hang_up, str(path))
    try:
        with pytest.raises(peers.Broken, match="broke"):
            await forwarder.forward(path, "POST", b"/x", [], b"1")
    finally:
        server.close()
        await server.wait_closed()


def test_stale_sockets_of_dead_processes_are_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(peers.tempfile, "gettempdir", lambda: str(tmp_path))
    peers.socket_dir().mkdir()
    stale = peers.socket_dir() / "999999999-dead.sock"
    stale.touch()
    sock = peers.listening_socket("1-me")
    try:
        assert not stale.exists() and peers.socket_path("1-me").exists()
        assert oct(peers.socket_path("1-me").stat().st_mode & 0o777) == "0o600"
    finally:
        sock.close()


counter = VirtualObject("counter")


@counter.handler()
async def add(ctx: ObjectContext, n: int) -> int:
    total = (await ctx.get("total") or 0) + n
    ctx.set("total", total)
    return total


@pytest.mark.usefixtures("backend")  # memory and PostgreSQL
async def test_a_chosen_id_makes_a_repeated_call_find_the_first() -> None:
    async with Harness(perdure.App([counter])) as h:
        chosen = ids.random_id("counter", "k")
        first, previously, _ = await h.submit("counter", "add", b"5", key="k", invocation_id=chosen)
        assert (first, previously) == (chosen, False)
        again, previously, waiter = await h.submit(
            "counter", "add", b"5", key="k", invocation_id=chosen, wait=True
        )
        assert (again, previously) == (chosen, True)
        await h.settle()
        assert waiter is not None and (await waiter).value == b"5"  # added once
        assert h.state("counter", "k") == {"total": 5}
        with pytest.raises(InvalidInputError, match="not an invocation id of counter/add"):
            await h.submit("counter", "add", b"1", key="other", invocation_id=chosen)  # another key's
        with pytest.raises(InvalidInputError, match="not an invocation id"):
            await h.submit("counter", "add", b"1", key="k", invocation_id="inv_nonsense")
