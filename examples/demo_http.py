"""The HTTP tour: `perdure dev` on the user-updates example, called over HTTP like any service.

It starts `perdure dev examples/user_updates.py:app` (ports 8080/9070, or free ones if those are
taken), waits until it is healthy, then makes a few HTTP calls — a call, a delayed send, a call with
an idempotency key made twice, an attach, a rejected input — printing each as the `curl` command
that does the same, with the answer. It shows every user's state through the admin API and the
invocations with `perdure invocations list`, then leaves the server running for you to curl until
Ctrl-C (or stops it at once with --exit).

    python3 dev.py demo --http           # or: .venv/bin/python examples/demo.py --http [--exit]
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from demo_support import console, perdure_command, run_cli, show, start_server, supervise, wait_healthy
from rich.markup import escape

from perdure.cli.sample import curl_line


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

        for user in ("alice", "bob", "carol", "dave"):
            failed = " (its update failed: nothing stored)" if user == "dave" else ""
            show(
                http,
                f"{user}'s state, read through the admin API{failed}",
                f"{admin}/state/userUpdates/{user}",
                method="GET",
            )

    console.print("\n[bold]The invocations, as the management command shows them[/]")
    run_cli("invocations", "list", "--admin-url", admin)


def hints(ingress: str, admin: str, admin_port: int) -> list[str]:
    erin = {"profile": {"name": "erin"}, "permissions": ["read"]}
    try_it = curl_line(
        f"{ingress}/userUpdates/erin/updateUserEvent",
        body=json.dumps(erin).encode(),
        content_type="application/json",
    )
    env_hint = "" if admin_port == 9070 else f"   [dim](or export PERDURE_ADMIN_URL={admin})[/]"
    return [
        f"[cyan]{escape(try_it)}[/]",
        f"[cyan]{perdure_command()} invocations list --admin-url {admin}[/]{env_hint}",
    ]


def main(db: Path, ingress_port: int, admin_port: int, *, exit_now: bool) -> None:
    ingress, admin = f"http://127.0.0.1:{ingress_port}", f"http://127.0.0.1:{admin_port}"
    ports = ["--ingress-port", str(ingress_port), "--admin-port", str(admin_port)]
    server = start_server(db, ports)

    def tour() -> list[str]:
        wait_healthy(server, ingress, admin)
        showcase(ingress, admin)
        return hints(ingress, admin, admin_port)

    supervise(server, tour, exit_now=exit_now)
