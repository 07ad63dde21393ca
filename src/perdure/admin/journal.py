"""Journal entries as JSON: type, name, a one-line summary and the decoded value or failure."""

from __future__ import annotations

import base64
from typing import Any

from perdure.admin.render import json_or_none, text, timestamp
from perdure.engine.step import decode_entry
from perdure.protocol import messages as pm
from perdure.protocol.codec import RawMessage
from perdure.storage.api import Entry

_VALUE_FIELDS = ("value", "completion_value", "parameter")
_FAILURE_FIELDS = ("failure", "completion_failure")
_KEYS_FIELDS = ("value", "state_keys")  # StateKeys messages: the names of an object's state
_HIDDEN = ("result_completion_id", "invocation_id_notification_idx")  # bookkeeping, not meaning
_TIMES = ("wake_up_time", "invoke_time")
_SHORT = 60


def type_name(code: int) -> str:
    """`RunCommand`, `SleepCompletionNotification`, … (hex for types this version does not know)."""
    return pm.NAME_OF.get(code, f"0x{code:04x}")


def entry_name(message: Any) -> str | None:
    """The name the handler gave the entry (`ctx.run("name", …)`), if any."""
    if isinstance(message, RawMessage):
        return None
    fields = message.DESCRIPTOR.fields_by_name
    for name in ("name", "entry_name"):
        if name in fields and fields[name].type == fields[name].TYPE_STRING:
            value = getattr(message, name)
            if value:
                return str(value)
    return None


def _short_text(data: bytes) -> str:
    try:
        shown = data.decode("utf-8")
    except UnicodeDecodeError:
        return f"<{len(data)} bytes>"
    return shown if len(shown) <= _SHORT else shown[: _SHORT - 3] + "..."


def _shown(field: Any, value: Any) -> str:
    """One field's value, compact: payloads as their text, failures as `code message`."""
    kind = _message_name(field)
    if _repeated(field):
        return "[" + ", ".join(_shown_one(kind, v) for v in value) + "]"
    if field.name in _TIMES:
        return str(timestamp(int(value)))
    return _shown_one(kind, value)


def _repeated(field: Any) -> bool:
    flag = getattr(field, "is_repeated", None)  # protobuf >= 6; older ones only have `label`
    return bool(flag) if flag is not None else field.label == field.LABEL_REPEATED


def _shown_one(kind: str | None, value: Any) -> str:
    if isinstance(value, bytes):
        return _short_text(value)
    if kind == "Value":
        return _short_text(bytes(value.content))
    if kind == "Failure":
        return f"{value.code} {value.message!r}"
    if kind == "Void":
        return "void"
    if kind == "Header":
        return f"{value.key}: {value.value}"
    if kind is not None:
        return "{" + ", ".join(_item(f, v) for f, v in value.ListFields()) + "}"
    return repr(value)


def _item(field: Any, value: Any) -> str:
    return "void" if _message_name(field) == "Void" else f"{field.name}={_shown(field, value)}"


def summarize(message: Any, code: int) -> str:
    """A one-line description such as `RunCompletionNotification(completion_id=1, value=6)`."""
    if isinstance(message, RawMessage):
        return f"{type_name(code)}(<{len(message.payload)} bytes>)"
    shown = [_item(f, v) for f, v in message.ListFields() if f.name not in _HIDDEN]
    return f"{type_name(code)}({', '.join(shown)})"


def _message_name(field: Any) -> str | None:
    return None if field.message_type is None else str(field.message_type.name)


def _contents(message: Any) -> tuple[bytes | None, list[str] | None, dict[str, Any] | None]:
    """(payload bytes, state key names, failure) carried by a message; each may be absent."""
    data: bytes | None = None
    keys: list[str] | None = None
    failure: dict[str, Any] | None = None
    for field, value in message.ListFields():
        if field.name in _FAILURE_FIELDS:
            failure = {"code": int(value.code), "message": str(value.message)}
        elif isinstance(value, bytes) and field.name in _VALUE_FIELDS:
            data = value
        elif field.name in _VALUE_FIELDS and _message_name(field) == "Value":
            data = bytes(value.content)
        elif field.name in _KEYS_FIELDS and _message_name(field) == "StateKeys":
            keys = [text(k) for k in value.keys]
    return data, keys, failure


def _links(message: Any, out: dict[str, Any]) -> None:
    """What a timeline needs to tie entries together: completion ids (a command and the
    notification that completes it share one), times, call targets and child invocation ids."""
    fields = message.DESCRIPTOR.fields_by_name
    if "result_completion_id" in fields and message.result_completion_id:
        out["completion_id"] = int(message.result_completion_id)
    elif "completion_id" in fields:
        out["completion_id"] = int(message.completion_id)
    if "wake_up_time" in fields:
        out["wake_up_time"] = timestamp(int(message.wake_up_time))
    if "invoke_time" in fields and message.invoke_time:
        out["invoke_time"] = timestamp(int(message.invoke_time))
    if "invocation_id_notification_idx" in fields:
        parts = (message.service_name, message.key, message.handler_name)
        out["target"] = "/".join(p for p in parts if p)
    elif "key" in fields and message.key:  # the state entry or the promise a command names
        out["key"] = text(message.key) if isinstance(message.key, bytes) else str(message.key)
    if "invocation_id" in fields and isinstance(message.invocation_id, str) and message.invocation_id:
        out["invocation_id"] = str(message.invocation_id)
    if "idx" in fields and message.WhichOneof("signal_id") == "idx":  # 1 is CANCEL (Restate's)
        out["signal"] = int(message.idx)
    elif "idx" in fields and message.WhichOneof("signal_id") == "name":
        out["signal"] = str(message.name)
    if "headers" in fields and message.headers:
        out["headers"] = {str(h.key): str(h.value) for h in message.headers}


def render_entry(index: int, entry: Entry) -> dict[str, Any]:
    """One stored entry as the admin API shows it."""
    message = decode_entry(entry)
    out: dict[str, Any] = {
        "index": index,
        "type": type_name(entry.type),
        "name": entry_name(message),
        "summary": summarize(message, entry.type),
        "value": None,
    }
    if isinstance(message, RawMessage):
        out["value_base64"] = base64.b64encode(entry.payload).decode()
        return out
    data, keys, failure = _contents(message)
    if keys is not None:
        out["value"] = keys
    elif data is not None:
        ok, value = json_or_none(data)
        if ok:
            out["value"] = value
        else:
            out["value_base64"] = base64.b64encode(data).decode()
    if failure is not None:
        out["failure"] = failure
    _links(message, out)
    return out


def render_journal(entries: list[Entry]) -> list[dict[str, Any]]:
    """The entries in order; a call or send also names the invocation it started
    (`invocation_id`, from the notification that reported its id)."""
    rendered = [render_entry(i, e) for i, e in enumerate(entries)]
    started = {
        e["completion_id"]: e["invocation_id"]
        for e in rendered
        if e["type"] == "CallInvocationIdCompletionNotification" and "invocation_id" in e
    }
    for entry, stored in zip(rendered, entries, strict=True):
        if "target" in entry:
            message = decode_entry(stored)
            child = started.get(int(message.invocation_id_notification_idx))
            if child is not None:
                entry["invocation_id"] = child
    return rendered
