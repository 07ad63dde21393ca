"""Management commands over the admin API: services, invocations, state, sql.

Each takes `--admin-url` (env PERDURE_ADMIN_URL, default http://127.0.0.1:9070) and `--json`
for machine-readable output; failures print one line with the cause and the fix, exit status 1.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click
from rich.markup import escape
from rich.table import Table

from .client import ADMIN_URL_ENV, DEFAULT_ADMIN_URL, AdminClient, segment
from .output import CliError, Group, compact, console, print_json, status_text, when

F = TypeVar("F", bound=Callable[..., Any])

LIST_HINT = "list them with `perdure invocations list`"
SERVICES_HINT = "list them with `perdure services list`"
STATUSES = "pending, scheduled, running, suspended, backing-off, paused, completed"


def admin_options(fn: F) -> F:
    """`--admin-url` and `--json`, shared by every management command."""
    fn = click.option(
        "--json",
        "as_json",
        is_flag=True,
        help="Print the admin API's JSON answer instead of a table.",
    )(fn)
    fn = click.option(
        "--admin-url",
        envvar=ADMIN_URL_ENV,
        default=DEFAULT_ADMIN_URL,
        show_default=True,
        metavar="URL",
        help=f"Base URL of the admin API (env {ADMIN_URL_ENV}).",
    )(fn)
    return fn


# ---- services


@click.group(cls=Group)
def services() -> None:
    """The services, virtual objects and workflows the server runs."""


def _services_of(answer: Any) -> list[dict[str, Any]]:
    if isinstance(answer, dict):
        answer = answer.get("services", [])
    return [s for s in answer or [] if isinstance(s, dict)]


def schema_summary(schema: Any) -> str:
    """A JSON schema in a few characters: `UserUpdate {profile, permissions, resources}`, `string`, `—`."""
    if not isinstance(schema, dict) or not schema:
        return "any JSON" if isinstance(schema, dict) else "—"
    defs = schema.get("$defs") or schema.get("definitions") or {}
    ref = schema.get("$ref")
    title = schema.get("title")
    if isinstance(ref, str):
        title = title or ref.rsplit("/", 1)[-1]
        schema = defs.get(ref.rsplit("/", 1)[-1], schema)
    kind = schema.get("type")
    props = schema.get("properties")
    if isinstance(props, dict) and props:
        fields = ", ".join(list(props)[:6]) + (", …" if len(props) > 6 else "")
        return f"{title or 'object'} {{{fields}}}"
    if kind == "array":
        return f"array of {schema_summary(schema.get('items') or {})}"
    if isinstance(kind, list):
        return " | ".join(str(k) for k in kind)
    if "anyOf" in schema or "oneOf" in schema:
        options = schema.get("anyOf") or schema.get("oneOf") or []
        return " | ".join(schema_summary({**o, "$defs": defs}) for o in options if isinstance(o, dict))
    return str(kind or title or "any JSON")


@services.command("list")
@admin_options
def services_list(admin_url: str, as_json: bool) -> None:
    """List the registered services with their type and handlers."""
    with AdminClient(admin_url) as admin:
        answer = admin.get("/services")
    if as_json:
        print_json(answer)
        return
    table = Table("NAME", "TYPE", "HANDLERS", title=None, box=None, header_style="bold", pad_edge=False)
    for service in _services_of(answer):
        handlers = [h.get("name", "?") for h in service.get("handlers", []) if isinstance(h, dict)]
        table.add_row(
            f"[bold]{escape(str(service.get('name')))}[/]",
            escape(str(service.get("ty", ""))),
            escape(", ".join(handlers)),
        )
    out = console()
    if table.row_count == 0:
        out.print("no services registered")
        return
    out.print(table)


@services.command("describe")
@click.argument("name")
@admin_options
def services_describe(name: str, admin_url: str, as_json: bool) -> None:
    """Show one service: its type and every handler with its input and output types."""
    with AdminClient(admin_url) as admin:
        service = admin.get(f"/services/{segment(name)}", hints={404: SERVICES_HINT})
    if as_json:
        print_json(service)
        return
    out = console()
    out.print(f"[bold]{escape(str(service.get('name', name)))}[/]  {escape(str(service.get('ty', '')))}")
    for extra in ("documentation", "deployment_id", "revision"):
        if service.get(extra) not in (None, ""):
            out.print(f"  {extra.replace('_', ' ')}: {escape(str(service[extra]))}")
    table = Table("HANDLER", "TYPE", "INPUT", "OUTPUT", box=None, header_style="bold", pad_edge=False)
    for handler in service.get("handlers", []):
        table.add_row(
            escape(str(handler.get("name"))),
            escape(str(handler.get("ty") or "")),
            escape(schema_summary(handler.get("input_json_schema"))),
            escape(schema_summary(handler.get("output_json_schema"))),
        )
    out.print(table)


# ---- invocations


@click.group(cls=Group)
def invocations() -> None:
    """List, inspect and control invocations (calls of handlers)."""


def _target(inv: dict[str, Any]) -> str:
    if inv.get("target"):
        return str(inv["target"])
    key = inv.get("key")
    middle = f"/{key}" if key is not None else ""
    return f"{inv.get('service')}{middle}/{inv.get('handler')}"


def _failure(inv: dict[str, Any]) -> str:
    failure = inv.get("completion_failure") or inv.get("last_failure")
    if not isinstance(failure, dict):
        return ""
    return f"[{failure.get('code')}] {failure.get('message', '')}"


@invocations.command("list")
@click.option("--status", help=f"Only invocations in this status ({STATUSES}).")
@click.option("--service", help="Only invocations of this service.")
@click.option("--handler", help="Only invocations of this handler.")
@click.option("--key", help="Only invocations of this object key.")
@click.option("--deployment", help="Only those of this deployment: in-process, or a dp_… id.")
@click.option("--search", metavar="TEXT", help="Only those whose id or idempotency key contains TEXT.")
@click.option("--error", metavar="TEXT", help="Only those whose failure message contains TEXT (any case).")
@click.option("--newest", is_flag=True, help="Newest first (default: oldest first).")
@click.option(
    "--limit", type=click.IntRange(1, 10_000), default=50, show_default=True, help="At most this many."
)
@click.option("--cursor", help="Continue a previous listing (printed under the table when there is more).")
@admin_options
def invocations_list(
    status: str | None,
    service: str | None,
    handler: str | None,
    key: str | None,
    deployment: str | None,
    search: str | None,
    error: str | None,
    newest: bool,
    limit: int,
    cursor: str | None,
    admin_url: str,
    as_json: bool,
) -> None:
    """List invocations, oldest first, with their status, attempts and last failure.

    \b
      perdure invocations list --status backing-off
      perdure invocations list --service userUpdates --key alice
      perdure invocations list --error timeout --newest
    """
    with AdminClient(admin_url) as admin:
        answer = admin.get(
            "/invocations",
            status=status,
            service=service,
            handler=handler,
            key=key,
            deployment=deployment,
            q=search,
            error=error,
            order="desc" if newest else None,
            limit=limit,
            cursor=cursor,
        )
    if as_json:
        print_json(answer)
        return
    rows = answer.get("invocations", []) if isinstance(answer, dict) else []
    out = console()
    if not rows:
        out.print("no invocations match")
        return
    table = Table(
        "ID", "TARGET", "STATUS", "ATTEMPTS", "CREATED", "MODIFIED", "LAST FAILURE", box=None, pad_edge=False
    )
    table.columns[0].no_wrap = True
    for inv in rows:
        failed = inv.get("completion_failure") is not None
        table.add_row(
            escape(str(inv.get("id"))),
            escape(_target(inv)),
            status_text(inv.get("status"), failed),
            str(inv.get("attempts", "")),
            when(inv.get("created_at")),
            when(inv.get("modified_at")),
            f"[red]{escape(compact(_failure(inv), 60))}[/]" if _failure(inv) else "",
        )
    out.print(table)
    next_cursor = answer.get("next_cursor")
    if next_cursor:
        out.print(f"[dim]{len(rows)} shown; more with --cursor {escape(str(next_cursor))}[/]")


def _outcome_text(outcome: Any) -> str:
    if not isinstance(outcome, dict):
        return "—" if outcome is None else compact(outcome, 200)
    failure = outcome.get("failure")
    if isinstance(failure, dict):
        return f"[red]failure [{failure.get('code')}] {escape(str(failure.get('message', '')))}[/]"
    if "value_base64" in outcome:
        return f"bytes (base64) {escape(compact(outcome['value_base64'], 200))}"
    return f"[green]{escape(compact(outcome.get('value'), 200))}[/]"


def _entry_detail(entry: dict[str, Any]) -> str:
    """One journal entry in a line: its failure, the input's value, or the summary's arguments."""
    if isinstance(entry.get("failure"), dict):
        failure = entry["failure"]
        return f"[red]failure [{failure.get('code')}] {escape(str(failure.get('message', '')))}[/]"
    if entry.get("type") == "InputCommand" and "value_base64" not in entry:
        return escape(compact(entry.get("value"), 80))  # the headers in its summary are noise here
    summary = str(entry.get("summary") or "")
    opened, closed = summary.find("("), summary.rfind(")")
    if 0 < opened < closed:
        summary = summary[opened + 1 : closed]
    return escape(compact(summary, 80))


@invocations.command("describe")
@click.argument("invocation_id", metavar="ID")
@admin_options
def invocations_describe(invocation_id: str, admin_url: str, as_json: bool) -> None:
    """Show one invocation: its status, retries, outcome and journal."""
    with AdminClient(admin_url) as admin:
        inv = admin.get(f"/invocations/{segment(invocation_id)}", hints={404: LIST_HINT})
    if as_json:
        print_json(inv)
        return
    out = console()
    out.print(f"[bold]{escape(str(inv.get('id', invocation_id)))}[/]  {escape(_target(inv))}")
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="dim")
    facts.add_column()
    failed = isinstance(inv.get("outcome"), dict) and "failure" in inv["outcome"]
    facts.add_row("status", status_text(inv.get("status"), failed))
    facts.add_row("attempts", str(inv.get("attempts", "")))
    for label, field in (
        ("created", "created_at"),
        ("modified", "modified_at"),
        ("next retry", "next_retry_at"),
        ("completed", "completed_at"),
    ):
        if inv.get(field):
            facts.add_row(label, when(inv[field]))
    if inv.get("idempotency_key"):
        facts.add_row("idempotency key", escape(str(inv["idempotency_key"])))
    if inv.get("last_failure"):
        facts.add_row("last failure", f"[red]{escape(_failure(inv))}[/]")
    facts.add_row("outcome", _outcome_text(inv.get("outcome")))
    out.print(facts)
    journal = inv.get("journal") or []
    if journal:
        table = Table("#", "ENTRY", "NAME", "DETAIL", box=None, header_style="bold", pad_edge=False)
        out.print("[bold]journal[/]")
        for entry in journal:
            table.add_row(
                str(entry.get("index", "")),
                escape(str(entry.get("type", ""))),
                escape(str(entry.get("name") or "")),
                _entry_detail(entry),
            )
        out.print(table)


def _control(verb: str, past: str, doc: str, hints: dict[int, str], note: str = "") -> click.Command:
    @click.command(verb, help=doc)
    @click.argument("invocation_id", metavar="ID")
    @admin_options
    def command(invocation_id: str, admin_url: str, as_json: bool) -> None:
        with AdminClient(admin_url) as admin:
            answer = admin.patch(f"/invocations/{segment(invocation_id)}/{verb}", hints=hints)
        if as_json:
            print_json(answer)
            return
        console().print(f"[green]{past}[/] {escape(invocation_id)}{note}")

    return command


_CANCEL_DOC = """Cancel an unfinished invocation, letting its handler compensate.

    Its handler sees a TerminalError (409 "cancelled") at its next await and may run compensation
    steps before it fails; the calls it waits on are cancelled too. A queued or delayed invocation
    completes at once. `kill` stops it without running any more of its code.
    """

_CONTROLS = (
    (
        "cancel",
        "cancelling",
        _CANCEL_DOC,
        {404: LIST_HINT, 409: "only unfinished invocations can be cancelled"},
        ": it fails with 409 'cancelled' at its next await (see `perdure invocations describe`)",
    ),
    (
        "kill",
        "killed",
        "Stop an unfinished invocation now; it completes with a 409 'killed' failure.",
        {404: LIST_HINT, 409: "only unfinished invocations can be killed"},
        "",
    ),
    (
        "purge",
        "purged",
        "Delete a completed invocation's record and journal (frees its idempotency key).",
        {404: LIST_HINT, 409: "only completed invocations can be purged; kill it first"},
        "",
    ),
    (
        "pause",
        "paused",
        "Pause a running, suspended or backing-off invocation until `resume`.",
        {404: LIST_HINT},
        "",
    ),
    (
        "resume",
        "resumed",
        "Resume a paused invocation (its retry count starts over).",
        {404: LIST_HINT, 409: "only paused invocations can be resumed"},
        "",
    ),
)

for _verb, _past, _doc, _hints, _note in _CONTROLS:
    invocations.add_command(_control(_verb, _past, _doc, _hints, _note))


# ---- state


@click.group(cls=Group)
def state() -> None:
    """Read the K/V state of virtual objects and workflows."""


@state.command("get")
@click.argument("service", metavar="OBJECT")
@click.argument("key")
@admin_options
def state_get(service: str, key: str, admin_url: str, as_json: bool) -> None:
    """Show the state of one object key: every name and its value.

    \b
      perdure state get userUpdates alice
    """
    with AdminClient(admin_url) as admin:
        answer = admin.get(f"/state/{segment(service)}/{segment(key)}", hints={404: SERVICES_HINT})
    if as_json:
        print_json(answer)
        return
    values = answer.get("state", {}) if isinstance(answer, dict) else {}
    out = console()
    if not values:
        out.print(f"{escape(service)}/{escape(key)} has no state")
        return
    table = Table("NAME", "VALUE", box=None, header_style="bold", pad_edge=False)
    for name, value in values.items():
        table.add_row(escape(str(name)), escape(compact(value, 200)))
    out.print(table)


# ---- sql


@click.command(short_help="Run a read-only SQL query on the server's views (sys_invocation, ...).")
@click.argument("query")
@admin_options
def sql(query: str, admin_url: str, as_json: bool) -> None:
    """Run a read-only SQL query on the server's views and print the rows.

    Views: sys_invocation (one row per invocation), sys_journal, state; docs/admin.md lists
    their columns.

    \b
      perdure sql "SELECT status, count(*) AS n FROM sys_invocation GROUP BY status"
    """
    with AdminClient(admin_url) as admin:
        answer = admin.post("/query", {"query": query})
    rows = answer.get("rows", []) if isinstance(answer, dict) else []
    if as_json:
        print_json(answer)
        return
    out = console()
    if not rows:
        out.print("no rows")
        return
    columns: list[str] = []
    for row in rows:
        if not isinstance(row, dict):
            raise CliError(
                f"the admin API answered rows of {type(row).__name__}, not objects — is it perdure?"
            )
        columns += [c for c in row if c not in columns]
    table = Table(*columns, box=None, header_style="bold", pad_edge=False)
    for row in rows:
        table.add_row(*("" if row.get(c) is None else escape(compact(row.get(c), 100)) for c in columns))
    out.print(table)
    out.print(f"[dim]{len(rows)} row{'s' if len(rows) != 1 else ''}[/]")
