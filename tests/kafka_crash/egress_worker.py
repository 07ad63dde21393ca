"""The engine process the egress kill test SIGKILLs: each consumed record emits one record.

    python tests/kafka_crash/egress_worker.py --store sqlite:///run.db --bootstrap 127.0.0.1:PORT \\
        --topic in --out out --expected 5000

Subscription `kafka://local/IN → egress/forward` (earliest); the handler emits `{"seq": n}` to OUT
keyed like its input. Prints `STARTED`, `AT <n>` every 50 completions of this life, `DEDUP <n>`
when the producer found records already in Kafka (produced before a kill, not yet deleted from the
outbox), and `DONE` once `--expected` invocations completed and the outbox is empty.

With `--die-in-window N` it SIGKILLs itself once N invocations completed in this life, at the
producer's next delete from the outbox: records produced, not yet deleted (the window a random
kill seldom hits).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any, TypedDict

import perdure
from perdure import ObjectContext, VirtualObject
from perdure.engine import egress as outbox
from perdure.engine.commands import EgressProduced
from perdure.kafka import KafkaIntake
from perdure.protocol import egress as wire
from perdure.sdk.service import KafkaSubscription
from perdure.storage.api import Status

SERVICE = "egress"
PROGRESS_EVERY = 50


class Event(TypedDict):
    seq: int


def build_app(bootstrap: str, topic: str, out: str, options: dict[str, str]) -> perdure.App:
    svc = VirtualObject(SERVICE)

    @svc.handler()
    async def forward(ctx: ObjectContext, event: Event) -> None:
        ctx.emit(out, {"seq": event["seq"]}, key=ctx.key())

    return perdure.App(
        [svc],
        kafka_clusters={"local": {"bootstrap.servers": bootstrap}},
        subscriptions=[KafkaSubscription(f"kafka://local/{topic}", forward, options)],
    )


def diagnostics(engine: perdure.Engine, completions: int) -> str:
    parts = [f"{time.strftime('%H:%M:%S')} completed {completions}"]
    if engine.kafka is not None:
        for sub in engine.kafka.stats():
            parts.append(f"intake {sub.state} {sub.error or ''} records {sub.records}")
            parts += [f"p{p.partition} @{p.consumed_offset} lag {p.lag} {p.paused}" for p in sub.partitions]
    if engine.egress is not None:
        parts.append(f"egress produced {engine.egress.produced} dedup {engine.egress.deduplicated}")
        parts.append(f"error {engine.egress.error}")
    return "; ".join(parts)


def die_in_window(partition: Any, when: Callable[[], bool]) -> None:
    submit = partition.submit_and_wait

    async def submit_and_wait(command: Any) -> Any:
        if isinstance(command, EgressProduced) and command.names and when():
            os.kill(os.getpid(), signal.SIGKILL)
        return await submit(command)

    partition.submit_and_wait = submit_and_wait


def outbox_empty(engine: perdure.Engine) -> bool:
    reader = engine.reader()
    return not any(
        outbox.is_record(name)
        for p in engine.partitions
        for name in reader.get_all_state(wire.SERVICE, outbox.stream(p.number))
    )


async def run(args: argparse.Namespace) -> None:
    options = {"auto.offset.reset": "earliest", "session.timeout.ms": "1000", "heartbeat.interval.ms": "100"}
    engine = perdure.Engine(build_app(args.bootstrap, args.topic, args.out, options), store=args.store)
    completions = 0

    def completed(invocation_id: str) -> None:
        nonlocal completions
        completions += 1
        if completions % PROGRESS_EVERY == 0:
            print(f"AT {completions}", flush=True)

    engine.add_completion_listener(completed)
    async with engine:
        # Small ingest batches and backlogs: completions come in small steps, so kills land
        # early in each life and the run spans all of them.
        assert engine.kafka is not None
        await engine.kafka.stop()
        engine.kafka = KafkaIntake(engine, max_pending_per_partition=100, max_batch=50)
        await engine.kafka.start()
        if args.die_in_window is not None:
            for partition in engine.partitions:
                die_in_window(partition, lambda: completions >= args.die_in_window)
        print("STARTED", flush=True)
        deadline = time.monotonic() + args.timeout
        dedup = 0
        for tick in itertools.count():
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
            if tick % 40 == 39:  # every ~2 s, for the test's failure message
                print(diagnostics(engine, completions), file=sys.stderr, flush=True)
            if engine.egress is not None and engine.egress.deduplicated != dedup:
                dedup = engine.egress.deduplicated
                print(f"DEDUP {dedup}", flush=True)
            completed_all = engine.reader().count_invocations()[Status.COMPLETED] >= args.expected
            if completed_all and outbox_empty(engine):
                print("DONE", flush=True)
                return
        raise SystemExit(f"not done after {args.timeout} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--store", required=True)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--expected", type=int, required=True)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument(
        "--die-in-window", type=int, help="SIGKILL itself after N, between produce and delete"
    )
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
