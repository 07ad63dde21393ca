"""Kafka egress from the official Restate Python SDK: `ctx.generic_send("perdure.kafka", "emit", …)`
in a remote deployment produces the record once, like `ctx.emit` in perdure's SDK."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

import perdure
from perdure.kafka import Broker
from perdure.protocol import egress as wire

from .processes import Hypercorn

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def official() -> Iterator[Hypercorn]:
    served = Hypercorn("tests.interop.official_services:app")
    served.start()
    try:
        yield served
    finally:
        served.stop()


async def test_an_official_sdk_handler_emits_a_record_once(
    official: Hypercorn, broker: Broker, tmp_path: Any
) -> None:
    topic = "official-sdk-emits"
    await broker.create_topic(topic, 1)
    async with perdure.Engine(perdure.App([]), store=f"sqlite:///{tmp_path}/emit.db") as engine:
        await engine.register_deployment(official.url)
        await engine.put_kafka_cluster("local", {"bootstrap.servers": broker.bootstrap_servers})
        await engine.generic_call("Flaky", "emit", f'"{topic}"'.encode())
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=broker.bootstrap_servers, auto_offset_reset="earliest"
        )
        await consumer.start()
        try:
            batches = await consumer.getmany(timeout_ms=10_000)
            records = [r for batch in batches.values() for r in batch]
        finally:
            await consumer.stop()
    assert len(records) == 1
    [record] = records
    assert (record.key, record.value) == (b"from-sdk", b'{"from":"official"}')
    headers = dict(record.headers)
    assert headers["via"] == b"sdk" and wire.RECORD_ID_HEADER in headers
