"""`perdure awakeables resolve|reject`: complete an awakeable over the ingress, as another system would.

    perdure awakeables resolve sign_1… '{"driver": "ann"}'
    perdure awakeables reject sign_1… "no driver available"

They POST to `/restate/awakeables/{id}/resolve|reject` on the ingress (`--ingress-url`, env
PERDURE_INGRESS_URL, default http://127.0.0.1:8080), not to the admin API: completing an awakeable
is input to a handler, like a call. Failures print one line with the cause and the fix.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import click
import httpx
from rich.markup import escape

from .client import TIMEOUT_S, segment
from .output import CliError, Group, console

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_INGRESS_URL = "http://127.0.0.1:8080"
INGRESS_URL_ENV = "PERDURE_INGRESS_URL"


def ingress_option(fn: F) -> F:
    """`--ingress-url`, shared by the awakeable commands."""
    option = click.option(
        "--ingress-url",
        envvar=INGRESS_URL_ENV,
        default=DEFAULT_INGRESS_URL,
        show_default=True,
        metavar="URL",
        help=f"Base URL of the HTTP ingress (env {INGRESS_URL_ENV}).",
    )
    return option(fn)


@click.group(cls=Group)
def awakeables() -> None:
    """Resolve or reject awakeables over the ingress.

    An awakeable is an id a handler gets from `ctx.awakeable()`, hands to another system, and
    waits on (suspended, nothing in memory) until that system completes it.
    """


@awakeables.command("resolve", short_help="Resolve an awakeable with a JSON value.")
@click.argument("awakeable_id", metavar="ID")
@click.argument("value", metavar="[VALUE-JSON]", required=False)
@ingress_option
def resolve(awakeable_id: str, value: str | None, ingress_url: str) -> None:
    """Resolve awakeable ID with a JSON value (none: the handler gets None).

    \b
      perdure awakeables resolve sign_1… '"ok"'
      perdure awakeables resolve sign_1… '{"driver": "ann", "eta_minutes": 12}'
    """
    body = b""
    if value is not None:
        try:
            json.loads(value)
        except ValueError as e:
            example = """'"ok"' or '{"driver": "ann"}'"""
            raise CliError(f"VALUE is not JSON ({e}) — quote it for the shell, e.g. {example}") from None
        body = value.encode()
    _post(ingress_url, awakeable_id, "resolve", body, "application/json")
    console().print(f"[green]resolved[/] {escape(awakeable_id)}")


@awakeables.command("reject", short_help="Reject an awakeable with a reason (code 500).")
@click.argument("awakeable_id", metavar="ID")
@click.argument("reason")
@ingress_option
def reject(awakeable_id: str, reason: str, ingress_url: str) -> None:
    """Reject awakeable ID: the waiting handler gets TerminalError(REASON) with code 500.

    \b
      perdure awakeables reject sign_1… "no driver available"
    """
    _post(ingress_url, awakeable_id, "reject", reason.encode(), "text/plain; charset=utf-8")
    console().print(f"[green]rejected[/] {escape(awakeable_id)}")


def _post(ingress_url: str, awakeable_id: str, verb: str, body: bytes, content_type: str) -> None:
    """POST the completion; returns on 202 (also for an awakeable completed before), else `CliError`."""
    base = ingress_url.rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise CliError(
            f"bad ingress URL {ingress_url!r}: it must start with http:// — "
            f"e.g. --ingress-url {DEFAULT_INGRESS_URL}"
        )
    path = f"/restate/awakeables/{segment(awakeable_id)}/{verb}"
    try:
        with httpx.Client(base_url=base, timeout=TIMEOUT_S, trust_env=False) as http:
            response = http.post(path, content=body, headers={"content-type": content_type})
    except (httpx.ConnectError, httpx.ConnectTimeout):
        raise CliError(
            f"cannot reach the ingress at {base} — is `perdure dev` running? "
            f"set --ingress-url or {INGRESS_URL_ENV}"
        ) from None
    except (httpx.HTTPError, ValueError) as e:
        raise CliError(f"request to the ingress at {base} failed: {e} — check --ingress-url") from None
    if response.status_code == 202:
        return
    try:
        answer = response.json()
    except ValueError:
        answer = None
    message = answer.get("message") if isinstance(answer, dict) else None
    if not message:
        message = response.text.strip()[:200] or response.reason_phrase
    fix = ""
    if response.status_code == 400:
        fix = " — pass the id exactly as the handler got it from ctx.awakeable() (sign_1…)"
    elif response.status_code == 404:
        fix = " — point --ingress-url at the ingress (8080 by default), not the admin API"
    raise CliError(f"{message} ({response.status_code} from POST {path}){fix}")
