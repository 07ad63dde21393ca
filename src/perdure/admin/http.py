"""Just enough ASGI for a JSON API: a parsed request, JSON responses and HTTP errors."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MAX_BODY = 1 << 20  # admin requests are small; refuse anything over 1 MiB


class HTTPError(Exception):
    """Answered as `{"message": …, "restate_code": null}` with `status`."""

    def __init__(self, status: int, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    body: bytes = b""
    params: dict[str, str] = field(default_factory=dict)  # path parameters, filled by the router
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names
    api_version: int | None = None  # 1-4 when the path had Restate's `/vN` prefix

    def json(self) -> Any:
        """The body as JSON; 400 when it is not."""
        try:
            return json.loads(self.body or b"null")
        except ValueError as e:
            raise HTTPError(400, f"the request body is not valid JSON: {e}") from None


@dataclass
class Response:
    status: int
    body: Any  # JSON-encodable, `str` sent as text/plain, or `bytes` sent as `content_type`
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/octet-stream"  # of a `bytes` body

    def encode(self) -> tuple[bytes, str]:
        if isinstance(self.body, bytes):
            return self.body, self.content_type
        if isinstance(self.body, str):
            return self.body.encode(), "text/plain; version=0.0.4; charset=utf-8"
        return json.dumps(self.body, separators=(",", ":")).encode(), "application/json"


def only(query: dict[str, str], *known: str) -> None:
    """400 for a query parameter not in `known`."""
    unknown = sorted(set(query) - set(known))
    if unknown:
        raise HTTPError(400, f"unknown query parameter {unknown[0]!r}; use {', '.join(known)}")


def int_param(query: dict[str, str], name: str, default: int, high: int) -> int:
    """A whole-number query parameter from 1 to `high` (400 otherwise)."""
    text = query.get(name)
    try:
        value = default if text is None else int(text)
    except ValueError:
        raise HTTPError(400, f"bad {name} {text!r}: a number from 1 to {high}") from None
    if not 1 <= value <= high:
        raise HTTPError(400, f"bad {name} {value}: a number from 1 to {high}")
    return value


def error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(status, {"message": message, "restate_code": None}, headers or {})


async def read_request(scope: Scope, receive: Receive) -> Request:
    """Parse the scope and read the whole body (413 past `MAX_BODY`)."""
    query: dict[str, str] = {}
    raw_query = scope.get("query_string", b"").decode("latin-1")
    for name, value in parse_qsl(raw_query, keep_blank_values=True):
        if name in query:
            raise HTTPError(400, f"query parameter {name!r} is given more than once")
        query[name] = value
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise HTTPError(413, f"the request body is larger than {MAX_BODY} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    path = scope.get("path") or unquote(scope.get("raw_path", b"/").decode("latin-1"))
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}
    return Request(scope["method"].upper(), path, query, b"".join(chunks), headers=headers)


async def send_response(send: Send, response: Response) -> None:
    body, content_type = response.encode()
    headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in response.headers.items()]
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
