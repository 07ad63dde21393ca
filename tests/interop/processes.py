"""Deployments as real processes: an ASGI app under hypercorn on a free loopback port.

served = Hypercorn("tests.interop.official_services:app")
served.start()            # waits until GET /discover answers
served.kill()             # SIGKILL, like a crash
served.start()            # the same port again
served.stop()
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def die_with_parent() -> None:
    """In a child before exec: SIGTERM it if the test process dies without stopping it (Linux)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def with_group(pid: int, sig: signal.Signals) -> None:
    """Signal the process group led by `pid` (our child started it with `start_new_session`)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


class Hypercorn:
    def __init__(self, app: str, *, env: Mapping[str, str] | None = None, port: int | None = None) -> None:
        self.app = app
        self.env = dict(env or {})
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, timeout: float = 20.0) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT), **self.env}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "hypercorn", self.app, "--bind", f"127.0.0.1:{self.port}"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                raise RuntimeError(f"hypercorn {self.app} exited: {err[-2000:]}")
            try:
                if httpx.get(self.url + "/discover", timeout=1.0).status_code < 500:
                    return
            except httpx.HTTPError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"hypercorn {self.app} did not answer on {self.url} within {timeout} s")

    def kill(self) -> None:
        """SIGKILL the whole process group (no graceful shutdown)."""
        if self.process is not None and self.process.poll() is None:
            with_group(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        self.process = None

    def stop(self) -> None:
        """SIGINT: the Restate SDK takes over SIGTERM once it has served a request."""
        if self.process is not None and self.process.poll() is None:
            with_group(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                with_group(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self.process = None
