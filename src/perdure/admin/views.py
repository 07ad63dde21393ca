"""The documented SQL views of `/query` (layer 2), written once over the stores' base layer.

Every store offers the base layer in one shape (`perdure.storage.sql`: `perdure_invocation`,
`perdure_journal`, `perdure_state`, `perdure_lock`, `perdure_inbox`) — a SQLite file mapped onto
it, or rows copied out of the memory store or PostgreSQL. The views here (`sys_invocation`,
`sys_invocation_status`, `sys_journal`, `state`, `sys_keyed_service_status`, `sys_inbox`) use
Restate's column names and read record fields through the SQL functions of `functions.py`.
"""

from __future__ import annotations

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
    # Parked Kafka records (docs/kafka.md, "Dead letters"): parked, re-driven, and discarded ones
    # still within their retention.
    f"""CREATE TEMP VIEW sys_dead_letter AS SELECT
        id,
        {_F.format("dead_letter.subscription")} AS subscription_id,
        {_F.format("dead_letter.topic")} AS topic,
        {_F.format("dead_letter.partition")} AS partition,
        {_F.format("dead_letter.offset")} AS offset,
        perdure_utf8({_F.format("dead_letter.key")}) AS record_key,
        perdure_utf8({_F.format("dead_letter.value")}) AS record_value,
        {_F.format("dead_letter.error.code")} AS error_code,
        {_F.format("dead_letter.error.message")} AS error_message,
        {_F.format("dead_letter.attempts")} AS attempts,
        {_F.format("dead_letter.policy")} AS policy,
        CASE WHEN status = 'parked' THEN {_F.format("dead_letter.state")} ELSE 'discarded' END AS state,
        {_F.format("dead_letter.redrive_of")} AS redrive_of,
        perdure_time({_F.format("dead_letter.parked_at")}) AS parked_at,
        service || '/' || handler AS target
    FROM perdure_invocation WHERE perdure_field(record, 'dead_letter') IS NOT NULL""",
)

PUBLIC_VIEWS = frozenset(
    {"sys_invocation", "sys_invocation_status", "sys_journal", "state", "sys_keyed_service_status"}
    | {"sys_inbox", "sys_dead_letter"}
)

#: What a query may read besides a SQLite store's physical tables.
READABLE = PUBLIC_VIEWS
