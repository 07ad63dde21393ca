"""Flow control with a real broker: max.concurrency, rate, ordering (key | none) on a service sink."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import msgspec
from aiokafka import AIOKafkaProducer

import perdure
from perdure import Context, Service
from perdure.kafka import Broker

from .helpers import FAST, wait_until

Topic = Callable[..., Awaitable[str]]

work = Service("work")
running: dict[str, int] = {"now": 0, "peak": 0}
order: list[int] = []
HOLD = {"s": 0.05}


@work.handler()
async def step(ctx: Context, n: int) -> None:
    running["now"] += 1
    running["peak"] = max(running["peak"], running["now"])
    try:
        order.append(n)
        await asyncio.sleep(HOLD["s"])
    finally:
        running["now"] -= 1


@work.handler()
async def noop(ctx: Context, n: int) -> None:
    return None


APP = perdure.App([work])


async def subscribe(engine: perdure.Engine, broker: Broker, topic: str, handler: str, **opts: str) -> str:
    await engine.put_kafka_cluster("local", {"bootstrap.servers": broker.bootstrap_servers})
    sub = await engine.create_subscription(
        f"kafka://local/{topic}", f"service://work/{handler}", {**FAST, **opts}
    )
    return sub.id


async def produce(producer: AIOKafkaProducer, topic: str, n: int, key: bytes | None = b"same") -> None:
    sent = [await producer.send(topic, msgspec.json.encode(i), key=key) for i in range(n)]
    await producer.flush()
    await asyncio.gather(*sent)


def reset(hold: float) -> None:
    running.update(now=0, peak=0)
    order.clear()
    HOLD["s"] = hold


async def test_max_concurrency_never_exceeded(
    broker: Broker, topic: Topic, producer: AIOKafkaProducer
) -> None:
    name = await topic(partitions=3)
    reset(0.05)
    async with perdure.Engine(APP) as engine:
        done: list[str] = []
        engine.add_completion_listener(done.append)
        await produce(producer, name, 80, key=None)
        await subscribe(engine, broker, name, "step", **{"max.concurrency": "4"})
        await wait_until(lambda: len(done) == 80, within=30, what="80 records handled")
    assert running["peak"] == 4  # never more, and the limit is reached (records run concurrently)


async def test_rate_holds_within_ten_percent(
    broker: Broker, topic: Topic, producer: AIOKafkaProducer
) -> None:
    name = await topic(partitions=2)
    async with perdure.Engine(APP) as engine:
        started: list[float] = []
        engine.add_completion_listener(lambda _id: started.append(time.monotonic()))
        await produce(producer, name, 1_500, key=None)
        await subscribe(engine, broker, name, "noop", rate="100")
        await wait_until(lambda: started, within=20, what="the first record")
        await asyncio.sleep(10.5)
        first = started[0]
        in_ten = sum(1 for t in started if t - first <= 10.0)
    print(f"rate=100: {in_ten} records handled in the first 10 s")
    assert 900 <= in_ten <= 1_100, in_ten


async def test_ordering_none_runs_one_keys_records_concurrently(
    broker: Broker, topic: Topic, producer: AIOKafkaProducer
) -> None:
    name = await topic()
    reset(0.2)
    async with perdure.Engine(APP) as engine:
        done: list[str] = []
        engine.add_completion_listener(done.append)
        await produce(producer, name, 10)
        await subscribe(engine, broker, name, "step", ordering="none")
        await wait_until(lambda: len(done) == 10, what="10 records handled")
    assert running["peak"] > 1


async def test_ordering_key_serialises_a_service_sink_per_key(
    broker: Broker, topic: Topic, producer: AIOKafkaProducer
) -> None:
    name = await topic()
    reset(0.02)
    async with perdure.Engine(APP) as engine:
        done: list[str] = []
        engine.add_completion_listener(done.append)
        await produce(producer, name, 20)
        await subscribe(engine, broker, name, "step", ordering="key")
        await wait_until(lambda: len(done) == 20, what="20 records handled")
    assert running["peak"] == 1 and order == list(range(20))
