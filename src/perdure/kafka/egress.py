"""Kafka egress: produce the records handlers emitted (`ctx.emit`), each once, even across crashes.

    async with Egress(engine):      # the engine starts one itself (engine.egress)
        ...

A record is in its partition's outbox from the commit of the handler's command on
(`perdure.engine.egress`); this producer puts it in Kafka, then deletes it (`EgressProduced`).
A crash between the two would produce it again. The check that prevents it, per (perdure
partition, cluster, topic, Kafka partition):

- The Kafka partition of a record is fixed by the record: murmur2 of its key (Java's default
  partitioner), or of its id when it has none. Every record carries its id (`perdure.egress.id`).
- A *checkpoint* is stored (offset table, `egress/{partition}/{cluster}`): an offset below which
  none of the outbox's records can be. Before the first record goes to a Kafka partition, the
  checkpoint is its end offset, stored durably first; after a round in which every record sent to
  it was acknowledged, it moves past the last of them, in the same transaction that deletes them.
  A round with a failure does not move it.
- A round that cannot know what the previous one left in Kafka — the first after a start, after
  a failed send, after a failed delete — first reads each Kafka partition it will write to from
  the checkpoint to the end, and deletes instead of producing the records whose id it finds.

So a record is produced again only if it was not found in Kafka. The broker used in development
(tansu) has no idempotent or transactional producers; where a broker has them, the producer is
idempotent, so its own retries of a request cannot duplicate either. Without idempotence, a
request the broker wrote but whose answer was lost and that the client retried in the same
session can still appear twice; consumers can drop such copies by `perdure.egress.id`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Hashable, Mapping, Sequence
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # type: ignore[import-untyped]
from aiokafka.errors import KafkaConnectionError, KafkaError  # type: ignore[import-untyped]
from aiokafka.partitioner import murmur2  # type: ignore[import-untyped]
from aiokafka.structs import TopicPartition  # type: ignore[import-untyped]

from perdure.engine import egress as outbox
from perdure.engine.actions import Action
from perdure.engine.commands import EgressProduced
from perdure.errors import PerdureError
from perdure.kafka.options import consumer_config
from perdure.protocol import egress as wire
from perdure.storage.api import Store

log = logging.getLogger("perdure.kafka.egress")

#: The client arguments a cluster's properties give the producer (connection and security).
_CONNECTION = frozenset(
    {
        "bootstrap_servers",
        "client_id",
        "security_protocol",
        "sasl_mechanism",
        "sasl_plain_username",
        "sasl_plain_password",
        "sasl_kerberos_service_name",
        "ssl_context",
        "request_timeout_ms",
        "retry_backoff_ms",
        "metadata_max_age_ms",
        "connections_max_idle_ms",
    }
)
#: A round produces at most this many records (the next round takes the rest at once).
ROUND = 5_000
#: Scanning Kafka for records produced before a crash gives up (and retries) after this long.
SCAN_TIMEOUT_S = 60.0


class EgressError(PerdureError):
    """Emitted records cannot be produced now (no such Kafka cluster, broker unreachable). They
    wait in the outbox and are retried with backoff; `Egress.error` says why. Retriable."""


class EgressPartition(Protocol):
    number: int
    store: Store

    async def submit_and_wait(self, command: EgressProduced) -> list[Action]: ...


class EgressEngine(Protocol):
    """What the egress needs of the engine: its partitions and the configured Kafka clusters."""

    @property
    def partitions(self) -> Sequence[EgressPartition]: ...
    def kafka_clusters(self) -> dict[str, dict[str, str]]: ...


def resolve(cluster: str | None, clusters: Mapping[str, object]) -> str:
    """The cluster a record goes to: the one it names, else the only one configured."""
    known = ", ".join(sorted(clusters)) or "none"
    if cluster is not None:
        if cluster not in clusters:
            raise EgressError(
                f"ctx.emit names Kafka cluster {cluster!r}, which is not configured (known: {known})"
            )
        return cluster
    if len(clusters) == 1:
        return next(iter(clusters))
    if not clusters:
        raise EgressError(
            "ctx.emit needs a Kafka cluster and none is configured: start with --kafka NAME=HOST:PORT "
            "(or --kafka embedded), declare App(kafka_clusters=…), or POST /kafka-clusters"
        )
    raise EgressError(f"ctx.emit names no cluster and several are configured ({known}): pass cluster=")


def kafka_partition(record: outbox.Record, partitions: int) -> int:
    """murmur2 of the key (as Java's default partitioner), or of the id when there is no key."""
    basis = record.key if record.key is not None else record.id.encode()
    return int((murmur2(basis) & 0x7FFFFFFF) % partitions)


def _quiet_probe(record: logging.LogRecord) -> bool:
    """Drop aiokafka's error about a refused InitProducerId while probing for idempotence."""
    return not str(record.msg).startswith("Unexpected error during InitProducerIdRequest")


class ProducerClient:
    """A cluster's producer, and a consumer (no group) to look for records already produced."""

    def __init__(self, properties: Mapping[str, str]) -> None:
        self.properties = dict(properties)
        config = consumer_config("perdure-egress", properties, {})
        self.kwargs = {k: v for k, v in config.kwargs.items() if k in _CONNECTION}
        self.producer: Any = None
        self.consumer: Any = None
        self.idempotent = False

    async def start(self) -> None:
        sender_log = logging.getLogger("aiokafka.producer.sender")
        sender_log.addFilter(_quiet_probe)  # its ERROR line would only say what we log below
        try:
            producer = AIOKafkaProducer(**self.kwargs, acks="all", enable_idempotence=True, linger_ms=2)
            await producer.start()
            self.idempotent = True
        except KafkaConnectionError:
            with contextlib.suppress(Exception):
                await producer.stop()
            raise  # unreachable: nothing learnt about idempotence (the round retries)
        except KafkaError as e:  # the broker has no idempotent producers (tansu)
            with contextlib.suppress(Exception):
                await producer.stop()
            log.info("Kafka egress: the broker refuses idempotent producers (%s); producing without", e)
            producer = AIOKafkaProducer(**self.kwargs, acks="all", linger_ms=2)
            await producer.start()
        finally:
            sender_log.removeFilter(_quiet_probe)
        self.producer = producer
        # `earliest`: a checkpoint below the log's start (retention deleted records since) must
        # read from the start, not skip to the end and miss what is there.
        self.consumer = AIOKafkaConsumer(
            **self.kwargs,
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=100,
            auto_offset_reset="earliest",
        )
        await self.consumer.start()

    async def stop(self) -> None:
        for client in (self.producer, self.consumer):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.stop()
        self.producer = self.consumer = None

    async def partitions(self, topic: str) -> int:
        found = await self.producer.partitions_for(topic)
        if not found:
            raise EgressError(f"Kafka topic {topic!r} has no partitions (does it exist?)")
        return len(found)

    async def end_offsets(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        return dict(await self.consumer.end_offsets(list(tps)))

    async def find(
        self, starts: Mapping[TopicPartition, int], wanted: set[bytes], *, header: str = wire.RECORD_ID_HEADER
    ) -> set[bytes]:
        """Ids of `wanted` (in `header`) among the records from `starts` to each partition's current end."""
        ends = await self.end_offsets(list(starts))
        todo = {tp: start for tp, start in starts.items() if start < ends[tp]}
        found: set[bytes] = set()
        if not todo:
            return found
        consumer = self.consumer
        consumer.assign(list(todo))
        for tp, start in todo.items():
            consumer.seek(tp, start)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SCAN_TIMEOUT_S
        while todo:
            if loop.time() > deadline:
                raise EgressError(f"reading back what was produced timed out ({sorted(map(str, todo))})")
            batches = await consumer.getmany(*todo, timeout_ms=500, max_records=10_000)
            for records in batches.values():
                for r in records:
                    for name, value in r.headers or ():
                        if name == header and value in wanted:
                            found.add(value)
            for tp in list(todo):  # by position: gaps (compaction, retention) end a scan too
                if await consumer.position(tp) >= ends[tp]:
                    del todo[tp]
        consumer.assign([])
        return found


class ProducerPool:
    """Started `ProducerClient`s by key (a cluster's name, or its properties); a key asked for with
    other properties gets a new client. A client that fails to start is stopped, never kept."""

    def __init__(self) -> None:
        self._clients: dict[Hashable, ProducerClient] = {}

    async def get(self, key: Hashable, properties: Mapping[str, str]) -> ProducerClient:
        client = self._clients.get(key)
        if client is not None and client.properties != dict(properties):
            await self.drop(key)
            client = None
        if client is None:
            client = ProducerClient(properties)
            try:
                await client.start()
            except BaseException:
                await client.stop()
                raise
            self._clients[key] = client
        return client

    async def drop(self, key: Hashable) -> None:
        client = self._clients.pop(key, None)
        if client is not None:
            await client.stop()

    async def close(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.stop()


class Egress:
    """The node's egress producer (see the module docstring); `wake(partition)` after a commit."""

    def __init__(self, engine: EgressEngine, *, poll_interval: float = 1.0) -> None:
        self._engine = engine
        self._poll = poll_interval
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._producers = ProducerPool()  # by cluster name
        self._clean: dict[tuple[int, str], object] = {}  # streams whose last round committed whole
        self._idle: dict[int, object] = {}  # partitions whose outbox was empty, until woken
        self._dirty: set[int] = set()
        self.produced = 0  # records put in Kafka by this process
        self.deduplicated = 0  # records found already in Kafka (a crash after producing them)
        self.error: str | None = None

    async def __aenter__(self) -> Egress:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        self._wake.set()  # records left from an earlier run
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
            self._task = None
        await self._producers.close()

    def wake(self, partition: int) -> None:
        """Records of `partition` were committed to its outbox."""
        self._dirty.add(partition)
        self._wake.set()

    async def _run(self) -> None:
        backoff = 0.0
        while True:
            if backoff:
                await asyncio.sleep(backoff)  # a failed round waits out its backoff even when woken
            else:
                # Not wait_for: on Python 3.11 it swallows a cancel that comes as the event is set
                # (the event is set at start), and stop() would wait for this task forever.
                waiter = asyncio.ensure_future(self._wake.wait())
                try:
                    await asyncio.wait([waiter], timeout=self._poll)
                finally:
                    waiter.cancel()
            self._wake.clear()
            dirty, self._dirty = self._dirty, set()
            failed = False
            for partition in list(self._engine.partitions):
                number = partition.number
                if self._idle.get(number) is partition and number not in dirty:
                    continue  # a partition is read once after it starts here, then when woken
                self._idle.pop(number, None)
                try:
                    if await self._drain(partition):
                        self.wake(number)
                    else:
                        self._idle[number] = partition
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    failed = True
                    message = str(e) if isinstance(e, EgressError) else f"{type(e).__name__}: {e}"
                    if message != self.error:
                        log.warning("Kafka egress of partition %d: %s (retrying)", partition.number, message)
                    self.error = message
            backoff = min(max(backoff * 2, 0.5), 30.0) if failed else 0.0
            if not failed:
                self.error = None

    async def _drain(self, partition: EgressPartition) -> bool:
        """One round for one partition; True when more records wait."""
        rows = partition.store.reader().get_all_state(wire.SERVICE, outbox.stream(partition.number))
        names = sorted(name for name in rows if outbox.is_record(name))
        if not names:
            return False
        clusters = self._engine.kafka_clusters()
        by_cluster: dict[str, list[tuple[bytes, outbox.Record]]] = defaultdict(list)
        problems: list[str] = []
        for name in names[:ROUND]:
            record = outbox.decode(rows[name])
            try:
                by_cluster[resolve(record.cluster, clusters)].append((name, record))
            except EgressError as e:
                problems.append(str(e))
        for cluster, records in by_cluster.items():
            await self._produce(partition, cluster, clusters[cluster], records)
        if problems:
            raise EgressError(problems[0])
        return len(names) > ROUND

    async def _produce(
        self,
        partition: EgressPartition,
        cluster: str,
        properties: Mapping[str, str],
        records: list[tuple[bytes, outbox.Record]],
    ) -> None:
        client = await self._producers.get(cluster, properties)
        number = partition.number
        stored = partition.store.reader().offsets(outbox.checkpoint_id(number, cluster))
        counts: dict[str, int] = {}
        targets: list[TopicPartition] = []
        for _, record in records:
            if record.topic not in counts:
                counts[record.topic] = await client.partitions(record.topic)
            targets.append(TopicPartition(record.topic, kafka_partition(record, counts[record.topic])))
        marks = {
            tp: stored[(tp.topic, tp.partition)].next_offset
            for tp in targets
            if (tp.topic, tp.partition) in stored
        }
        fresh = sorted({tp for tp in targets if tp not in marks})
        if fresh:  # a checkpoint is durable before anything of ours can be past it
            ends = await client.end_offsets(fresh)
            await partition.submit_and_wait(
                EgressProduced(number, (), {(cluster, tp.topic, tp.partition): ends[tp] for tp in fresh})
            )
        stream = (number, cluster)
        done: list[bytes] = []
        if self._clean.get(stream) is not partition:
            wanted = {r.id.encode() for _, r in records}
            found = await client.find({tp: marks[tp] for tp in set(targets) if tp in marks}, wanted)
            if found:
                self.deduplicated += len(found)
                log.info("Kafka egress: %d record(s) were produced before a restart; not again", len(found))
            kept = [
                (item, tp)
                for item, tp in zip(records, targets, strict=True)
                if item[1].id.encode() not in found
            ]
            done = [name for name, r in records if r.id.encode() in found]
            records, targets = [item for item, _ in kept], [tp for _, tp in kept]
        self._clean.pop(stream, None)  # from the first send until the delete commits
        sends = []
        for (_, record), tp in zip(records, targets, strict=True):
            sends.append(
                await client.producer.send(
                    record.topic, record.value, key=record.key, partition=tp.partition, headers=record.headers
                )
            )
        results = await asyncio.gather(*sends, return_exceptions=True)
        last: dict[TopicPartition, int] = {}
        failed: set[TopicPartition] = set()
        error: BaseException | None = None
        for (name, _), tp, result in zip(records, targets, results, strict=True):
            if isinstance(result, BaseException):
                failed.add(tp)
                error = result
                continue
            done.append(name)
            last[tp] = max(last.get(tp, -1), result.offset)
        moved = {
            (cluster, tp.topic, tp.partition): offset + 1 for tp, offset in last.items() if tp not in failed
        }
        self.produced += len(records) - sum(isinstance(r, BaseException) for r in results)
        await partition.submit_and_wait(EgressProduced(number, done, moved))
        if error is not None:
            # Drop the clients: nothing of this round may still be on its way when the next
            # round reads back what reached Kafka.
            await self._producers.drop(cluster)
            raise EgressError(f"producing to Kafka failed: {type(error).__name__}: {error}")
        self._clean[stream] = partition
