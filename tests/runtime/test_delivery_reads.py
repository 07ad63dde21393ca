"""Deliveries of the partitions that ask in one loop turn are read with one query."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from perdure.runtime.delivery_reads import DELIVERY_BATCH, DeliveryReads
from perdure.storage.api import Delivery, StoreUnavailable


class Waiting:
    """Deliveries waiting per partition; records each read it answers."""

    def __init__(self, rows: dict[int, list[Delivery]]) -> None:
        self.rows = rows
        self.reads: list[tuple[list[int], int]] = []
        self.fail: Exception | None = None

    def read(self, partitions: Sequence[int], limit: int) -> dict[int, list[Delivery]]:
        self.reads.append((list(partitions), limit))
        if self.fail is not None:
            raise self.fail
        return {p: self.rows[p][:limit] for p in partitions if p in self.rows}


async def test_partitions_asking_in_one_turn_are_read_together_each_given_its_own() -> None:
    waiting = Waiting({3: [Delivery(1, 3, b"a"), Delivery(4, 3, b"b")], 5: [Delivery(2, 5, b"c")]})
    reads = DeliveryReads(waiting.read)
    asked = [reads.read(5), reads.read(3), reads.read(7)]
    assert waiting.reads == []  # read on the loop's next turn
    assert await asyncio.gather(*asked) == [waiting.rows[5], waiting.rows[3], []]
    assert waiting.reads == [([3, 5, 7], DELIVERY_BATCH)]
    assert await reads.read(3) == waiting.rows[3]  # a later ask is a read of its own
    assert len(waiting.reads) == 2


async def test_a_partition_that_stopped_waiting_is_not_read_for() -> None:
    waiting = Waiting({1: [Delivery(1, 1, b"a")]})
    reads = DeliveryReads(waiting.read)
    stopped, running = reads.read(2), reads.read(1)
    stopped.cancel()
    assert await running == waiting.rows[1]
    assert waiting.reads == [([1], DELIVERY_BATCH)]
    reads.read(4).cancel()
    await asyncio.sleep(0)
    assert len(waiting.reads) == 1  # nobody left to read for: no query


async def test_a_failed_read_fails_every_partition_that_asked() -> None:
    waiting = Waiting({})
    waiting.fail = StoreUnavailable("the database did not answer")
    reads = DeliveryReads(waiting.read)
    asked = [reads.read(1), reads.read(2)]
    for future in asked:
        with pytest.raises(StoreUnavailable):
            await future
    assert len(waiting.reads) == 1
