"""How the admin API writes values: RFC 3339 times, Restate's friendly durations, JSON payloads."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_UNITS = (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1))


def timestamp(ms: int | None) -> str | None:
    """Milliseconds since the epoch as RFC 3339 in UTC, e.g. `2026-01-01T00:00:00.000Z`."""
    if ms is None:
        return None
    moment = _EPOCH + timedelta(milliseconds=ms)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def duration(value: timedelta | None) -> str | None:
    """A duration as Restate writes it: `500ms`, `1m`, `1d`, `1h 30m`."""
    if value is None:
        return None
    ms = round(value.total_seconds() * 1000)
    if ms == 0:
        return "0s"
    parts = []
    for unit, size in _UNITS:
        count, ms = divmod(ms, size)
        if count:
            parts.append(f"{count}{unit}")
    return " ".join(parts)


def json_or_none(data: bytes) -> tuple[bool, Any]:
    """(True, value) when `data` is JSON (empty counts as null), else (False, None)."""
    if not data.strip():
        return True, None
    try:
        return True, json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return False, None


def payload(data: bytes, *, base64_key: str = "value_base64") -> dict[str, Any]:
    """`{"value": decoded JSON}`, or `{base64_key: "…"}` when the bytes are not JSON."""
    ok, value = json_or_none(data)
    if ok:
        return {"value": value}
    return {base64_key: base64.b64encode(data).decode()}


def text(data: bytes) -> str:
    """Bytes shown as text (state names are UTF-8 by convention; anything else is escaped)."""
    return data.decode("utf-8", errors="backslashreplace")
