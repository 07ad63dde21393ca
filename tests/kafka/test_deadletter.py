"""Dead letters with a real broker: `on.failure=park` parks a failed record and its key goes on;
after a fix, a re-drive runs it once, in the key's original order; `key.missing=empty`."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import msgspec
from aiokafka import AIOKafkaProducer

import perdure
from perdure import ObjectContext, TerminalError, VirtualObject
from perdure.kafka import Broker
from perdure.storage.api import Status, Subscription

from .helpers import FAST, wait_until

Topic = Callable[..., Awaitable[str]]

accounts = VirtualObject("accounts")
broken: set[int] = set()  # record numbers the handler fails on, terminally (the "bug")
runs: list[tuple[str, int]] = []


@accounts.handler()
async def apply(ctx: ObjectContext, event: dict[str, Any]) -> None:
    runs.append((ctx.key(), event["n"]))
    if event["n"] in broken:
        raise TerminalError(f"cannot apply record {event['n']}")
    seen = await ctx.get("seen") or []
    seen.append(event["n"])
    ctx.set("seen", seen)


flaky: set[int] = set()  # record numbers the handler raises an ordinary (retried) error on


@accounts.handler(
    "settle",
    options=perdure.HandlerOptions(
        retry_policy=perdure.RetryPolicy(initial_interval=timedelta(milliseconds=10), max_attempts=3)
    ),
)
async def settle(ctx: ObjectContext, event: dict[str, Any]) -> None:
    runs.append((ctx.key(), event["n"]))
    if event["n"] in flaky:
        raise RuntimeError(f"the bank is down for record {event['n']}")
    seen = await ctx.get("seen") or []
    seen.append(event["n"])
    ctx.set("seen", seen)


APP = perdure.App([accounts])


async def subscribe(
    engine: perdure.Engine, broker: Broker, topic: str, handler: str = "apply", **opts: str
) -> str:
    await engine.put_kafka_cluster("local", {"bootstrap.servers": broker.bootstrap_servers})
    sub = await engine.create_subscription(
        f"kafka://local/{topic}", f"service://accounts/{handler}", {**FAST, **opts}
    )
    return sub.id


def seen(engine: perdure.Engine, key: str) -> list[int]:
    raw = engine.reader().get_all_state("accounts", key).get(b"seen")
    return msgspec.json.decode(raw) if raw else []


async def send(producer: AIOKafkaProducer, topic: str, key: bytes | None, n: int) -> None:
    await producer.send_and_wait(
        topic, msgspec.json.encode({"n": n}), key=key, headers=[("trace", b"t%d" % n)]
    )


async def test_park_then_redrive_after_a_fix(
    broker: Broker, topic: Topic, producer: AIOKafkaProducer
) -> None:
    name = await topic()
    broken.clear()
    runs.clear()
    broken.update({1, 2})
    async with perdure.Engine(APP) as engine:
        sub = await subscribe(engine, broker, name, **{"on.failure": "park"})
        for n in range(5):
            await send(producer, name, b"K", n)
        await producer.send_and_wait(name, b"not json", key=b"K")  # a poison record: parked too
        await wait_until(lambda: seen(engine, "K") == [0, 3, 4], what="K's later records handled")
        await wait_until(lambda: len(engine.dead_letters(sub)) == 3, what="three records parked")
        parked = engine.dead_letters(sub)
        letters = [p.dead_letter for p in parked]
        assert [(d.offset, d.key, d.state) for d in letters if d] == [
            (1, b"K", "parked"),
            (2, b"K", "parked"),
            (5, b"K", "parked"),
        ]
        first = letters[0]
        assert first is not None and first.error.message == "cannot apply record 1" and first.attempts == 1
        assert first.headers == [("trace", b"t1")] and msgspec.json.decode(first.value or b"") == {"n": 1}
        assert first.topic == name and first.partition == 0 and first.subscription == sub
        assert all(p.status is Status.PARKED for p in parked)
        assert letters[2] is not None and letters[2].attempts == 0 and "rejected" in letters[2].error.message

        broken.clear()  # the fix
        before = len(runs)
        new_ids = [await engine.redrive(p.id) for p in parked[:2]]
        await wait_until(lambda: seen(engine, "K") == [0, 3, 4, 1, 2], what="re-driven in the key's order")
        for new_id in new_ids:
            await engine.attach(new_id)
        assert runs[before:] == [("K", 1), ("K", 2)]  # once each
        again = engine.reader().get_invocation(parked[0].id)
        assert again is not None and again.dead_letter is not None
        assert (
            again.dead_letter.state == "redriven"
            and [r.invocation_id for r in again.dead_letter.redrives] == new_ids[:1]
        )
        assert [p.id for p in engine.dead_letters(sub)] == [parked[2].id]  # only the poison one waits
        try:
            await engine.redrive(parked[0].id)
        except perdure.ConflictError as e:
            assert "redriven" in str(e)
        else:
            raise AssertionError("a second re-drive of the same record was accepted")
        await engine.discard(parked[2].id)
        assert engine.dead_letters(sub) == []
        gone = engine.reader().get_invocation(parked[2].id)
        assert gone is not None and gone.status is Status.COMPLETED and gone.dead_letter is not None
        await asyncio.sleep(0.2)
        assert seen(engine, "K") == [0, 3, 4, 1, 2]


async def test_a_redrive_that_fails_again_is_parked_again(
    broker: Broker, topic: Topic, producer: AIOKafkaProducer
) -> None:
    name = await topic()
    broken.clear()
    broken.add(9)
    async with perdure.Engine(APP) as engine:
        sub = await subscribe(engine, broker, name, **{"on.failure": "park"})
        await send(producer, name, b"A", 9)
        await wait_until(lambda: len(engine.dead_letters(sub)) == 1)
        [parked] = engine.dead_letters(sub)
        again = await engine.redrive(parked.id)  # not fixed yet
        await wait_until(lambda: [i.id for i in engine.dead_letters(sub)] == [again], what="parked again")
        [letter] = [i.dead_letter for i in engine.dead_letters(sub)]
        assert (
            letter is not None
            and letter.redrive_of == parked.id
            and letter.offset == parked.dead_letter.offset
        )
        assert letter.headers == [("trace", b"t9")]  # the record's own headers, without perdure's
        broken.clear()
        await engine.attach(await engine.redrive(again))
        assert seen(engine, "A") == [9] and engine.dead_letters(sub) == []


async def test_retries_exhausted_park_the_record(
    broker: Broker, topic: Topic, producer: AIOKafkaProducer
) -> None:
    name = await topic()
    flaky.clear()
    flaky.add(1)
    async with perdure.Engine(APP) as engine:
        sub = await subscribe(engine, broker, name, "settle", **{"on.failure": "park"})
        for n in range(3):
            await send(producer, name, b"R", n)
        await wait_until(lambda: seen(engine, "R") == [0, 2], what="R goes on after 3 attempts")
        [parked] = engine.dead_letters(sub)
        assert parked.dead_letter is not None and parked.dead_letter.attempts == 3
        assert "the bank is down for record 1" in parked.dead_letter.error.message
        flaky.clear()
        await engine.attach(await engine.redrive(parked.id))
        assert seen(engine, "R") == [0, 2, 1]


async def test_block_is_todays_behaviour(broker: Broker, topic: Topic, producer: AIOKafkaProducer) -> None:
    name = await topic()
    broken.clear()
    broken.add(1)
    async with perdure.Engine(APP) as engine:
        sub = await subscribe(engine, broker, name)
        for n in range(3):
            await send(producer, name, b"B", n)
        await wait_until(lambda: seen(engine, "B") == [0, 2])
        assert engine.dead_letters(sub) == []  # a terminal error fails the invocation, as before


async def test_key_missing_empty(broker: Broker, topic: Topic, producer: AIOKafkaProducer) -> None:
    name = await topic()
    broken.clear()
    async with perdure.Engine(APP) as engine:
        await subscribe(engine, broker, name, **{"key.missing": "empty"})
        await send(producer, name, None, 7)
        await wait_until(lambda: seen(engine, "") == [7], what="the keyless record at key ''")


async def test_bad_policy_options_are_refused() -> None:
    from perdure.kafka.options import OptionError, consumer_config

    for bad in (
        {"on.failure": "drop"},
        {"rate": "0"},
        {"max.concurrency": "x"},
        {"ordering": "random"},
        {"key.missing": "skip"},
    ):
        try:
            consumer_config("s", {"bootstrap.servers": "127.0.0.1:1"}, bad)
        except OptionError:
            continue
        raise AssertionError(f"{bad} accepted")


async def test_redrive_from_any_node_of_a_cluster(
    broker: Broker, topic: Topic, producer: AIOKafkaProducer, postgres: Callable[[], str]
) -> None:
    """Two engines on one PostgreSQL database (a cluster, 4 partitions): records parked in either
    node's partitions are listed and re-driven from one node; each runs once, a key's in order."""
    name = await topic()
    url = postgres()
    broken.clear()
    runs.clear()
    keys = [f"c{i}" for i in range(6)]
    broken.update(range(100, 112))  # the first two records of each key fail
    async with (
        perdure.Engine(APP, store=url, partitions=4) as first,
        perdure.Engine(APP, store=url) as second,
    ):
        await wait_until(lambda: len(first.partitions) + len(second.partitions) == 4, within=30)
        sub = await subscribe(first, broker, name, **{"on.failure": "park"})
        for n in range(100, 118):
            await send(producer, name, keys[n % 6].encode(), n)
        await wait_until(lambda: all(len(seen(first, k)) == 1 for k in keys), within=30, what="later records")
        await wait_until(lambda: len(second.dead_letters(sub)) == 12, within=30, what="12 parked")
        owners = {first.router.partition_for(i.id) is not None for i in first.dead_letters(sub)}
        assert owners == {True, False}, "the parked records should be spread over both nodes"
        broken.clear()
        for inv in first.dead_letters(sub):  # from one node, in the original order
            await first.redrive(inv.id)
        for k in keys:
            mine = [n for n in range(100, 118) if keys[n % 6] == k]
            await wait_until(lambda k=k, mine=mine: seen(first, k) == [mine[2], mine[0], mine[1]], within=30)
        assert first.dead_letters(sub) == [] and len(first.dead_letters(sub, state="redriven")) == 12
        assert sorted(n for _, n in runs if n < 112).count(100) == 2  # failed once, re-driven once


class _Catalog:
    """The engine's catalog as the dead-letter producer reads it (no broker needed here)."""

    def __init__(self, sub: Subscription) -> None:
        self.sub = sub

    def subscriptions(self) -> list[Subscription]:
        return [self.sub]

    def kafka_clusters(self) -> dict[str, dict[str, str]]:
        return {"local": {"bootstrap.servers": "127.0.0.1:1", "security.protocol": "SASL_SSL"}}

    def dead_letters(self, *args: Any, **kwargs: Any) -> list[Any]:
        return []

    async def mark_produced(self, *args: Any, **kwargs: Any) -> bool:
        return False


def test_the_dead_letter_producer_connects_with_the_subscriptions_security_options() -> None:
    from perdure.kafka.deadletter import DeadLetterProducer
    from perdure.kafka.egress import ProducerClient

    options = {
        "on.failure": "topic:dead",
        "security.protocol": "SASL_PLAINTEXT",  # the subscription's wins over the cluster's
        "sasl.mechanism": "SCRAM-SHA-256",
        "sasl.username": "dlq",
        "sasl.password": "secret",
    }
    sub = Subscription("sub_1", "kafka://local/orders", "service://accounts/apply", options)
    properties = DeadLetterProducer(_Catalog(sub))._properties(sub)
    assert properties is not None
    kwargs = ProducerClient(properties).kwargs
    assert kwargs["security_protocol"] == "SASL_PLAINTEXT" and kwargs["sasl_mechanism"] == "SCRAM-SHA-256"
    assert (kwargs["sasl_plain_username"], kwargs["sasl_plain_password"]) == ("dlq", "secret")
    assert kwargs["bootstrap_servers"] == "127.0.0.1:1"
