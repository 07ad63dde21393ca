"""The dev broker: start, stop by pid, topics, a produce/consume round trip."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from perdure.kafka import Broker, BrokerError


async def test_starts_and_stops_by_pid() -> None:
    async with Broker() as b:
        pid = b.pid
        assert pid is not None
        host, port = b.bootstrap_servers.split(":")
        assert host == "127.0.0.1" and int(port) > 0
        await b.create_topic("x", partitions=3)
        await b.create_topic("x", partitions=3)  # already there: fine
        with pytest.raises(BrokerError, match="already exists"):
            await b.create_topic("x", partitions=3, exist_ok=False)
    assert b.pid is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_loopback_only() -> None:
    with pytest.raises(BrokerError, match="loopback"):
        Broker(host="0.0.0.0")


async def test_round_trip(broker: Broker, topic: Callable[..., Awaitable[str]]) -> None:
    name = await topic(partitions=2)
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers)
    await producer.start()
    try:
        for i in range(10):
            value = f"v{i}".encode()
            await producer.send_and_wait(name, value, key=b"k", partition=i % 2, headers=[("h", b"1")])
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap_servers, auto_offset_reset="earliest")
    await consumer.start()
    try:
        tps = [TopicPartition(name, 0), TopicPartition(name, 1)]
        consumer.assign(tps)
        got: list[tuple[int, bytes]] = []
        for _ in range(50):
            batch = await consumer.getmany(timeout_ms=200)
            got += [(m.partition, m.value) for ms in batch.values() for m in ms]
            if len(got) == 10:
                break
        assert sorted(v for _, v in got) == sorted(f"v{i}".encode() for i in range(10))
        assert {p for p, _ in got} == {0, 1}
        assert all(consumer.highwater(tp) == 5 for tp in tps)
        assert len(consumer.partitions_for_topic(name)) == 2
    finally:
        await consumer.stop()
