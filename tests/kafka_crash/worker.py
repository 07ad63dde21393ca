"""The engine process the Kafka crash tests SIGKILL: records go to a handler that leaves a trail outside.

    python tests/kafka_crash/worker.py --store sqlite:///run.db --log steps.log --bootstrap 127.0.0.1:PORT \\
        --topic events --expected 20000

The app declares the cluster and the subscription `kafka://local/TOPIC → kcrash/consume` (earliest).
Each record `{"seq": n}` keyed by an object key runs one `ctx.run` step that appends
`"{key} {seq} {token}\\n"` to the log with one `O_APPEND` write and returns the fresh token, so the
journal says which execution's result was stored; then the handler bumps the key's `count` and
appends `seq` to its `seen` list, and returns the token.

The worker prints `STARTED` once the engine is open (recovery included), `AT <n>` every 100
invocations it completes, `CONSUMING` once its intake has accepted records, `NEW <partition> <offset>
<unix time>` when the first record at or past `--new-from` completes (recovery timing), and `DONE`
once `--expected` invocations have completed, then exits 0. Run it again on the same files after a
kill and it carries on from the offsets stored with the invocations.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import random
import time
import uuid
from pathlib import Path
from typing import TypedDict

import perdure
from perdure import ObjectContext, VirtualObject
from perdure.engine.step import decode_entry
from perdure.kafka import KafkaIntake
from perdure.sdk.service import KafkaSubscription
from perdure.storage.api import Status

SERVICE = "kcrash"
HANDLER = "consume"
CLUSTER = "local"
POLL_S = 0.01
PROGRESS_EVERY = 100


class Event(TypedDict):
    seq: int


def build_app(
    log_fd: int, step_ms: float, bootstrap: str, topic: str, options: dict[str, str]
) -> perdure.App:
    """The app, its effect bound to the open log; the step sleeps up to `step_ms` after its effect."""
    kcrash = VirtualObject(SERVICE)

    async def effect(key: str, seq: int) -> str:
        token = uuid.uuid4().hex
        os.write(log_fd, f"{key} {seq} {token}\n".encode())
        if step_ms:
            # A window between the effect and its stored result: kills landing here lose the
            # result, so the step runs again and leaves an earlier line the journal must not hold.
            await asyncio.sleep(random.uniform(0, step_ms) / 1000)
        return token

    @kcrash.handler(HANDLER)
    async def consume(ctx: ObjectContext, event: Event) -> str:
        token: str = await ctx.run("effect", effect, args=(ctx.key(), event["seq"]))
        count = await ctx.get("count") or 0
        ctx.set("count", count + 1)
        seen = await ctx.get("seen") or []
        ctx.set("seen", [*seen, event["seq"]])
        return token

    return perdure.App(
        [kcrash],
        kafka_clusters={CLUSTER: {"bootstrap.servers": bootstrap}},
        subscriptions=[KafkaSubscription(f"kafka://{CLUSTER}/{topic}", consume, options)],
    )


class Watch:
    """Prints `AT n` every PROGRESS_EVERY completions of this life; `NEW …` at the first past `new_from`."""

    def __init__(self, engine: perdure.Engine, new_from: dict[int, int] | None) -> None:
        self.engine = engine
        self.new_from = new_from
        self.completions = 0

    def completed(self, invocation_id: str) -> None:
        self.completions += 1
        if self.completions % PROGRESS_EVERY == 0:
            print(f"AT {self.completions}", flush=True)
        if self.new_from is None:
            return
        journal = self.engine.reader().read_journal(invocation_id)
        if not journal:
            return
        headers = {h.key: h.value for h in decode_entry(journal[0]).headers}
        partition, offset = int(headers["kafka.partition"]), int(headers["kafka.offset"])
        if offset >= self.new_from.get(partition, 0):
            print(f"NEW {partition} {offset} {time.time():.6f}", flush=True)
            self.new_from = None


def parse_offsets(text: str) -> dict[int, int]:
    """`0:120,1:98` → {0: 120, 1: 98}."""
    out = {}
    for part in filter(None, text.split(",")):
        partition, _, offset = part.partition(":")
        out[int(partition)] = int(offset)
    return out


async def run(args: argparse.Namespace) -> None:
    log_fd = os.open(args.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    options = {"auto.offset.reset": "earliest", **dict(o.split("=", 1) for o in args.option)}
    new_from = parse_offsets(args.new_from) if args.new_from is not None else None
    try:
        app = build_app(log_fd, args.step_ms, args.bootstrap, args.topic, options)
        engine = perdure.Engine(app, store=args.store, partitions=4)
        engine.add_completion_listener(Watch(engine, new_from).completed)  # before recovery resumes anything
        async with engine:
            if args.max_pending:
                # A smaller backlog per partition keeps ingest going for the whole run, so kills
                # land in the middle of ingest batches as well as in handlers.
                assert engine.kafka is not None
                await engine.kafka.stop()
                engine.kafka = KafkaIntake(engine, max_pending_per_partition=args.max_pending, max_batch=100)
                await engine.kafka.start()
            print("STARTED", flush=True)
            consuming = False
            deadline = time.monotonic() + args.timeout
            for tick in itertools.count():
                if time.monotonic() > deadline:
                    break
                intake = engine.kafka
                if not consuming and intake is not None and any(s.records for s in intake.stats()):
                    consuming = True
                    print("CONSUMING", flush=True)
                if tick % 5 == 0 and engine.reader().count_invocations()[Status.COMPLETED] >= args.expected:
                    print("DONE", flush=True)
                    return
                await asyncio.sleep(POLL_S)
            raise SystemExit(f"not done after {args.timeout} s")
    finally:
        os.close(log_fd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--store", required=True, help="a store URL: sqlite:///… or postgresql://…")
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--bootstrap", required=True, help="host:port of the broker")
    parser.add_argument("--topic", required=True)
    parser.add_argument("--expected", type=int, required=True, help="exit once this many completed")
    parser.add_argument("--step-ms", type=float, default=0.0, help="sleep up to this after the effect")
    parser.add_argument("--max-pending", type=int, default=0, help="backlog per partition (0: default)")
    parser.add_argument("--new-from", help="report the first completion at or past these offsets: P:O,P:O")
    parser.add_argument("--option", action="append", default=[], help="subscription option NAME=VALUE")
    parser.add_argument("--timeout", type=float, default=300.0, help="give up after this many seconds")
    args = parser.parse_args()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
