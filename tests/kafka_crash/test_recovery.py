"""How soon Kafka records flow again: after a SIGKILL of the engine, and for a new subscription.

Both use the consumer options a user gets by default (only `auto.offset.reset=earliest`): the
figures are what someone restarting perdure, or adding a subscription, would wait. Targets:
restart → first new record completed ≤ 5 s (restate-server 1.7: 78 s); subscription created →
first record completed ≤ 3 s (restate-server: ~23 s). The assertions are generous, so that a
slow machine does not fail them; the printed figures are the measurement.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import TypedDict

import msgspec
import pytest
from aiokafka import AIOKafkaProducer

import perdure
from perdure import ObjectContext, VirtualObject
from perdure.kafka import Broker

from .procs import Worker, key_of, progress, tail

RATE = 100  # records/s produced while the engine dies and restarts
PRODUCE_FOR_S = 60.0  # the producer's bound; it stops as soon as the test is done
KEYS = 50
PARTITIONS = 4
RUN_BEFORE_KILL_S = 1.0
RESTART_TARGET_S, RESTART_LIMIT_S = 5.0, 30.0
SUBSCRIBE_TARGET_S, SUBSCRIBE_LIMIT_S = 3.0, 20.0


class Producer(threading.Thread):
    """Produces `{"seq": n}` at RATE records/s in its own event loop until stopped (or PRODUCE_FOR_S)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(name="kafka-producer", daemon=True)
        self.bootstrap, self.topic = bootstrap, topic
        self.halt = threading.Event()
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._produce())
        except BaseException as e:  # reported by the test
            self.error = e

    async def _produce(self) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap)
        await producer.start()
        try:
            t0 = time.monotonic()
            for seq in range(int(RATE * PRODUCE_FOR_S)):
                if self.halt.is_set():
                    return
                await asyncio.sleep(max(0.0, t0 + seq / RATE - time.monotonic()))
                value = msgspec.json.encode({"seq": seq})
                await producer.send_and_wait(self.topic, value, key=key_of(seq, KEYS).encode())
                self.sent += 1
        finally:
            await producer.stop()

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=15)


@pytest.mark.slow
def test_restart_after_sigkill_resumes_the_stream(crash_broker: Broker, tmp_path: Path) -> None:
    topic = "recovery-restart"
    asyncio.run(crash_broker.create_topic(topic, PARTITIONS))
    db, log, stderr = tmp_path / "kafka.db", tmp_path / "steps.log", tmp_path / "worker.stderr"
    args = [
        *("--store", f"sqlite:///{db}", "--log", str(log), "--bootstrap", crash_broker.bootstrap_servers),
        *("--topic", topic, "--expected", str(10**9)),
    ]
    producer = Producer(crash_broker.bootstrap_servers, topic)
    producer.start()
    try:
        first = Worker(stderr, *args)
        try:
            assert first.read_until(b"CONSUMING", timeout=RESTART_LIMIT_S), tail(stderr)
            first_s = time.time() - first.started_at
            time.sleep(RUN_BEFORE_KILL_S)
            first.kill()
        finally:
            first.close()
        before = progress(f"sqlite:///{db}", topic)
        assert before.ingested > 0 and producer.error is None, (before, producer.error)

        # Every record at or past the offsets stored before the kill is new to the restarted engine.
        new_from = ",".join(f"{p}:{o}" for p, o in sorted(before.offsets.items()))
        second = Worker(stderr, *args, "--new-from", new_from)
        try:
            assert second.read_until(b"NEW", timeout=RESTART_LIMIT_S + 5), (
                f"no new record completed after the restart; output {second.output!r}\n{tail(stderr)}"
            )
            started_s = _started_s(second)
            _, partition, offset, at = second.line(b"NEW")
            recovery_s = float(at) - second.started_at
        finally:
            second.close()
    finally:
        producer.stop()
    assert producer.error is None, producer.error
    print(
        f"\nrestart after SIGKILL: first new record ({topic}/{partition}/{offset}) completed"
        f" {recovery_s:.2f} s after the process started (engine open after {started_s:.2f} s);"
        f" target <= {RESTART_TARGET_S:g} s, restate-server 78 s."
        f" First start to ingesting: {first_s:.2f} s; {before.ingested} records ingested before the kill"
    )
    assert recovery_s < RESTART_LIMIT_S


def _started_s(worker: Worker) -> float:
    """Seconds from the process start to STARTED (as seen by this test, so an upper bound)."""
    return worker.stamps.get(b"STARTED", float("nan")) - worker.started_at


class Event(TypedDict):
    seq: int


async def test_new_subscription_consumes_its_first_record(crash_broker: Broker, tmp_path: Path) -> None:
    topic = "recovery-subscribe"
    await crash_broker.create_topic(topic, PARTITIONS)
    obj = VirtualObject("firsts")
    done: list[float] = []
    first = asyncio.Event()

    @obj.handler()
    async def take(ctx: ObjectContext, event: Event) -> int:
        return await ctx.run("echo", lambda: event["seq"])

    producer = AIOKafkaProducer(bootstrap_servers=crash_broker.bootstrap_servers)
    await producer.start()
    try:
        await producer.send_and_wait(topic, msgspec.json.encode({"seq": 0}), key=b"k0")
    finally:
        await producer.stop()

    async with perdure.Engine(perdure.App([obj]), store=f"sqlite:///{tmp_path / 'sub.db'}") as engine:

        def completed(_invocation_id: str) -> None:
            done.append(time.perf_counter())
            first.set()

        engine.add_completion_listener(completed)
        await engine.put_kafka_cluster("local", {"bootstrap.servers": crash_broker.bootstrap_servers})
        t0 = time.perf_counter()
        await engine.create_subscription(
            f"kafka://local/{topic}", "service://firsts/take", {"auto.offset.reset": "earliest"}
        )
        created_s = time.perf_counter() - t0
        async with asyncio.timeout(SUBSCRIBE_LIMIT_S):
            await first.wait()
        first_s = done[0] - t0
    print(
        f"\nnew subscription: first record completed {first_s:.2f} s after create_subscription was called"
        f" (which returned after {created_s * 1000:.0f} ms); target <= {SUBSCRIBE_TARGET_S:g} s,"
        " restate-server ~23 s"
    )
    assert first_s < SUBSCRIBE_LIMIT_S
