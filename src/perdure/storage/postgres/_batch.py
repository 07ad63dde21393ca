"""A partition's committed `Writes` as rows, and how a group of them is applied in one transaction.

`prepare` (on the event loop) turns a transaction's writes into rows per table, user text as
UTF-8 bytes and keys hashed (`_keys`). The writer applies a group of prepared batches — at most one
per partition, so no two touch the same row — with one set-based statement per table (`APPLY`)
whose rows come as one JSON array parameter (bytes as base64; msgspec encodes it in C and
PostgreSQL parses it in C: ~0.3 us of client CPU per row, where psycopg's array parameters cost
~5 us and a COPY into a temporary table ~1 us plus the temporary table's cost at every commit,
see `bench/pg_clients.py`). A group is one call of a server-side function that runs them all and
checks the leases first (`INSTALL`, `APPLY_GROUP`): a partition another node took makes the
group roll back and go again without it, so it commits nothing.

Every statement is idempotent (upserts, deletes, deliveries unique by source), so a group whose
COMMIT's outcome is unknown (the connection broke) is simply applied again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from perdure.storage.api import Position
from perdure.storage.layered.writes import Writes
from perdure.storage.postgres._keys import nkey, skey, text

# row source -> its columns with their types: each statement reads its rows from `{source}`, one
# JSON array parameter of rows (arrays of the columns in this order).
SOURCES: dict[str, tuple[tuple[str, str], ...]] = {
    "fence_in": (("partition", "int4"), ("epoch", "int8"), ("seq", "int8"), ("inbox_seq", "int8")),
    "inv_del": (("seq", "int8"),),
    "inv_in": (
        ("seq", "int8"), ("id", "text"), ("partition", "int4"), ("service", "bytea"), ("handler", "bytea"),
        ("key", "bytea"), ("status", "text"), ("created_at", "int8"), ("modified_at", "int8"),
        ("record", "bytea"),
    ),
    "journal_clear": (("seq", "int8"),),
    "journal_in": (("seq", "int8"), ("idx", "int4"), ("type", "int4"), ("payload", "bytea")),
    "state_clear": (("skey", "bytea"),),
    "state_del": (("skey", "bytea"), ("nkey", "bytea")),
    "state_in": (
        ("skey", "bytea"), ("nkey", "bytea"), ("service", "bytea"), ("key", "bytea"), ("name", "bytea"),
        ("value", "bytea"),
    ),
    "lock_del": (("skey", "bytea"),),
    "lock_in": (("skey", "bytea"), ("service", "bytea"), ("key", "bytea"), ("invocation_id", "text")),
    "inbox_del": (("skey", "bytea"), ("seq", "int8")),
    "inbox_in": (
        ("skey", "bytea"), ("seq", "int8"), ("service", "bytea"), ("key", "bytea"), ("invocation_id", "text"),
    ),
    "timer_del": (("id", "text"),),
    "timer_in": (
        ("id", "text"), ("partition", "int4"), ("fire_at", "int8"), ("kind", "text"),
        ("invocation_id", "text"), ("completion_id", "int4"),
    ),
    "offset_in": (
        ("subscription", "text"), ("topic", "text"), ("kafka_partition", "int4"), ("next_offset", "int8"),
        ("epoch", "int4"),
    ),
    "ids_in": (("id", "text"), ("seq", "int8")),
    "delivery_in": (("partition", "int4"), ("source", "text"), ("body", "bytea")),
    "delivery_del": (("id", "int8"),),
}  # fmt: skip


def _column(i: int, kind: str) -> str:
    if kind == "bytea":
        return f"decode(x->>{i}, 'base64')"
    if kind == "text":
        return f"x->>{i}"
    return f"(x->>{i})::{kind}"


def _source(name: str) -> str:
    columns = ", ".join(f"{_column(i, kind)} AS {column}" for i, (column, kind) in enumerate(SOURCES[name]))
    return f"(SELECT {columns} FROM jsonb_array_elements(%s::jsonb) AS x)"


def _sql(statement: str, source: str) -> str:
    return statement.replace("{source}", _source(source))


# (row source, statement), in the order they run: per table deletes before inserts; journal_ids last.
_APPLY = (
    ("inv_del", "DELETE FROM invocations AS t USING {source} AS d WHERE t.seq = d.seq"),
    (
        "inv_in",
        "INSERT INTO invocations SELECT * FROM {source} AS s"
        " ON CONFLICT (seq) DO UPDATE SET id = excluded.id, partition = excluded.partition,"
        " service = excluded.service, handler = excluded.handler,"
        " key = excluded.key, status = excluded.status, created_at = excluded.created_at,"
        " modified_at = excluded.modified_at, record = excluded.record",
    ),
    ("journal_clear", "DELETE FROM journal AS t USING {source} AS d WHERE t.seq = d.seq"),
    (
        "journal_in",
        "INSERT INTO journal SELECT * FROM {source} AS s ON CONFLICT (seq, idx)"
        " DO UPDATE SET type = excluded.type, payload = excluded.payload",
    ),
    ("state_clear", "DELETE FROM state AS t USING {source} AS d WHERE t.skey = d.skey"),
    ("state_del", "DELETE FROM state AS t USING {source} AS d WHERE t.skey = d.skey AND t.nkey = d.nkey"),
    (
        "state_in",
        "INSERT INTO state SELECT * FROM {source} AS s ON CONFLICT (skey, nkey) DO UPDATE SET"
        " service = excluded.service, key = excluded.key, name = excluded.name, value = excluded.value",
    ),
    ("lock_del", "DELETE FROM locks AS t USING {source} AS d WHERE t.skey = d.skey"),
    (
        "lock_in",
        "INSERT INTO locks SELECT * FROM {source} AS s ON CONFLICT (skey) DO UPDATE SET"
        " service = excluded.service, key = excluded.key, invocation_id = excluded.invocation_id",
    ),
    ("inbox_del", "DELETE FROM inbox AS t USING {source} AS d WHERE t.skey = d.skey AND t.seq = d.seq"),
    (
        "inbox_in",
        "INSERT INTO inbox SELECT * FROM {source} AS s ON CONFLICT (skey, seq) DO UPDATE SET"
        " invocation_id = excluded.invocation_id",
    ),
    ("timer_del", "DELETE FROM timers AS t USING {source} AS d WHERE t.id = d.id"),
    (
        "timer_in",
        "INSERT INTO timers SELECT * FROM {source} AS s ON CONFLICT (id) DO UPDATE SET"
        " partition = excluded.partition, fire_at = excluded.fire_at, kind = excluded.kind,"
        " invocation_id = excluded.invocation_id, completion_id = excluded.completion_id",
    ),
    (
        "offset_in",
        "INSERT INTO kafka_offsets SELECT * FROM {source} AS s"
        " ON CONFLICT (subscription, topic, kafka_partition)"
        " DO UPDATE SET next_offset = excluded.next_offset, epoch = excluded.epoch",
    ),
    (
        "delivery_in",
        "INSERT INTO deliveries (partition, source, body) SELECT * FROM {source} AS s"
        " ON CONFLICT (source) DO NOTHING",
    ),
    ("delivery_del", "DELETE FROM deliveries AS t USING {source} AS d WHERE t.id = d.id"),
    # journal_ids holds the seq of a journal without an invocation row: for the ids whose rows were
    # deleted or that gained such a journal, make it match the tables rather than track every case.
    (
        "ids_in",
        "DELETE FROM journal_ids AS t USING {source} AS i WHERE t.id = i.id"
        " AND (EXISTS (SELECT 1 FROM invocations WHERE seq = i.seq)"
        " OR NOT EXISTS (SELECT 1 FROM journal WHERE seq = i.seq))",
    ),
    (
        "ids_in",
        "INSERT INTO journal_ids SELECT id, seq FROM {source} AS i"
        " WHERE NOT EXISTS (SELECT 1 FROM invocations WHERE seq = i.seq)"
        " AND EXISTS (SELECT 1 FROM journal WHERE seq = i.seq) ON CONFLICT (id) DO NOTHING",
    ),
)

#: The statements with their rows from a parameter: for a transaction of its own (the Kafka intake).
APPLY = tuple((source, _sql(statement, source)) for source, statement in _APPLY)


def _group_source(name: str) -> str:
    columns = ", ".join(f"{_column(i, kind)} AS {column}" for i, (column, kind) in enumerate(SOURCES[name]))
    return f"(SELECT {columns} FROM jsonb_array_elements(_b->'{name}') AS x)"


#: SQLSTATE of "a partition of the group is owned by another node now" (its numbers in DETAIL).
FENCED = "PD001"

# A group is applied by one call of a function the writer creates in its session (`pg_temp`: each
# perdure version brings its own, no migration). One statement in autocommit is one transaction:
# the group costs one round trip and one execute of client work. First the lease check: it
# records the partitions' high-water marks, and its row locks hold a takeover off until the
# commit; a partition whose lease is no longer (this node, its epoch) raises, which rolls
# everything back.
_FENCE_SOURCE = _group_source("fence_in")
_FUNCTION_BODY = " ".join(
    (
        "DECLARE _lost int4[]; BEGIN",
        "IF _b ? 'fence_in' THEN",
        "WITH held AS (UPDATE partition_leases AS l"
        " SET seq = greatest(l.seq, f.seq), inbox_seq = greatest(l.inbox_seq, f.inbox_seq)"
        f" FROM {_FENCE_SOURCE} AS f WHERE l.partition = f.partition AND l.epoch = f.epoch AND l.node = _node"
        " RETURNING l.partition)"
        f" SELECT array_agg(f.partition) INTO _lost FROM {_FENCE_SOURCE} AS f"
        " WHERE f.partition NOT IN (SELECT partition FROM held);",
        "IF _lost IS NOT NULL THEN RAISE EXCEPTION 'partition lease lost'"
        f" USING ERRCODE = '{FENCED}', DETAIL = array_to_string(_lost, ','); END IF;",
        "END IF;",
        *(
            f"IF _b ? '{source}' THEN {statement.replace('{source}', _group_source(source))}; END IF;"
            for source, statement in _APPLY
        ),
        "IF _b ? 'notify' THEN",
        "PERFORM pg_notify('perdure', p) FROM jsonb_array_elements_text(_b->'notify') AS p;",
        "END IF;",
        "END",
    )
)
INSTALL = (
    "CREATE OR REPLACE FUNCTION pg_temp.perdure_apply(_node text, _b jsonb) RETURNS void"
    f" LANGUAGE plpgsql AS $perdure$ {_FUNCTION_BODY} $perdure$"
)
APPLY_GROUP = "SELECT pg_temp.perdure_apply(%s, %s::jsonb)"


def group_json(group: Sequence[Any]) -> str:
    """The parameter of `APPLY_GROUP` for `group` (jobs with `.rows`): rows per source, and the
    notifications to send at commit."""
    out: dict[str, object] = {}
    fences = [job.rows.fence for job in group if job.rows.fence is not None]
    if fences:
        out["fence_in"] = fences
    for source in _SOURCES_IN_ORDER:
        rows = [row for job in group for row in job.rows.tables.get(source, ())]
        if rows:
            out[source] = rows
    notices = notify_payloads(group)
    if notices:
        out["notify"] = notices
    return _json(out).decode()


_SOURCES_IN_ORDER = tuple(dict.fromkeys(source for source, _ in _APPLY))


@dataclass
class Rows:
    """One transaction's writes as rows per temp table, and the lease it commits under.

    `partition` None: rows of no partition (deliveries an ingress or a Kafka consumer sends).
    """

    partition: int | None
    fence: tuple[int, int, int, int] | None  # (partition, epoch, high-water seq, inbox seq)
    tables: dict[str, list[tuple[object, ...]]] = field(default_factory=dict)
    completed: list[str] = field(default_factory=list)  # invocations this transaction completes

    def add(self, table: str, row: tuple[object, ...]) -> None:
        rows = self.tables.get(table)
        if rows is None:
            rows = self.tables[table] = []
        rows.append(row)


_FINISHED = ("completed", "parked")


def prepare(w: Writes, partition: int, epoch: int | None, seq: int, inbox_seq: int) -> Rows:
    """The rows that apply `w` to a database holding everything committed before it."""
    out = Rows(partition, None if epoch is None else (partition, epoch, seq, inbox_seq))
    add = out.add
    seen = w.seen
    reconcile: dict[str, int] = {}
    for id, new in w.invocations.items():
        seq_, record, status, at, ident = new
        assert seq_ is not None
        old = seen[id]
        if record is None:
            if old.record is not None:
                add("inv_del", (seq_,))
            reconcile[id] = seq_
            continue
        assert ident is not None
        service, handler, key, created_at = ident
        if status in _FINISHED and old.status not in _FINISHED:
            out.completed.append(id)
        add(
            "inv_in",
            (seq_, id, partition, text(service), text(handler), None if key is None else text(key), status,
             created_at, at, record),
        )  # fmt: skip
        if old.record is None and old.seq is not None:  # not a fresh seq: a journal_ids row may have to go
            reconcile[id] = seq_
    invocations = w.invocations
    for id, ops in w.journals.items():
        if ops.cleared:
            add("journal_clear", (ops.seq,))
            reconcile[id] = ops.seq
        elif (invocations.get(id) or seen[id]).record is None:
            reconcile[id] = ops.seq
        for idx, entry in ops.entries.items():
            add("journal_in", (ops.seq, idx, entry.type, entry.payload))
    for (service, key), sops in w.state.items():
        s = skey(service, key)
        if sops.cleared:
            add("state_clear", (s,))
        for name, value in sops.values.items():
            if value is None:
                add("state_del", (s, nkey(name)))
            else:
                add("state_in", (s, nkey(name), text(service), text(key), name, value))
    for (service, key), holder in w.locks.items():
        if holder is None:
            add("lock_del", (skey(service, key),))
        else:
            add("lock_in", (skey(service, key), text(service), text(key), holder))
    for service, key, inbox_seq_, invocation_id in w.inbox_pushed.values():
        add("inbox_in", (skey(service, key), inbox_seq_, text(service), text(key), invocation_id))
    for service, key, inbox_seq_ in w.inbox_dropped:
        add("inbox_del", (skey(service, key), inbox_seq_))
    for timer_id, t in w.timers.items():
        if t is None:
            add("timer_del", (timer_id,))
        else:
            add("timer_in", (t.id, partition, t.fire_at, t.kind, t.invocation_id, t.completion_id))
    for (subscription, topic, kafka_partition), position in w.offsets.items():
        add("offset_in", (subscription, topic, kafka_partition, position.next_offset, position.epoch))
    for target, source, body in w.deliveries:
        add("delivery_in", (target, source, body))
    for delivery_id in w.delivered:
        add("delivery_del", (delivery_id,))
    for id, seq_ in reconcile.items():
        add("ids_in", (id, seq_))
    return out


_json = msgspec.json.Encoder().encode


def rows_json(rows: list[tuple[object, ...]]) -> str:
    """Rows as the JSON parameter of a statement's source (bytes become base64)."""
    return _json(rows).decode()


#: Sent at COMMIT (PostgreSQL delivers notifications only then): wakes the owners of partitions that
#: received deliveries, and the nodes waiting for invocations that completed.
NOTIFY = "SELECT pg_notify('perdure', p) FROM unnest(%s::text[]) AS p"
_NOTICE_BYTES = 7000  # below PostgreSQL's 8,000-byte payload limit


def notify_payloads(group: Sequence[Any]) -> list[str]:
    """`d <partition>` per partition that receives deliveries; `c <id> <id>…` for completions."""
    targets = sorted({row[0] for job in group for row in job.rows.tables.get("delivery_in", ())})
    out = [f"d {p}" for p in targets]
    line = ""
    for job in group:
        for invocation_id in job.rows.completed:
            if len(line) + len(invocation_id) > _NOTICE_BYTES:
                out.append(line)
                line = ""
            line = f"{line} {invocation_id}" if line else f"c {invocation_id}"
    if line:
        out.append(line)
    return out


_POSITION = (
    "SELECT next_offset, epoch FROM kafka_offsets"
    " WHERE subscription = %s AND topic = %s AND kafka_partition = %s FOR UPDATE"
)


def ingest(
    conn: Any,
    key: tuple[str, str, int],
    expected: Position | None,
    new: Position,
    deliveries: Sequence[tuple[int, str, bytes]],
) -> bool:
    """On the writer, in a transaction: compare-and-set the stored Kafka position, write the records'
    deliveries and wake their partitions; False (nothing written) when the position moved."""
    row = conn.execute(_POSITION, key).fetchone()
    if (None if row is None else Position(*row)) != expected:
        return False
    conn.execute(
        "INSERT INTO kafka_offsets VALUES (%s, %s, %s, %s, %s)"
        " ON CONFLICT (subscription, topic, kafka_partition)"
        " DO UPDATE SET next_offset = excluded.next_offset, epoch = excluded.epoch",
        (*key, new.next_offset, new.epoch),
    )
    if deliveries:
        conn.execute(dict(APPLY)["delivery_in"], (rows_json(list(deliveries)),))
        conn.execute(NOTIFY, ([f"d {p}" for p in sorted({d[0] for d in deliveries})],))
    return True
