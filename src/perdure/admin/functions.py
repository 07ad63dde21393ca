"""SQL functions the views call: record fields, times, journal entries, text.

Each view row calls these several times with the same blob, so the last decoding is kept.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import msgspec

from perdure.admin.journal import render_entry, type_name
from perdure.admin.render import text, timestamp
from perdure.engine.step import decode_entry
from perdure.protocol import messages as pm
from perdure.storage.api import Entry, Failure, Outcome

_SQL_SCALAR = (int, float, str, bytes)


class _Failures(msgspec.Struct):
    """The two failure fields of an invocation record; msgspec skips the rest without building it."""

    last_failure: Failure | None = None
    outcome: Outcome | None = None


_DECODE_FAILURES = msgspec.msgpack.Decoder(_Failures).decode


def _failed(blob: bytes | None) -> int:
    """`perdure_failed(record)`: 1 when the invocation completed with a failure."""
    if blob is None:
        return 0
    outcome = _DECODE_FAILURES(blob).outcome
    return int(outcome is not None and outcome.failure is not None)


def _failure_contains(blob: bytes | None, needle: str | None) -> int:
    """`perdure_failure_contains(record, 'lowercase text')`: 1 when the last failure's or the
    terminal failure's message contains it, ignoring case.

    An ASCII needle is first looked for in the record's bytes, lowered (in C): most records do
    not contain it anywhere, and those are not decoded at all.
    """
    if blob is None or not needle:
        return 0
    if needle.isascii() and needle.encode() not in bytes(blob).lower():
        return 0
    record = _DECODE_FAILURES(blob)
    messages = [record.last_failure.message if record.last_failure else ""]
    if record.outcome is not None and record.outcome.failure is not None:
        messages.append(record.outcome.failure.message)
    return int(any(needle in m.lower() for m in messages))


def _scalar(value: Any) -> Any:
    """A Python value as SQLite can hold it: scalars as they are, containers as JSON text."""
    if value is None or isinstance(value, _SQL_SCALAR):
        return int(value) if isinstance(value, bool) else value
    return json.dumps(value, default=lambda b: text(b) if isinstance(b, bytes) else str(b))


class _RecordFields:
    """`perdure_field(record, 'a.b')`: a field of a msgpack-encoded record (NULL when absent)."""

    def __init__(self) -> None:
        self._blob: bytes | None = None
        self._decoded: Any = None

    def __call__(self, blob: bytes | None, path: str) -> Any:
        if blob is None:
            return None
        if blob != self._blob:
            self._decoded = msgspec.msgpack.decode(blob)
            self._blob = blob
        value = self._decoded
        for part in path.split("."):
            if not isinstance(value, dict):
                return None
            value = value.get(part)
        return _scalar(value)


class _Entries:
    """`perdure_entry(type, payload, 'what')`: one field of a rendered journal entry."""

    def __init__(self) -> None:
        self._key: tuple[int, bytes] | None = None
        self._fields: dict[str, Any] = {}

    def __call__(self, code: int, payload: bytes, what: str) -> Any:
        if (code, payload) != self._key:
            self._fields = _entry_fields(code, payload)
            self._key = (code, payload)
        return self._fields.get(what)


def _entry_fields(code: int, payload: bytes) -> dict[str, Any]:
    entry = Entry(code, payload)
    rendered = render_entry(0, entry)
    del rendered["index"]
    fields: dict[str, Any] = {
        "type": type_name(code),
        "name": rendered["name"],
        "summary": rendered["summary"],
        "entry_json": json.dumps(rendered),
    }
    if "value_base64" not in rendered and rendered["value"] is not None:
        fields["value"] = json.dumps(rendered["value"])
    failure = rendered.get("failure")
    if failure is not None:
        fields["failure_code"] = failure["code"]
        fields["failure_message"] = failure["message"]
    message = decode_entry(entry)
    if code == pm.TYPE_OF[pm.SleepCommand]:
        fields["sleep_wakeup_at"] = timestamp(message.wake_up_time)
    elif code in (pm.TYPE_OF[pm.CallCommand], pm.TYPE_OF[pm.OneWayCallCommand]):
        parts = [message.service_name, message.key, message.handler_name]
        fields["invoked_target"] = "/".join(p for p in parts if p)
    return fields


def _utf8(blob: bytes | None) -> str | None:
    if blob is None:
        return None
    if isinstance(blob, str):
        return blob
    try:
        return bytes(blob).decode("utf-8")
    except UnicodeDecodeError:
        return None


def _text(blob: bytes | str | None) -> str | None:
    if blob is None or isinstance(blob, str):
        return blob
    return text(bytes(blob))


def _time(ms: Any) -> str | None:
    return timestamp(ms) if isinstance(ms, int) else None


def functions(service_type: Callable[[str], str | None]) -> dict[str, tuple[int, Callable[..., Any]]]:
    """The views' functions: name -> (arguments, function); deterministic (SQLite may cache results)."""
    return {
        "perdure_field": (2, _RecordFields()),
        "perdure_entry": (3, _Entries()),
        "perdure_time": (1, _time),
        "perdure_utf8": (1, _utf8),
        "perdure_text": (1, _text),
        "perdure_service_ty": (1, service_type),
        "perdure_failed": (1, _failed),
        "perdure_failure_contains": (2, _failure_contains),
    }
