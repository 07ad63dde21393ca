"""Forwarding an ingress call to the node that runs its partition, when that node is on this machine.

Any node's ingress accepts any call. Without forwarding, a call whose partition another node runs
takes the durable detour: it is written as a delivery to that partition (a transaction), the owner
reads and applies it, and announces the completion, which this node then reads back — three more
database round trips and about twice the CPU of a call the node runs itself. With `perdure serve
--workers N` most calls arrive at a worker that does not run their partition.

So every node of a cluster also serves its ingress on a Unix socket (`socket_path(node)`), and a
call for a partition run by a live node on the same host (`Cluster.neighbour_for`) is passed to it
as it came: the same method, path, headers and body, answered by the owner as if the client had
called it directly. The request carries `FORWARDED` so it is never passed on again: a node that
lost the partition in the meantime takes the durable path itself. Nothing is lost either way:

- the owner cannot be reached (it died, its socket is gone): nothing was sent, so this node takes
  the durable path;
- the connection breaks after the request was sent: the owner may have accepted the call, so it
  is not sent again; the client gets a 503 that says so (a call with an idempotency key can be
  repeated safely).

`PERDURE_FORWARD=off` turns forwarding off (every call to another node's partition goes durably).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

#: The request header that marks a forwarded call (its value: the forwarding node).
FORWARDED = b"x-perdure-forwarded"
#: The request header with the id the forwarding node chose for a call without an idempotency key.
ASSIGNED_ID = b"x-perdure-invocation-id"
#: The environment variable that turns forwarding off (`off`).
ENV = "PERDURE_FORWARD"

_READ = 64 * 1024
_IDLE_KEPT = 64  # idle connections kept per peer
#: An idle connection is used again only this soon: uvicorn closes one idle for 5 s, and a request
#: sent as it does would be lost with the connection (then taken here, by the durable path).
IDLE_REUSED_S = 3.0

Headers = Sequence[tuple[bytes, bytes]]


class Unreachable(Exception):
    """The peer could not be reached: nothing was sent."""


class Broken(Exception):
    """The exchange broke after the request was sent: the peer may have acted on it."""


def enabled() -> bool:
    return os.environ.get(ENV, "").strip().lower() not in ("off", "0", "false", "no")


def socket_dir() -> Path:
    """The folder of this user's peer sockets (the temporary folder is shared by every user)."""
    return Path(tempfile.gettempdir()) / f"perdure-peers-{os.getuid()}"


def socket_path(node: str) -> Path:
    """Where node `node` (named `<pid>-<random>`) serves its ingress to the nodes on its machine."""
    return socket_dir() / f"{node}.sock"


def listening_socket(node: str) -> socket.socket:
    """The Unix socket for `socket_path(node)`, bound (owner-only) and listening; sockets of nodes
    whose process is gone are removed first (a SIGKILLed node leaves its socket behind)."""
    directory = socket_dir()
    directory.mkdir(mode=0o700, exist_ok=True)
    for stale in directory.glob("*.sock"):
        pid = stale.name.split("-", 1)[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            with contextlib.suppress(OSError):
                stale.unlink()
    path = socket_path(node)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        os.chmod(path, 0o600)
        sock.listen(1024)
    except OSError:
        sock.close()
        raise
    return sock


class _Connection:
    __slots__ = ("idle_since", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = 0.0

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


class Forwarder:
    """Keep-alive HTTP/1.1 connections to the peers' Unix sockets (a LIFO of idle ones per peer).

    The other end is always a perdure node's uvicorn, so the exchange is written and read here in
    a few lines: the request's headers were already checked by this node's own HTTP parser."""

    def __init__(self, node: str) -> None:
        self.node = node.encode()
        self._idle: dict[Path, list[_Connection]] = {}

    async def forward(
        self,
        peer: Path,
        method: str,
        target: bytes,
        headers: Headers,
        body: bytes,
        *,
        invocation_id: str | None = None,
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """The peer's answer to the request: (status, headers, body). Raises `Unreachable` when
        nothing was sent, `Broken` when the answer was lost after the request was sent."""
        conn = await self._connection(peer)
        head = [method.encode(), b" ", target, b" HTTP/1.1\r\nhost: perdure-peer\r\n"]
        for name, value in headers:
            if name.lower() not in _HOP:
                head += (name, b": ", value, b"\r\n")
        head += (b"content-length: ", str(len(body)).encode(), b"\r\n", FORWARDED, b": ", self.node, b"\r\n")
        if invocation_id is not None:
            head += (ASSIGNED_ID, b": ", invocation_id.encode(), b"\r\n")
        head += (b"\r\n", body)
        try:
            conn.writer.write(b"".join(head))
            status, answer_headers, answer, keep = await _response(conn.reader)
        except (OSError, ValueError, IndexError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as e:
            conn.close()
            raise Broken(f"the connection to the node that runs the call's partition broke: {e!r}") from e
        if keep:
            conn.idle_since = time.monotonic()
            idle = self._idle.setdefault(peer, [])
            if len(idle) < _IDLE_KEPT:
                idle.append(conn)
            else:
                conn.close()
        else:
            conn.close()
        return status, answer_headers, answer

    async def _connection(self, peer: Path) -> _Connection:
        idle = self._idle.get(peer)
        while idle:
            conn = idle.pop()
            fresh = time.monotonic() - conn.idle_since < IDLE_REUSED_S
            if fresh and not conn.writer.is_closing() and not conn.reader.at_eof():
                return conn
            conn.close()
        try:
            reader, writer = await asyncio.open_unix_connection(str(peer), limit=_READ)
        except OSError as e:
            raise Unreachable(f"{peer}: {e}") from e
        return _Connection(reader, writer)

    def close(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()


async def _response(reader: asyncio.StreamReader) -> tuple[int, list[tuple[bytes, bytes]], bytes, bool]:
    """One HTTP/1.1 response: status, headers (lower-case names), body, and whether the connection
    stays open. Raises ValueError for what uvicorn would not send, IncompleteReadError on EOF."""
    lines = (await reader.readuntil(b"\r\n\r\n"))[:-4].split(b"\r\n")
    version, status, _ = lines[0].split(b" ", 2)
    if version != b"HTTP/1.1":
        raise ValueError(f"not an HTTP/1.1 response: {lines[0]!r}")
    headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon:
            raise ValueError(f"a malformed header line: {line!r}")
        headers.append((name.strip().lower(), value.strip()))
    fields = dict(headers)
    keep = fields.get(b"connection", b"").lower() != b"close"
    if b"content-length" in fields:
        return int(status), headers, await reader.readexactly(int(fields[b"content-length"])), keep
    if fields.get(b"transfer-encoding", b"").lower() != b"chunked":
        raise ValueError("a response without content-length or chunked encoding")
    chunks: list[bytes] = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")  # uvicorn sends no trailers: the empty line
            return int(status), headers, b"".join(chunks), keep
        chunks.append((await reader.readexactly(size + 2))[:-2])


def relayed(headers: Headers) -> list[tuple[bytes, bytes]]:
    """The peer's response headers to pass to the client (this server adds its own date, server
    and framing)."""
    return [(k, v) for k, v in headers if k not in _NOT_RELAYED]


#: Request headers of the client's hop, not passed on (the forwarder sets its own length and host).
_HOP = frozenset(
    {b"connection", b"content-length", b"host", b"keep-alive", b"transfer-encoding", b"te", b"upgrade"}
    | {FORWARDED, ASSIGNED_ID}
)
_NOT_RELAYED = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"date", b"server"})
