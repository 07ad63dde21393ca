"""The intake with the real engine: records become invocations, exactly once, in order per key."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
from aiokafka import AIOKafkaProducer

import perdure
from perdure import ObjectContext, VirtualObject
from perdure.kafka import Broker, KafkaIntake

from .helpers import FAST, wait_until

Topic = Callable[..., Awaitable[str]]

users = VirtualObject("users")
gate: dict[str, asyncio.Event] = {}


@users.handler()
async def update(ctx: ObjectContext, event: dict[str, Any]) -> None:
    await record(ctx, event)


async def record(ctx: ObjectContext, event: dict[str, Any]) -> None:
    seen = await ctx.get("seen") or []
    headers = ctx.request().headers
    seen.append([event["n"], int(headers["kafka.offset"]), int(headers["kafka.partition"])])
    ctx.set("seen", seen)
    if "trace" in headers:
        ctx.set("trace", headers["trace"])


@users.handler()
async def hold(ctx: ObjectContext, n: int) -> None:
    await gate["open"].wait()  # held until the test opens the gate


APP = perdure.App([users])

users_v2 = VirtualObject("users")  # a later version of the app: users/hold is gone


@users_v2.handler("update")
async def update_v2(ctx: ObjectContext, event: dict[str, Any]) -> None:
    await record(ctx, event)


async def subscribe(
    engine: perdure.Engine, broker: Broker, topic: str, handler: str = "update", **opts: str
) -> str:
    await engine.put_kafka_cluster("local", {"bootstrap.servers": broker.bootstrap_servers})
    sub = await engine.create_subscription(
        f"kafka://local/{topic}", f"service://users/{handler}", {**FAST, **opts}
    )
    return sub.id


def state(engine: perdure.Engine, key: str) -> dict[str, Any]:
    raw = engine.reader().get_all_state("users", key)
    return {k.decode(): msgspec.json.decode(v) for k, v in raw.items()}


def completions(engine: perdure.Engine) -> list[str]:
    done: list[str] = []
    engine.add_completion_listener(done.append)
    return done


async def produce(producer: AIOKafkaProducer, topic: str, start: int, n: int, keys: int = 5) -> None:
    for i in range(start, start + n):
        key = f"user-{i % keys}".encode()
        await producer.send(topic, msgspec.json.encode({"n": i}), key=key, headers=[("trace", b"t-%d" % i)])
    await producer.flush()


def per_key_in_order(engine: perdure.Engine, keys: int, total: int) -> None:
    numbers = []
    for k in range(keys):
        seen = state(engine, f"user-{k}").get("seen", [])
        ns = [n for n, _, _ in seen]
        offsets = [o for _, o, _ in seen]
        assert ns == sorted(ns) and offsets == sorted(offsets), f"user-{k} out of order: {seen}"
        assert len({p for _, _, p in seen}) <= 1  # one key, one partition
        numbers += ns
    assert sorted(numbers) == list(range(total))  # each record exactly once


async def test_records_become_invocations_in_order_per_key(
    broker: Broker, topic: Topic, producer: AIOKafkaProducer
) -> None:
    name = await topic(partitions=3)
    async with perdure.Engine(APP) as engine:
        done = completions(engine)
        sub_id = await subscribe(engine, broker, name)
        await produce(producer, name, 0, 150)
        await wait_until(lambda: len(done) == 150, what="150 invocations completed")
        per_key_in_order(engine, 5, 150)
        assert state(engine, "user-3")["trace"] == "t-148"  # the record's own headers reach the handler
        assert engine.kafka is not None
        await wait_until(
            lambda: all(p.lag == 0 and p.in_flight == 0 for p in engine.kafka.stats()[0].partitions)
        )
        [stats] = engine.kafka.stats()
        assert (stats.subscription_id, stats.state, stats.error, stats.records) == (
            sub_id,
            "running",
            None,
            150,
        )
        assert sum(p.consumed_offset or 0 for p in stats.partitions) == 150
        assert engine.stored_offsets(sub_id) == {
            (name, p.partition): p.consumed_offset for p in stats.partitions if p.consumed_offset
        }


async def test_bad_records_fail_alone(broker: Broker, topic: Topic, producer: AIOKafkaProducer) -> None:
    name = await topic()
    async with perdure.Engine(APP) as engine:
        done = completions(engine)
        await subscribe(engine, broker, name)
        await producer.send_and_wait(name, b"not json", key=b"user-0")
        await producer.send_and_wait(name, b'{"n": 0}')  # no key for a keyed handler
        await producer.send_and_wait(name, b'{"n": 0}', key=b"\xff\xfe")  # not UTF-8: base64 key
        await producer.send_and_wait(name, b'{"n": 1}', key=b"user-0")
        await wait_until(lambda: len(done) == 4)
        failures = [engine.reader().get_invocation(i) for i in done]
        messages = sorted(
            inv.outcome.failure.message for inv in failures if inv and inv.outcome and inv.outcome.failure
        )
        assert len(messages) == 2
        assert f"{name}/0/0" in messages[0] and f"{name}/0/1" in messages[1] and "no key" in messages[1]
        assert state(engine, "user-0")["seen"] == [[1, 3, 0]]  # the partition went on
        assert state(engine, "__4=")["seen"] == [[0, 2, 0]]


async def test_restart_resumes_at_stored_offsets(
    broker: Broker, topic: Topic, producer: AIOKafkaProducer, tmp_path: Path
) -> None:
    name = await topic(partitions=2)
    db = f"sqlite:///{tmp_path / 'perdure.db'}"
    async with perdure.Engine(APP, store=db) as engine:
        done = completions(engine)
        await subscribe(engine, broker, name)
        await produce(producer, name, 0, 60)
        await wait_until(lambda: len(done) == 60)
    await produce(producer, name, 60, 40)
    async with perdure.Engine(APP, store=db) as engine:  # the same subscription, its offsets stored
        done = completions(engine)
        await wait_until(lambda: len(done) == 40, what="the 40 new records")
        await asyncio.sleep(0.3)
        assert len(done) == 40
        per_key_in_order(engine, 5, 100)


async def test_backpressure_with_the_engine(broker: Broker, topic: Topic, producer: AIOKafkaProducer) -> None:
    name = await topic()
    gate["open"] = asyncio.Event()
    async with perdure.Engine(APP) as engine:
        assert engine.kafka is not None
        await engine.kafka.stop()
        engine.kafka = intake = KafkaIntake(engine, max_pending_per_partition=20, max_batch=5)
        await intake.start()
        done = completions(engine)
        await subscribe(engine, broker, name, handler="hold")
        for i in range(200):
            await producer.send(name, b"%d" % i, key=b"k%d" % i)
        await producer.flush()
        await wait_until(
            lambda: intake.stats() and intake.stats()[0].partitions and intake.stats()[0].partitions[0].paused
        )
        # the batch in hand when the pause shows may still be returning its ids: wait until counted
        await wait_until(lambda: intake.stats()[0].partitions[0].in_flight > 20)
        [part] = intake.stats()[0].partitions
        assert 20 < part.in_flight <= 25 and part.lag == 200 - part.in_flight
        await asyncio.sleep(0.3)
        assert intake.stats()[0].partitions[0].in_flight == part.in_flight  # held
        assert intake.stats()[0].partitions[0].oldest_pending_ms >= 300  # type: ignore[operator]
        gate["open"].set()
        await wait_until(lambda: len(done) == 200, what="all 200 after resuming")
        await wait_until(lambda: not intake.stats()[0].partitions[0].paused)


async def test_deleted_subscription_stops_consuming(
    broker: Broker, topic: Topic, producer: AIOKafkaProducer
) -> None:
    name = await topic()
    async with perdure.Engine(APP) as engine:
        assert engine.kafka is not None
        done = completions(engine)
        sub_id = await subscribe(engine, broker, name)
        await produce(producer, name, 0, 10)
        await wait_until(lambda: len(done) == 10)
        await engine.delete_subscription(sub_id)
        await wait_until(
            lambda: engine.kafka is not None and engine.kafka.stats() == [], what="consumer stopped"
        )
        await produce(producer, name, 10, 10)
        await asyncio.sleep(0.5)
        assert len(done) == 10
        per_key_in_order(engine, 5, 10)  # what was accepted stays


async def test_missing_sink_is_an_error_others_go_on(
    broker: Broker, topic: Topic, producer: AIOKafkaProducer, tmp_path: Path
) -> None:
    name = await topic()
    db = f"sqlite:///{tmp_path / 'perdure.db'}"
    async with perdure.Engine(APP, store=db) as engine:
        held = await subscribe(engine, broker, name, handler="hold")
    async with perdure.Engine(perdure.App([users_v2]), store=db) as engine:
        assert engine.kafka is not None
        done = completions(engine)
        await subscribe(engine, broker, name)
        await produce(producer, name, 0, 5)
        await wait_until(lambda: len(done) == 5)
        stats = {s.subscription_id: s for s in engine.kafka.stats()}
        assert stats[held].state == "error" and "service://users/hold" in str(stats[held].error)
        assert [s.state for k, s in stats.items() if k != held] == ["running"]
