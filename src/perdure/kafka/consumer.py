"""One subscription's Kafka consumer: fetch, hand records to `engine.ingest`, seek to stored offsets.

Exactly-once acceptance rests on the engine: it stores the next offset of each partition in the
same transaction as the invocations made from the records before it, and skips records below it.
This consumer seeks every partition it is assigned (at start and on each rebalance) to that
stored offset, so a record re-read after a crash or a rebalance creates nothing twice, and a
record is never skipped. The consumer group's committed offsets trail behind, for lag tools only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition  # type: ignore[import-untyped]
from aiokafka.abc import ConsumerRebalanceListener  # type: ignore[import-untyped]

from perdure.engine.commands import KafkaRecord
from perdure.errors import UnknownTargetError
from perdure.kafka.flow import Concurrency, Rate
from perdure.kafka.members import MemberFile, leave
from perdure.kafka.options import OptionError, consumer_config, parse_sink, parse_source, policy
from perdure.kafka.pending import Slot, Tracker
from perdure.kafka.stats import PartitionStats, SubscriptionStats
from perdure.storage.api import Subscription

log = logging.getLogger("perdure.kafka")

#: A consumer without any fetch response for this long reports state `retrying`.
STALLED_MS = 15_000


class IngestEngine(Protocol):
    """What the Kafka intake needs from the engine (`perdure.Engine` has it)."""

    async def ingest(
        self, subscription_id: str, topic: str, partition: int, records: Sequence[KafkaRecord]
    ) -> list[str]: ...
    def stored_offsets(self, subscription_id: str) -> dict[tuple[str, int], int]: ...
    def subscriptions(self) -> list[Subscription]: ...
    def kafka_clusters(self) -> dict[str, dict[str, str]]: ...
    def add_completion_listener(self, fn: Callable[[str], None]) -> None: ...


class _Partition:
    """This consumer's view of one assigned partition."""

    __slots__ = (
        "assigned",
        "committed",
        "delay",
        "failed",
        "held",
        "inflight",
        "next_offset",
        "paused",
        "queued",
        "retry_at",
        "slot",
        "tp",
        "warned",
    )

    def __init__(self, tp: Any, delay: float) -> None:
        self.tp = tp
        self.slot = Slot()
        self.assigned = False
        self.paused = False  # by backpressure
        self.held = False  # paused in the consumer (backpressure or a failed ingest)
        self.next_offset: int | None = None  # durably accepted up to here
        self.committed: int | None = None  # last offset committed to the group
        self.inflight: deque[asyncio.Task[None]] = deque()
        self.queued = 0  # records handed to ingest tasks, not yet accepted
        self.failed: int | None = None  # first offset of a batch whose ingest failed
        self.retry_at = 0.0
        self.delay = delay
        self.warned = False  # about a stored offset past the partition's end


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, owner: SubscriptionConsumer) -> None:
        self.owner = owner

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.owner.revoked(list(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.owner.assigned(list(assigned))


class SubscriptionConsumer:
    """One aiokafka consumer in the subscription's group; restarts with backoff on failure."""

    def __init__(
        self,
        engine: IngestEngine,
        subscription: Subscription,
        cluster_properties: Mapping[str, str] | None,
        tracker: Tracker,
        *,
        sink_exists: Callable[[str, str], bool],
        max_pending_per_partition: int,
        max_batch: int,
        batches_in_flight: int,
        commit_interval: float,
        retry_initial: float,
        retry_max: float,
        members: MemberFile | None = None,
    ) -> None:
        self.members = members
        self.engine = engine
        self.subscription = subscription
        self.cluster_properties = dict(cluster_properties) if cluster_properties is not None else None
        self.tracker = tracker
        self.sink_exists = sink_exists
        self.max_pending = max_pending_per_partition
        self.max_batch = max_batch
        self.batches_in_flight = batches_in_flight
        self.commit_interval = commit_interval
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.state = "starting"
        self.error: str | None = None
        self.group_id: str | None = None
        self.records = 0
        self._parts: dict[tuple[str, int], _Partition] = {}
        self._consumer: Any = None
        self._fatal: BaseException | None = None
        self._last_commit = 0.0
        self._task: asyncio.Task[None] | None = None
        self._concurrency: Concurrency | None = None
        self._rate: Rate | None = None

    @property
    def id(self) -> str:
        return self.subscription.id

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"kafka consumer {self.id}")

    async def stop(self) -> None:
        """Stop fetching; accepted records stay accepted; batches in flight finish first."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for part in self._parts.values():
            self.tracker.forget(part.slot)
        self._parts.clear()
        if self.state != "error":
            self.state = "stopped"

    # ---- the run loop

    async def _run(self) -> None:
        try:
            cluster, topic = parse_source(self.subscription.source)
            service, handler = parse_sink(self.subscription.sink)
            if self.cluster_properties is None:
                raise OptionError(f"no Kafka cluster named {cluster!r}")
            config = consumer_config(self.id, self.cluster_properties, self.subscription.options)
            flow = policy(self.subscription.options)
            self.group_id = config.group_id
            if not self.sink_exists(service, handler):
                raise UnknownTargetError(f"the sink {self.subscription.sink} is not a registered handler")
        except (OptionError, UnknownTargetError) as e:
            self._fail_for_good(e)
            return
        if flow.max_concurrency is not None:
            self._concurrency = Concurrency(flow.max_concurrency, self._in_flight)
        if flow.rate is not None:
            self._rate = Rate(flow.rate)
        delay = self.retry_initial
        while True:
            before = self.records
            try:
                await self._session(topic, config.kwargs)
            except asyncio.CancelledError:
                raise
            except UnknownTargetError as e:
                self._fail_for_good(e)
                return
            except Exception as e:
                if self.records > before:
                    delay = self.retry_initial
                self.state = "retrying"
                self.error = f"{type(e).__name__}: {e}"
                log.warning(
                    "kafka subscription %s (%s): %s; retrying in %.1f s",
                    self.id,
                    self.subscription.source,
                    self.error,
                    delay,
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.retry_max)

    def _fail_for_good(self, error: Exception) -> None:
        self.state = "error"
        self.error = str(error)
        log.error("kafka subscription %s: %s (not consuming until the subscription changes)", self.id, error)

    async def _session(self, topic: str, kwargs: dict[str, Any]) -> None:
        """Consume until a failure (raised) or cancellation."""
        self._fatal = None
        previous = self.members.get(self.group_id) if self.members and self.group_id else None
        if previous is not None and self.group_id is not None:
            await leave(kwargs, self.group_id, previous)  # a crashed run's member: don't wait out its session
            if self.members is not None:
                self.members.forget(self.group_id)
        consumer = AIOKafkaConsumer(**kwargs)
        consumer.subscribe([topic], listener=_Listener(self))
        self._consumer = consumer  # rebalance callbacks may come as soon as it starts
        try:
            await consumer.start()
            self.state = "running"
            self.error = None
            while True:
                if self._fatal is not None:
                    raise self._fatal
                self._retry_failed(consumer)
                batches = await consumer.getmany(timeout_ms=200, max_records=self.max_batch)
                for tp, messages in batches.items():
                    part = self._parts.get((tp.topic, tp.partition))
                    if part is None or not part.assigned or part.failed is not None or not messages:
                        continue  # revoked meanwhile, or to be re-read after a failed ingest
                    records = [
                        KafkaRecord(m.offset, m.key, m.value, tuple(m.headers), m.timestamp) for m in messages
                    ]
                    await self._submit(part, records)
                await self._commit(consumer)
        finally:
            try:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._drain(list(self._parts.values())), 10)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._commit(consumer, force=True), 2)
            finally:
                for part in self._parts.values():
                    part.assigned = part.paused = part.held = False
                    part.failed = None
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(_leave_generation_zero(consumer), 2)
                with contextlib.suppress(Exception):
                    await consumer.stop()
                if self.members is not None and self.group_id is not None:
                    self.members.forget(self.group_id)  # left cleanly: nothing to drop next time
                self._consumer = None

    # ---- ingest: one call at a time per partition, the next batches queued behind it

    async def _submit(self, part: _Partition, records: list[KafkaRecord]) -> None:
        while len(part.inflight) >= self.batches_in_flight:
            await asyncio.wait([part.inflight[0]])
        if not part.assigned or part.failed is not None:
            return  # revoked (or failed) while waiting: the records will be read again
        previous = part.inflight[-1] if part.inflight else None
        task = asyncio.create_task(self._ingest(part, records, previous))
        part.inflight.append(task)
        part.queued += len(records)
        task.add_done_callback(lambda t: self._done(part, t, len(records)))
        self._backpressure(part)

    def _done(self, part: _Partition, task: asyncio.Task[None], n: int) -> None:
        part.inflight.remove(task)
        part.queued -= n
        self._maybe_resume(part)  # its invocations may all have completed already

    async def _ingest(
        self, part: _Partition, records: list[KafkaRecord], previous: asyncio.Task[None] | None
    ) -> None:
        # A batch is handed over only once the one before it is durable: had that one failed
        # while this one succeeded, the stored next offset would jump over its records.
        if previous is not None:
            await asyncio.wait([previous])
        size = len(records)
        if self._concurrency is not None:
            size = min(size, self._concurrency.limit)
        if self._rate is not None:
            size = min(size, self._rate.chunk)
        for start in range(0, len(records), size):
            if not await self._ingest_chunk(part, records[start : start + size]):
                return

    async def _ingest_chunk(self, part: _Partition, records: list[KafkaRecord]) -> bool:
        """Accept `records` once flow control lets them in; False when the rest must wait for a re-read."""
        concurrency = self._concurrency
        if concurrency is not None:
            await concurrency.acquire(len(records))
        try:
            if self._rate is not None:
                await self._rate.take(len(records))
            return await self._accept(part, records)
        finally:
            if concurrency is not None:
                concurrency.release(len(records))

    async def _accept(self, part: _Partition, records: list[KafkaRecord]) -> bool:
        if not part.assigned or part.failed is not None or self._fatal is not None:
            return False  # revoked or failed meanwhile: re-read from the stored offset
        self.tracker.begin()
        try:
            ids = await self.engine.ingest(self.id, part.tp.topic, part.tp.partition, records)
        except asyncio.CancelledError:
            self.tracker.end()
            raise
        except UnknownTargetError as e:  # the sink is gone: no point retrying
            self.tracker.end()
            self._fatal = e
            return False
        except Exception as e:
            self.tracker.end()
            part.failed = records[0].offset
            self.state = "retrying"
            self.error = f"ingest of {part.tp.topic}/{part.tp.partition} failed: {type(e).__name__}: {e}"
            log.warning(
                "kafka subscription %s: %s; re-reading from the stored offset in %.1f s",
                self.id,
                self.error,
                part.delay,
            )
            return False
        self.tracker.end(part.slot, ids)
        self.records += len(records)
        part.delay = self.retry_initial
        part.next_offset = records[-1].offset + 1  # batches of a partition are applied one by one
        if self.state == "retrying" and not any(p.failed is not None for p in self._parts.values()):
            self.state, self.error = "running", None
        return True

    def _in_flight(self) -> int:
        return sum(len(p.slot) for p in self._parts.values())

    def _completed(self, part: _Partition) -> None:
        self._maybe_resume(part)
        if self._concurrency is not None:
            self._concurrency.changed()

    def _backpressure(self, part: _Partition) -> None:
        """Pause a partition with more than `max_pending` invocations accepted or queued, not completed."""
        if not part.paused and len(part.slot) + part.queued > self.max_pending:
            part.paused = True
            self._hold(part)
            log.debug("kafka subscription %s: %s paused (%d pending)", self.id, part.tp, len(part.slot))

    def _hold(self, part: _Partition) -> None:
        """Pause or resume the partition in the consumer to match backpressure and failures."""
        hold = part.paused or part.failed is not None
        consumer = self._consumer
        if hold == part.held or consumer is None or not part.assigned:
            return
        if hold:
            consumer.pause(part.tp)
        else:
            consumer.resume(part.tp)
        part.held = hold

    def _retry_failed(self, consumer: Any) -> None:
        """After a failed ingest: seek back to the stored offset, hold the partition, then retry."""
        now = time.monotonic()
        stored: dict[tuple[str, int], int] | None = None
        for key, part in self._parts.items():
            if part.failed is None or part.inflight or not part.assigned:
                continue
            if part.retry_at == 0.0:
                if stored is None:
                    stored = self.engine.stored_offsets(self.id)
                offset = stored.get(key, part.failed)
                consumer.seek(part.tp, offset)
                part.retry_at = now + part.delay
                self._hold(part)
            elif now >= part.retry_at:
                part.failed, part.retry_at = None, 0.0
                part.delay = min(part.delay * 2, self.retry_max)
                self._hold(part)

    def _maybe_resume(self, part: _Partition) -> None:
        """Resume a partition paused by backpressure once half its backlog is done."""
        if part.paused and len(part.slot) + part.queued <= self.max_pending // 2:
            part.paused = False
            self._hold(part)
            log.debug("kafka subscription %s: %s resumed", self.id, part.tp)

    async def _drain(self, parts: list[_Partition]) -> None:
        for part in parts:
            while part.inflight:
                await asyncio.wait(list(part.inflight))

    async def _commit(self, consumer: Any, force: bool = False) -> None:
        """Tell the group how far we got (for lag tools; the engine's offsets are the truth)."""
        now = time.monotonic()
        if not force and now - self._last_commit < self.commit_interval:
            return
        self._last_commit = now
        self._warn_past_end(consumer)
        offsets = {
            p.tp: p.next_offset
            for p in self._parts.values()
            if p.assigned and p.next_offset is not None and p.next_offset != p.committed
        }
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except Exception as e:
            log.debug("kafka subscription %s: group commit failed: %s", self.id, e)
            return
        for tp, offset in offsets.items():
            self._parts[(tp.topic, tp.partition)].committed = offset

    def _warn_past_end(self, consumer: Any) -> None:
        for part in self._parts.values():
            if part.warned or not part.assigned or part.next_offset is None:
                continue
            high = consumer.highwater(part.tp)
            if high is not None and high < part.next_offset:
                part.warned = True
                log.warning("kafka subscription %s: %s", self.id, _past_end(part, high))

    # ---- rebalances

    def assigned(self, tps: list[Any]) -> None:
        """Seek every newly assigned partition to the offset stored with the engine's invocations."""
        stored = self.engine.stored_offsets(self.id)
        consumer = self._current()
        coordinator = getattr(consumer, "_coordinator", None)
        member_id = getattr(coordinator, "member_id", None)
        if self.members is not None and self.group_id is not None and isinstance(member_id, str):
            self.members.remember(self.group_id, member_id)
        for tp in tps:
            key = (tp.topic, tp.partition)
            part = self._parts.get(key)
            if part is None:
                part = self._parts[key] = _Partition(
                    TopicPartition(tp.topic, tp.partition), self.retry_initial
                )
                part.slot.on_completed = lambda _slot, part=part: self._completed(part)
            part.assigned = True
            part.committed = None
            part.failed, part.retry_at, part.held = None, 0.0, False  # a new assignment is not paused
            offset = stored.get(key)
            if offset is not None:
                consumer.seek(tp, offset)
                part.next_offset = offset
            part.paused = False
            self._backpressure(part)
        log.info("kafka subscription %s: assigned %s", self.id, _names(tps))

    async def revoked(self, tps: list[Any]) -> None:
        """Stop submitting for these partitions; let their batches in flight finish; commit them."""
        parts = [self._parts[k] for k in ((tp.topic, tp.partition) for tp in tps) if k in self._parts]
        for part in parts:
            part.assigned = False
        await self._drain(parts)
        consumer = self._consumer
        offsets = {
            p.tp: p.next_offset for p in parts if p.next_offset is not None and p.next_offset != p.committed
        }
        if offsets and consumer is not None:
            with contextlib.suppress(Exception):
                await consumer.commit(offsets)
        for part in parts:
            part.held = False
        if tps:
            log.info("kafka subscription %s: revoked %s", self.id, _names(tps))

    def _current(self) -> Any:
        consumer = self._consumer
        if consumer is None:
            raise RuntimeError("rebalance outside a consumer session")
        return consumer

    # ---- visibility

    def stats(self) -> SubscriptionStats:
        now, wall_ms = time.monotonic(), int(time.time() * 1000)
        consumer = self._consumer
        assignment = consumer.assignment() if consumer is not None else frozenset()
        partitions, problems, fetching = [], [], []
        for (topic, partition), part in sorted(self._parts.items()):
            if not part.assigned and not part.slot.ids:
                continue
            high = position = fetched = None
            if part.tp in assignment:
                high = consumer.highwater(part.tp)
                position = _position(consumer, part.tp)
                polled = consumer.last_poll_timestamp(part.tp)
                fetched = max(wall_ms - polled, 0) if polled is not None else None
                if not part.held:
                    fetching.append(fetched)
            consumed = part.next_offset if part.next_offset is not None else position
            lag = high - consumed if high is not None and consumed is not None else None
            if lag is not None and lag < 0 and part.next_offset is not None:
                problems.append(_past_end(part, high))
            partitions.append(
                PartitionStats(
                    topic=topic,
                    partition=partition,
                    consumed_offset=consumed,
                    high_watermark=high,
                    lag=max(lag, 0) if lag is not None else None,
                    in_flight=len(part.slot),
                    oldest_pending_ms=part.slot.oldest_age_ms(now),
                    paused=part.held,
                    last_fetch_ms=fetched,
                )
            )
        state, error = self.state, self.error
        if state == "running" and fetching and all(f is not None and f > STALLED_MS for f in fetching):
            silent = min(f for f in fetching if f is not None) // 1000
            state, error = "retrying", f"no fetch response for {silent} s: is the broker reachable?"
        if problems and error is None:
            error = "; ".join(problems)
        return SubscriptionStats(
            subscription_id=self.id,
            source=self.subscription.source,
            sink=self.subscription.sink,
            group_id=self.group_id,
            state=state,
            error=error,
            records=self.records,
            partitions=partitions,
        )


def _past_end(part: _Partition, high: Any) -> str:
    return (
        f"{part.tp.topic}/{part.tp.partition}: the stored offset {part.next_offset} is past the end "
        f"of the partition ({high}): was the topic recreated? Records below {part.next_offset} count "
        "as already consumed until the offset is reset (Engine.reset_offset)"
    )


def _position(consumer: Any, tp: Any) -> int | None:
    """The consumer's fetch position, known without a broker round trip (None if not yet)."""
    try:
        state = consumer._subscription.subscription.assignment.state_value(tp)
        return int(state.position) if state is not None and state.has_valid_position else None
    except (AttributeError, AssertionError, TypeError):
        return None


async def _leave_generation_zero(consumer: Any) -> None:
    """Leave the group even in generation 0, which tansu hands out and aiokafka never leaves.

    Without it a restarted consumer waits for the old member's session to time out (seconds).
    """
    coordinator = getattr(consumer, "_coordinator", None)
    if coordinator is None or getattr(coordinator, "generation", None) != 0 or not coordinator.member_id:
        return
    if getattr(coordinator, "_group_instance_id", None) is not None:
        return
    from aiokafka.protocol.group import LeaveGroupRequest  # type: ignore[import-untyped]

    await coordinator._send_req(LeaveGroupRequest(coordinator.group_id, coordinator.member_id))


def _names(tps: list[Any]) -> str:
    return ", ".join(f"{tp.topic}/{tp.partition}" for tp in sorted(tps)) or "nothing"
