"""What the guided demos share: `perdure dev` as a child process, and requests shown as curl lines."""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.markup import escape

from perdure.cli.sample import curl_line

ROOT = Path(__file__).resolve().parent.parent
APP = "examples/user_updates.py:app"
HEALTH_TIMEOUT_S = 30.0

console = Console(highlight=False, soft_wrap=True)


def port_or_free(port: int) -> int:
    """`port` when nothing listens there on 127.0.0.1, else a free one."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def free_ports(*wanted: int) -> list[int]:
    """One port per wish (`port_or_free`), all different."""
    ports: list[int] = []
    for port in wanted:
        got = port_or_free(port)
        while got in ports:
            got = port_or_free(0)
        ports.append(got)
    return ports


def start_server(db: Path, extra: list[str]) -> subprocess.Popen[bytes]:
    """`perdure dev APP --db DB EXTRA...` in its own process group: Ctrl-C reaches the demo, which
    forwards it once."""
    for stale in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        stale.unlink(missing_ok=True)  # a fresh journal for every demo run
    args = ["dev", APP, "--db", str(db), *extra]
    console.print(f"[dim]$ perdure {' '.join(args)}[/]")
    return subprocess.Popen([sys.executable, "-m", "perdure.cli", *args], cwd=ROOT, start_new_session=True)


def wait_healthy(server: subprocess.Popen[bytes], ingress: str, admin: str) -> None:
    deadline = time.monotonic() + HEALTH_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"perdure dev exited with status {server.returncode} before it was ready")
        with contextlib.suppress(httpx.HTTPError):
            if (
                httpx.get(f"{ingress}/restate/health", timeout=1).status_code == 200
                and httpx.get(f"{admin}/health", timeout=1).status_code == 200
            ):
                return
        time.sleep(0.05)
    server.kill()
    sys.exit(f"perdure dev was not healthy after {HEALTH_TIMEOUT_S:g} s")


def show(
    http: httpx.Client,
    title: str,
    url: str,
    *,
    method: str = "POST",
    body: Any = None,
    headers: dict[str, str] | None = None,
    shown_headers: tuple[str, ...] = (),
) -> httpx.Response:
    """Make one request, printing it as a curl line and then the answer."""
    data = None if body is None else json.dumps(body).encode()
    content_type = None if body is None else "application/json"
    console.print(f"\n[bold]{escape(title)}[/]")
    line = curl_line(url, method=method, body=data, content_type=content_type, headers=headers)
    console.print(f"[cyan]$ {escape(line)}[/]")
    response = http.request(
        method,
        url,
        content=data,
        headers={**(headers or {}), **({"content-type": content_type} if content_type else {})},
    )
    style = "green" if response.is_success else "yellow"
    extra = "".join(
        f"  {name}: {response.headers[name]}" for name in shown_headers if name in response.headers
    )
    console.print(f"[{style}]{response.status_code}[/] {escape(response.text)}[dim]{escape(extra)}[/]")
    return response


def run_cli(*args: str) -> None:
    """Run a `perdure` management command, printed first as typed."""
    console.print(f"[cyan]$ perdure {escape(' '.join(_quote(a) for a in args))}[/]")
    sys.stdout.flush()
    subprocess.run([sys.executable, "-m", "perdure.cli", *args], check=False)


def _quote(arg: str) -> str:
    return f'"{arg}"' if " " in arg else arg


def interrupt(signum: int, frame: object) -> None:
    """SIGTERM to the demo stops the server the same way Ctrl-C does."""
    raise KeyboardInterrupt


def perdure_command() -> str:
    """How to type `perdure` here: plain when it is on PATH, else the venv's script."""
    script = Path(sys.executable).parent / "perdure"
    found = shutil.which("perdure")
    if found is not None and Path(found).resolve() == script.resolve():
        return "perdure"
    with contextlib.suppress(ValueError):
        return str(script.relative_to(Path.cwd()))
    return str(script)


def stop(server: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> int:
    if server.poll() is None:
        server.send_signal(sig)
    try:
        return server.wait(30)
    except subprocess.TimeoutExpired:
        server.kill()
        return server.wait()


def supervise(server: subprocess.Popen[bytes], showcase: Callable[[], list[str]], *, exit_now: bool) -> None:
    """Run `showcase` against the started server; then stop it (`exit_now`, for tests) or print the
    hints `showcase` returned and keep it up until Ctrl-C, which is forwarded once (a second one
    makes perdure dev exit at once). Exits the demo with perdure dev's status."""
    signal.signal(signal.SIGTERM, interrupt)
    try:
        hints = showcase()
        if exit_now:
            console.print("\n[dim]--exit: stopping perdure dev (SIGTERM)[/]")
            code = stop(server)
            console.print(f"perdure dev exited with status {code}")
            sys.exit(code)
        console.print("\n[bold green]perdure dev keeps running.[/] Try it:")
        for hint in hints:
            console.print(f"  {hint}")
        console.print("Ctrl-C stops it (running attempts finish first).")
        while server.poll() is None:
            time.sleep(0.2)
    except KeyboardInterrupt:
        server.send_signal(signal.SIGINT)  # forwarded once: perdure dev drains and stops
        try:
            code = server.wait(30)
        except KeyboardInterrupt:  # a second Ctrl-C: perdure dev exits at once
            server.send_signal(signal.SIGINT)
            code = server.wait()
        sys.exit(0 if code == 0 else code)
    finally:
        if server.poll() is None:
            stop(server)
