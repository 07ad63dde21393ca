"""The engine process the dead-letter kill test SIGKILLs: records whose handler fails are parked
with `on.failure=topic:DLQ` and produced to DLQ.

    python tests/kafka_crash/dlq_worker.py --store sqlite:///run.db --bootstrap 127.0.0.1:PORT \\
        --topic in --dlq dead --records 20 --die before-produce|after-produce|never

The handler fails terminally on every record whose `n` is a multiple of 5. `--die before-produce`
SIGKILLs the process right after the producer stored a record's checkpoint and before it
produced it (parked, not in the topic); `--die after-produce` right after a record was produced
and before it was marked produced (in the topic, not marked). Prints `STARTED`, `DEDUP <n>` when
the producer found a record already in the topic, and `DONE` once every parked record is marked
produced.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from typing import Any

import perdure
from perdure import ObjectContext, TerminalError, VirtualObject
from perdure.sdk.service import KafkaSubscription


def build_app(bootstrap: str, topic: str, dlq: str) -> perdure.App:
    svc = VirtualObject("ledger")

    @svc.handler()
    async def post(ctx: ObjectContext, event: dict[str, int]) -> None:
        if event["n"] % 5 == 0:
            raise TerminalError(f"record {event['n']} is bad")

    options = {
        "auto.offset.reset": "earliest",
        "session.timeout.ms": "2000",
        "heartbeat.interval.ms": "200",
        "on.failure": f"topic:{dlq}",
    }
    return perdure.App(
        [svc],
        kafka_clusters={"local": {"bootstrap.servers": bootstrap}},
        subscriptions=[KafkaSubscription(f"kafka://local/{topic}", post, options)],
    )


def arm(engine: perdure.Engine, die: str) -> None:
    mark = engine.mark_produced

    async def mark_produced(invocation_id: str, checkpoint: int | None = None, produced: bool = False) -> Any:
        if die == "after-produce" and produced:
            os.kill(os.getpid(), signal.SIGKILL)  # produced, not yet marked
        result = await mark(invocation_id, checkpoint, produced)
        if die == "before-produce" and checkpoint is not None:
            os.kill(os.getpid(), signal.SIGKILL)  # checkpoint stored, not yet produced
        return result

    engine.mark_produced = mark_produced  # type: ignore[method-assign]


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", required=True)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--dlq", required=True)
    parser.add_argument("--records", type=int, required=True)
    parser.add_argument("--die", default="never")
    args = parser.parse_args()
    expected = len([n for n in range(args.records) if n % 5 == 0])
    async with perdure.Engine(build_app(args.bootstrap, args.topic, args.dlq), store=args.store) as engine:
        arm(engine, args.die)
        print("STARTED", flush=True)
        reported = 0
        for _ in range(600):
            producer = engine.dead_letter_producer
            if producer is not None and producer.deduplicated > reported:
                reported = producer.deduplicated
                print(f"DEDUP {reported}", flush=True)
            letters = engine.dead_letters(state=None)
            if len(letters) == expected and all(i.dead_letter and i.dead_letter.produced for i in letters):
                print("DONE", flush=True)
                return
            await asyncio.sleep(0.05)
        print("TIMEOUT", flush=True)
        sys.exit(1)


if __name__ == "__main__":
    asyncio.run(main())
