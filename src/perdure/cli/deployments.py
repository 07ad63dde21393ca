"""`perdure deployments …`: register, list, describe and remove remote deployments.

perdure deployments register http://127.0.0.1:9080            # h2c discovery (hypercorn, Restate SDKs)
perdure deployments register http://127.0.0.1:9080 --http1.1  # an HTTP/1.1-only server (uvicorn)
perdure deployments list
perdure deployments describe dp_…
perdure deployments remove dp_… --force
"""

from __future__ import annotations

from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from .client import segment
from .manage import admin_options
from .output import Group, console, print_json
from .subscriptions import Client, _pairs

DEPLOYMENTS_HINT = "list them with `perdure deployments list`"


@click.group(cls=Group, short_help="Register handler services deployed elsewhere (HTTP).")
def deployments() -> None:
    """Remote deployments: HTTP endpoints serving handlers over Restate's service protocol
    (perdure's SDK or the official Restate SDKs)."""


@deployments.command("register")
@click.argument("uri")
@click.option("--force", is_flag=True, help="Replace a registration of the same URI, or override conflicts.")
@click.option(
    "--http1.1",
    "use_http_11",
    is_flag=True,
    help="Talk HTTP/1.1 (request/response mode) instead of HTTP/2 without TLS.",
)
@click.option(
    "--header",
    "headers",
    multiple=True,
    callback=_pairs,
    metavar="NAME=VALUE",
    help="A header to send with every request to the deployment (repeatable).",
)
@click.option("--dry-run", is_flag=True, help="Discover and show the services without registering.")
@admin_options
def register(
    uri: str,
    force: bool,
    use_http_11: bool,
    headers: dict[str, str],
    dry_run: bool,
    admin_url: str,
    as_json: bool,
) -> None:
    """Discover the services at URI and route their invocations there.

    \b
      perdure deployments register http://127.0.0.1:9080
    """
    body = {
        "uri": uri,
        "force": force,
        "use_http_11": use_http_11,
        "additional_headers": headers,
        "dry_run": dry_run,
    }
    hints = {
        400: "is the endpoint up, and does it serve /discover? (an HTTP/1.1-only server needs --http1.1)",
        409: "re-run with --force to replace or override",
    }
    with Client(admin_url) as admin:
        answer = admin.post("/deployments", body, hints=hints)
    if as_json:
        print_json(answer)
        return
    out = console()
    verb = "would register" if dry_run else ("replaced" if admin.status == 200 else "registered")
    ident = f" as [bold]{escape(str(answer.get('id')))}[/]" if answer.get("id") else ""
    out.print(
        f"[green]{verb}[/] {escape(uri)}{ident} "
        f"({answer.get('protocol_type')}, {answer.get('http_version')}, "
        f"protocol v{answer.get('protocol_version')})"
    )
    _services_table(answer.get("services", []))


def _services_table(services: list[dict[str, Any]]) -> None:
    table = Table("SERVICE", "TYPE", "REVISION", "HANDLERS", box=None, header_style="bold", pad_edge=False)
    for s in services:
        handlers = ", ".join(str(h.get("name")) for h in s.get("handlers", []))
        table.add_row(
            f"[bold]{escape(str(s.get('name')))}[/]",
            str(s.get("ty")),
            str(s.get("revision")),
            escape(handlers),
        )
    console().print(table)


@deployments.command("list")
@admin_options
def list_(admin_url: str, as_json: bool) -> None:
    """List the registered deployments and the services each serves now."""
    with Client(admin_url) as admin:
        answer = admin.get("/deployments")
    if as_json:
        print_json(answer)
        return
    found = answer.get("deployments", [])
    out = console()
    if not found:
        out.print("no deployments; register one with `perdure deployments register URI`")
        return
    table = Table(
        "ID", "URI", "MODE", "HTTP", "PROTOCOL", "SERVICES", box=None, header_style="bold", pad_edge=False
    )
    for d in found:
        services = ", ".join(f"{s.get('name')} (rev {s.get('revision')})" for s in d.get("services", []))
        table.add_row(
            f"[bold]{escape(str(d.get('id')))}[/]",
            escape(str(d.get("uri"))),
            str(d.get("protocol_type")),
            str(d.get("http_version")),
            f"v{d.get('protocol_version')} ({d.get('min_protocol_version')}–{d.get('max_protocol_version')})",
            escape(services) or "[dim]none (superseded)[/]",
        )
    out.print(table)


@deployments.command("describe")
@click.argument("deployment_id", metavar="ID")
@admin_options
def describe(deployment_id: str, admin_url: str, as_json: bool) -> None:
    """Show one deployment: endpoint, protocol, and its services with their handlers."""
    with Client(admin_url) as admin:
        answer = admin.get(f"/deployments/{segment(deployment_id)}", hints={404: DEPLOYMENTS_HINT})
    if as_json:
        print_json(answer)
        return
    out = console()
    out.print(f"[bold]{escape(str(answer.get('id')))}[/]  {escape(str(answer.get('uri')))}")
    out.print(
        f"  mode {answer.get('protocol_type')}, {answer.get('http_version')}, protocol "
        f"v{answer.get('protocol_version')} (deployment speaks {answer.get('min_protocol_version')}–"
        f"{answer.get('max_protocol_version')})"
    )
    headers = answer.get("additional_headers") or {}
    if headers:
        out.print("  headers: " + escape(", ".join(f"{k}={v}" for k, v in headers.items())))
    _services_table(answer.get("services", []))


@deployments.command("remove")
@click.argument("deployment_id", metavar="ID")
@click.option("--force", is_flag=True, help="Remove it even though it still serves services (they go too).")
@admin_options
def remove(deployment_id: str, force: bool, admin_url: str, as_json: bool) -> None:
    """Remove a deployment. Invocations pinned to it fail their next attempts (and retry)."""
    hints = {404: DEPLOYMENTS_HINT, 409: "re-run with --force to remove its services too"}
    params = {"force": "true"} if force else None
    with Client(admin_url) as admin:
        answer = admin.request("DELETE", f"/deployments/{segment(deployment_id)}", params=params, hints=hints)
    if as_json:
        print_json(answer)
        return
    console().print(f"[green]removed[/] deployment [bold]{escape(deployment_id)}[/]")
