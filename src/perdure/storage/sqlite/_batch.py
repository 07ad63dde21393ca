"""The one SQL statement that applies a transaction's `Writes` to a SQLite database.

A batch is applied by inserting one row into a TEMP view whose INSTEAD OF trigger runs the
set-based statements the batch has rows for. Each statement reads its rows from one JSON array
(`json_each`) and cuts byte strings (records, payloads, state names and values) and user text
(service and handler names, keys: JSON would cut them at U+0000) out of one blob with `substr()`.
So a whole batch — and, in autocommit, its COMMIT and fsync — is a single `execute`, one C-level
step that runs without the GIL: `executemany` (or one `execute` per statement) would need the GIL
back after every row (or statement), and a busy event loop hands it over only every switch
interval (5 ms).

Which statements a batch needs is its *shape* (a bit per statement). Each shape gets a view and
trigger of its own (`Shape`, created by the writer on first use), so a small commit — one
`ctx.run` result: an invocation update and two journal rows — runs 2 statements, not all 20: 26
instead of 58 µs of the writer's CPU per commit, on the path of every sequential step. At most
`MAX_SHAPES` are made; batches of any other shape use the one that runs every statement.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import msgspec

from perdure.storage.layered.writes import Key, Writes

# ---- SQL. In each statement {rows} is the JSON array of rows, {blob} the blob byte columns come from.
#
# Strings a user chooses (service and handler names, object keys) travel in the blob too, as UTF-8,
# never as JSON strings: SQLite's JSON functions cut a string at U+0000, so a key with a NUL in it
# would land on another key's rows. Ids, statuses and timer fields are perdure's own (ASCII).


def _c(i: int, row: str = "value") -> str:
    return f"json_extract({row}, '$[{i}]')"


def _b(i: int, row: str = "value") -> str:
    """A byte column stored as (offset, length) at row positions i and i+1."""
    return f"substr({{blob}}, {_c(i, row)}, {_c(i + 1, row)})"


def _t(i: int, row: str = "value") -> str:
    """A text column stored like a byte column (UTF-8); a NULL offset gives NULL."""
    return f"CAST({_b(i, row)} AS TEXT)"


def _cols(n: int, row: str = "value") -> str:
    return ", ".join(_c(i, row) for i in range(n))


_J = "j.value"
_EACH = "FROM json_each({rows})"
_KEY = f"{_t(0)}, {_t(2)}"  # (service, key) at row positions 0-3
# (column with the rows, column with the blob or "", statement), in the order they run: per table,
# deletes before inserts; journal_ids last, as it looks at the other tables.
_STATEMENTS = (
    ("inv_delete", "", f"DELETE FROM invocations WHERE seq IN (SELECT value {_EACH})"),
    (
        "inv_insert",
        "inv_insert_blob",
        "INSERT INTO invocations (seq, id, status, created_at, modified_at, service, handler, key, record)"
        f" SELECT {_cols(5)}, {_t(5)}, {_t(7)}, {_t(9)}, {_b(11)} {_EACH}",
    ),
    # UPDATEs name only the columns that change, so SQLite touches the status index only when it must.
    (
        "inv_update",
        "inv_update_blob",
        f"UPDATE invocations SET modified_at = {_c(1, _J)}, record = {_b(2, _J)}"
        f" {_EACH} AS j WHERE invocations.seq = {_c(0, _J)}",
    ),
    (
        "inv_status",
        "inv_status_blob",
        f"UPDATE invocations SET status = {_c(1, _J)}, modified_at = {_c(2, _J)}, record = {_b(3, _J)}"
        f" {_EACH} AS j WHERE invocations.seq = {_c(0, _J)}",
    ),
    (
        "inv_all",
        "inv_all_blob",
        f"UPDATE invocations SET status = {_c(1, _J)}, created_at = {_c(2, _J)}, modified_at = {_c(3, _J)},"
        f" service = {_t(4, _J)}, handler = {_t(6, _J)}, key = {_t(8, _J)}, record = {_b(10, _J)}"
        f" {_EACH} AS j WHERE invocations.seq = {_c(0, _J)}",
    ),
    ("journal_delete", "", f"DELETE FROM journal WHERE seq IN (SELECT value {_EACH})"),
    (
        "journal_put",
        "journal_put_blob",
        f"INSERT OR REPLACE INTO journal (seq, idx, type, payload) SELECT {_cols(3)}, {_b(3)} {_EACH}",
    ),
    (
        "state_clear_all",
        "state_clear_all_blob",
        f"DELETE FROM state WHERE (service, key) IN (SELECT {_KEY} {_EACH})",
    ),
    (
        "state_clear",
        "state_clear_blob",
        f"DELETE FROM state WHERE (service, key, name) IN (SELECT {_KEY}, {_b(4)} {_EACH})",
    ),
    (
        "state_set",
        "state_set_blob",
        f"INSERT OR REPLACE INTO state (service, key, name, value) SELECT {_KEY}, {_b(4)}, {_b(6)} {_EACH}",
    ),
    (
        "lock_release",
        "lock_release_blob",
        f"DELETE FROM locks WHERE (service, key) IN (SELECT {_KEY} {_EACH})",
    ),
    (
        "lock_set",
        "lock_set_blob",
        f"INSERT OR REPLACE INTO locks (service, key, invocation_id) SELECT {_KEY}, {_c(4)} {_EACH}",
    ),
    (
        "inbox_delete",
        "inbox_delete_blob",
        f"DELETE FROM inbox WHERE (service, key, seq) IN (SELECT {_KEY}, {_c(4)} {_EACH})",
    ),
    (
        "inbox_push",
        "inbox_push_blob",
        f"INSERT INTO inbox (service, key, seq, invocation_id) SELECT {_KEY}, {_c(4)}, {_c(5)} {_EACH}",
    ),
    (  # subscription ids are perdure's, Kafka topic names ASCII: JSON carries them intact
        "offset_put",
        "",
        "INSERT OR REPLACE INTO kafka_offsets (subscription, topic, partition, next_offset, epoch)"
        f" SELECT {_cols(5)} {_EACH}",
    ),
    ("timer_delete", "", f"DELETE FROM timers WHERE id IN (SELECT value {_EACH})"),
    (
        "timer_put",
        "",
        "INSERT OR REPLACE INTO timers (id, fire_at, kind, invocation_id, completion_id)"
        f" SELECT {_cols(5)} {_EACH}",
    ),
    # journal_ids holds the seq of a journal without an invocation row. For the ids whose rows were
    # deleted or that gained such a journal, make it match the tables rather than track every case.
    (
        "journal_ids",
        "",
        f"DELETE FROM journal_ids WHERE id IN (SELECT {_c(0)} {_EACH}"
        f" WHERE EXISTS (SELECT 1 FROM invocations WHERE seq = {_c(1)})"
        f" OR NOT EXISTS (SELECT 1 FROM journal WHERE seq = {_c(1)}))",
    ),
    (
        "journal_ids",
        "",
        f"INSERT OR IGNORE INTO journal_ids (id, seq) SELECT {_cols(2)} {_EACH}"
        f" WHERE NOT EXISTS (SELECT 1 FROM invocations WHERE seq = {_c(1)})"
        f" AND EXISTS (SELECT 1 FROM journal WHERE seq = {_c(1)})",
    ),
)
_COLUMNS = tuple(dict.fromkeys(c for rows, blob, _ in _STATEMENTS for c in (rows, blob) if c))
_INDEX = {name: i for i, name in enumerate(_COLUMNS)}
_ROWS_AT = tuple(_INDEX[rows] for rows, _, _ in _STATEMENTS)  # per statement, its rows column
#: The shape that runs every statement (for batches beyond `MAX_SHAPES` shapes).
EVERY = (1 << len(_STATEMENTS)) - 1
#: Distinct shapes given a view and trigger of their own, per process.
MAX_SHAPES = 256


class Shape(NamedTuple):
    """The statements for one set of non-empty columns: its TEMP view and trigger, and the insert."""

    columns: tuple[int, ...]  # positions in `_COLUMNS` of the view's columns, in its order
    create: tuple[str, str]  # run once on the write connection (TEMP objects live with it)
    insert: str  # then this, with the batch's values


def _make_shape(mask: int) -> Shape:
    chosen = [statement for i, statement in enumerate(_STATEMENTS) if mask >> i & 1]
    names = tuple(dict.fromkeys(c for rows, blob, _ in chosen for c in (rows, blob) if c))
    view = f"perdure_batch_{mask:x}"
    create = (
        f"CREATE TEMP VIEW IF NOT EXISTS {view} ({', '.join(names)})"
        f" AS SELECT {', '.join('NULL' for _ in names)}",
        f"CREATE TEMP TRIGGER IF NOT EXISTS perdure_apply_{mask:x} INSTEAD OF INSERT ON {view} BEGIN "
        + " ".join(sql.format(rows=f"NEW.{rows}", blob=f"NEW.{blob}") + ";" for rows, blob, sql in chosen)
        + " END",
    )
    insert = f"INSERT INTO {view} VALUES ({', '.join('?' for _ in names)})"
    return Shape(tuple(_INDEX[name] for name in names), create, insert)


_SHAPES: dict[int, Shape] = {EVERY: _make_shape(EVERY)}


def shape(mask: int) -> Shape:
    """The shape `mask` (a bit per statement of `_STATEMENTS`); made on first use."""
    found = _SHAPES.get(mask)
    if found is None:
        found = _SHAPES[mask] = _make_shape(mask)
    return found


class Batch(NamedTuple):
    """`batch()`'s result: which statements run (`shape(mask)`) and the values of their columns.
    A mask of 0 is a batch that writes nothing."""

    mask: int
    values: tuple[object, ...]


_json = msgspec.json.Encoder().encode
# Every blob starts with one byte: substr() of an empty blob is NULL, of a non-empty one at its end x''.
# So offsets (1-based in substr) start at 2. The loops below run for every row of every batch, on
# the event loop: the hottest keep (parts, next offset) in local variables instead of calling
# `_Blob.add`, and rows are tuples, which the first garbage collection untracks (lists would be
# traversed until freed).
_LEAD = b"\x00"


class _Blob:
    """The byte columns of one statement: parts joined at the end, (offset, length) per value."""

    __slots__ = ("at", "parts")

    def __init__(self) -> None:
        self.parts = [_LEAD]
        self.at = 2

    def add(self, data: bytes) -> tuple[int, int]:
        at, n = self.at, len(data)
        self.parts.append(data)
        self.at = at + n
        return at, n

    def text(self, value: str | None) -> tuple[int | None, int | None]:
        return (None, None) if value is None else self.add(value.encode())

    def key(self, key: Key) -> tuple[int, int, int, int]:
        """(service, key) as four row positions."""
        service, k = key[0].encode(), key[1].encode()
        at, n = self.at, len(service)
        self.parts += (service, k)
        self.at = at + n + len(k)
        return at, n, at + n, len(k)


def batch(w: Writes) -> Batch:
    """What applies `w` to a database holding everything committed before it."""
    out: list[object] = [None] * len(_COLUMNS)
    seen = w.seen
    reconcile: dict[str, int] = {}
    deleted: list[int] = []
    insert: list[object] = []
    insert_blob = _Blob()
    update: list[object] = []
    update_blob = _Blob()
    update_parts, update_at = update_blob.parts, update_blob.at
    update_status: list[object] = []
    status_blob = _Blob()
    update_all: list[object] = []
    all_blob = _Blob()
    for id, new in w.invocations.items():
        seq, record, status, at, ident = new  # at: modified_at
        assert seq is not None  # a slot a transaction wrote always has its seq
        old = seen[id]
        if record is None:
            if old.record is not None:
                deleted.append(seq)
            reconcile[id] = seq
            continue
        assert ident is not None
        service, handler, key, created_at = ident
        if old.record is None:
            b = insert_blob
            insert.append(
                (
                    seq,
                    id,
                    status,
                    created_at,
                    at,
                    *b.text(service),
                    *b.text(handler),
                    *b.text(key),
                    *b.add(record),
                )
            )
            if old.seq is not None:  # not a fresh seq: a journal_ids row may have to go
                reconcile[id] = seq
        elif ident != old.ident:
            b = all_blob
            update_all.append(
                (
                    seq,
                    status,
                    created_at,
                    at,
                    *b.text(service),
                    *b.text(handler),
                    *b.text(key),
                    *b.add(record),
                )
            )
        elif status != old.status:
            update_status.append((seq, status, at, *status_blob.add(record)))
        else:  # the most frequent case: inlined
            n = len(record)
            update.append((seq, at, update_at, n))
            update_parts.append(record)
            update_at += n
    update_blob.parts, update_blob.at = update_parts, update_at
    _put(out, "inv_delete", deleted)
    _put(out, "inv_insert", insert, insert_blob)
    _put(out, "inv_update", update, update_blob)
    _put(out, "inv_status", update_status, status_blob)
    _put(out, "inv_all", update_all, all_blob)

    cleared: list[object] = []
    entries: list[object] = []
    journal_blob = _Blob()
    journal_parts, journal_at = journal_blob.parts, journal_blob.at
    invocations = w.invocations
    for id, ops in w.journals.items():
        seq = ops.seq
        if ops.cleared:
            cleared.append(seq)
            reconcile[id] = seq
        elif (invocations.get(id) or seen[id]).record is None:  # a journal without invocation row
            reconcile[id] = seq
        for idx, entry in ops.entries.items():  # the most rows of all: inlined
            payload = entry.payload
            n = len(payload)
            entries.append((seq, idx, entry.type, journal_at, n))
            journal_parts.append(payload)
            journal_at += n
    journal_blob.parts, journal_blob.at = journal_parts, journal_at
    _put(out, "journal_delete", cleared)
    _put(out, "journal_put", entries, journal_blob)

    cleared_keys: list[object] = []
    cleared_blob = _Blob()
    clears: list[object] = []
    clear_blob = _Blob()
    sets: list[object] = []
    set_blob = _Blob()
    for k, sops in w.state.items():
        if sops.cleared:
            cleared_keys.append(cleared_blob.key(k))
        for name, value in sops.values.items():
            if value is None:
                clears.append((*clear_blob.key(k), *clear_blob.add(name)))
            else:
                sets.append((*set_blob.key(k), *set_blob.add(name), *set_blob.add(value)))
    _put(out, "state_clear_all", cleared_keys, cleared_blob)
    _put(out, "state_clear", clears, clear_blob)
    _put(out, "state_set", sets, set_blob)

    released: list[object] = []
    released_blob = _Blob()
    held: list[object] = []
    held_blob = _Blob()
    for k, holder in w.locks.items():
        if holder is None:
            released.append(released_blob.key(k))
        else:
            held.append((*held_blob.key(k), holder))
    _put(out, "lock_release", released, released_blob)
    _put(out, "lock_set", held, held_blob)

    dropped_blob = _Blob()
    dropped = [(*dropped_blob.key((service, key)), seq) for service, key, seq in w.inbox_dropped]
    _put(out, "inbox_delete", dropped, dropped_blob)
    pushed_blob = _Blob()
    pushed = [
        (*pushed_blob.key((service, key)), seq, invocation_id)
        for service, key, seq, invocation_id in w.inbox_pushed.values()
    ]
    _put(out, "inbox_push", pushed, pushed_blob)

    gone: list[object] = []
    timers: list[object] = []
    for timer_id, t in w.timers.items():
        if t is None:
            gone.append(timer_id)
        else:
            timers.append((t.id, t.fire_at, t.kind, t.invocation_id, t.completion_id))
    _put(out, "timer_delete", gone)
    _put(out, "timer_put", timers)

    offsets = [(*key, *position) for key, position in w.offsets.items()]
    _put(out, "offset_put", offsets)

    # Last: these look at the other tables to decide whether a journal_ids row is needed.
    ids = list(reconcile.items())
    _put(out, "journal_ids", ids)
    mask = 0
    for i, at in enumerate(_ROWS_AT):
        if out[at] is not None:
            mask |= 1 << i
    if not mask:
        return Batch(0, ())
    if mask not in _SHAPES and len(_SHAPES) >= MAX_SHAPES:
        mask = EVERY
    return Batch(mask, tuple(out[i] for i in shape(mask).columns))


def _put(out: list[object], column: str, rows: Sequence[object], blob: _Blob | None = None) -> None:
    if rows:
        out[_INDEX[column]] = _json(rows).decode()
        if blob is not None:
            out[_INDEX[column + "_blob"]] = b"".join(blob.parts)
