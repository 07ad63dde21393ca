"""Kafka egress with the real engine and the real broker: each emitted record is produced once,
also when the engine stops between the commit and the produce, or between the produce and the
delete from the outbox."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

import perdure
from perdure import ObjectContext, VirtualObject
from perdure.engine.commands import Command, EgressProduced
from perdure.kafka import Broker
from perdure.kafka.egress import Egress, kafka_partition
from perdure.protocol import egress as wire

from .helpers import wait_until

Topic = Callable[..., Awaitable[str]]

orders = VirtualObject("orders")


@orders.handler()
async def confirm(ctx: ObjectContext, out: str) -> None:
    ctx.emit(out, {"order": ctx.key()}, key=ctx.key(), headers={"kind": "confirmed"})


APP = perdure.App([orders])


async def read_all(
    broker: Broker, topic: str, partitions: int = 1
) -> list[tuple[int, bytes | None, bytes, dict[str, bytes]]]:
    """Every record of `topic`: (partition, key, value, headers)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        ends = await consumer.end_offsets(tps)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        out = []
        todo = {tp for tp in tps if ends[tp] > 0}
        for _ in range(100):
            if not todo:
                break
            for tp, records in (await consumer.getmany(timeout_ms=200)).items():
                for r in records:
                    out.append((tp.partition, r.key, r.value, dict(r.headers)))
                    if r.offset + 1 >= ends[tp]:
                        todo.discard(tp)
        assert not todo, f"could not read {topic} to its end"
        return out
    finally:
        await consumer.stop()


async def engine_for(db: Path, broker: Broker) -> perdure.Engine:
    engine = perdure.Engine(APP, store=f"sqlite:///{db}")
    await engine.start()
    await engine.put_kafka_cluster("local", {"bootstrap.servers": broker.bootstrap_servers})
    return engine


def egress_of(engine: perdure.Engine) -> Egress:
    assert engine.egress is not None
    return engine.egress


async def test_an_emitted_record_is_produced_once_with_its_key_headers_and_id(
    broker: Broker, topic: Topic, tmp_path: Path
) -> None:
    out = await topic(partitions=3)
    engine = await engine_for(tmp_path / "e.db", broker)
    try:
        await engine.object_call(confirm, key="alice", arg=out)
        await wait_until(lambda: egress_of(engine).produced == 1, what="the record produced")
    finally:
        await engine.stop()
    engine = await engine_for(tmp_path / "e.db", broker)  # a restart produces nothing again
    try:
        await engine.object_call(confirm, key="bob", arg=out)
        await wait_until(lambda: egress_of(engine).produced == 1, what="bob's record produced")
    finally:
        await engine.stop()
    records = await read_all(broker, out, 3)
    assert sorted(r[1] for r in records) == [b"alice", b"bob"]
    for partition, key, value, headers in records:
        assert value == b'{"order":"%s"}' % key
        assert headers["kind"] == b"confirmed"
        assert wire.RECORD_ID_HEADER in headers
        assert partition == kafka_partition_of(key, 3)  # murmur2 of the key, as Java clients


def kafka_partition_of(key: bytes | None, partitions: int) -> int:
    from perdure.engine.egress import Record

    return kafka_partition(Record(id="x", topic="t", value=b"", key=key), partitions)


async def test_a_crash_after_the_commit_before_the_produce_produces_once(
    broker: Broker, topic: Topic, tmp_path: Path
) -> None:
    out = await topic()
    engine = await engine_for(tmp_path / "e.db", broker)
    await egress_of(engine).stop()  # the producer "crashed": records stay in the outbox
    try:
        for key in ("a", "b", "c"):
            await engine.object_call(confirm, key=key, arg=out)
    finally:
        await engine.stop()
    assert await read_all(broker, out) == []
    engine = await engine_for(tmp_path / "e.db", broker)
    try:
        await wait_until(lambda: egress_of(engine).produced == 3, what="the outbox produced")
    finally:
        await engine.stop()
    assert sorted(r[1] for r in await read_all(broker, out)) == [b"a", b"b", b"c"]


async def test_a_crash_after_the_produce_before_the_delete_does_not_produce_again(
    broker: Broker, topic: Topic, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = await topic(partitions=2)
    engine = await engine_for(tmp_path / "e.db", broker)
    partition = engine.partitions[0]
    submit = partition.submit_and_wait
    lost: list[Command] = []

    async def lose_deletes(command: Command) -> list[object]:
        if isinstance(command, EgressProduced) and command.names:
            lost.append(command)  # produced, but the delete never commits (the process "died")
            raise RuntimeError("killed")
        return await submit(command)  # type: ignore[return-value]

    monkeypatch.setattr(partition, "submit_and_wait", lose_deletes)
    try:
        for key in ("a", "b", "c", "d"):
            await engine.object_call(confirm, key=key, arg=out)
        await wait_until(
            lambda: len({name for c in lost for name in c.names}) == 4,  # type: ignore[attr-defined]
            what="the 4 records produced, their deletes lost",
        )
    finally:
        await engine.stop()
    engine = await engine_for(tmp_path / "e.db", broker)
    try:
        await engine.object_call(confirm, key="e", arg=out)
        await wait_until(lambda: egress_of(engine).deduplicated == 4, what="the 4 found in Kafka")
        await wait_until(lambda: egress_of(engine).produced == 1, what="e produced")
    finally:
        await engine.stop()
    assert sorted(r[1] for r in await read_all(broker, out, 2)) == [b"a", b"b", b"c", b"d", b"e"]


async def test_records_wait_for_a_cluster_and_are_produced_once_one_is_configured(
    broker: Broker, topic: Topic, tmp_path: Path
) -> None:
    out = await topic()
    engine = perdure.Engine(APP, store=f"sqlite:///{tmp_path / 'e.db'}")
    await engine.start()
    try:
        await engine.object_call(confirm, key="a", arg=out)
        await wait_until(lambda: egress_of(engine).error is not None, what="the egress error")
        assert "none is configured" in (egress_of(engine).error or "")
        await engine.put_kafka_cluster("local", {"bootstrap.servers": broker.bootstrap_servers})
        await wait_until(lambda: egress_of(engine).produced == 1, within=30, what="produced after the fix")
        await wait_until(lambda: egress_of(engine).error is None, what="the error cleared")
    finally:
        await engine.stop()
    assert [r[1] for r in await read_all(broker, out)] == [b"a"]
