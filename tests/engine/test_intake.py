"""Kafka records through the engine: exactly one invocation per record, offsets with them."""

from __future__ import annotations

from typing import Any

from perdure.engine import catalog
from perdure.engine.actions import Accepted, Rejected
from perdure.engine.commands import Ingest, KafkaRecord, PutKafkaCluster, PutSubscription, ResetOffset
from perdure.engine.registry import HandlerInfo, Registry
from perdure.engine.state_machine import StateMachine
from perdure.storage.api import Subscription
from perdure.storage.memory import Store


class World:
    def __init__(self) -> None:
        registry = Registry()
        registry.add("obj", HandlerInfo("h", keyed=True, exclusive=True))
        self.store = Store()
        self.machine = StateMachine(registry, lambda: 1_000)
        self.sub = Subscription(
            catalog.subscription_id("kafka://c/t", "service://obj/h"), "kafka://c/t", "service://obj/h"
        )

    async def apply(self, command: Any) -> list[Any]:
        txn = self.store.begin()
        actions = self.machine.apply(txn, command)
        await self.store.commit(txn)
        return actions

    async def ingest(self, *offsets: int) -> list[str]:
        records = [KafkaRecord(offset=o, key=b"k", value=b"1") for o in offsets]
        actions = await self.apply(Ingest(self.sub.id, "t", 0, records))
        return [a.invocation_id for a in actions if type(a) is Accepted and not a.previously]


async def test_records_become_invocations_once_and_offsets_advance_with_them() -> None:
    w = World()
    assert [type(a) for a in await w.apply(PutSubscription(w.sub))] == [Rejected]  # no cluster yet
    await w.apply(PutKafkaCluster("c", {"bootstrap.servers": "127.0.0.1:1"}))
    await w.apply(PutSubscription(w.sub))
    first = await w.ingest(0, 1, 2)
    assert len(first) == 3
    assert await w.ingest(1, 2, 3) != []  # 1 and 2 are below the stored offset: only 3 is new
    assert len(await w.ingest(0, 1, 2, 3)) == 0
    assert catalog.offsets(w.store.reader(), w.sub.id) == {("t", 0): 4}


async def test_a_reset_partition_takes_reused_offsets_as_new_records() -> None:
    w = World()
    await w.apply(PutKafkaCluster("c", {"bootstrap.servers": "127.0.0.1:1"}))
    await w.apply(PutSubscription(w.sub))
    before = await w.ingest(0, 1, 2, 3, 4)
    await w.apply(ResetOffset(w.sub.id, "t", 0, 0))  # the broker came back empty
    after = await w.ingest(0, 1)
    assert len(after) == 2 and not set(after) & set(before)
    assert catalog.offsets(w.store.reader(), w.sub.id) == {("t", 0): 2}
