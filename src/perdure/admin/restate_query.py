"""`POST /query` in Restate's dialect: Apache DataFusion (the engine restate-server runs) over
Restate 1.7's tables (`restate_tables`), answering Arrow IPC or JSON.

One query runs in two steps, in a worker thread:

1. **Plan** it against empty tables of the right schemas. The optimized plan shows, for every
   table it scans, the filter right above the scan; the equality conditions in it on the columns
   of `restate_tables.PUSHDOWN` (`id = '…'`, `id IN (…)`, `service_name = …`, …) are kept.
2. **Fill** only the tables the query reads, each narrowed by those conditions in the store's own
   SQL (an indexed lookup for one invocation), then run the query on them for real.

A query that reads a whole table still reads it whole. Only one read-only statement is allowed
(DataFusion's SQL options refuse DDL, DML and `SET`-like statements), and the time limit holds
while reading the store and while DataFusion runs (past it the caller gets an error at once; the
abandoned execution ends on its own thread, as DataFusion cannot be interrupted).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import datafusion
import pyarrow as pa

from perdure.admin import restate_tables as rt
from perdure.admin.restate_schema import SCHEMAS
from perdure.storage import sql
from perdure.storage.sql import QueryError

ARROW_STREAM = "application/vnd.apache.arrow.stream"

_READ_ONLY = datafusion.SQLOptions().with_allow_ddl(False).with_allow_dml(False).with_allow_statements(False)
_LAYER = sql.Layer(views=(), functions={}, readable=frozenset(), describe=", ".join(sorted(SCHEMAS)))
_EQ_OPS = ("=", "!=")


@dataclass
class Answer:
    table: pa.Table
    truncated: bool = False


def _context() -> datafusion.SessionContext:
    config = datafusion.SessionConfig().with_information_schema(True).with_target_partitions(1)
    ctx = datafusion.SessionContext(config)
    for name, schema in SCHEMAS.items():
        ctx.register_record_batches(name, [[pa.RecordBatch.from_pylist([], schema=schema)]])
    return ctx


def run(
    statement: str, base: sql.Base, catalog: rt.Catalog, *, timeout: float = 2.0, max_rows: int = 10_000
) -> Answer:
    """Run one read-only statement (blocking); `QueryError` when refused, failed or too slow."""
    sql.check_read_only(statement, _LAYER)
    deadline = time.monotonic() + timeout
    ctx = _context()
    try:
        plan = ctx.sql_with_options(statement, _READ_ONLY).optimized_logical_plan()
    except Exception as e:  # DataFusion reports planning errors as plain exceptions
        raise QueryError(_message(e)) from None
    filters = pushdown(plan)
    columns = scanned_columns(plan)
    mentioned = {t for t in SCHEMAS if re.search(rf"\b{t}\b", statement, re.IGNORECASE)}
    reader = rt.Reader(base, timeout)
    tables = rt.Tables(reader, catalog)
    for name in sorted(mentioned):
        # A scan the plan walk did not see (a subquery kept inside an expression) must see every
        # row: push nothing down unless each FROM/JOIN of the table was seen as a scan.
        referenced = len(re.findall(rf"\b(?:from|join)\s+{name}\b", statement, re.IGNORECASE))
        seen = filters.get(name, [])
        narrowed = filters if name in filters and referenced <= len(seen) else {}
        wanted = columns.get(name) if referenced <= len(seen) else None
        table = tables.build(name, narrowed, wanted)
        ctx.deregister_table(name)
        ctx.register_record_batches(
            name, [table.to_batches() or [pa.RecordBatch.from_pylist([], schema=table.schema)]]
        )
        if time.monotonic() > deadline:
            raise QueryError(f"the query ran longer than {timeout:g} s and was stopped")
    remaining = deadline - time.monotonic()
    outcome: dict[str, Any] = {}

    def execute() -> None:
        try:
            outcome["answer"] = _execute(ctx, statement, max_rows)
        except BaseException as e:
            outcome["error"] = e

    # DataFusion cannot be interrupted from Python: past the time limit the answer is an error
    # at once, and the abandoned execution finishes (or fails) on its own thread.
    worker = threading.Thread(target=execute, name="perdure-query", daemon=True)
    worker.start()
    worker.join(max(remaining, 0.0))
    if worker.is_alive():
        raise QueryError(f"the query ran longer than {timeout:g} s and was stopped")
    if "error" in outcome:
        error = outcome["error"]
        if isinstance(error, QueryError):
            raise error
        raise QueryError(_message(error)) from None
    answer: Answer = outcome["answer"]
    return answer


def _execute(ctx: datafusion.SessionContext, statement: str, max_rows: int) -> Answer:
    frame = ctx.sql_with_options(statement, _READ_ONLY)
    schema = frame.schema()
    batches: list[pa.RecordBatch] = []
    rows = 0
    for batch in frame.execute_stream():
        record = batch.to_pyarrow()
        batches.append(record)
        rows += record.num_rows
        if rows > max_rows:
            break
    table = pa.Table.from_batches(batches, schema=schema)
    if table.num_rows > max_rows:
        return Answer(table.slice(0, max_rows), truncated=True)
    return Answer(table)


def _message(error: BaseException) -> str:
    return str(error).strip()


# ---- filters pushed to the store


def pushdown(plan: Any) -> dict[str, list[dict[str, frozenset[str]]]]:
    """Per Restate table, the equality conditions each of its scans in `plan` must meet."""
    found: dict[str, list[dict[str, frozenset[str]]]] = {}
    _walk(plan, None, found)
    return found


def scanned_columns(plan: Any) -> dict[str, frozenset[str] | None]:
    """Per Restate table, the columns its scans in `plan` read (None: unknown, read them all)."""
    found: dict[str, frozenset[str] | None] = {}

    def walk(node: Any) -> None:
        variant = node.to_variant()
        if type(variant).__name__ == "TableScan":
            name = str(variant.table_name()).rsplit(".", 1)[-1]
            if name in SCHEMAS:
                read: frozenset[str] | None
                try:
                    read = frozenset(str(column) for _, column in variant.projection())
                except Exception:  # a projection this version does not describe: read everything
                    read = None
                if name in found:
                    before = found[name]
                    found[name] = None if before is None or read is None else before | read
                else:
                    found[name] = read
        for child in node.inputs():
            walk(child)

    walk(plan)
    return found


def _walk(plan: Any, parent: Any, found: dict[str, list[dict[str, frozenset[str]]]]) -> None:
    variant = plan.to_variant()
    kind = type(variant).__name__
    if kind == "TableScan":
        name = str(variant.table_name()).rsplit(".", 1)[-1]
        if name in SCHEMAS:
            conditions: dict[str, frozenset[str]] = {}
            predicates = list(variant.filters())
            if parent is not None and type(parent).__name__ == "Filter":
                predicates.append(parent.predicate())
            for predicate in predicates:
                for column, values in _equalities(predicate, name).items():
                    known = conditions.get(column)
                    conditions[column] = values if known is None else known & values
            allowed = rt.PUSHDOWN.get(name, {})
            found.setdefault(name, []).append({c: v for c, v in conditions.items() if c in allowed})
    for child in plan.inputs():
        _walk(child, variant, found)


def _equalities(expr: Any, table: str) -> dict[str, frozenset[str]]:
    """`column -> values` for the conjuncts of `expr` that are `col = 'x'`, `col IN ('x', …)`
    or an OR of such equalities on one column; `column! -> values` for `col != 'x'`."""
    variant = expr.to_variant()
    kind = type(variant).__name__
    if kind == "BinaryExpr" and variant.op() == "AND":
        left, right = _equalities(variant.left(), table), _equalities(variant.right(), table)
        for column, values in right.items():
            if column not in left:
                left[column] = values
            elif column.endswith("!"):  # `col != a AND col != b`: neither
                left[column] = left[column] | values
            else:
                left[column] = left[column] & values
        return left
    one = _one_column(expr, table)
    return {one[0]: one[1]} if one is not None else {}


def _one_column(expr: Any, table: str) -> tuple[str, frozenset[str]] | None:
    variant = expr.to_variant()
    kind = type(variant).__name__
    if kind == "BinaryExpr" and variant.op() == "OR":
        left, right = _one_column(variant.left(), table), _one_column(variant.right(), table)
        if left is None or right is None or left[0] != right[0] or left[0].endswith("!"):
            return None
        return left[0], left[1] | right[1]
    if kind == "BinaryExpr" and variant.op() in _EQ_OPS:
        for col, val in ((variant.left(), variant.right()), (variant.right(), variant.left())):
            column, value = _column(col, table), _string(val)
            if column is not None and value is not None:
                suffix = "!" if variant.op() == "!=" else ""  # `col!`: must not be one of these
                return column + suffix, frozenset({value})
        return None
    if kind == "InList":
        column = _column(variant.expr(), table)
        values = [_string(v) for v in variant.list()]
        if column is None or any(v is None for v in values):
            return None
        return column + ("!" if variant.negated() else ""), frozenset(v for v in values if v is not None)
    return None


def _column(expr: Any, table: str) -> str | None:
    variant = expr.to_variant()
    if type(variant).__name__ != "Column":
        return None
    relation = variant.relation()
    if relation is not None and str(relation).rsplit(".", 1)[-1] != table:
        return None
    return str(variant.name())


def _string(expr: Any) -> str | None:
    if type(expr.to_variant()).__name__ != "Literal":
        return None
    value = expr.python_value().as_py()
    return value if isinstance(value, str) else None


# ---- answers


def arrow_stream(table: pa.Table) -> bytes:
    """The table as an Arrow IPC stream (what Restate's CLI reads)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def json_rows(table: pa.Table) -> list[dict[str, Any]]:
    """Rows as restate-server writes them in JSON: RFC 3339 times, ISO 8601 durations, hex bytes,
    and no key for a NULL (Restate's CLI reads a missing key as none, a `null` as a type error)."""
    return [{k: _json_value(v) for k, v in row.items() if v is not None} for row in table.to_pylist()]


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        moment = value.astimezone(UTC) if value.tzinfo else value
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
        return f"PT{seconds:g}S" if seconds != int(seconds) else f"PT{int(seconds)}S"
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _json_value(v) for k, v in value.items()}
    return value
