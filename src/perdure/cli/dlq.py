"""`perdure dlq …`: parked Kafka records (dead letters) over the admin API.

perdure dlq list [--subscription ID] [--key K] [--state parked|redriven|all]
perdure dlq show ID
perdure dlq redrive ID…  |  --key K [--subscription ID]  |  --subscription ID
perdure dlq discard ID…
"""

from __future__ import annotations

from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from .client import AdminClient, segment
from .manage import admin_options
from .output import CliError, Group, compact, console, print_json

HINT = "list them with `perdure dlq list`"


@click.group("dlq", cls=Group, short_help="List, re-drive and discard parked Kafka records.")
def dlq() -> None:
    """Kafka records parked by a subscription's `on.failure` policy (park or topic:NAME): their
    invocation failed for good and their key went on. After a fix, re-drive them: each runs once
    more, a key's records in their original order."""


def _row(d: dict[str, Any]) -> list[str]:
    redrives = d.get("redrives") or []
    last = redrives[-1] if redrives else None
    did = "—" if last is None else f"{last['invocation']} ({last.get('status') or '?'})"
    return [
        escape(str(d["id"])),
        escape(str(d["subscription"])),
        escape(f"{d['topic']}/{d['partition']}/{d['offset']}"),
        escape(str(d.get("key"))),
        escape(compact(str(d["error"]["message"]), 60)),
        str(d.get("attempts")),
        escape(str(d.get("state"))),
        escape(did),
    ]


@dlq.command("list")
@click.option("--subscription", metavar="ID", help="Only this subscription's records.")
@click.option("--key", metavar="KEY", help="Only records with this Kafka key (base64:… for bytes).")
@click.option(
    "--state",
    type=click.Choice(["parked", "redriven", "all"]),
    default="parked",
    show_default=True,
    help="parked: waiting; redriven: run again already.",
)
@click.option("--limit", type=int, default=100, show_default=True)
@admin_options
def dlq_list(
    subscription: str | None, key: str | None, state: str, limit: int, admin_url: str, as_json: bool
) -> None:
    """List parked records, in their original order (topic, partition, offset)."""
    params: dict[str, Any] = {"state": state, "limit": limit}
    if subscription:
        params["subscription"] = subscription
    if key is not None:
        params["key"] = key
    with AdminClient(admin_url) as admin:
        answer = admin.get("/dead-letters", **params)
    if as_json:
        print_json(answer)
        return
    letters = answer.get("dead_letters", [])
    out = console()
    if not letters:
        out.print("no parked records")
        return
    table = Table(
        "ID", "SUBSCRIPTION", "RECORD", "KEY", "ERROR", "ATTEMPTS", "STATE", "RE-DRIVEN AS",
        box=None, header_style="bold", pad_edge=False,
    )  # fmt: skip
    for d in letters:
        table.add_row(*_row(d))
    out.print(table)


@dlq.command("show")
@click.argument("invocation_id", metavar="ID")
@admin_options
def dlq_show(invocation_id: str, admin_url: str, as_json: bool) -> None:
    """Show one parked record: where it came from, its key, headers and value, the error, re-drives."""
    with AdminClient(admin_url) as admin:
        d = admin.get(f"/dead-letters/{segment(invocation_id)}", hints={404: HINT})
    if as_json:
        print_json(d)
        return
    out = console()
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="dim")
    facts.add_column()
    for name in ("id", "subscription", "target", "policy", "state", "parked_at", "attempts", "key", "value"):
        facts.add_row(name, escape(str(d.get(name))))
    facts.add_row("record", escape(f"{d['topic']}/{d['partition']}/{d['offset']}"))
    facts.add_row("error", f"[red]{escape(str(d['error']['code']))} {escape(str(d['error']['message']))}[/]")
    for name, value in (d.get("headers") or {}).items():
        facts.add_row(f"header {escape(name)}", escape(str(value)))
    if d.get("produced") is not None:
        facts.add_row("in dead-letter topic", "yes" if d["produced"] else "not yet")
    if d.get("redrive_of"):
        facts.add_row("re-drive of", escape(str(d["redrive_of"])))
    for r in d.get("redrives") or []:
        result = r.get("status") or "?"
        if r.get("error"):
            result += f": {r['error']['message']}"
        facts.add_row("re-driven", escape(f"{r['at']} as {r['invocation']} ({result})"))
    out.print(facts)


@dlq.command("redrive")
@click.argument("invocation_ids", metavar="[ID]...", nargs=-1)
@click.option("--subscription", metavar="ID", help="Every parked record of this subscription.")
@click.option("--key", metavar="KEY", help="Every parked record with this Kafka key.")
@admin_options
def dlq_redrive(
    invocation_ids: tuple[str, ...], subscription: str | None, key: str | None, admin_url: str, as_json: bool
) -> None:
    """Run parked records again (after a fix): by ID, all of a --key, or all of a --subscription.

    Records are re-driven in their original order, so one key's records run in it.
    """
    if invocation_ids and (subscription or key is not None):
        raise CliError("give IDs, or --key/--subscription, not both")
    if not invocation_ids and not subscription and key is None:
        raise CliError("which records? give IDs, --key KEY or --subscription ID (see `perdure dlq list`)")
    done: list[dict[str, str]] = []
    with AdminClient(admin_url) as admin:
        if invocation_ids:
            for invocation_id in invocation_ids:
                answer = admin.post(f"/dead-letters/{segment(invocation_id)}/redrive", {}, hints={404: HINT})
                done += answer.get("redriven", [])
        else:
            body: dict[str, str] = {}
            if subscription:
                body["subscription"] = subscription
            if key is not None:
                body["key"] = key
            done = admin.post("/dead-letters/redrive", body, hints={404: HINT}).get("redriven", [])
    if as_json:
        print_json({"redriven": done})
        return
    out = console()
    if not done:
        out.print("nothing to re-drive")
    for d in done:
        out.print(f"[green]re-driven[/] {escape(d['id'])} as {escape(d['invocation'])}")


@dlq.command("discard")
@click.argument("invocation_ids", metavar="ID...", nargs=-1, required=True)
@admin_options
def dlq_discard(invocation_ids: tuple[str, ...], admin_url: str, as_json: bool) -> None:
    """Give parked records up: they become ordinary failed invocations (kept for their retention)."""
    with AdminClient(admin_url) as admin:
        for invocation_id in invocation_ids:
            admin.post(f"/dead-letters/{segment(invocation_id)}/discard", {}, hints={404: HINT})
    if as_json:
        print_json({"discarded": list(invocation_ids)})
        return
    for invocation_id in invocation_ids:
        console().print(f"[yellow]discarded[/] {escape(invocation_id)}")
