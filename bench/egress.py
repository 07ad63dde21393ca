"""Kafka egress benchmark: a Kafka drain where each record emits one record (`ctx.emit`) vs without.

Same run, same broker (tansu, a subprocess on a free loopback port), the engine in this process on
SQLite (synchronous=FULL). COUNT JSON records over 1,000 keys and 4 partitions are produced up
front to a fresh topic per phase; the engine starts with a subscription to it and drains it. The
handler is exclusive and minimal (one `ctx.set`), so the egress's cost shows rather than hides:
`plain` only sets; `emit` sets and emits one record to an output topic (4 partitions).

events/s runs from the first completion to the last one (plain) or to the last emitted record
acknowledged by the broker and deleted from the outbox (emit); "CPU us/event" is this process's
CPU time over the same span, divided by COUNT (steadier than rates on a shared machine). Phases
alternate (plain, emit, plain, emit, …) to spread the noise of other jobs evenly.

    .venv/bin/python bench/egress.py
    .venv/bin/python bench/egress.py --count 20000 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import msgspec
from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]

import perdure
from perdure import ObjectContext, VirtualObject
from perdure.kafka import Broker
from perdure.sdk.service import KafkaSubscription

PARTITIONS = 4
OPTIONS = {"auto.offset.reset": "earliest", "session.timeout.ms": "2000", "heartbeat.interval.ms": "200"}

bench = VirtualObject("egressBench")


@bench.handler()
async def plain(ctx: ObjectContext, event: dict[str, int]) -> None:
    ctx.set("last", event["n"])


@bench.handler()
async def emit(ctx: ObjectContext, event: dict[str, int]) -> None:
    ctx.set("last", event["n"])
    ctx.emit("bench-out", event, key=ctx.key())


async def produce(bootstrap: str, topic: str, count: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=512 * 1024)
    await producer.start()
    try:
        for i in range(count):
            await producer.send(topic, msgspec.json.encode({"n": i}), key=f"k{i % 1000:04d}".encode())
        await producer.flush()
    finally:
        await producer.stop()


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def phase(broker: Broker, name: str, count: int, n: int, tmp: Path) -> tuple[float, float]:
    """(events/s, CPU us per event) of one drain."""
    topic = f"bench-in-{name}-{n}"
    await broker.create_topic(topic, PARTITIONS)
    await produce(broker.bootstrap_servers, topic, count)
    handler = emit if name == "emit" else plain
    app = perdure.App(
        [bench],
        kafka_clusters={"bench": {"bootstrap.servers": broker.bootstrap_servers}},
        subscriptions=[KafkaSubscription(f"kafka://bench/{topic}", handler, OPTIONS)],
    )
    engine = perdure.Engine(app, store=f"sqlite:///{tmp / f'{name}-{n}.db'}")
    done = 0
    first: list[tuple[float, float]] = []
    finished = asyncio.Event()

    def completed(invocation_id: str) -> None:
        nonlocal done
        done += 1
        if not first:
            first.append((time.monotonic(), cpu()))
        if done >= count:
            finished.set()

    engine.add_completion_listener(completed)
    async with engine:
        await asyncio.wait_for(finished.wait(), 300)
        if name == "emit":
            assert engine.egress is not None
            while engine.egress.produced < count:  # noqa: ASYNC110 - a counter, polled as it goes
                await asyncio.sleep(0.002)
        end, end_cpu = time.monotonic(), cpu()
    (start, start_cpu) = first[0]
    return count / (end - start), (end_cpu - start_cpu) / count * 1e6


async def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=10_000, help="records per phase")
    parser.add_argument("--rounds", type=int, default=3, help="plain/emit pairs")
    args = parser.parse_args(argv)
    results: dict[str, list[tuple[float, float]]] = {"plain": [], "emit": []}
    with tempfile.TemporaryDirectory() as tmp:
        async with Broker() as broker:
            await broker.create_topic("bench-out", PARTITIONS)
            for n in range(args.rounds):
                for name in ("plain", "emit"):
                    results[name].append(await phase(broker, name, args.count, n, Path(tmp)))
    print(f"\nKafka drain, {args.count:,} records x {args.rounds} rounds per row, SQLite synchronous=FULL\n")
    print("| handler | events/s (median) | each round | CPU us/event (median) |")
    print("|---|---|---|---|")
    for name, label in (("plain", "ctx.set"), ("emit", "ctx.set + ctx.emit (one record out)")):
        rates = [r for r, _ in results[name]]
        cpus = [c for _, c in results[name]]
        each = ", ".join(f"{r:,.0f}" for r in rates)
        print(f"| {label} | {statistics.median(rates):,.0f} | {each} | {statistics.median(cpus):,.0f} |")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
