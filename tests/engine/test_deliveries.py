"""Effects across partitions: two state machines, each owning one of two partitions of one store.

An effect on an invocation the applying machine does not own is not applied but written as a
delivery for the owner, in the same transaction; the owner applies it with `Deliver`, once, and its
answer travels back the same way.
"""

from __future__ import annotations

from typing import Any

import msgspec

from perdure.engine import bodies
from perdure.engine.actions import Accepted, Completed, Delivered, StartAttempt
from perdure.engine.commands import AttemptOutput, Cancel, Deliver, Invoke, Kill
from perdure.engine.registry import HandlerInfo, Registry
from perdure.engine.state_machine import StateMachine
from perdure.engine.step import Partitioning, decode_entry
from perdure.protocol import awakeables, ids
from perdure.protocol import messages as pm
from perdure.protocol.codec import message_type
from perdure.storage.api import Status
from perdure.storage.memory import Store

PARTITIONS = 2


def id_in(partition: int, service: str = "svc", key: str | None = None) -> str:
    while True:
        invocation_id = ids.random_id(service, key)
        if ids.partition_of(invocation_id, PARTITIONS) == partition:
            return invocation_id


class Cluster:
    """Partition 0 and partition 1 of one memory store, each applied by its own state machine."""

    def __init__(self) -> None:
        registry = Registry()
        registry.add("svc", HandlerInfo("go", keyed=False, exclusive=False))
        self.store = Store()
        self.machines = [
            StateMachine(registry, lambda: 1_000, partitioning=Partitioning(PARTITIONS, owns=p.__eq__))
            for p in range(PARTITIONS)
        ]

    async def apply(self, partition: int, command: Any) -> list[Any]:
        txn = self.store.begin()
        actions = self.machines[partition].apply(txn, command)
        await self.store.commit(txn)
        return actions

    def waiting(self, partition: int) -> list[Any]:
        return [d for d in self.store._tables.deliveries.values() if d.partition == partition]

    async def deliver(self, partition: int) -> list[Any]:
        """The owner applies what is waiting for it."""
        return await self.apply(partition, Deliver(self.waiting(partition)))

    def journal(self, invocation_id: str) -> list[str]:
        txn = self.store.begin()
        names = [pm.NAME_OF[message_type(decode_entry(e))] for e in txn.read_journal(invocation_id)]
        self.store.commit(txn).close()
        return names

    def status(self, invocation_id: str) -> Status | None:
        inv = self.store.reader().get_invocation(invocation_id)
        return None if inv is None else inv.status


def call(child: str, completion: int = 1) -> pm.CallCommand:
    return pm.CallCommand(
        service_name="svc",
        handler_name="go",
        parameter=b"{}",
        invocation_id_notification_idx=completion + 100,
        result_completion_id=completion,
    )


async def test_a_call_to_another_partition_and_its_result_travel_as_deliveries() -> None:
    c = Cluster()
    parent = id_in(0)
    assert [type(a) for a in await c.apply(0, Invoke(parent, "svc", "go", None, b"{}"))] == [
        Accepted,
        StartAttempt,
    ]
    # the parent calls svc/go: the child id is fixed by (parent, command index); find a call that
    # lands in partition 1
    for index in range(1, 200):
        if ids.partition_of(ids.child_id(parent, index, "svc", None), PARTITIONS) == 1:
            break
    filler = [pm.RunCommand(name=f"r{n}", result_completion_id=50 + n) for n in range(index - 1)]
    await c.apply(0, AttemptOutput(parent, 1, [*filler, call("child")]))
    child = ids.child_id(parent, index, "svc", None)
    assert c.status(child) is None  # not created here: delivered
    assert [bodies.decode(d.body).invocation_id for d in c.waiting(1)] == [child]

    actions = await c.deliver(1)
    assert [type(a) for a in actions] == [Accepted, StartAttempt] and c.waiting(1) == []
    assert (await c.deliver(1)) == []  # applied once: nothing left

    done = [pm.OutputCommand(value=pm.Value(content=b'"ok"')), pm.EndMessage()]
    actions = await c.apply(1, AttemptOutput(child, 1, done))
    assert [type(a) for a in actions] == [Delivered, Completed]  # the result, to the caller's partition
    assert actions[0] == Delivered(0)
    assert [bodies.decode(d.body).invocation_id for d in c.waiting(0)] == [parent]
    await c.deliver(0)
    assert c.journal(parent)[-1] == "CallCompletionNotification"
    assert c.waiting(0) == c.waiting(1) == []


async def test_signals_kills_and_attaches_reach_the_owning_partition() -> None:
    c = Cluster()
    target, waiter = id_in(1), id_in(0)
    await c.apply(1, Invoke(target, "svc", "go", None, b"{}"))
    await c.apply(0, Invoke(waiter, "svc", "go", None, b"{}"))
    # the waiter attaches to the target in the other partition, then resolves one of its awakeables
    awakeable = awakeables.awakeable_id(ids.to_bytes(target), 17)
    commands = [
        pm.AttachInvocationCommand(invocation_id=target, result_completion_id=3),
        pm.CompleteAwakeableCommand(awakeable_id=awakeable, value=pm.Value(content=b"1")),
    ]
    await c.apply(0, AttemptOutput(waiter, 1, commands))
    await c.deliver(1)
    assert c.journal(target)[-1] == "SignalNotification"
    # a kill of the target completes it; the attached waiter gets the 409 back
    await c.apply(1, Kill(target))
    await c.deliver(0)
    assert c.journal(waiter)[-1] == "AttachInvocationCompletionNotification"


async def test_a_kill_cascades_to_calls_in_another_partition() -> None:
    c = Cluster()
    parent = id_in(0)
    await c.apply(0, Invoke(parent, "svc", "go", None, b"{}"))
    for index in range(1, 200):
        if ids.partition_of(ids.child_id(parent, index, "svc", None), PARTITIONS) == 1:
            break
    filler = [pm.RunCommand(name=f"r{n}", result_completion_id=50 + n) for n in range(index - 1)]
    await c.apply(0, AttemptOutput(parent, 1, [*filler, call("child")]))
    child = ids.child_id(parent, index, "svc", None)
    await c.deliver(1)
    assert c.status(child) is Status.RUNNING
    await c.apply(0, Cancel(parent))  # the handler would cancel its calls; a kill does so at once
    await c.apply(0, Kill(parent))
    assert c.status(parent) is Status.COMPLETED
    await c.deliver(1)
    assert c.status(child) is Status.COMPLETED
    inv = c.store.reader().get_invocation(child)
    assert inv is not None and inv.outcome is not None and inv.outcome.failure is not None
    assert inv.outcome.failure.code == 409


class LookupsCounted:
    """A transaction that records which invocations were looked up in it."""

    def __init__(self, txn: Any) -> None:
        self.txn = txn
        self.looked_up: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.txn, name)

    def get_invocation(self, invocation_id: str) -> Any:
        self.looked_up.append(invocation_id)
        return self.txn.get_invocation(invocation_id)


async def test_a_fresh_submission_is_created_without_looking_its_id_up() -> None:
    c = Cluster()
    fresh, other = id_in(1), id_in(1)
    txn = c.store.begin()
    for invocation_id in (fresh, other):
        body = bodies.Invoked(
            invocation_id=invocation_id, service="svc", handler="go", key=None, input=b"{}",
            fresh=invocation_id == fresh,
        )  # fmt: skip
        txn.put_delivery(1, bodies.encode(body))
    await c.store.commit(txn)

    txn = LookupsCounted(c.store.begin())
    actions = c.machines[1].apply(txn, Deliver(c.waiting(1)))
    await c.store.commit(txn.txn)
    assert [a.invocation_id for a in actions if type(a) is Accepted] == [fresh, other]
    assert fresh not in txn.looked_up and other in txn.looked_up
    assert c.status(fresh) is Status.RUNNING and c.status(other) is Status.RUNNING


def test_an_invoked_body_stored_before_fresh_existed_decodes_as_not_fresh() -> None:
    old = msgspec.msgpack.encode(
        {"kind": "invoke", "invocation_id": "inv_1", "service": "svc", "handler": "go", "key": None,
         "input": b"{}"}
    )  # fmt: skip
    body = bodies.decode(old)
    assert isinstance(body, bodies.Invoked) and body.invocation_id == "inv_1"
    assert body.fresh is False
