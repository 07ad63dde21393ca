"""`Engine.reset_offset`: after a Kafka partition's log restarted empty, records at offsets seen
before are new records — alone on a database and in a cluster (a compare-and-set of the position)."""

from __future__ import annotations

import perdure
from perdure import ObjectContext, VirtualObject
from perdure.engine.commands import KafkaRecord
from perdure.storage.api import Position
from perdure.testing import Harness

counter = VirtualObject("counter")


@counter.handler()
async def add(ctx: ObjectContext, n: int) -> int:
    total = (await ctx.get("total") or 0) + n
    ctx.set("total", total)
    return int(total)


async def test_records_at_reused_offsets_run_after_a_reset(backend: str) -> None:
    async with Harness(perdure.App([counter])) as h:
        await h.put_kafka_cluster("local", {"bootstrap.servers": "127.0.0.1:1"})
        sub = await h.create_subscription("kafka://local/numbers", "service://counter/add")
        first = [KafkaRecord(offset, b"k", b"%d" % n) for offset, n in enumerate((1, 10))]
        for invocation_id in await h.ingest(sub.id, "numbers", 0, first):
            await h.attach(invocation_id)
        assert h.stored_offsets(sub.id) == {("numbers", 0): 2}

        await h.reset_offset(sub.id, "numbers", 0, 0)  # the broker came back empty
        assert h.reader().offsets(sub.id) == {("numbers", 0): Position(0, epoch=1)}

        again = [KafkaRecord(offset, b"k", b"%d" % n) for offset, n in enumerate((100, 1000))]
        created = await h.ingest(sub.id, "numbers", 0, again)
        assert len(created) == 2, "records at reused offsets were taken for ones already seen"
        outcomes = [await h.attach(invocation_id) for invocation_id in created]
        assert outcomes[-1].value == b"1111"
        assert await h.ingest(sub.id, "numbers", 0, again) == []  # seen in this epoch: skipped
