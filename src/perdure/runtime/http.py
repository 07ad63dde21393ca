"""Serving ASGI apps (ingress, admin) with uvicorn on this event loop, next to the engine."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import uvicorn


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: the process owner (CLI, tests) decides on signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class Served:
    """A running server: its base URL, and `stop()`."""

    server: uvicorn.Server
    task: asyncio.Task[None]
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def stop(self) -> None:
        self.server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to (host, port), inheritable (worker processes may share it); port 0
    picks a free port. Raises OSError when the port is taken."""
    # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on sockets whose protocol is TCP,
    # and without it every response with a body waits ~40 ms for Nagle's algorithm.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


async def serve(
    app: Any,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    log_level: str = "warning",
    sock: socket.socket | None = None,
) -> Served:
    """Start serving `app`; port 0 picks a free port. Raises OSError when the port is taken.

    `sock`: serve on this bound socket instead (shared with other worker processes)."""
    if sock is None:
        sock = listening_socket(host, port)
    host, bound_port = sock.getsockname()[:2]
    # h11 always: uvicorn's "auto" would pick httptools where it happens to be installed (it comes
    # with uvicorn[standard]), and the ingress' request handling is tested on h11.
    config = uvicorn.Config(
        app, http="h11", log_level=log_level, lifespan="off", access_log=False, timeout_graceful_shutdown=5
    )
    server = _Server(config)
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]), name=f"http-{bound_port}")
    while not server.started:
        if task.done():
            task.result()  # raises the startup error
            raise RuntimeError(f"server on {host}:{bound_port} stopped during startup")
        await asyncio.sleep(0.005)
    logging.getLogger("perdure.http").debug("serving on %s:%d", host, bound_port)
    return Served(server, task, host, bound_port)
