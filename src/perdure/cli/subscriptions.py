"""Kafka commands over the admin API: `perdure kafka-clusters …` and `perdure subscriptions …`.

perdure kafka-clusters add local 127.0.0.1:9092
perdure subscriptions create kafka://local/user-updates service://userUpdates/updateUserEvent \\
    --option auto.offset.reset=earliest
perdure subscriptions list          # per partition: offset, high watermark, lag, in flight, paused
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click
import httpx
from rich.markup import escape
from rich.table import Table

from .client import AdminClient, segment
from .manage import admin_options
from .output import CliError, Group, compact, console, print_json

CLUSTERS_HINT = "list them with `perdure kafka-clusters list`"
SUBSCRIPTIONS_HINT = "list them with `perdure subscriptions list`"
STATE_STYLES = {
    "running": "green",
    "starting": "blue",
    "retrying": "yellow",
    "error": "red",
    "stopped": "dim",
}

#: Fixes for 400 answers, chosen by what the message says (the status alone does not tell).
_BAD_REQUEST_FIXES = (
    ("unknown Kafka cluster", "add it with `perdure kafka-clusters add NAME HOST:PORT`"),
    ("no handler", "see the handlers with `perdure services list`"),
    ("kafka://CLUSTER/TOPIC", "e.g. kafka://local/user-updates"),
    ("service://SERVICE/HANDLER", "e.g. service://userUpdates/updateUserEvent"),
    ("Kafka option", "options are librdkafka consumer properties; docs/admin.md lists them"),
    ("must be", "fix the --option or --property value"),
)


class Client(AdminClient):
    """`AdminClient` that remembers the last status (201 created vs 200 already there) and knows DELETE."""

    status = 0

    def __enter__(self) -> Client:
        return self

    def _decode(self, method: str, path: str, response: httpx.Response, hints: Mapping[int, str]) -> Any:
        self.status = response.status_code
        if response.status_code == 400 and 400 not in hints:
            message = str(response.json().get("message", "")) if _is_json(response) else ""
            fix = next((f for marker, f in _BAD_REQUEST_FIXES if marker in message), None)
            hints = {**hints, 400: fix} if fix else hints
        return super()._decode(method, path, response, hints)

    def delete(self, path: str, *, hints: Mapping[int, str] | None = None) -> Any:
        return self.request("DELETE", path, hints=hints)


def _is_json(response: httpx.Response) -> bool:
    try:
        return isinstance(response.json(), dict)
    except ValueError:
        return False


def _pairs(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, str]:
    """`--option k=v` given several times → {k: v}."""
    out: dict[str, str] = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise click.BadParameter(f"expected KEY=VALUE, not {item!r} (e.g. auto.offset.reset=earliest)")
        out[name.strip()] = value
    return out


def _properties(values: Mapping[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items())


# ---- kafka-clusters


@click.group("kafka-clusters", cls=Group, short_help="Add, list and remove Kafka clusters.")
def kafka_clusters() -> None:
    """The Kafka clusters subscriptions read from (name → bootstrap servers and client properties)."""


@kafka_clusters.command("add")
@click.argument("name")
@click.argument("bootstrap", metavar="BOOTSTRAP")
@click.option(
    "--property",
    "properties",
    multiple=True,
    callback=_pairs,
    metavar="KEY=VALUE",
    help="Another client property, e.g. security.protocol=SASL_SSL (repeatable).",
)
@click.option("--replace", is_flag=True, help="Change the properties of an existing cluster.")
@admin_options
def clusters_add(
    name: str, bootstrap: str, properties: dict[str, str], replace: bool, admin_url: str, as_json: bool
) -> None:
    """Add a Kafka cluster NAME at BOOTSTRAP (HOST:PORT[,HOST:PORT…]).

    \b
      perdure kafka-clusters add local 127.0.0.1:9092
      perdure kafka-clusters add prod b1:9092,b2:9092 --property security.protocol=SASL_SSL
    """
    if "bootstrap.servers" in properties:
        raise CliError("give the bootstrap servers once, as BOOTSTRAP — not also as --property")
    props = {"bootstrap.servers": bootstrap, **properties}
    with Client(admin_url) as admin:
        exists = replace and any(
            c.get("name") == name for c in admin.get("/kafka-clusters").get("clusters", [])
        )
        if exists:
            answer = admin.request("PATCH", f"/kafka-clusters/{segment(name)}", json={"properties": props})
        else:
            hint = f"to change it: perdure kafka-clusters add {name} {bootstrap} --replace"
            answer = admin.post("/kafka-clusters", {"name": name, "properties": props}, hints={409: hint})
    if as_json:
        print_json(answer)
        return
    what = f"Kafka cluster [bold]{escape(name)}[/] ({escape(_properties(props))})"
    if exists:
        console().print(f"[green]changed[/] {what}")
    elif admin.status == 201:
        console().print(f"[green]added[/] {what}")
    else:
        console().print(f"{what} was already there")


@kafka_clusters.command("list")
@admin_options
def clusters_list(admin_url: str, as_json: bool) -> None:
    """List the Kafka clusters with their properties and how many subscriptions use each."""
    with Client(admin_url) as admin:
        answer = admin.get("/kafka-clusters")
        clusters = answer.get("clusters", []) if isinstance(answer, dict) else []
        subs = admin.get("/subscriptions").get("subscriptions", []) if clusters and not as_json else []
    if as_json:
        print_json(answer)
        return
    out = console()
    if not clusters:
        out.print("no Kafka clusters; add one with `perdure kafka-clusters add NAME HOST:PORT`")
        return
    table = Table(
        "NAME",
        "BOOTSTRAP SERVERS",
        "PROPERTIES",
        "SUBSCRIPTIONS",
        box=None,
        header_style="bold",
        pad_edge=False,
    )
    for cluster in clusters:
        props = dict(cluster.get("properties") or {})
        bootstrap = props.pop("bootstrap.servers", "")
        used = sum(1 for s in subs if str(s.get("source", "")).startswith(f"kafka://{cluster.get('name')}/"))
        table.add_row(
            f"[bold]{escape(str(cluster.get('name')))}[/]",
            escape(str(bootstrap)),
            escape(_properties(props)),
            str(used),
        )
    out.print(table)


@kafka_clusters.command("remove")
@click.argument("name")
@admin_options
def clusters_remove(name: str, admin_url: str, as_json: bool) -> None:
    """Remove the Kafka cluster NAME (its subscriptions must be deleted first)."""
    hints = {
        404: CLUSTERS_HINT,
        409: "`perdure subscriptions delete ID` for each",
    }
    with Client(admin_url) as admin:
        answer = admin.delete(f"/kafka-clusters/{segment(name)}", hints=hints)
    if as_json:
        print_json(answer)
        return
    console().print(f"[green]removed[/] Kafka cluster [bold]{escape(name)}[/]")


# ---- subscriptions


@click.group(cls=Group, short_help="Subscribe handlers to Kafka topics; offsets and lag.")
def subscriptions() -> None:
    """Kafka subscriptions: every record of a topic becomes one invocation of a handler."""


@subscriptions.command("create")
@click.argument("source")
@click.argument("sink")
@click.option(
    "--option",
    "options",
    multiple=True,
    callback=_pairs,
    metavar="KEY=VALUE",
    help="A consumer option, e.g. auto.offset.reset=earliest (repeatable).",
)
@admin_options
def subscriptions_create(
    source: str, sink: str, options: dict[str, str], admin_url: str, as_json: bool
) -> None:
    """Subscribe SINK (service://SERVICE/HANDLER) to SOURCE (kafka://CLUSTER/TOPIC).

    Without auto.offset.reset=earliest only records produced after the subscription starts are
    consumed (Restate's default). Creating the same subscription again changes nothing.

    \b
      perdure subscriptions create kafka://local/user-updates \\
          service://userUpdates/updateUserEvent --option auto.offset.reset=earliest
    """
    body = {"source": source, "sink": sink, "options": options}
    with Client(admin_url) as admin:
        sub = admin.post(
            "/subscriptions",
            body,
            hints={409: "`perdure subscriptions delete ID`, then create it again"},
        )
    if as_json:
        print_json(sub)
        return
    what = (
        f"subscription [bold]{escape(str(sub.get('id')))}[/] "
        f"{escape(str(sub.get('source')))} → {escape(str(sub.get('sink')))}"
    )
    out = console()
    out.print(f"[green]created[/] {what}" if admin.status == 201 else f"{what} was already there")
    out.print(f"  options: {escape(_properties(sub.get('options') or {}))}")


def _state(sub: Mapping[str, Any]) -> str:
    state = str(sub.get("status") or "")
    return f"[{STATE_STYLES.get(state, 'white')}]{escape(state)}[/]"


def _number(value: Any) -> str:
    return "—" if value is None else str(value)


def _age(ms: Any) -> str:
    """Milliseconds as `350ms`, `4.2s`, `3m 5s`; `—` when nothing is pending."""
    if ms is None:
        return "—"
    ms = int(ms)
    if ms < 1000:
        return f"{ms}ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f}s"
    minutes, seconds = divmod(ms // 1000, 60)
    return f"{minutes}m {seconds}s" if minutes < 60 else f"{minutes // 60}h {minutes % 60}m"


def _partition_cells(p: Mapping[str, Any]) -> list[str]:
    lag = p.get("lag")
    return [
        escape(f"{p.get('topic')}/{p.get('partition')}"),
        _number(p.get("consumed_offset")),
        _number(p.get("high_watermark")),
        f"[yellow]{lag}[/]" if isinstance(lag, int) and lag > 0 else _number(lag),
        _number(p.get("in_flight")),
        _age(p.get("oldest_pending_ms")),
        "[yellow]yes[/]" if p.get("paused") else "no",
    ]


_PARTITION_COLUMNS = ("PARTITION", "OFFSET", "HIGH WATERMARK", "LAG", "IN FLIGHT", "OLDEST PENDING", "PAUSED")


@subscriptions.command("list")
@admin_options
def subscriptions_list(admin_url: str, as_json: bool) -> None:
    """List subscriptions with their state and, per partition, offset, lag and work in flight."""
    with Client(admin_url) as admin:
        answer = admin.get("/subscriptions")
    if as_json:
        print_json(answer)
        return
    subs = answer.get("subscriptions", []) if isinstance(answer, dict) else []
    out = console()
    if not subs:
        out.print("no subscriptions; create one with `perdure subscriptions create SOURCE SINK`")
        return
    table = Table(
        "ID", "SOURCE → SINK", "STATE", *_PARTITION_COLUMNS, box=None, header_style="bold", pad_edge=False
    )
    table.columns[0].no_wrap = True
    errors = []
    for sub in subs:
        head = [escape(str(sub.get("id"))), escape(f"{sub.get('source')} → {sub.get('sink')}"), _state(sub)]
        partitions = sub.get("partitions") or []
        if not partitions:
            table.add_row(*head, "—", *[""] * (len(_PARTITION_COLUMNS) - 1))
        for i, p in enumerate(partitions):
            table.add_row(*(head if i == 0 else ["", "", ""]), *_partition_cells(p))
        if sub.get("error"):
            errors.append(f"[red]{escape(str(sub.get('id')))}: {escape(compact(sub['error'], 160))}[/]")
    out.print(table)
    for line in errors:
        out.print(line)


@subscriptions.command("describe")
@click.argument("subscription_id", metavar="ID")
@admin_options
def subscriptions_describe(subscription_id: str, admin_url: str, as_json: bool) -> None:
    """Show one subscription: source, sink, the options in use, state and every partition."""
    with Client(admin_url) as admin:
        sub = admin.get(f"/subscriptions/{segment(subscription_id)}", hints={404: SUBSCRIPTIONS_HINT})
    if as_json:
        print_json(sub)
        return
    out = console()
    out.print(f"[bold]{escape(str(sub.get('id', subscription_id)))}[/]")
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="dim")
    facts.add_column()
    facts.add_row("source", escape(str(sub.get("source"))))
    facts.add_row("sink", escape(str(sub.get("sink"))))
    facts.add_row("state", _state(sub))
    if sub.get("error"):
        facts.add_row("error", f"[red]{escape(str(sub['error']))}[/]")
    facts.add_row("records", f"{sub.get('records', 0)} accepted since the server started")
    for name, value in (sub.get("options") or {}).items():
        facts.add_row(f"option {escape(str(name))}", escape(str(value)))
    out.print(facts)
    partitions = sub.get("partitions") or []
    if not partitions:
        out.print("[dim]no partitions assigned yet[/]")
        return
    table = Table(*_PARTITION_COLUMNS, box=None, header_style="bold", pad_edge=False)
    for p in partitions:
        table.add_row(*_partition_cells(p))
    out.print(table)


@subscriptions.command("delete")
@click.argument("subscription_id", metavar="ID")
@admin_options
def subscriptions_delete(subscription_id: str, admin_url: str, as_json: bool) -> None:
    """Delete a subscription: consumption stops; invocations already accepted from it still run."""
    with Client(admin_url) as admin:
        answer = admin.delete(f"/subscriptions/{segment(subscription_id)}", hints={404: SUBSCRIPTIONS_HINT})
    if as_json:
        print_json(answer)
        return
    console().print(
        f"[green]deleted[/] subscription [bold]{escape(subscription_id)}[/] "
        "(invocations already accepted from it still run)"
    )
