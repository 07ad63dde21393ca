"""Responses in Restate's shapes, and the error every refusal is raised as.

Errors carry `{"code": N, "message": "…", "source": "ingress" | "invocation"}` and the header
`x-restate-error-source`: clients retry ingress errors, never invocation (handler) errors.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec

Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Source = Literal["ingress", "invocation"]

NOT_READY = 470  # Restate's "the invocation exists but has not completed yet"


class IngressError(Exception):
    """A request refused with an HTTP status; `source` says whether the ingress or the handler failed."""

    def __init__(
        self,
        status: int,
        message: str,
        source: Source = "ingress",
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.source = source
        self.headers = tuple(headers)


def bad_request(message: str) -> IngressError:
    return IngressError(400, message)


def not_found(message: str, source: Source = "ingress") -> IngressError:
    return IngressError(404, message, source)


def method_not_allowed(allowed: str) -> IngressError:
    return IngressError(405, "method not allowed", headers=[("allow", allowed)])


def error_status(code: int) -> int:
    """The HTTP status for a failure code: itself when it is an error status, else 500."""
    return code if 400 <= code <= 599 else 500


def rfc3339(ms: int) -> str:
    """Milliseconds since the epoch as RFC 3339 in UTC, e.g. `2026-01-01T00:00:10.000Z`."""
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def respond(
    send: Send,
    status: int,
    body: bytes = b"",
    *,
    content_type: str | None = None,
    headers: Sequence[tuple[str, str]] = (),
) -> None:
    """Send a complete response in one body message."""
    raw = [(b"content-length", str(len(body)).encode())]
    if content_type is not None:
        raw.append((b"content-type", content_type.encode("latin-1")))
    raw.extend((name.encode("latin-1"), value.encode("latin-1")) for name, value in headers)
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def respond_json(
    send: Send, status: int, value: Any, *, headers: Sequence[tuple[str, str]] = ()
) -> None:
    await respond(send, status, msgspec.json.encode(value), content_type="application/json", headers=headers)


async def respond_error(send: Send, error: IngressError) -> None:
    status = error_status(error.status)
    body = {"code": error.status, "message": error.message, "source": error.source}
    headers = [("x-restate-error-source", error.source), *error.headers]
    await respond_json(send, status, body, headers=headers)
