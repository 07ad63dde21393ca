"""Why an attempt on a deployment failed, as the `ErrorMessage` the engine retries on.

Every failure of the transport is retryable: the engine applies the handler's retry policy
(and `next_retry_delay`, when the deployment asked for one with `Retry-After`). Codes:

- the deployment's own HTTP status when it answered with one (415: protocol version refused);
- 503 when it cannot be reached (connection refused or timed out, TLS failure);
- 502 when the connection or stream broke, or the response ended without End/Suspension/Error;
- 504 when a response stayed silent too long, or a bidirectional attempt was aborted;
- 571 (protocol violation) for a wrong content type or a frame that does not decode.
"""

from __future__ import annotations

import email.utils
from collections.abc import Callable
from typing import Any

from perdure.protocol import messages as pm

UNREACHABLE = 503
BROKEN = 502
TIMED_OUT = 504


class TransportError(Exception):
    """An attempt failed in the transport; `message()` is what the engine is told."""

    def __init__(self, code: int, text: str, *, retry_after_ms: int | None = None) -> None:
        super().__init__(text)
        self.code = code
        self.text = text
        self.retry_after_ms = retry_after_ms

    def message(self) -> Any:
        error = pm.ErrorMessage(code=self.code, message=self.text)
        if self.retry_after_ms is not None:
            error.next_retry_delay = self.retry_after_ms
        return error


def unreachable(uri: str, reason: object) -> TransportError:
    return TransportError(UNREACHABLE, f"cannot reach deployment {uri}: {describe(reason)}")


def broken(uri: str, what: str) -> TransportError:
    return TransportError(BROKEN, f"deployment {uri}: {what}")


def no_end(uri: str) -> TransportError:
    return broken(uri, "the response ended without End, Suspension or Error")


def http_status(
    uri: str, status: int, headers: Callable[[str], str | None], body: bytes, version: int, now_ms: int
) -> TransportError:
    """The error for a non-200 answer; 429/503 carry the delay their `Retry-After` asks for."""
    text = body.decode("utf-8", "replace").strip()
    if status == 415:
        what = f"protocol version v{version} not supported by the deployment {uri}"
    else:
        what = f"deployment {uri} answered HTTP {status}"
    if text:
        what = f"{what}: {text}"
    delay = retry_after_ms(headers("retry-after"), now_ms) if status in (429, 503) else None
    return TransportError(status, what, retry_after_ms=delay)


def wrong_content_type(uri: str, got: str | None, expected: str) -> TransportError:
    return TransportError(
        pm.PROTOCOL_VIOLATION,
        f"deployment {uri} answered with content-type {got or '(none)'}, expected {expected}",
    )


def retry_after_ms(value: str | None, now_ms: int) -> int | None:
    """`Retry-After` as a delay in ms: delta-seconds or an HTTP date; None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return int(value) * 1000
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0, int(when.timestamp() * 1000) - now_ms)


def describe(reason: object) -> str:
    """An exception as readable text, even when its str() is empty."""
    if isinstance(reason, BaseException):
        text = str(reason)
        return text if text else type(reason).__name__
    return str(reason)
