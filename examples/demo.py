"""The guided demo: `perdure dev` on the user-updates example, called over HTTP like any service.

It starts `perdure dev examples/user_updates.py:app` (ports 8080/9070, or free ones if those are
taken), waits until it is healthy, then makes a few HTTP calls — a call, a delayed send, a call with
an idempotency key made twice, an attach, a rejected input — printing each as the `curl` command
that does the same, with the answer. It shows every user's state through the admin API and the
invocations with `perdure invocations list`, then leaves the server running for you to curl until
Ctrl-C (or stops it at once with --exit).

    python3 dev.py demo                  # or: .venv/bin/python examples/demo.py [--exit]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.markup import escape
from rich.table import Table

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


def start_server(db: Path, ingress_port: int, admin_port: int) -> subprocess.Popen[bytes]:
    """`perdure dev` in its own process group: Ctrl-C reaches the demo, which forwards it once."""
    for stale in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        stale.unlink(missing_ok=True)  # a fresh journal for every demo run
    command = [sys.executable, "-m", "perdure.cli", "dev", APP, "--db", str(db)]
    command += ["--ingress-port", str(ingress_port), "--admin-port", str(admin_port)]
    console.print(
        f"[dim]$ perdure dev {APP} --db {db} --ingress-port {ingress_port} --admin-port {admin_port}[/]"
    )
    return subprocess.Popen(command, cwd=ROOT, start_new_session=True)


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


def showcase(ingress: str, admin: str) -> None:
    update = {"profile": {"name": "alice"}, "permissions": ["read", "write"], "resources": ["disk-1"]}
    with httpx.Client(timeout=30) as http:
        show(
            http,
            "A call: the handler runs, its steps are journaled, the caller gets the result",
            f"{ingress}/userUpdates/alice/updateUserEvent",
            body=update,
        )
        bob = {"profile": {"name": "bob"}, "permissions": ["read"], "resources": ["disk-2"]}
        sent = show(
            http,
            "A send with a delay: accepted durably now (202), runs in 2 seconds — even across a restart",
            f"{ingress}/userUpdates/bob/updateUserEvent/send?delay=2s",
            body=bob,
        )
        carol = {"profile": {"name": "carol"}, "permissions": ["admin"], "resources": []}
        for attempt in ("once", "twice: the same invocation answers, the handler does not run again"):
            show(
                http,
                f"A call with an idempotency key, {attempt}",
                f"{ingress}/userUpdates/carol/updateUserEvent",
                body=carol,
                headers={"idempotency-key": "carol-signup-1"},
                shown_headers=("x-restate-id",),
            )
        show(
            http,
            "A bad input fails for good (TerminalError → HTTP 400, never retried)",
            f"{ingress}/userUpdates/dave/updateUserEvent",
            body={"profile": {}},
        )
        invocation_id = sent.json()["invocationId"]
        show(
            http,
            "Attach to the delayed send: waits until it has run, then returns its result",
            f"{ingress}/restate/invocation/{invocation_id}/attach",
            method="GET",
        )

        console.print("\n[bold]Per-user state, read through the admin API[/]")
        table = Table(
            "user", "state (GET /state/userUpdates/{user})", box=None, header_style="bold", pad_edge=False
        )
        for user in ("alice", "bob", "carol", "dave"):
            state = http.get(f"{admin}/state/userUpdates/{user}").json()["state"]
            table.add_row(user, json.dumps(state) if state else "[dim]none: the update failed[/]")
        console.print(f"[cyan]$ curl {admin}/state/userUpdates/alice[/]")
        console.print(table)

    console.print("\n[bold]The invocations, as the management command shows them[/]")
    console.print(f"[cyan]$ perdure invocations list --admin-url {admin}[/]")
    sys.stdout.flush()
    subprocess.run(
        [sys.executable, "-m", "perdure.cli", "invocations", "list", "--admin-url", admin], check=False
    )


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exit", action="store_true", help="stop the server after the showcase")
    parser.add_argument(
        "--db", type=Path, default=ROOT / ".perdure" / "demo.db", help="the demo's SQLite file (recreated)"
    )
    parser.add_argument("--ingress-port", type=int, default=8080, help="used if free, else a free port")
    parser.add_argument("--admin-port", type=int, default=9070, help="used if free, else a free port")
    args = parser.parse_args()

    ingress_port = port_or_free(args.ingress_port)
    admin_port = port_or_free(args.admin_port)
    if admin_port == ingress_port:
        admin_port = port_or_free(0)
    ingress, admin = f"http://127.0.0.1:{ingress_port}", f"http://127.0.0.1:{admin_port}"
    signal.signal(signal.SIGTERM, interrupt)
    server = start_server(args.db, ingress_port, admin_port)
    try:
        wait_healthy(server, ingress, admin)
        showcase(ingress, admin)
        if args.exit:
            console.print("\n[dim]--exit: stopping perdure dev (SIGTERM)[/]")
            code = stop(server)
            console.print(f"perdure dev exited with status {code}")
            sys.exit(code)
        erin = {"profile": {"name": "erin"}, "permissions": ["read"]}
        try_it = curl_line(
            f"{ingress}/userUpdates/erin/updateUserEvent",
            body=json.dumps(erin).encode(),
            content_type="application/json",
        )
        env_hint = "" if admin_port == 9070 else f"   [dim](or export PERDURE_ADMIN_URL={admin})[/]"
        console.print(
            "\n[bold green]perdure dev keeps running.[/] Try it:\n"
            f"  [cyan]{escape(try_it)}[/]\n"
            f"  [cyan]{perdure_command()} invocations list --admin-url {admin}[/]{env_hint}\n"
            "Ctrl-C stops it (running attempts finish first)."
        )
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


if __name__ == "__main__":
    os.chdir(ROOT)
    main()
