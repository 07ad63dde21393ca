"""Kafka records through the engine: exactly one invocation per record, offsets with them."""

from __future__ import annotations

from typing import Any

from perdure.engine import catalog
from perdure.engine.actions import Accepted
from perdure.engine.commands import Ingest, KafkaRecord, ResetOffset
from perdure.engine.registry import HandlerInfo, Registry
from perdure.engine.state_machine import StateMachine
from perdure.storage.api import Position, Subscription
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
        actions = await self.apply(Ingest(self.sub.id, self.sub.sink, "t", 0, records))
        return [a.invocation_id for a in actions if type(a) is Accepted and not a.previously]


async def test_records_become_invocations_once_and_offsets_advance_with_them() -> None:
    w = World()
    first = await w.ingest(0, 1, 2)
    assert len(first) == 3
    assert await w.ingest(1, 2, 3) != []  # 1 and 2 are below the stored offset: only 3 is new
    assert len(await w.ingest(0, 1, 2, 3)) == 0
    assert w.store.reader().offsets(w.sub.id) == {("t", 0): Position(4)}


async def test_a_reset_partition_takes_reused_offsets_as_new_records() -> None:
    w = World()
    before = await w.ingest(0, 1, 2, 3, 4)
    await w.apply(ResetOffset(w.sub.id, "t", 0, 0))  # the broker came back empty
    after = await w.ingest(0, 1)
    assert len(after) == 2 and not set(after) & set(before)
    assert w.store.reader().offsets(w.sub.id) == {("t", 0): Position(2, epoch=1)}
