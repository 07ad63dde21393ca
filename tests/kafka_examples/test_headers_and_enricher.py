"""What a handler sees of a Kafka record, and examples/profile_enricher.py fed from two topics."""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaProducer

import perdure
from perdure import ObjectContext, VirtualObject
from perdure.kafka import Broker

from .helpers import completions, load_example, subscribe, wait_until

Topic = Callable[..., Awaitable[str]]

probe = VirtualObject("probe")


@probe.handler()
async def see(ctx: ObjectContext, event: dict[str, Any]) -> None:
    ctx.set("headers", dict(ctx.request().headers))
    ctx.set("event", event)


async def test_the_handler_sees_the_records_metadata_and_headers(
    broker: Broker, topic: Topic, producer: AIOKafkaProducer
) -> None:
    name = await topic("events")
    async with perdure.Engine(perdure.App([probe])) as engine:
        done = completions(engine)
        sub_id = await subscribe(engine, broker, name, "service://probe/see")
        sent = await producer.send_and_wait(
            name, b'{"n": 1}', key=b"k1", headers=[("trace", b"t-1"), ("raw", b"\xff\x00")]
        )
        await wait_until(lambda: len(done) == 1)
        state = {k.decode(): json.loads(v) for k, v in engine.reader().get_all_state("probe", "k1").items()}
    assert state["event"] == {"n": 1}
    assert state["headers"] == {
        "kafka.topic": name,
        "kafka.partition": "0",
        "kafka.offset": "0",
        "kafka.timestamp": str(sent.timestamp),
        "kafka.key": base64.urlsafe_b64encode(b"k1").decode(),
        "restate.subscription.id": sub_id,
        "trace": "t-1",  # the record's own headers follow
        "raw": "base64:" + base64.urlsafe_b64encode(b"\xff\x00").decode(),  # not UTF-8
    }


async def test_profile_enricher_fed_from_kafka(
    broker: Broker, topic: Topic, producer: AIOKafkaProducer
) -> None:
    """userEvent records store a profile and schedule `emit` 1 s later; featureEvents meanwhile add to it."""
    ex = load_example("profile_enricher")
    profiles, features = await topic("user-profiles"), await topic("user-features")
    async with perdure.Engine(ex.app) as engine:
        done = completions(engine)
        await subscribe(engine, broker, profiles, "service://profile/userEvent")
        await subscribe(engine, broker, features, "service://profile/featureEvent")
        # Both consumers must have joined before the 1 s emit timer starts, or features arrive late.
        assert engine.kafka is not None
        intake = engine.kafka
        await wait_until(lambda: all(s.partitions for s in intake.stats()) and len(intake.stats()) == 2)
        profile = {"id": "bob", "name": "Bob", "email": "bob@example.com"}
        await producer.send_and_wait(profiles, json.dumps(profile).encode(), key=b"bob")
        await wait_until(lambda: len(done) == 1, what="the userEvent")
        for feature in ("dark-mode", "beta-search"):
            await producer.send_and_wait(features, json.dumps(feature).encode(), key=b"bob")
        await wait_until(lambda: len(done) == 3, what="the featureEvents")
        assert ex.downstream == []  # emit waits for its second
        await wait_until(lambda: ex.downstream, within=5, what="the delayed emit")
        assert ex.downstream == [
            ("bob", ex.UserProfile("bob", "Bob", "bob@example.com", ["dark-mode", "beta-search"]))
        ]
        # emit clears the state after its downstream step: wait for its last commit
        await wait_until(
            lambda: engine.reader().get_all_state("profile", "bob") == {}, what="emit's clear_all"
        )
