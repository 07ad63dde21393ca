"""The SDK-side VM: replay returns recorded results, divergence is a journal mismatch."""

from __future__ import annotations

import pytest

from perdure.errors import JournalMismatchError
from perdure.protocol import ids
from perdure.protocol import messages as pm
from perdure.protocol.vm import VM

INPUT = pm.InputCommand(value=pm.Value(content=b'"x"'))


def _vm(*journal: object, state: dict[bytes, bytes] | None = None, partial: bool = False) -> VM:
    start = pm.StartMessage(
        id=b"\0" * 24,
        debug_id="inv_test",
        known_entries=1 + len(journal),
        key="k",
        partial_state=partial,
        state_map=[pm.StateEntry(key=k, value=v) for k, v in (state or {}).items()],
    )
    return VM(start, [INPUT, *journal], handler="svc/h")


def test_new_commands_are_emitted_in_order() -> None:
    vm = _vm()
    handle = vm.sys_run("a")
    vm.propose_run(handle, value=b"1")
    vm.sys_set_state(b"s", b"2")
    out = vm.take_output()
    assert [type(m).__name__ for m in out] == [
        "RunCommandMessage",
        "ProposeRunCompletionMessage",
        "SetStateCommandMessage",
    ]
    assert not vm.replaying


def test_replay_consumes_recorded_commands_and_their_results() -> None:
    vm = _vm(
        pm.RunCommand(result_completion_id=1, name="a"),
        pm.RunCompletion(completion_id=1, value=pm.Value(content=b"7")),
    )
    assert vm.replaying
    handle = vm.sys_run("a")
    assert vm.is_ready(handle) and vm.result(handle).value.content == b"7"
    assert vm.take_output() == []  # nothing new to journal
    assert not vm.replaying


def test_divergence_names_handler_index_expected_and_found() -> None:
    vm = _vm(pm.RunCommand(result_completion_id=1, name="a"))
    with pytest.raises(JournalMismatchError) as raised:
        vm.sys_sleep(0, "nap")
    error = raised.value
    assert (error.handler, error.index) == ("svc/h", 1)
    assert error.expected == "RunCommand(name='a')" and error.found == "SleepCommand(name='nap')"


def test_sleep_and_send_times_are_not_compared_on_replay() -> None:
    vm = _vm(
        pm.SleepCommand(wake_up_time=1000, result_completion_id=1),
        pm.OneWayCallCommand(
            service_name="s", handler_name="h", invoke_time=5, invocation_id_notification_idx=2
        ),
    )
    assert vm.sys_sleep(99_999) == 1
    assert vm.sleep_deadline(1) == 1000  # the recorded deadline wins
    assert vm.sys_send("s", "h", b"", invoke_time=123) == 2


def test_eager_state_reads_are_recorded_and_replayed() -> None:
    vm = _vm(state={b"a": b"1"})
    assert vm.sys_get_state(b"a").value == b"1"
    assert vm.sys_get_state(b"missing") == (None, None)
    recorded = vm.take_output()
    replay = _vm(*recorded, state={b"a": b"changed"})
    assert replay.sys_get_state(b"a").value == b"1"  # the journal, not the current state


def test_partial_state_reads_lazily() -> None:
    vm = _vm(partial=True)
    read = vm.sys_get_state(b"a")
    assert read.handle == 1 and not vm.is_ready(1)
    vm.notify(pm.GetLazyStateCompletion(completion_id=1, value=pm.Value(content=b"3")))
    assert vm.result(1).value.content == b"3"


def test_notifications_keep_arrival_order_for_races() -> None:
    vm = _vm(
        pm.SleepCompletion(completion_id=2, void=pm.Void()),
        pm.RunCompletion(completion_id=1, value=pm.Value()),
    )
    assert vm.arrival(2) < vm.arrival(1)


def test_suspension_versions() -> None:
    vm = _vm()
    vm.suspend([1, -17])
    [v6] = vm.take_output()
    assert list(v6.waiting_completions) == [1] and list(v6.waiting_signals) == [1, 17]
    start = pm.StartMessage(id=b"\0" * 24, known_entries=1)
    v7 = VM(start, [INPUT], handler="h", version=7)
    v7.suspend([1])
    [message] = v7.take_output()
    assert list(message.awaiting_on.waiting_completions) == [1]


def test_v7_run_ack_resolves_the_proposed_value() -> None:
    vm = _vm()
    handle = vm.sys_run("a")
    vm.propose_run(handle, value=b"5")
    assert vm.is_pending_run(handle)
    vm.notify(pm.ProposeRunCompletionAckMessage(completion_id=handle))
    assert vm.result(handle).value.content == b"5" and not vm.is_pending_run(handle)


def test_invocation_ids_round_trip_and_reject_garbage() -> None:
    invocation_id = ids.random_id("svc", "key")
    assert len(invocation_id) == 38 and invocation_id.startswith("inv_1")
    assert ids.encode(*_split(ids.to_bytes(invocation_id))) == invocation_id
    assert ids.idempotent_id("s", "h", "k", "i") == ids.idempotent_id("s", "h", "k", "i")
    assert ids.to_bytes(ids.random_id("svc", "key"))[:8] == ids.to_bytes(invocation_id)[:8]  # same partition
    for bad in ["", "inv_1", "inv_2" + "0" * 33, "inv_1" + "!" * 33, "inv_1" + "z" * 33]:
        assert not ids.is_valid(bad)


def _split(raw: bytes) -> tuple[int, bytes]:
    return int.from_bytes(raw[:8], "big"), raw[8:]
