"""`perdure dev` / `perdure serve` as real subprocesses on free loopback ports, stopped by pid."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

START_TIMEOUT_S = 30.0
_URL = re.compile(r"^\s+(ingress|admin)\s+(http://\S+)\s*$")


class Server:
    """One `perdure ARGS...` server process (`dev` or `serve`).

    Its stdout is read line by line by a thread (so the pipe never fills); stderr goes to a file.
    `start()` returns once the whole banner is out, i.e. once both servers listen.
    """

    def __init__(self, args: list[str], *, stderr: Path, cwd: Path | None = None) -> None:
        self.command = [sys.executable, "-m", "perdure.cli", *args]
        self.cwd = cwd
        self.stderr_path = stderr
        self.lines: list[str] = []
        self.urls: dict[str, str] = {}
        self._ready = threading.Event()
        self._reader: threading.Thread | None = None
        self.proc: subprocess.Popen[str] | None = None

    def start(self, env: dict[str, str] | None = None) -> Server:
        with self.stderr_path.open("a") as err:
            self.proc = subprocess.Popen(
                self.command,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                env={**os.environ, **(env or {})},
                cwd=self.cwd,
            )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._ready.wait(START_TIMEOUT_S) or len(self.urls) < 2:
            self.kill()
            raise AssertionError(f"{self.command[3:5]} did not start:\n{self.output}\n{self.stderr}")
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            match = _URL.match(line)
            if match:
                self.urls[match.group(1)] = match.group(2)
            if line.startswith("Ctrl-C or SIGTERM"):  # the banner's last line
                self._ready.set()
        self.proc.stdout.close()
        self._ready.set()  # EOF: the process ended

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def ingress(self) -> str:
        return self.urls["ingress"]

    @property
    def admin(self) -> str:
        return self.urls["admin"]

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text() if self.stderr_path.exists() else ""

    def healthy(self) -> bool:
        try:
            ingress = httpx.get(self.ingress + "/restate/health", timeout=2)
            admin = httpx.get(self.admin + "/health", timeout=2)
        except httpx.HTTPError:
            return False
        return ingress.status_code == 200 and admin.status_code == 200

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 15.0) -> tuple[int, float]:
        """Send `sig` and wait; returns (exit code, seconds it took). Kills it if it hangs."""
        assert self.proc is not None
        started = time.monotonic()
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"the server ignored {sig.name} for {timeout} s:\n{self.output}") from None
        seconds = time.monotonic() - started
        self._join()
        return code, seconds

    def _join(self) -> None:
        if self._reader is not None:
            self._reader.join(5)  # the rest of stdout, then the pipe is closed

    def kill(self) -> None:
        """SIGKILL by pid and reap (safe to call twice)."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self._join()


class DevServer(Server):
    """`perdure dev APP --db DB --ingress-port 0 --admin-port 0 [ARGS]`."""

    def __init__(self, app: str, db: Path, *, stderr: Path, args: tuple[str, ...] = ()) -> None:
        super().__init__(
            ["dev", app, "--db", str(db), "--ingress-port", "0", "--admin-port", "0", *args], stderr=stderr
        )


SEED_EXAMPLE = str(Path(__file__).resolve().parents[2] / "examples" / "user_updates.py") + ":app"


def seed_example_through_dev(tmp_path: Path, env: dict[str, str]) -> str:
    """Run examples/user_updates.py through `perdure dev` with `env`: two calls, then SIGTERM and a
    clean exit. Returns the banner's first line (it names the loop and the HTTP parser)."""
    server = DevServer(SEED_EXAMPLE, tmp_path / "dev.db", stderr=tmp_path / "err").start(env)
    try:
        for key in ("alice", "bob"):
            response = httpx.post(
                f"{server.ingress}/userUpdates/{key}/updateUserEvent",
                json={"profile": {"name": key}, "permissions": ["read"], "resources": ["disk"]},
                timeout=10,
            )
            assert response.status_code == 200, response.text
            assert response.json() == "role-read"
        code, _ = server.stop(signal.SIGTERM)
    finally:
        server.kill()
    assert code == 0, server.stderr
    assert "Traceback" not in server.stderr
    return server.lines[0]


def refused_without(module: str, tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`perdure dev` of the seed example with `module` hidden (importing it fails), under `env`."""
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / f"{module}.py").write_text("raise ImportError('hidden by the test')\n")
    return subprocess.run(
        [sys.executable, "-m", "perdure.cli", "dev", SEED_EXAMPLE, "--db", str(tmp_path / "x.db")],
        env={"PYTHONPATH": str(shadow), "PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
