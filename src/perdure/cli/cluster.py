"""`perdure cluster`: the nodes of the server's cluster, who runs which partition, and the backlog."""

from __future__ import annotations

from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from .client import AdminClient
from .manage import admin_options
from .output import console, print_json


def _ranges(numbers: list[int]) -> str:
    out: list[str] = []
    for n in sorted(numbers):
        if out and out[-1].split("-")[-1] == str(n - 1):
            out[-1] = f"{out[-1].split('-')[0]}-{n}"
        else:
            out.append(str(n))
    return ", ".join(out) or "—"


@click.command(short_help="The cluster's nodes, partition owners and per-partition backlog.")
@admin_options
def cluster(admin_url: str, as_json: bool) -> None:
    """The nodes of the server's cluster (every server on one PostgreSQL database), the partitions
    each runs, and the deliveries waiting per partition. A server on SQLite is a cluster of one.

    \b
      perdure cluster
      perdure cluster --admin-url http://127.0.0.1:9071 --json
    """
    with AdminClient(admin_url) as admin:
        answer: dict[str, Any] = admin.get("/cluster")
    if as_json:
        print_json(answer)
        return
    out = console()
    node = escape(str(answer["node"]))
    summary = f"{answer['mode']} — {answer['partitions']} partitions; answered by node {node}"
    out.print(summary, highlight=False)
    table = Table(box=None, header_style="bold")
    for column in ("node", "alive", "host", "pid", "partitions", "ingress", "admin"):
        table.add_column(column)
    for node in answer["nodes"]:
        table.add_row(
            escape(str(node["node"])),
            "[green]yes[/]" if node["alive"] else "[red]no[/]",
            escape(str(node.get("host", ""))),
            str(node.get("pid", "")),
            _ranges(node.get("partitions", [p["partition"] for p in answer["leases"]])),
            escape(str(node.get("ingress_url", ""))),
            escape(str(node.get("admin_url", ""))),
        )
    out.print(table)
    free = [lease["partition"] for lease in answer["leases"] if lease["node"] is None]
    if free:
        out.print(f"[yellow]partitions no node runs: {_ranges(free)}[/]")
    backlog = {int(p): n for p, n in answer.get("backlog", {}).items() if n}
    if backlog:
        waiting = ", ".join(f"{p}: {n}" for p, n in sorted(backlog.items()))
        out.print(f"deliveries waiting per partition: {waiting}")
