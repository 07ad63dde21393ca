"""`on.failure=topic:NAME` across SIGKILLs: each parked record is in the dead-letter topic once.

Life 1 is SIGKILLed after the producer stored a parked record's checkpoint and before it produced
it; life 2 right after it produced one and before it marked it produced; life 3 finishes. The
dead-letter topic then holds each parked record exactly once, with its error in the headers.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections import Counter
from pathlib import Path

import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from perdure.kafka import Broker

WORKER = Path(__file__).with_name("dlq_worker.py")
RECORDS = 20
LIFE_TIMEOUT_S = 60.0


def life(tmp_path: Path, broker: Broker, topic: str, dlq: str, die: str) -> tuple[int, str]:
    command = [
        sys.executable, str(WORKER), "--store", f"sqlite:///{tmp_path / 'run.db'}",
        "--bootstrap", broker.bootstrap_servers, "--topic", topic, "--dlq", dlq,
        "--records", str(RECORDS), "--die", die,
    ]  # fmt: skip
    with (tmp_path / "worker.err").open("ab") as err:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err)
        try:
            out, _ = proc.communicate(timeout=LIFE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()  # by its own pid
            proc.communicate()
            raise
    return proc.returncode, out.decode()


async def produce(broker: Broker, topic: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers)
    await producer.start()
    try:
        for n in range(RECORDS):
            await producer.send_and_wait(topic, msgspec.json.encode({"n": n}), key=f"k{n % 3}".encode())
    finally:
        await producer.stop()


async def read_all(broker: Broker, topic: str) -> list[dict[str, bytes]]:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=broker.bootstrap_servers, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    try:
        records = []
        for _ in range(20):
            batches = await consumer.getmany(timeout_ms=300)
            for batch in batches.values():
                records += [{**dict(r.headers), "value": r.value} for r in batch]
        return records
    finally:
        await consumer.stop()


def test_dead_letter_topic_gets_each_record_once_across_kills(
    crash_broker: Broker, new_topic: str, tmp_path: Path
) -> None:
    topic, dlq = new_topic, new_topic + "-dlq"
    asyncio.run(crash_broker.create_topic(topic, 1))
    asyncio.run(crash_broker.create_topic(dlq, 2))
    asyncio.run(produce(crash_broker, topic))

    code, out = life(tmp_path, crash_broker, topic, dlq, "before-produce")
    assert code == -9 and "DONE" not in out, out
    assert asyncio.run(read_all(crash_broker, dlq)) == []  # killed before any produce
    code, out = life(tmp_path, crash_broker, topic, dlq, "after-produce")
    assert code == -9, out
    assert len(asyncio.run(read_all(crash_broker, dlq))) == 1  # produced, then killed before the mark
    code, out = life(tmp_path, crash_broker, topic, dlq, "never")
    assert code == 0 and "DONE" in out and "DEDUP 1" in out, out

    records = asyncio.run(read_all(crash_broker, dlq))
    ids = Counter(r["perdure.dlq.id"] for r in records)
    assert len(records) == RECORDS // 5 and set(ids.values()) == {1}, ids
    assert sorted(msgspec.json.decode(r["value"])["n"] for r in records) == [0, 5, 10, 15]
    assert all(
        r["perdure.dlq.error"] == b"record %d is bad" % msgspec.json.decode(r["value"])["n"] for r in records
    )
    assert {r["perdure.dlq.source"].rsplit(b"/", 1)[0] for r in records} == {f"{topic}/0".encode()}
