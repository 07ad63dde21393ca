"""The dead-letter topic producer of `on.failure=topic:NAME`: each parked record appears in NAME once.

A record is parked first (the PARKED invocation and its `DeadLetter` are committed), then produced
here, then marked `produced` — so it is in the store even if the topic is unreachable, and produced
once even with a crash (SIGKILL) at any point:

- before its first produce, the end offset of the record's dead-letter partition is stored in the
  `DeadLetter` (`checkpoint`, a `MarkProduced` command): if the record is ever written there, it
  is at or past that offset;
- a record that has a checkpoint but is not marked produced may have been written before a crash:
  the producer reads that partition from the checkpoint to its end, looking for the record's id
  (header `perdure.dlq.id`, the parked invocation's id), and produces it only if it is not there.

The dead-letter partition is murmur2 of the record key (of the id without one), as Java clients
pick it, so a record is always looked for where it would have gone. The producer connects with the
subscription's cluster properties and options (TLS, SASL), as its consumer does.

Headers of a dead-letter record: the record's own, then `perdure.dlq.id`, `perdure.dlq.error`
(the failure message), `perdure.dlq.error.code`, `perdure.dlq.attempts`, `perdure.dlq.source`
(`TOPIC/PARTITION/OFFSET`), `perdure.dlq.subscription`. In a cluster, each node produces the
parked records of the partitions it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Protocol

from aiokafka.partitioner import murmur2  # type: ignore[import-untyped]
from aiokafka.structs import TopicPartition  # type: ignore[import-untyped]

from perdure.engine.counters import Counters
from perdure.kafka.egress import ProducerClient, ProducerPool
from perdure.kafka.options import parse_source, policy
from perdure.storage.api import Invocation, Subscription

log = logging.getLogger("perdure.kafka.deadletter")

ID_HEADER = "perdure.dlq.id"
#: A round reads every parked record; between rounds only a record parked here (`Counters.parked`)
#: calls for another, and this interval for the rest (records of partitions taken over from a
#: failed node, a subscription's cluster defined later).
RESCAN_S = 30.0


class DeadLetterEngine(Protocol):
    counters: Counters

    def dead_letters(
        self,
        subscription: str | None = None,
        *,
        key: bytes | None = None,
        state: str | None = "parked",
        limit: int = 10_000,
    ) -> list[Invocation]: ...
    def subscriptions(self) -> list[Subscription]: ...
    def kafka_clusters(self) -> dict[str, dict[str, str]]: ...
    async def mark_produced(
        self, invocation_id: str, checkpoint: int | None = None, produced: bool = False
    ) -> bool: ...


def dead_letter_headers(inv: Invocation) -> list[tuple[str, bytes]]:
    letter = inv.dead_letter
    assert letter is not None
    return [
        *letter.headers,
        (ID_HEADER, inv.id.encode()),
        ("perdure.dlq.error", letter.error.message.encode()),
        ("perdure.dlq.error.code", str(letter.error.code).encode()),
        ("perdure.dlq.attempts", str(letter.attempts).encode()),
        ("perdure.dlq.source", f"{letter.topic}/{letter.partition}/{letter.offset}".encode()),
        ("perdure.dlq.subscription", letter.subscription.encode()),
    ]


class DeadLetterProducer:
    """Produces the parked records of `topic:` subscriptions, once each (see the module docstring)."""

    def __init__(self, engine: DeadLetterEngine, *, poll_interval: float = 0.5) -> None:
        self._engine = engine
        self._poll = poll_interval
        self._task: asyncio.Task[None] | None = None
        self._producers = ProducerPool()  # by properties: a subscription's options may differ
        self.produced = 0  # records put in a dead-letter topic by this process
        self.deduplicated = 0  # records found there already (a crash after producing them)
        self.error: str | None = None

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="dead-letter producer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
            self._task = None
        await self._producers.close()

    async def _run(self) -> None:
        delay = 0.5
        seen, last = -1, 0.0  # records parked here as of the last good round, and its time
        while True:
            await asyncio.sleep(self._poll)
            parked, now = self._engine.counters.parked, time.monotonic()
            if parked == seen and now - last < RESCAN_S:
                continue  # nothing parked here since a round that succeeded
            try:
                await self.round()
                delay, self.error = 0.5, None
                seen, last = parked, now
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self.error = f"{type(e).__name__}: {e}"
                log.warning("dead-letter producer: %s; retrying in %.1f s", self.error, delay)
                await self._producers.close()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def round(self) -> int:
        """Produce every parked record of a `topic:` subscription not produced yet; how many were."""
        subs = {s.id: s for s in self._engine.subscriptions() if policy(s.options).dead_letter_topic}
        if not subs:
            return 0
        done = 0
        for inv in self._engine.dead_letters(state=None):
            letter = inv.dead_letter
            if letter is None or letter.produced or not letter.policy.startswith("topic:"):
                continue
            sub = subs.get(letter.subscription)
            properties = self._properties(sub) if sub is not None else None
            if properties is None:
                continue  # its subscription or cluster is gone: it stays parked, unproduced
            client = await self._producers.get(tuple(sorted(properties.items())), properties)
            done += await self._produce(client, inv, letter.policy[6:])
        return done

    def _properties(self, sub: Subscription) -> dict[str, str] | None:
        cluster = self._engine.kafka_clusters().get(parse_source(sub.source)[0])
        if cluster is None:
            return None
        return {**cluster, **sub.options}  # security options of the subscription win, as its consumer's

    async def _produce(self, client: ProducerClient, inv: Invocation, topic: str) -> int:
        letter = inv.dead_letter
        assert letter is not None
        partitions = await client.partitions(topic)
        basis = letter.key if letter.key is not None else inv.id.encode()
        tp = TopicPartition(topic, int((murmur2(basis) & 0x7FFFFFFF) % partitions))
        if letter.checkpoint is None:
            end = (await client.end_offsets([tp]))[tp]
            if not await self._engine.mark_produced(inv.id, checkpoint=end):
                return 0  # another node runs the record's partition
        elif inv.id.encode() in await client.find(
            {tp: letter.checkpoint}, {inv.id.encode()}, header=ID_HEADER
        ):
            await self._engine.mark_produced(inv.id, produced=True)
            self.deduplicated += 1
            return 0
        await client.producer.send_and_wait(
            topic, letter.value, key=letter.key, partition=tp.partition, headers=dead_letter_headers(inv)
        )
        await self._engine.mark_produced(inv.id, produced=True)
        self.produced += 1
        return 1
