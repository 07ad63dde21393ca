"""`perdure serve --workers N`: N member processes of one cluster on this machine, one event loop each.

The supervisor binds the ingress and admin ports once and starts N `perdure serve` processes that
share the two listening sockets (the kernel hands each connection to one of them); each process is
a node of the cluster on the PostgreSQL database, with its share of the partitions. Their output is
prefixed `[worker n]`; the supervisor prints its own banner once every worker is up. A worker that
dies is started again (after a second, then longer). The first SIGINT or SIGTERM is passed on to
every worker — each hands its partitions over and stops — and the supervisor exits when they have;
a second one kills them at once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import replace
from typing import IO

from rich.console import Console
from rich.markup import escape

from perdure.config import ENV_PREFIX, Settings, flag_name
from perdure.runtime.http import listening_socket

from .server import SHARED_FDS, SUPERVISOR_PID, StartupError

#: A worker that dies within this many seconds of its start counts as failing to start.
RESTART_BACKOFF_S = (1.0, 2.0, 5.0, 10.0)


def run(settings: Settings, console: Console) -> int:
    """Run `settings.workers` member processes until a signal; returns the exit status."""
    if not settings.cluster:
        raise StartupError(
            f"--workers {settings.workers} needs PostgreSQL: a SQLite database is written by one process"
            " (use --db postgresql://USER@HOST:PORT/DB, or drop --workers)"
        )
    sockets = {}
    for what, port, option in (
        ("ingress", settings.ingress_port, "ingress_port"),
        ("admin API", settings.admin_port, "admin_port"),
    ):
        try:
            sockets[what] = listening_socket(settings.host, port)
        except OSError as e:
            reason = "the port is in use" if e.errno in (48, 98, 10048) else (e.strerror or str(e))
            raise StartupError(
                f"cannot listen on {settings.host}:{port} for the {what}: {reason}. Stop the other process"
                f" or pick another port with {flag_name(option)} (0 picks a free one)"
            ) from None
    supervisor = _Supervisor(settings, sockets, console)
    return supervisor.run()


class _Supervisor:
    def __init__(self, settings: Settings, sockets: dict[str, socket.socket], console: Console) -> None:
        self.settings = settings
        self.sockets = sockets
        self.console = console
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.ready: set[int] = set()
        self.restarts: dict[int, int] = {}
        self.stopping = 0
        self.lock = threading.Lock()
        self.ports = {what: sock.getsockname()[1] for what, sock in sockets.items()}

    def env(self) -> dict[str, str]:
        env = {**os.environ, f"{ENV_PREFIX}WORKERS": "1", SUPERVISOR_PID: str(os.getpid())}
        for what, sock in self.sockets.items():
            env[SHARED_FDS[what]] = str(sock.fileno())
        return env

    def spawn(self, n: int) -> None:
        settings = replace(self.settings, workers=1)
        command = [sys.executable, "-m", "perdure.cli", "serve", "--db", settings.db]
        if settings.app is not None:
            command += ["--app", settings.app]
        if settings.partitions:
            command += ["--partitions", str(settings.partitions)]
        for entry in settings.kafka:
            command += ["--kafka", entry]
        command += ["--log-level", settings.log_level, "--drain-timeout", str(settings.drain_timeout)]
        command += ["--console" if settings.console else "--no-console"]
        fds = tuple(sock.fileno() for sock in self.sockets.values())
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, env=self.env(), pass_fds=fds)
        self.procs[n] = proc
        threading.Thread(target=self.relay, args=(n, proc), daemon=True).start()

    def relay(self, n: int, proc: subprocess.Popen[bytes]) -> None:
        """Print a worker's output, prefixed; note when its banner is complete."""
        stream: IO[bytes] | None = proc.stdout
        assert stream is not None
        for raw in stream:
            line = raw.decode(errors="replace").rstrip("\n")
            print(f"[worker {n}] {line}", flush=True)
            if line.startswith("Ctrl-C or SIGTERM"):
                with self.lock:
                    self.ready.add(n)

    def run(self) -> int:
        previous = {sig: signal.signal(sig, self.on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            for n in range(self.settings.workers):
                self.spawn(n)
            self.wait_ready()
            return self.supervise()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        while len(self.ready) < self.settings.workers and not self.stopping and time.monotonic() < deadline:
            dead = [n for n, p in self.procs.items() if p.poll() is not None]
            if dead:
                self.stop_all(signal.SIGTERM)
                raise StartupError(
                    f"worker {dead[0]} exited with status {self.procs[dead[0]].returncode} at start"
                )
            time.sleep(0.05)
        host = self.settings.host
        lines = [
            f"[bold green]perdure serve --workers {self.settings.workers}[/] [dim]pid {os.getpid()}[/]",
            f"  workers   {', '.join(str(p.pid) for p in self.procs.values())}",
            f"  ingress   [cyan]http://{host}:{self.ports['ingress']}[/]",
            f"  admin     [cyan]http://{host}:{self.ports['admin API']}[/]",
            f"  database  {escape(self.settings.db)} [dim](postgresql; one node per worker)[/]",
            "[dim]Ctrl-C or SIGTERM hands the workers' partitions over and stops; a second kills them.[/]",
        ]
        for line in lines:
            self.console.print(line, soft_wrap=True, highlight=False)
        sys.stdout.flush()

    def supervise(self) -> int:
        while True:
            for n, proc in list(self.procs.items()):
                if proc.poll() is None:
                    continue
                if self.stopping:
                    continue
                tries = self.restarts.get(n, 0)
                delay = RESTART_BACKOFF_S[min(tries, len(RESTART_BACKOFF_S) - 1)]
                self.console.print(
                    f"[yellow]worker {n} (pid {proc.pid}) exited with status {proc.returncode};"
                    f" starting it again in {delay:g} s[/]",
                    highlight=False,
                )
                self.restarts[n] = tries + 1
                time.sleep(delay)
                if not self.stopping:
                    self.spawn(n)
            if self.stopping and all(p.poll() is not None for p in self.procs.values()):
                codes = {p.returncode for p in self.procs.values()}
                self.console.print("[green]stopped cleanly[/]" if codes == {0} else "[yellow]stopped[/]")
                return 0 if codes == {0} else 1
            time.sleep(0.05)

    def on_signal(self, signum: int, frame: object) -> None:
        self.stopping += 1
        self.stop_all(signal.SIGTERM if self.stopping == 1 else signal.SIGKILL)

    def stop_all(self, sig: signal.Signals) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, sig)
