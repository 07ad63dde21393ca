"""Restate 1.7's SQL tables over perdure's store: the rows that fill them (their schemas:
`perdure.admin.restate_schema`).

`Tables.build` reads only what one query needs from the store's base layer
(`perdure.storage.sql`), narrowed by the equality filters `restate_query` found in the query, and
builds Arrow record batches in Restate's value formats: `[code] message` failures, `RT0007` as
the error code of a retryable failure, ids `inv_…`/`dp_…`, times as UTC timestamps, retentions as
durations. Tables of features perdure does not have (vqueues, concurrency rules and limits,
locks, the scheduler) exist with their columns and no rows, so queries naming them still run.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import msgspec
import pyarrow as pa

from perdure import __version__
from perdure.admin.journal import render_entry, type_name
from perdure.admin.restate_schema import SCHEMAS
from perdure.engine.promises import Promise
from perdure.engine.step import decode_entry
from perdure.engine.system import SYSTEM
from perdure.protocol import ids
from perdure.protocol import messages as pm
from perdure.storage import sql
from perdure.storage.api import Entry, Invocation, Status

#: In-process services have no deployment; Restate's CLI wants a `dp_…` id all the same.
IN_PROCESS_DEPLOYMENT_ID = ids.resource_id(
    "dp", hashlib.blake2b(b"perdure in-process", digest_size=16).digest()
)

#: Restate's error code of a failed attempt that will be retried (the handler threw).
RETRYABLE_ERROR_CODE = "RT0007"

_INVOCATIONS = frozenset({"sys_invocation", "sys_invocation_status", "sys_invocation_state"})
_KEYED_TABLES = frozenset({"state", "sys_keyed_service_status", "sys_inbox"})

#: Per table, the columns whose equality filters are pushed to the store, and the base column
#: (`column!`: an inequality, `status != 'completed'`).
PUSHDOWN: dict[str, dict[str, str]] = {
    **{
        t: {
            "id": "id",
            "target_service_name": "service",
            "target_service_key": "key",
            "status": "status",  # Restate's status names are perdure's
            "status!": "status",
        }
        for t in _INVOCATIONS
    },
    "sys_journal": {"id": "invocation_id"},
    "sys_dead_letter": {"id": "id"},
    "sys_journal_events": {"id": "invocation_id"},
    **{t: {"service_name": "service", "service_key": "key"} for t in _KEYED_TABLES},
}

#: The invocation columns the base table holds as they are (no record to decode).
_BASE_INVOCATION_COLUMNS = frozenset(
    {
        "id",
        "partition_key",
        "target",
        "target_service_name",
        "target_service_key",
        "target_handler_name",
        "target_service_ty",
        "status",
        "created_at",
    }
)

_DECODE = msgspec.msgpack.Decoder(Invocation).decode
_DECODE_PROMISE = msgspec.msgpack.Decoder(Promise).decode
_NO_LAYER = sql.Layer(views=(), functions={}, readable=frozenset())
_DAY_MS = 86_400_000
#: perdure statuses Restate has no word for: `pending` is in the key's inbox; a parked Kafka record
#: (dead letter) has failed for good, which Restate calls completed.
_STATUS = {Status.PENDING: "pending", Status.PARKED: "completed"}

#: Equality filters of one query, per table: one dict per scan of the table (column -> the values
#: it may have); a table absent, or one with an empty dict among its scans, is read whole.
Filters = Mapping[str, Sequence[Mapping[str, frozenset[str]]]]


@dataclass(frozen=True)
class ServiceRow:
    name: str
    revision: int
    public: bool
    ty: str  # service | virtual_object | workflow
    deployment_id: str
    completion_retention_ms: int = _DAY_MS
    journal_retention_ms: int = _DAY_MS


@dataclass(frozen=True)
class DeploymentRow:
    id: str
    endpoint: str
    created_at: int
    min_protocol: int
    max_protocol: int
    services: tuple[str, ...]
    server: str | None = None  # the SDK's name and version, as the deployment announced it


@dataclass
class Catalog:
    """What the admin knows beyond the store: services and deployments."""

    services: list[ServiceRow] = field(default_factory=list)
    deployments: list[DeploymentRow] = field(default_factory=list)

    def service(self, name: str) -> ServiceRow | None:
        return next((s for s in self.services if s.name == name), None)


@dataclass
class Reader:
    """Reads the base layer for one query (blocking: run it in a worker thread)."""

    base: sql.Base
    timeout: float

    def rows(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return sql.run(self.base, _NO_LAYER, statement, params, timeout=self.timeout, max_rows=1 << 30).rows


def _where(table: str, filters: Filters, alias: str = "") -> tuple[str, list[Any]]:
    """`WHERE …` for the base table behind `table`, from the query's equality filters."""
    scans = filters.get(table)
    if not scans or any(not scan for scan in scans):
        return "", []
    mapping = PUSHDOWN.get(table, {})
    ors, params = [], []
    for scan in scans:
        ands = []
        for column, values in sorted(scan.items()):
            base = mapping.get(column)
            if base is None:
                continue
            negated = "NOT " if column.endswith("!") else ""
            if base == "status" and "completed" in values:
                values = values | {Status.PARKED.value}  # shown as completed (`_STATUS`)
            ands.append(f"{alias}{base} {negated}IN ({', '.join('?' * len(values))})")
            params.extend(sorted(values))
        if not ands:
            return "", []
        ors.append("(" + " AND ".join(ands) + ")")
    return " WHERE " + " OR ".join(ors), params


def _entry_type(code: int) -> str:
    """Restate's `Command: Run`, `Notification: Run`, … from perdure's message names."""
    name = type_name(code)
    for suffix, kind in (
        ("CompletionNotification", "Notification"),
        ("Notification", "Notification"),
        ("Command", "Command"),
        ("Message", "Event"),
    ):
        if name.endswith(suffix):
            return f"{kind}: {name[: -len(suffix)]}"
    return name


def _failure_text(code: int, message: str) -> str:
    return f"[{code}] {message}"


def _columns(schema: pa.Schema, rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    data: dict[str, list[Any]] = {f.name: [] for f in schema}
    for row in rows:
        for name, values in data.items():
            values.append(row.get(name))
    return pa.Table.from_pydict(data, schema=schema)


class Tables:
    """Builds the Arrow tables one query reads."""

    def __init__(self, reader: Reader, catalog: Catalog) -> None:
        self.reader = reader
        self.catalog = catalog
        self._invocations: dict[str, Invocation] | None = None

    def build(self, table: str, filters: Filters, columns: frozenset[str] | None = None) -> pa.Table:
        """The rows of `table` the filters allow; `columns`: the only ones the query reads (None:
        any), which lets invocation tables skip decoding records when the base columns suffice."""
        schema = SCHEMAS[table]
        if table in _INVOCATIONS and columns is not None and columns <= _BASE_INVOCATION_COLUMNS:
            return self._invocations_from_base(table, filters)
        make: Callable[[Filters], Iterable[Mapping[str, Any]]] | None = getattr(self, "_" + table, None)
        if make is None:
            return schema.empty_table()
        return _columns(schema, make(filters))

    def _invocations_from_base(self, table: str, filters: Filters) -> pa.Table:
        """Invocation rows from the base table's own columns, no record decoded (whole-table
        counts, status breakdowns, target lists); the other columns stay NULL: unread."""
        where, params = _where(table, filters)
        if table == "sys_invocation_state":
            where = (where + " AND" if where else " WHERE") + " status NOT IN ('completed', 'parked')"
        rows = self.reader.rows(
            f"SELECT id, service, handler, key, status, created_at FROM perdure_invocation{where}", params
        )
        ty = {s.name: s.ty for s in self.catalog.services}
        columns = [list(c) for c in zip(*rows, strict=True)] if rows else [[] for _ in range(6)]
        ids_, services, handlers, keys, statuses, created = columns
        targets = [
            f"{s}/{h}" if k is None else f"{s}/{k}/{h}"
            for s, k, h in zip(services, keys, handlers, strict=True)
        ]
        data: dict[str, Any] = {
            "id": ids_,
            "partition_key": [ids.partition_key_of(i) for i in ids_],
            "target": targets,
            "target_service_name": services,
            "target_service_key": keys,
            "target_handler_name": handlers,
            "target_service_ty": [ty.get(s) for s in services],
            "status": [_STATUS.get(Status(s), s) for s in statuses],
            "created_at": created,
        }
        schema = SCHEMAS[table]
        n = len(ids_)
        arrays = [pa.array(data[f.name], f.type) if f.name in data else pa.nulls(n, f.type) for f in schema]
        return pa.Table.from_arrays(arrays, schema=schema)

    # ---- invocations

    def _load_invocations(self, table: str, filters: Filters) -> list[Invocation]:
        where, params = _where(table, filters)
        rows = self.reader.rows(f"SELECT record FROM perdure_invocation{where}", params)
        return [_DECODE(bytes(r[0])) for r in rows]

    def _callers(self, invocations: Sequence[Invocation]) -> dict[str, tuple[str, str | None, str]]:
        wanted = sorted({c.invocation_id for i in invocations for c in i.callers if not c.attach})
        found: dict[str, tuple[str, str | None, str]] = {}
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            statement = f"SELECT id, service, key, handler FROM perdure_invocation WHERE id IN ({marks})"
            for caller_id, service, key, handler in self.reader.rows(statement, chunk):
                found[caller_id] = (service, key, handler)
        return found

    def _invocation_rows(self, table: str, filters: Filters) -> list[dict[str, Any]]:
        invocations = self._load_invocations(table, filters)
        callers = self._callers(invocations)
        return [self._invocation_row(i, callers) for i in invocations]

    def _invocation_row(
        self, inv: Invocation, callers: Mapping[str, tuple[str, str | None, str]]
    ) -> dict[str, Any]:
        service = self.catalog.service(inv.service)
        # a parked Kafka record (perdure's dead letters) has failed for good: Restate calls that completed
        done = inv.status is Status.COMPLETED or inv.status is Status.PARKED
        parts = [inv.service, inv.key, inv.handler] if inv.key is not None else [inv.service, inv.handler]
        caller = next((c for c in inv.callers if not c.attach), None)
        deployment = inv.deployment_id or (IN_PROCESS_DEPLOYMENT_ID if inv.attempt > 0 else None)
        row: dict[str, Any] = {
            "partition_key": ids.partition_key_of(inv.id),
            "id": inv.id,
            "target": "/".join(p for p in parts if p is not None),
            "target_service_name": inv.service,
            "target_service_key": inv.key,
            "target_handler_name": inv.handler,
            "target_service_ty": service.ty if service is not None else None,
            "idempotency_key": inv.idempotency_key,
            "invoked_by": "service" if caller is not None else "ingress",
            "pinned_deployment_id": deployment,
            "pinned_service_protocol_version": (inv.protocol_version or None) if deployment else None,
            "journal_size": inv.journal_length,
            "journal_commands_size": inv.command_count,
            "created_at": inv.created_at,
            "created_using_restate_version": f"perdure {__version__}",
            "modified_at": inv.completed_at if done and inv.completed_at is not None else inv.modified_at,
            "inboxed_at": inv.modified_at if inv.status is Status.PENDING else None,
            "status": _STATUS.get(inv.status, str(inv.status)),
        }
        if caller is not None:
            row["invoked_by_id"] = caller.invocation_id
            known = callers.get(caller.invocation_id)
            if known is not None:
                c_service, c_key, c_handler = known
                row["invoked_by_service_name"] = c_service
                row["invoked_by_target"] = "/".join(p for p in (c_service, c_key, c_handler) if p is not None)
        if inv.execute_at is not None:
            row["scheduled_at"] = inv.created_at
            row["scheduled_start_at"] = inv.execute_at
        if inv.attempt > 0:
            row["running_at"] = inv.execute_at if inv.execute_at is not None else inv.created_at
        if service is not None:
            row["completion_retention"] = service.completion_retention_ms
            row["journal_retention"] = service.journal_retention_ms
        if inv.status is Status.SUSPENDED:
            row["suspended_waiting_for_completions"] = list(inv.waiting_completions)
            row["suspended_waiting_for_signals"] = list(inv.waiting_signals)
        if done:
            row["completed_at"] = inv.completed_at
            outcome = inv.outcome
            if outcome is not None:
                row["completion_result"] = "failure" if outcome.failure is not None else "success"
                if outcome.failure is not None:
                    row["completion_failure"] = _failure_text(outcome.failure.code, outcome.failure.message)
        else:
            row.update(self._attempt_columns(inv, deployment))
        return row

    def _attempt_columns(self, inv: Invocation, deployment: str | None) -> dict[str, Any]:
        """The `sys_invocation_state` part: how the attempts went (not for completed invocations)."""
        row: dict[str, Any] = {
            "in_flight": inv.status is Status.RUNNING,
            "retry_count": inv.failures if inv.attempt > 0 else None,
            "last_start_at": inv.last_progress_at or None if inv.attempt > 0 else None,
            "next_retry_at": inv.next_retry_at,
            "last_attempt_deployment_id": deployment if inv.attempt > 0 else None,
        }
        if inv.attempt > 0 and deployment is not None:
            known = next((d for d in self.catalog.deployments if d.id == deployment), None)
            row["last_attempt_server"] = known.server if known is not None else f"perdure/{__version__}"
        failure = inv.last_failure
        if failure is not None:
            row["last_failure"] = _failure_text(failure.code, failure.message)
            row["last_failure_error_code"] = RETRYABLE_ERROR_CODE
        return row

    def _sys_invocation(self, filters: Filters) -> list[dict[str, Any]]:
        return self._invocation_rows("sys_invocation", filters)

    def _sys_invocation_status(self, filters: Filters) -> list[dict[str, Any]]:
        return self._invocation_rows("sys_invocation_status", filters)

    def _sys_invocation_state(self, filters: Filters) -> list[dict[str, Any]]:
        rows = self._invocation_rows("sys_invocation_state", filters)
        return [r for r in rows if r["status"] != "completed"]

    # ---- journals

    def _sys_journal(self, filters: Filters) -> list[dict[str, Any]]:
        where, params = _where("sys_journal", filters, "j.")
        statement = (
            "SELECT j.invocation_id, j.idx, j.type, j.payload, i.modified_at FROM perdure_journal AS j"
            f" LEFT JOIN perdure_invocation AS i ON i.id = j.invocation_id{where}"
            " ORDER BY j.invocation_id, j.idx"
        )
        out = []
        commands: dict[str, int] = {}  # per invocation: commands seen so far (Input is command 0)
        workflows = frozenset(s.name for s in self.catalog.services if s.ty == "workflow")
        for inv_id, idx, code, payload, _ in self.reader.rows(statement, params):
            command_index = commands.get(inv_id, 0)
            if _is_command(code):
                commands[inv_id] = command_index + 1
            out.append(_journal_row(inv_id, idx, code, bytes(payload), command_index, workflows))
        return out

    # ---- keyed services

    def _state(self, filters: Filters) -> list[dict[str, Any]]:
        where, params = _where("state", filters)
        # the engine's own records (workflow promises: `sys_promise`) are not user state
        where = (where + " AND" if where else " WHERE") + " service != ?"
        statement = f"SELECT service, key, name, value FROM perdure_state{where}"
        rows = self.reader.rows(statement, [*params, SYSTEM])
        out = []
        for service, key, name, value in rows:
            name_b, value_b = bytes(name), bytes(value)
            out.append(
                {
                    "partition_key": ids.partition_key(service, key),
                    "service_name": service,
                    "service_key": key,
                    "key": name_b.decode("utf-8", "replace"),
                    "key_length": len(name_b),
                    "value_utf8": _utf8(value_b),
                    "value": value_b,
                    "value_length": len(value_b),
                }
            )
        return out

    def _sys_promise(self, filters: Filters) -> list[dict[str, Any]]:
        """Workflow promises, kept by the engine as state of its system object (`engine.promises`)."""
        statement = "SELECT key, name, value FROM perdure_state WHERE service = ? AND key LIKE 'promises/%'"
        out = []
        for key, name, value in self.reader.rows(statement, [SYSTEM]):
            _, workflow, workflow_key = str(key).split("/", 2)
            promise = _DECODE_PROMISE(bytes(value))
            outcome = promise.outcome
            row: dict[str, Any] = {
                "partition_key": ids.partition_key(workflow, workflow_key),
                "service_name": workflow,
                "service_key": workflow_key,
                "key": bytes(name).decode("utf-8", "replace"),
                "completed": outcome is not None,
            }
            if outcome is not None and outcome.failure is not None:
                row["completion_failure"] = _failure_text(outcome.failure.code, outcome.failure.message)
            elif outcome is not None:
                row["completion_success_value"] = outcome.value or b""
                row["completion_success_value_utf8"] = _utf8(outcome.value or b"")
            out.append(row)
        return out

    def _sys_keyed_service_status(self, filters: Filters) -> list[dict[str, Any]]:
        where, params = _where("sys_keyed_service_status", filters)
        rows = self.reader.rows(f"SELECT service, key, invocation_id FROM perdure_lock{where}", params)
        return [
            {
                "partition_key": ids.partition_key(s, k),
                "service_name": s,
                "service_key": k,
                "invocation_id": i,
            }
            for s, k, i in rows
        ]

    def _sys_inbox(self, filters: Filters) -> list[dict[str, Any]]:
        where, params = _where("sys_inbox", filters, "b.")
        statement = (
            "SELECT b.service, b.key, b.invocation_id, b.seq, i.created_at FROM perdure_inbox AS b"
            f" LEFT JOIN perdure_invocation AS i ON i.id = b.invocation_id{where}"
        )
        return [
            {
                "partition_key": ids.partition_key(s, k),
                "service_name": s,
                "service_key": k,
                "id": i,
                "sequence_number": seq,
                "created_at": created,
            }
            for s, k, i, seq, created in self.reader.rows(statement, params)
        ]

    def _sys_dead_letter(self, filters: Filters) -> list[dict[str, Any]]:
        """Parked records, and re-driven or discarded ones still within their retention. Only the
        record says whether an invocation is one: every invocation is read (docs/admin.md)."""
        where, params = _where("sys_dead_letter", filters)
        rows = self.reader.rows(f"SELECT record FROM perdure_invocation{where}", params)
        found = []
        for (record,) in rows:
            inv = _DECODE(bytes(record))
            letter = inv.dead_letter
            if letter is None:
                continue
            found.append(
                {
                    "id": inv.id,
                    "subscription_id": letter.subscription,
                    "topic": letter.topic,
                    "partition": letter.partition,
                    "offset": letter.offset,
                    "record_key": None if letter.key is None else _utf8(letter.key),
                    "record_value": None if letter.value is None else _utf8(letter.value),
                    "error_code": letter.error.code,
                    "error_message": letter.error.message,
                    "attempts": letter.attempts,
                    "policy": letter.policy,
                    "state": letter.state if inv.status is Status.PARKED else "discarded",
                    "redrive_of": letter.redrive_of,
                    "parked_at": letter.parked_at or None,
                    "target": f"{inv.service}/{inv.handler}",
                }
            )
        return found

    # ---- the catalog

    def _sys_service(self, filters: Filters) -> list[dict[str, Any]]:
        return [
            {
                "name": s.name,
                "revision": s.revision,
                "public": s.public,
                "ty": s.ty,
                "deployment_id": s.deployment_id,
            }
            for s in self.catalog.services
        ]

    def _sys_deployment(self, filters: Filters) -> list[dict[str, Any]]:
        return [
            {
                "id": d.id,
                "ty": "http",
                "endpoint": d.endpoint,
                "created_at": d.created_at,
                "min_service_protocol_version": d.min_protocol,
                "max_service_protocol_version": d.max_protocol,
                "services": list(d.services),
            }
            for d in self.catalog.deployments
        ]


def _utf8(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _is_command(code: int) -> bool:
    return 0x0400 <= code < 0x8000


def _journal_row(
    inv_id: str, idx: int, code: int, payload: bytes, command_index: int, workflows: frozenset[str] | None
) -> dict[str, Any]:
    entry = Entry(code, payload)
    rendered = render_entry(idx, entry)
    row: dict[str, Any] = {
        "partition_key": ids.partition_key_of(inv_id),
        "id": inv_id,
        "index": idx,
        "entry_type": _entry_type(code),
        "name": rendered.get("name") or "",
        "raw": payload,
        "raw_length": len(payload),
        "version": 2,
        "entry_json": json.dumps(rendered, default=str),
        "entry_lite_json": json.dumps({"type": type_name(code), "name": rendered.get("name")}),
    }
    try:
        message = decode_entry(entry)
    except Exception:  # an entry this version cannot decode still shows, raw
        return row
    if code == pm.TYPE_OF[pm.SleepCommand]:
        row["sleep_wakeup_at"] = int(message.wake_up_time)
    elif code in (pm.TYPE_OF[pm.CallCommand], pm.TYPE_OF[pm.OneWayCallCommand]):
        parts = [message.service_name, message.key, message.handler_name]
        row["invoked_target"] = "/".join(p for p in parts if p)
        # the id the engine gave the call (`engine.entries._child`); a call to a workflow may be its
        # run (an id per workflow key) or a shared handler: not told apart here, left NULL
        key = message.key or None
        if message.HasField("idempotency_key"):
            row["invoked_id"] = ids.idempotent_id(
                message.service_name, message.handler_name, key, message.idempotency_key
            )
        elif workflows is None or message.service_name not in workflows:
            row["invoked_id"] = ids.child_id(inv_id, command_index, message.service_name, key)
    elif code in (pm.TYPE_OF.get(pm.GetPromiseCommand), pm.TYPE_OF.get(pm.PeekPromiseCommand)):
        row["promise_name"] = message.key
    return row


def duration_ms(value: timedelta | None, default_ms: int = _DAY_MS) -> int:
    return default_ms if value is None else round(value.total_seconds() * 1000)
