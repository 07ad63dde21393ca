"""The intake against an in-memory engine with the real one's interface, and a real broker."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaProducer

from perdure.kafka import Broker, KafkaIntake
from perdure.kafka.broker import free_port
from perdure.storage.api import Subscription

from .fake import FakeEngine
from .helpers import FAST, wait_until

Topic = Callable[..., Awaitable[str]]


def engine_for(broker: Broker, *subs: Subscription, **kw: object) -> FakeEngine:
    engine = FakeEngine(**kw)  # type: ignore[arg-type]
    engine.clusters["local"] = {"bootstrap.servers": broker.bootstrap_servers}
    for sub in subs:
        engine.subs[sub.id] = sub
    return engine


def sub(topic: str, sub_id: str = "sub_1", **options: str) -> Subscription:
    return Subscription(sub_id, f"kafka://local/{topic}", "service://svc/handle", {**FAST, **options})


async def produce(
    producer: AIOKafkaProducer, topic: str, n: int, partitions: int = 1, start: int = 0
) -> None:
    for i in range(start, start + n):
        await producer.send(
            topic,
            f"{i}".encode(),
            key=f"k{i % 7}".encode(),
            partition=i % partitions,
            headers=[("seq", str(i).encode())],
        )
    await producer.flush()


async def test_every_record_once_in_offset_order(
    broker: Broker, topic: Topic, producer: AIOKafkaProducer
) -> None:
    name = await topic(partitions=2)
    await produce(producer, name, 200, partitions=2)
    engine = engine_for(broker, sub(name), auto_complete=True)
    async with KafkaIntake(engine, max_batch=16) as intake:
        await wait_until(lambda: len(engine.created) == 200, what="200 invocations")
        await wait_until(lambda: all(p.lag == 0 for p in intake.stats()[0].partitions))
        [stats] = intake.stats()
    assert stats.state == "running" and stats.records == 200 and stats.group_id == "sub_1"
    assert [
        (p.partition, p.consumed_offset, p.high_watermark, p.in_flight, p.paused) for p in stats.partitions
    ] == [
        (0, 100, 100, 0, False),
        (1, 100, 100, 0, False),
    ]
    for partition in (0, 1):
        offsets = [int(i.rsplit("/", 1)[1]) for i in engine.created if f"/{partition}/" in i]
        assert offsets == list(range(100))  # created in offset order
    record = engine.created[f"sub_1/{name}/1/3"]
    assert record.value == b"7" and record.key == b"k0" and record.headers == (("seq", b"7"),)
    assert record.timestamp > 1_600_000_000_000


async def test_restart_seeks_to_stored_offsets(
    broker: Broker, topic: Topic, producer: AIOKafkaProducer
) -> None:
    name = await topic(partitions=2)
    await produce(producer, name, 60, partitions=2)
    engine = engine_for(broker, sub(name), auto_complete=True)
    async with KafkaIntake(engine):
        await wait_until(lambda: len(engine.created) == 60)
    await produce(producer, name, 40, partitions=2, start=60)
    # A fresh group that would start from the beginning: only the stored offsets prevent re-reading.
    engine.subs["sub_1"] = sub(name, **{"group.id": "another-group"})
    calls = engine.ingest_calls
    async with KafkaIntake(engine):
        await wait_until(lambda: len(engine.created) == 100)
    assert engine.stored_offsets("sub_1") == {(name, 0): 50, (name, 1): 50}
    seen = sum(1 for _ in engine.created)
    assert seen == 100 and engine.ingest_calls > calls


async def test_backpressure_pauses_and_resumes(
    broker: Broker, topic: Topic, producer: AIOKafkaProducer
) -> None:
    name = await topic()
    await produce(producer, name, 100)
    engine = engine_for(broker, sub(name))
    async with KafkaIntake(engine, max_pending_per_partition=10, max_batch=4, batches_in_flight=1) as intake:
        await wait_until(lambda: intake.stats()[0].partitions and intake.stats()[0].partitions[0].paused)
        # an ingest may still be returning its ids when the pause shows: wait until they are counted
        await wait_until(lambda: intake.stats()[0].partitions[0].in_flight == len(engine.created))
        held = len(engine.created)
        assert 10 < held <= 10 + 2 * 4  # one more batch may be in hand when the pause comes
        [part] = intake.stats()[0].partitions
        assert part.in_flight == held and part.oldest_pending_ms is not None and part.lag == 100 - held
        for _ in range(10):
            await wait_until(lambda: True)
        assert len(engine.created) == held  # paused: nothing more is fetched
        while len(engine.pending) > 6:
            engine.complete(engine.pending.pop(0))
        assert intake.stats()[0].partitions[0].paused  # 6 pending: still above half of 10
        engine.complete(engine.pending.pop(0))
        await wait_until(lambda: len(engine.created) > held, what="resumed")
        for _ in range(200):
            engine.complete_all()
            if len(engine.created) == 100:
                break
            await wait_until(lambda: True)
            await wait_until(lambda: len(engine.pending) > 0 or len(engine.created) == 100)
        assert len(engine.created) == 100
        engine.complete_all()
        assert intake.stats()[0].partitions[0].in_flight == 0


async def test_deleted_subscription_stops(broker: Broker, topic: Topic, producer: AIOKafkaProducer) -> None:
    a, b = await topic(), await topic()
    engine = engine_for(broker, sub(a, "sub_a"), sub(b, "sub_b"), auto_complete=True)
    async with KafkaIntake(engine) as intake:
        await produce(producer, a, 5)
        await produce(producer, b, 5)
        await wait_until(lambda: len(engine.created) == 10)
        del engine.subs["sub_a"]
        await intake.sync()
        assert [s.subscription_id for s in intake.stats()] == ["sub_b"]
        await produce(producer, a, 5, start=5)
        await produce(producer, b, 5, start=5)
        await wait_until(lambda: len(engine.created) == 15)
        assert sum(1 for i in engine.created if i.startswith("sub_a/")) == 5  # what was accepted stays


async def test_errors_are_visible_and_contained(
    broker: Broker, topic: Topic, producer: AIOKafkaProducer
) -> None:
    name = await topic()
    engine = engine_for(
        broker,
        sub(name, "sub_ok"),
        Subscription("sub_nosink", f"kafka://local/{name}", "service://nope/handle", FAST),
        Subscription("sub_nocluster", f"kafka://elsewhere/{name}", "service://svc/handle", FAST),
        Subscription("sub_badopt", f"kafka://local/{name}", "service://svc/handle", {"fetch.min.bytes": "x"}),
        Subscription("sub_down", f"kafka://down/{name}", "service://svc/handle", FAST),
        auto_complete=True,
        sinks={("svc", "handle")},
    )
    engine.clusters["down"] = {"bootstrap.servers": f"127.0.0.1:{free_port()}"}
    async with KafkaIntake(engine, sink_exists=engine.sink_exists, retry_initial=0.05) as intake:
        await produce(producer, name, 3)
        await wait_until(lambda: len(engine.created) == 3)
        await wait_until(lambda: intake.stats()[1].state == "retrying", what="unreachable broker retried")
        states = {s.subscription_id: (s.state, s.error) for s in intake.stats()}
    assert states["sub_ok"] == ("running", None)
    assert states["sub_nosink"][0] == "error" and "service://nope/handle" in str(states["sub_nosink"][1])
    assert states["sub_nocluster"][0] == "error" and "elsewhere" in str(states["sub_nocluster"][1])
    assert states["sub_badopt"][0] == "error" and "fetch.min.bytes" in str(states["sub_badopt"][1])
    assert states["sub_down"][0] == "retrying" and "Connection" in str(states["sub_down"][1])


async def test_failed_ingest_is_retried_without_loss(
    broker: Broker, topic: Topic, producer: AIOKafkaProducer
) -> None:
    name = await topic()
    await produce(producer, name, 20)
    engine = engine_for(broker, sub(name), auto_complete=True)
    engine.fail_next = OSError("disk full")
    async with KafkaIntake(engine, retry_initial=0.05, max_batch=5) as intake:
        await wait_until(lambda: len(engine.created) == 20, what="all records after a failed ingest")
        assert intake.stats()[0].state == "running"
    assert engine.stored_offsets("sub_1") == {(name, 0): 20}


async def test_rebalance_between_two_consumers(
    broker: Broker, topic: Topic, producer: AIOKafkaProducer
) -> None:
    name = await topic(partitions=4)
    engine = engine_for(broker, sub(name), auto_complete=True)
    produced = 0
    done = asyncio.Event()

    async def keep_producing() -> None:
        nonlocal produced
        while not done.is_set():
            await produce(producer, name, 8, partitions=4, start=produced)
            produced += 8
            await asyncio.sleep(0.01)

    a = KafkaIntake(engine, max_batch=8)
    await a.start()
    writer = asyncio.create_task(keep_producing())
    try:
        await wait_until(lambda: len(engine.created) > 50, what="A alone")
        async with KafkaIntake(engine, max_batch=8) as b:
            await wait_until(
                lambda: b.stats()[0].partitions and len(a.stats()[0].partitions) < 4, what="partitions split"
            )
            await a.stop()  # while records keep coming
            await wait_until(lambda: len(b.stats()[0].partitions) == 4, what="B takes over")
            done.set()
            await writer
            await wait_until(lambda: len(engine.created) == produced, what="all records")
    finally:
        done.set()
        await writer
        await a.stop()
    assert engine.skipped == 0  # every consumer started at the stored offsets: nothing re-read
    assert sum(engine.stored_offsets("sub_1").values()) == produced


async def test_stored_offset_past_the_end_is_reported(
    broker: Broker, topic: Topic, producer: AIOKafkaProducer
) -> None:
    name = await topic()
    await produce(producer, name, 5)
    engine = engine_for(broker, sub(name), auto_complete=True)
    engine.offsets["sub_1"] = {(name, 0): 100}  # as if the topic had been recreated
    async with KafkaIntake(engine) as intake:
        await wait_until(lambda: intake.stats()[0].error is not None, what="the warning")
        [stats] = intake.stats()
        assert stats.state == "running" and "stored offset 100 is past the end" in str(stats.error)
        assert stats.partitions[0].last_fetch_ms is not None and stats.partitions[0].last_fetch_ms < 5000
    assert not engine.created


async def test_restart_one_subscription_after_an_offset_reset(
    broker: Broker, topic: Topic, producer: AIOKafkaProducer
) -> None:
    name = await topic()
    await produce(producer, name, 10)
    engine = engine_for(broker, sub(name), auto_complete=True)
    async with KafkaIntake(engine) as intake:
        await wait_until(lambda: len(engine.created) == 10)
        engine.offsets["sub_1"] = {(name, 0): 4}  # as Engine.reset_offset does, with a new epoch
        engine.created.clear()
        await intake.restart("sub_1")
        await wait_until(lambda: len(engine.created) == 6, what="offsets 4..9 again")
        await wait_until(lambda: intake.stats()[0].partitions and intake.stats()[0].partitions[0].lag == 0)
        assert intake.stats()[0].partitions[0].consumed_offset == 10
