"""Terminal output shared by the commands: consoles, the one-line error, colours and value formats."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import IO, Any

import click
from rich.console import Console
from rich.markup import escape

PIPED_WIDTH = 200

STATUS_STYLES = {
    "completed": "green",
    "running": "cyan",
    "pending": "blue",
    "scheduled": "blue",
    "suspended": "magenta",
    "backing-off": "yellow",
    "paused": "bold yellow",
    "parked": "red",
    "killed": "red",
    "failed": "red",
}


def console(stderr: bool = False) -> Console:
    """A rich console on the current sys.stdout/stderr (so `CliRunner` captures it); never wraps lines."""
    stream = sys.stderr if stderr else sys.stdout
    # Piped output (grep, files, tests) gets wide tables rather than columns wrapped at 80.
    width = None if stream.isatty() else PIPED_WIDTH
    return Console(file=stream, soft_wrap=True, highlight=False, width=width)


class Group(click.Group):
    """Lists commands in the order they were added (the order of the help text), not alphabetically."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)


class CliError(click.ClickException):
    """An expected failure: printed as one line, `error: <cause> — <fix>`, exit status 1 (or `exit_code`)."""

    def __init__(self, message: str, *, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]  # click declares it on the class

    def show(self, file: IO[Any] | None = None) -> None:
        out = Console(file=file or sys.stderr, soft_wrap=True, highlight=False)
        out.print(f"[bold red]error:[/] {escape(self.format_message())}")


def status_text(status: str | None, failed: bool = False) -> str:
    """Rich markup for an invocation status; completed-with-failure shows in red."""
    if status is None:
        return ""
    style = "red" if failed and status == "completed" else STATUS_STYLES.get(status, "white")
    return f"[{style}]{escape(status)}[/]"


def when(value: Any) -> str:
    """A timestamp from the admin API (RFC 3339 text or ms since the epoch) as `YYYY-MM-DD HH:MM:SS`."""
    if value is None or value == "":
        return ""
    if isinstance(value, int | float) and not isinstance(value, bool):
        moment = datetime.fromtimestamp(value / 1000, UTC)
        return moment.strftime("%Y-%m-%d %H:%M:%S")
    text = str(value)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return text
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def compact(value: Any, limit: int = 80) -> str:
    """A JSON value on one line, cut at `limit` characters."""
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def print_json(value: Any) -> None:
    """Machine-readable output for `--json`."""
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))
