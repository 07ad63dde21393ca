"""Serving ASGI apps (ingress, admin) with uvicorn on this event loop, next to the engine.

uvicorn parses HTTP/1.1 with `httptools` (C, from `pip install 'perdure[fast]'`) where it is
installed, else with `h11` (pure Python): httptools costs ~70–90 µs less engine CPU per call
(docs/performance.md). `PERDURE_HTTP=h11|httptools` chooses; naming httptools when it is not
installed fails at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import uvicorn

#: The environment variable naming the servers' HTTP/1.1 parser: `httptools`, `h11` or unset.
PARSER_ENV = "PERDURE_HTTP"
PARSERS = ("httptools", "h11")


class ParserError(RuntimeError):
    """`PERDURE_HTTP` names a parser that cannot be used (unknown, or httptools not installed).
    Raised at start, before anything runs; not retriable: fix the environment."""


def parser(env: dict[str, str] | os._Environ[str] | None = None) -> str:
    """The HTTP/1.1 parser to serve with: `PERDURE_HTTP` if set, else `httptools` when it is
    importable, else `h11`."""
    value = (env if env is not None else os.environ).get(PARSER_ENV, "").strip().lower()
    if value and value not in PARSERS:
        raise ParserError(f"{PARSER_ENV}={value!r}: expected one of {', '.join(PARSERS)}")
    if value == "h11":
        return "h11"
    try:
        import httptools  # noqa: F401
    except ImportError:
        if value == "httptools":
            raise ParserError(
                f"{PARSER_ENV}=httptools but httptools is not installed:"
                f" pip install 'perdure[fast]' (or unset {PARSER_ENV})"
            ) from None
        return "h11"
    return "httptools"


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
        return f"unix:{self.host}" if self.port == 0 else f"http://{self.host}:{self.port}"

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
    if sock.family == socket.AF_UNIX:
        host, bound_port = sock.getsockname(), 0  # a Unix socket: its path
    else:
        host, bound_port = sock.getsockname()[:2]
    config = uvicorn.Config(
        app, http=parser(), log_level=log_level, lifespan="off", access_log=False, timeout_graceful_shutdown=5
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
