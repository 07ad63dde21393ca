"""The SQL views of `/query`, in one place: a base layer per backend, then the documented views.

Layer 1 (`perdure_invocation`, `perdure_journal`, `perdure_state`, `perdure_lock`,
`perdure_inbox`) has one fixed shape. A SQLite
store maps its physical tables onto it with TEMP views (`SQLITE_BASE`, one entry per schema
version: the only SQL here that knows the physical schema); a memory store is copied into tables
of that shape (`SNAPSHOT_TABLES`). Layer 2 (`sys_invocation`, `sys_invocation_status`,
`sys_journal`, `state`, `sys_keyed_service_status`, `sys_inbox`) is written once over layer 1,
with Restate's column names, and reads record fields through the SQL functions of `functions.py`.
"""

from __future__ import annotations

# ---- layer 1 on a SQLite store, per schema version (`PRAGMA user_version`, see storage/migrations).

#: Per schema version: the TEMP views mapping the physical tables onto layer 1, and the physical
#: tables they read (the authorizer lets queries read those and nothing else of the file). The
#: engine migrates a database when it opens it, so only the newest version is needed here; a new
#: migration adds its entry (and the admin tests on the sqlite store show whether it fits).
SQLITE_BASE: dict[int, tuple[tuple[str, ...], frozenset[str]]] = {
    # 0002: invocations and journals keyed by `seq`; journals without an invocation row map their
    # id in `journal_ids`. UNION ALL (not a coalesce over outer joins) lets SQLite push a filter on
    # the id into each arm, so `WHERE id = ?` seeks by index instead of scanning every journal.
    # 0003 only adds an index: the views of 0002 hold.
    2: (
        (
            "CREATE TEMP VIEW perdure_invocation AS SELECT id, service, handler, key, status, created_at,"
            " modified_at, record FROM main.invocations",
            "CREATE TEMP VIEW perdure_journal AS"
            " SELECT i.id AS invocation_id, j.idx AS idx, j.type AS type, j.payload AS payload"
            " FROM main.invocations AS i JOIN main.journal AS j ON j.seq = i.seq"
            " UNION ALL"
            " SELECT o.id, j.idx, j.type, j.payload"
            " FROM main.journal_ids AS o JOIN main.journal AS j ON j.seq = o.seq"
            " WHERE NOT EXISTS (SELECT 1 FROM main.invocations AS x WHERE x.seq = o.seq)",
            "CREATE TEMP VIEW perdure_state AS SELECT service, key, name, value FROM main.state",
            "CREATE TEMP VIEW perdure_lock AS SELECT service, key, invocation_id FROM main.locks",
            "CREATE TEMP VIEW perdure_inbox AS SELECT service, key, seq, invocation_id FROM main.inbox",
        ),
        frozenset({"invocations", "journal", "journal_ids", "state", "locks", "inbox"}),
    ),
}
SQLITE_BASE[3] = SQLITE_BASE[4] = SQLITE_BASE[2]  # 0004 moved the catalog: these tables are unchanged

# ---- layer 1 on a memory store: a snapshot copied into tables of the base shape.

SNAPSHOT_TABLES = (
    "CREATE TABLE perdure_invocation (id TEXT PRIMARY KEY, service TEXT NOT NULL, handler TEXT NOT NULL,"
    " key TEXT, status TEXT NOT NULL, created_at INTEGER NOT NULL, modified_at INTEGER NOT NULL,"
    " record BLOB NOT NULL)",
    "CREATE INDEX perdure_invocation_order ON perdure_invocation (created_at, id)",
    "CREATE INDEX perdure_invocation_status ON perdure_invocation (status, created_at)",
    "CREATE TABLE perdure_journal (invocation_id TEXT NOT NULL, idx INTEGER NOT NULL, type INTEGER NOT NULL,"
    " payload BLOB NOT NULL, PRIMARY KEY (invocation_id, idx))",
    "CREATE TABLE perdure_state (service TEXT NOT NULL, key TEXT NOT NULL, name BLOB NOT NULL,"
    " value BLOB NOT NULL, PRIMARY KEY (service, key, name))",
    "CREATE TABLE perdure_lock (service TEXT NOT NULL, key TEXT NOT NULL, invocation_id TEXT NOT NULL,"
    " PRIMARY KEY (service, key))",
    "CREATE TABLE perdure_inbox (service TEXT NOT NULL, key TEXT NOT NULL, seq INTEGER NOT NULL,"
    " invocation_id TEXT NOT NULL, PRIMARY KEY (service, key, seq))",
)
INSERT_INVOCATION = "INSERT INTO perdure_invocation VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
INSERT_ENTRY = "INSERT INTO perdure_journal VALUES (?, ?, ?, ?)"
INSERT_STATE = "INSERT INTO perdure_state VALUES (?, ?, ?, ?)"
INSERT_LOCK = "INSERT INTO perdure_lock VALUES (?, ?, ?)"
INSERT_INBOX = "INSERT INTO perdure_inbox VALUES (?, ?, ?, ?)"

BASE_VIEWS = frozenset(
    {"perdure_invocation", "perdure_journal", "perdure_state", "perdure_lock", "perdure_inbox"}
)

# ---- layer 2: the documented views (docs/admin.md lists their columns).

_F = "perdure_field(record, '{}')"

PUBLIC = (
    f"""CREATE TEMP VIEW sys_invocation AS SELECT
        id,
        CASE WHEN key IS NULL THEN service || '/' || handler
             ELSE service || '/' || key || '/' || handler END AS target,
        service AS target_service_name,
        key AS target_service_key,
        handler AS target_handler_name,
        perdure_service_ty(service) AS target_service_ty,
        status,
        perdure_time(created_at) AS created_at,
        perdure_time(modified_at) AS modified_at,
        perdure_time({_F.format("execute_at")}) AS scheduled_at,
        perdure_time({_F.format("next_retry_at")}) AS next_retry_at,
        perdure_time({_F.format("completed_at")}) AS completed_at,
        perdure_time({_F.format("retention_until")}) AS retention_until,
        {_F.format("idempotency_key")} AS idempotency_key,
        {_F.format("attempt")} AS attempt_count,
        {_F.format("failures")} AS retry_count,
        {_F.format("last_failure.message")} AS last_failure,
        {_F.format("last_failure.message")} AS last_failure_message,
        {_F.format("last_failure.code")} AS last_failure_error_code,
        {_F.format("journal_length")} AS journal_size,
        {_F.format("command_count")} AS journal_commands_size,
        CASE WHEN {_F.format("outcome")} IS NULL THEN NULL
             WHEN {_F.format("outcome.failure")} IS NULL THEN 'success' ELSE 'failure' END
            AS completion_result,
        perdure_utf8({_F.format("outcome.value")}) AS completion_value,
        {_F.format("outcome.failure.message")} AS completion_failure,
        {_F.format("outcome.failure.code")} AS completion_failure_code,
        created_at AS created_at_ms,
        modified_at AS modified_at_ms
    FROM perdure_invocation""",
    "CREATE TEMP VIEW sys_invocation_status AS SELECT * FROM sys_invocation",
    """CREATE TEMP VIEW sys_journal AS SELECT
        invocation_id AS id,
        idx AS "index",
        perdure_entry(type, payload, 'type') AS entry_type,
        perdure_entry(type, payload, 'name') AS name,
        perdure_entry(type, payload, 'summary') AS summary,
        perdure_entry(type, payload, 'value') AS value,
        perdure_entry(type, payload, 'failure_code') AS failure_code,
        perdure_entry(type, payload, 'failure_message') AS failure_message,
        perdure_entry(type, payload, 'sleep_wakeup_at') AS sleep_wakeup_at,
        perdure_entry(type, payload, 'invoked_target') AS invoked_target,
        perdure_entry(type, payload, 'entry_json') AS entry_json,
        type AS entry_type_code,
        payload AS raw
    FROM perdure_journal""",
    """CREATE TEMP VIEW state AS SELECT
        service AS service_name,
        key AS service_key,
        perdure_text(name) AS key,
        perdure_utf8(value) AS value_utf8,
        value
    FROM perdure_state""",
    """CREATE TEMP VIEW sys_keyed_service_status AS SELECT
        service AS service_name,
        key AS service_key,
        invocation_id
    FROM perdure_lock""",
    """CREATE TEMP VIEW sys_inbox AS SELECT
        b.service AS service_name,
        b.key AS service_key,
        b.invocation_id AS id,
        b.seq AS sequence_number,
        perdure_time(i.created_at) AS created_at
    FROM perdure_inbox AS b LEFT JOIN perdure_invocation AS i ON i.id = b.invocation_id""",
)

PUBLIC_VIEWS = frozenset(
    {"sys_invocation", "sys_invocation_status", "sys_journal", "state", "sys_keyed_service_status"}
    | {"sys_inbox"}
)

#: What a query may read besides a SQLite store's physical tables.
READABLE = PUBLIC_VIEWS | BASE_VIEWS
