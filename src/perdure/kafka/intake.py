"""The Kafka intake: one consumer per subscription of the engine, started and stopped to match."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from perdure.kafka.consumer import IngestEngine, SubscriptionConsumer
from perdure.kafka.members import MemberFile
from perdure.kafka.options import OptionError, parse_source
from perdure.kafka.pending import Tracker
from perdure.kafka.stats import SubscriptionStats
from perdure.storage.api import Subscription

log = logging.getLogger("perdure.kafka")


class KafkaIntake:
    """Pushes every record of every Kafka subscription to its handler, exactly once.

        async with perdure.Engine(app, store="sqlite:///perdure.db") as engine:
            async with KafkaIntake(engine) as intake:   # a consumer per engine.subscriptions()
                ...                                     # subscriptions changed: await intake.sync()
                for sub in intake.stats():
                    print(sub.subscription_id, sub.state, [p.lag for p in sub.partitions])

    Each record becomes one invocation, created atomically with the partition's next offset;
    consumers seek to those stored offsets on start and on every rebalance. A partition with
    more than `max_pending_per_partition` invocations accepted but not completed is paused
    until half of them are done. An unreachable broker is retried with backoff
    (`retry_initial` doubling up to `retry_max` seconds), never raised to the engine.
    """

    def __init__(
        self,
        engine: IngestEngine,
        *,
        max_pending_per_partition: int = 10_000,
        max_batch: int = 1_000,
        batches_in_flight: int = 4,
        commit_interval: float = 1.0,
        retry_initial: float = 0.5,
        retry_max: float = 30.0,
        sink_exists: Callable[[str, str], bool] | None = None,
        member_file: Path | None = None,
    ) -> None:
        if max_pending_per_partition < 1 or max_batch < 1 or batches_in_flight < 1:
            raise ValueError("max_pending_per_partition, max_batch and batches_in_flight must be positive")
        self.engine = engine
        self.max_pending_per_partition = max_pending_per_partition
        self.max_batch = max_batch
        self.batches_in_flight = batches_in_flight
        self.commit_interval = commit_interval
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.sink_exists = sink_exists or _sink_check(engine)
        # Group members of this process, so a restart after a crash drops the old ones at once.
        self.members = MemberFile(member_file) if member_file is not None else None
        self._tracker = Tracker()
        self._consumers: dict[str, SubscriptionConsumer] = {}
        self._listening = False
        self._started = False
        self._lock = asyncio.Lock()
        self._sync_task: asyncio.Task[None] | None = None
        self._sync_again = False

    async def __aenter__(self) -> KafkaIntake:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start a consumer for each of the engine's subscriptions."""
        if not self._listening:
            self.engine.add_completion_listener(self._tracker.completed)
            self._listening = True
        self._started = True
        await self.sync()

    async def stop(self) -> None:
        """Stop every consumer (batches in flight are finished first)."""
        self._started = False
        task, self._sync_task = self._sync_task, None
        if task is not None and not task.done():
            task.cancel()
        async with self._lock:
            consumers, self._consumers = list(self._consumers.values()), {}
            await asyncio.gather(*(c.stop() for c in consumers))

    async def sync(self) -> None:
        """Re-read the engine's subscriptions and clusters: start, restart or stop consumers to match.

        A deleted subscription's consumer stops (what it accepted stays); a changed one restarts;
        one in the error state is tried again.
        """
        async with self._lock:
            if not self._started:
                return
            clusters = self.engine.kafka_clusters()
            wanted: dict[str, tuple[Subscription, dict[str, str] | None]] = {}
            for sub in self.engine.subscriptions():
                try:
                    cluster: str | None = parse_source(sub.source)[0]
                except OptionError:
                    cluster = None
                props = clusters.get(cluster) if cluster is not None else None
                wanted[sub.id] = (sub, dict(props) if props is not None else None)
            stale = [
                c
                for sub_id, c in self._consumers.items()
                if sub_id not in wanted
                or wanted[sub_id] != (c.subscription, c.cluster_properties)
                or c.state == "error"
            ]
            for consumer in stale:
                del self._consumers[consumer.id]
                if consumer.id not in wanted:
                    log.info("kafka subscription %s removed: its consumer stops", consumer.id)
            await asyncio.gather(*(c.stop() for c in stale))
            for sub_id, (sub, props) in wanted.items():
                if sub_id in self._consumers:
                    continue
                consumer = SubscriptionConsumer(
                    self.engine,
                    sub,
                    props,
                    self._tracker,
                    sink_exists=self.sink_exists,
                    max_pending_per_partition=self.max_pending_per_partition,
                    max_batch=self.max_batch,
                    batches_in_flight=self.batches_in_flight,
                    commit_interval=self.commit_interval,
                    retry_initial=self.retry_initial,
                    retry_max=self.retry_max,
                    members=self.members,
                )
                self._consumers[sub_id] = consumer
                consumer.start()

    async def restart(self, subscription_id: str) -> None:
        """Restart one subscription's consumer, so that it seeks to the stored offsets again.

        Call after changing stored offsets (`Engine.reset_offset`); unknown ids are ignored.
        """
        async with self._lock:
            consumer = self._consumers.pop(subscription_id, None)
            if consumer is not None:
                await consumer.stop()
        await self.sync()

    def request_sync(self) -> None:
        """Schedule a `sync()` from synchronous code (an engine callback); calls made meanwhile coalesce."""
        self._sync_again = True
        if self._sync_task is None or self._sync_task.done():
            self._sync_task = asyncio.get_running_loop().create_task(self._sync_loop())

    async def _sync_loop(self) -> None:
        while self._sync_again:
            self._sync_again = False
            try:
                await self.sync()
            except Exception:  # a broken catalog must not kill the engine: log it, keep going
                log.exception("kafka intake: sync failed")

    def stats(self) -> list[SubscriptionStats]:
        """Per subscription: state, error, and per assigned partition offsets, lag, in-flight, paused."""
        return [self._consumers[k].stats() for k in sorted(self._consumers)]


def _sink_check(engine: Any) -> Callable[[str, str], bool]:
    lookup = getattr(engine, "handler", None)
    if not callable(lookup):
        return lambda service, handler: True
    return lambda service, handler: lookup(service, handler) is not None
