"""The schemas of the tables `POST /query` answers: restate-server 1.7.12's, column for column and
type for type (as its `information_schema.columns` lists them; tests/admin/data/ keeps that
listing and a test compares), and perdure's own next to them (`PERDURE_SPEC`)."""

from __future__ import annotations

import pyarrow as pa

TYPES: dict[str, pa.DataType] = {
    "s": pa.large_utf8(),
    "u64": pa.uint64(),
    "u32": pa.uint32(),
    "b": pa.bool_(),
    "ts": pa.timestamp("ms", tz="+00:00"),
    "dur": pa.duration("ms"),
    "bin": pa.large_binary(),
    "[u32]": pa.list_(pa.uint32()),
    "[s]": pa.list_(pa.large_utf8()),
    "i64": pa.int64(),
}

# restate-server 1.7.12's tables: `column:type` (`!`: not nullable), in its column order.
RESTATE_SPEC = {
    "state": (
        "partition_key:u64 scope:s service_name:s service_key:s key:s key_length:u64 value_utf8:s "
        "value:bin value_length:u64 "
    ),
    "sys_deployment": (
        "id:s ty:s endpoint:s created_at:ts min_service_protocol_version:u32 "
        "max_service_protocol_version:u32 services:[s] "
    ),
    "sys_inbox": ("partition_key:u64 service_name:s service_key:s id:s sequence_number:u64 created_at:ts "),
    "sys_invocation": (
        "id:s vqueue_id:s target:s target_service_name:s target_service_key:s target_handler_name:s "
        "target_service_ty:s scope:s limit_key:s idempotency_key:s invoked_by:s invoked_by_service_name:s "
        "invoked_by_id:s invoked_by_subscription_id:s invoked_by_target:s restarted_from:s "
        "pinned_deployment_id:s pinned_service_protocol_version:u32 trace_id:s journal_size:u32 "
        "journal_commands_size:u32 created_at:ts created_using_restate_version:s modified_at:ts "
        "inboxed_at:ts scheduled_at:ts scheduled_start_at:ts running_at:ts completed_at:ts "
        "completion_retention:dur journal_retention:dur suspended_waiting_for_completions:[u32] "
        "suspended_waiting_for_signals:[u32] suspended_waiting_future_json:s retry_count:u64 "
        "last_start_at:ts next_retry_at:ts last_attempt_deployment_id:s last_attempt_server:s "
        "last_failure:s last_failure_error_code:s last_failure_related_entry_index:u64 "
        "last_failure_related_entry_name:s last_failure_related_entry_type:s "
        "last_failure_related_command_index:u64 last_failure_related_command_name:s "
        "last_failure_related_command_type:s last_awaiting_on_future_json:s status:s! completion_result:s "
        "completion_failure:s "
    ),
    "sys_invocation_state": (
        "partition_key:u64 id:s in_flight:b retry_count:u64 last_start_at:ts last_attempt_deployment_id:s "
        "last_attempt_server:s next_retry_at:ts last_failure:s last_failure_error_code:s "
        "last_failure_related_command_index:u64 last_failure_related_command_name:s "
        "last_failure_related_command_type:s last_failure_related_entry_index:u64 "
        "last_failure_related_entry_name:s last_failure_related_entry_type:s "
        "last_awaiting_on_future_json:s "
    ),
    "sys_invocation_status": (
        "partition_key:u64 id:s vqueue_id:s status:s completion_result:s completion_failure:s target:s "
        "target_service_name:s target_service_key:s target_handler_name:s target_service_ty:s scope:s "
        "limit_key:s idempotency_key:s invoked_by:s invoked_by_id:s invoked_by_subscription_id:s "
        "invoked_by_service_name:s invoked_by_target:s restarted_from:s pinned_deployment_id:s "
        "pinned_service_protocol_version:u32 trace_id:s journal_size:u32 journal_commands_size:u32 "
        "created_at:ts created_using_restate_version:s modified_at:ts inboxed_at:ts scheduled_at:ts "
        "scheduled_start_at:ts running_at:ts completed_at:ts completion_retention:dur "
        "journal_retention:dur suspended_waiting_for_completions:[u32] "
        "suspended_waiting_for_signals:[u32] suspended_waiting_future_json:s "
    ),
    "sys_journal": (
        "partition_key:u64 id:s index:u32 entry_type:s name:s completed:b invoked_id:s invoked_target:s "
        "sleep_wakeup_at:ts promise_name:s raw:bin raw_length:u64 version:u32 entry_json:s "
        "entry_lite_json:s appended_at:ts "
    ),
    "sys_journal_events": (
        "partition_key:u64 id:s after_journal_entry_index:u32 appended_at:ts event_type:s event_json:s "
    ),
    "sys_keyed_service_status": ("partition_key:u64 service_name:s service_key:s invocation_id:s "),
    "sys_locks": ("partition_key:u64 scope:s lock_name:s acquired_at:ts acquired_by:s "),
    "sys_promise": (
        "partition_key:u64 scope:s service_name:s service_key:s key:s completed:b "
        "completion_success_value:bin completion_success_value_utf8:s completion_failure:s "
    ),
    "sys_rules": ("pattern:s concurrency:u32 description:s disabled:b version:u32 last_modified:ts "),
    "sys_scheduler": (
        "partition_key:u64 id:s num_inbox:u64 status:s head_entry_id:s scheduled_at:ts blocked_on:s "
        "blocked_on_json:s invoker_concurrency_block_duration:dur throttling_rules_block_duration:dur "
        "invoker_throttling_block_duration:dur invoker_memory_block_duration:dur "
        "concurrency_rules_block_duration:dur lock_block_duration:dur "
        "deployment_concurrency_block_duration:dur "
    ),
    "sys_service": ("name:s revision:u64 public:b ty:s deployment_id:s "),
    "sys_user_limits": (
        "partition_key:u64 scope:s l1:s l2:s level:s usage:u32 concurrency_limit:u32 rule_pattern:s "
        "available:u32 num_waiters:u64 "
    ),
    "sys_vqueue_entry_status": (
        "partition_key:u64 entry_id:s vqueue_id:s stage:s status:s has_lock:b next_at:ts "
        "sequence_number:u64 entry_kind:s created_at:ts transitioned_at:ts num_attempts:u32 "
        "num_errors:u32 num_pauses:u32 num_suspensions:u32 num_yields:u32 first_attempt_at:ts "
        "latest_attempt_at:ts first_runnable_at:ts deployment:s needed_memory:u64 retry_attempts:u32 "
        "retry_count_since_last_stored_command:u32 latest_attempt_blocked_on_invoker_concurrency:dur "
        "latest_attempt_blocked_on_throttling_rules:dur latest_attempt_blocked_on_invoker_throttling:dur "
        "latest_attempt_blocked_on_invoker_memory:dur latest_attempt_blocked_on_concurrency_rules:dur "
        "latest_attempt_blocked_on_lock:dur latest_attempt_blocked_on_deployment_concurrency:dur "
        "total_blocked_on_invoker_concurrency:dur total_blocked_on_throttling_rules:dur "
        "total_blocked_on_invoker_throttling:dur total_blocked_on_invoker_memory:dur "
        "total_blocked_on_concurrency_rules:dur total_blocked_on_lock:dur "
        "total_blocked_on_deployment_concurrency:dur "
    ),
    "sys_vqueue_meta": (
        "partition_key:u64 id:s is_active:b queue_is_paused:b service_name:s scope:s limit_key:s "
        "lock_name:s created_at:ts last_enqueued_at:ts last_start_at:ts last_attempt_at:ts "
        "last_finish_at:ts avg_queue_duration:dur avg_inbox_duration:dur avg_run_duration:dur "
        "avg_suspension_duration:dur avg_end_to_end_duration:dur avg_blocked_on_concurrency_rules:dur "
        "avg_blocked_on_invoker_concurrency:dur avg_blocked_on_invoker_throttling:dur "
        "avg_blocked_on_lock:dur num_inbox:u64 num_running:u64 num_suspended:u64 num_paused:u64 "
        "num_finished:u64 "
    ),
    "sys_vqueues": (
        "partition_key:u64 id:s stage:s status:s has_lock:b run_at:ts sequence_number:u64 entry_id:s "
        "entry_kind:s created_at:ts transitioned_at:ts num_attempts:u32 num_errors:u32 num_pauses:u32 "
        "num_suspensions:u32 num_yields:u32 first_attempt_at:ts latest_attempt_at:ts first_runnable_at:ts "
        "deployment:s "
    ),
}

#: perdure's own tables, next to Restate's: parked Kafka records (docs/kafka.md, "Dead letters").
PERDURE_SPEC = {
    "sys_dead_letter": (
        "id:s subscription_id:s topic:s partition:i64 offset:i64 record_key:s record_value:s "
        "error_code:i64 error_message:s attempts:i64 policy:s state:s redrive_of:s parked_at:ts target:s "
    ),
}


def _schema(spec: str) -> pa.Schema:
    fields = []
    for item in spec.split():
        name, ty = item.split(":")
        fields.append(pa.field(name, TYPES[ty.rstrip("!")], nullable=not ty.endswith("!")))
    return pa.schema(fields)


SCHEMAS: dict[str, pa.Schema] = {name: _schema(spec) for name, spec in (RESTATE_SPEC | PERDURE_SPEC).items()}
