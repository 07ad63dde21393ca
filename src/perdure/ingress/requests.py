"""Reading a request: its body (bounded), its headers for the handler, its content type, its query."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import parse_qs

from perdure.ingress.responses import IngressError, Receive, bad_request
from perdure.sdk import serde
from perdure.sdk.service import Handler

#: Headers that describe one HTTP hop (or the ingress's own input), never forwarded to a handler.
NOT_FORWARDED = frozenset(
    {
        "connection",
        "content-length",
        "expect",
        "host",
        "idempotency-key",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "x-perdure-forwarded",
        "x-perdure-invocation-id",
        "x-restate-ingress-path",
    }
)

RawHeaders = Iterable[tuple[bytes, bytes]]


class Disconnected(Exception):
    """The client went away before its request was complete: there is nobody to answer."""


def header(headers: RawHeaders, name: bytes) -> str | None:
    """The value of one request header (the last one if repeated), or None."""
    found: str | None = None
    for key, value in headers:
        if key.lower() == name:
            found = value.decode("latin-1")
    return found


def declared_length(headers: RawHeaders) -> int | None:
    """The Content-Length header as a number; 400 if it is not one."""
    value = header(headers, b"content-length")
    if value is None:
        return None
    if not value.strip().isdigit():
        raise bad_request(f"bad header content-length: {value!r}")
    return int(value)


async def read_body(receive: Receive, limit: int, declared: int | None) -> bytes:
    """The whole body, read chunk by chunk; 413 as soon as it passes `limit` bytes."""
    too_large = IngressError(413, f"the request body is larger than the limit of {limit} bytes")
    if declared is not None and declared > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Disconnected
        if message["type"] != "http.request":
            continue
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise too_large
        if chunk:
            chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def forwarded_headers(headers: RawHeaders, ingress_path: str) -> dict[str, str]:
    """What the handler sees in `ctx.request().headers`: end-to-end headers plus the ingress path."""
    out: dict[str, str] = {}
    for raw_name, raw_value in headers:
        name = raw_name.decode("latin-1").lower()
        if name in NOT_FORWARDED:
            continue
        value = raw_value.decode("latin-1")
        out[name] = f"{out[name]}, {value}" if name in out else value
    out["x-restate-ingress-path"] = ingress_path
    return out


def check_content_type(handler: Handler, body: bytes, content_type: str | None) -> None:
    """400 unless a non-empty body comes with a content type the handler's input serde reads.

    An empty body is left to the serde (fine when the input is optional or absent); a bytes
    handler takes any content type; a handler without input rejects any body when decoding.
    """
    expected = handler.input_serde.content_type
    if not body or expected is None or expected == serde.OCTETS:
        return
    if content_type is None or not content_type.strip():
        raise bad_request("input validation error: Empty content-type")
    media_type = content_type.split(";", 1)[0].strip().lower()
    if expected == serde.JSON and (
        media_type == serde.JSON or (media_type.startswith("application/") and media_type.endswith("+json"))
    ):
        return
    if media_type == expected:
        return
    raise bad_request(
        f"input validation error: content-type '{content_type}' does not match the handler's "
        f"'{expected}' input of {handler.qualified_name}"
    )


def query_values(query_string: bytes, name: str) -> list[str]:
    """Every value of one query parameter, in order."""
    return parse_qs(query_string.decode("latin-1"), keep_blank_values=True).get(name, [])
