"""The node: the one composition root. It builds the engine's parts from configuration and wires
them together — store → catalog → partition (state machine, processor, timers) → attempts
(in-process and remote invokers) → router (submissions, attaches, controls, waiters) → Kafka
intake and retention sweeper — and is the `Engine` users hold.

    async with perdure.Engine(app, store="sqlite:///perdure.db") as engine:
        await engine.object_call(update_user_event, key="alice", arg=event)
        invocation_id = await engine.object_send(emit, key="alice", delay=timedelta(seconds=1))

An engine opened on an existing store resumes everything unfinished.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from perdure.engine.actions import Action
from perdure.engine.commands import (
    Cancel,
    Discard,
    Expire,
    KafkaRecord,
    Kill,
    MarkProduced,
    Pause,
    Purge,
    Redrive,
    Resume,
)
from perdure.engine.counters import Counters
from perdure.errors import ConflictError, PerdureError
from perdure.runtime.attempts import Attempts
from perdure.runtime.catalog import Catalog
from perdure.runtime.client import Client
from perdure.runtime.clock import Clock, SystemClock
from perdure.runtime.cluster import Cluster, Timing
from perdure.runtime.invoker import InProcessInvoker
from perdure.runtime.partition import Partition
from perdure.runtime.partitions import Partitions
from perdure.runtime.parts import NodeEffects, Parts
from perdure.runtime.processor import Stats
from perdure.runtime.router import Router
from perdure.runtime.sweeper import Sweeper
from perdure.sdk.service import App, Handler, ServiceBase
from perdure.storage import open_store
from perdure.storage.api import (
    ClusterDatabase,
    Database,
    Deployment,
    Failure,
    Invocation,
    Outcome,
    Reader,
    Status,
    StoreUnavailable,
    Subscription,
)

if TYPE_CHECKING:
    from perdure.kafka import KafkaIntake
    from perdure.kafka.deadletter import DeadLetterProducer
    from perdure.kafka.egress import Egress
    from perdure.runtime.deployments import RemoteService

log = logging.getLogger("perdure.node")

_NOT_STARTED = "the engine is not started: use `async with Engine(...)`"


class Node(Client):
    """perdure's engine in this process: an async context manager.

    `store` is a URL (`"memory:"`, `"sqlite:///path.db"`, `"postgresql://…"`) or an opened store;
    `clock` defaults to the wall clock (tests pass a `ManualClock`). On PostgreSQL the engine is a
    node of a cluster: it runs the partitions it leases, the other nodes run the rest. Every
    `sweep_interval` (None: never; call `sweep()`) completed invocations past their retention are
    deleted, freeing their idempotency keys.
    """

    def __init__(
        self,
        app: App,
        store: str | Database | ClusterDatabase = "memory:",
        *,
        clock: Clock | None = None,
        sweep_interval: timedelta | None = timedelta(minutes=1),
        partitions: int | None = None,
        cluster_timing: Timing | None = None,
    ) -> None:
        self.partitions_asked = partitions  # a new PostgreSQL database's count (None: the default)
        self.cluster_timing = cluster_timing or Timing()
        self.app = app
        self.sweep_interval = sweep_interval
        self.clock: Clock = clock or SystemClock()
        self._store_arg = store
        self._parts: Parts | None = None
        self.counters = Counters()
        self.kafka: KafkaIntake | None = None
        self.egress: Egress | None = None  # produces what handlers emit (ctx.emit)
        self.dead_letter_producer: DeadLetterProducer | None = None  # on.failure=topic:NAME
        self._sweeper: Sweeper | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._completion_listeners: list[Callable[[str], None]] = []

    # ---- lifecycle

    async def __aenter__(self) -> Node:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        url = self._store_arg
        opened = open_store(url, partitions=self.partitions_asked) if isinstance(url, str) else url
        catalog = Catalog(self.app, opened, self.clock)
        catalog.load()
        self.counters = Counters()
        from perdure.runtime.remote import RemoteInvoker  # h2 and h11 load with a started engine only

        effects = NodeEffects()
        partitions = Partitions(
            catalog.registry, self.clock, effects, self.counters, busy=effects.busy, abort=effects.abort_where
        )
        attempts = Attempts(
            InProcessInvoker(self.app, partitions.submit_output, self.clock),
            RemoteInvoker(
                partitions.submit_output, self.clock, catalog.deployment, timeouts_of=catalog.timeouts_of
            ),
        )
        cluster = opened if isinstance(opened, ClusterDatabase) else None
        router = Router(
            catalog,
            self.clock,
            partitions.for_id,
            opened.reader,
            cluster=cluster,
            completion_listeners=self._completion_listeners,
        )
        parts = self._parts = effects.parts = Parts(opened, catalog, partitions, attempts, router)
        if cluster is None:
            assert not isinstance(opened, ClusterDatabase)
            await partitions.start_whole(opened)
            router.whole = partitions.whole
        else:
            partitions.join(cluster)
            router.owned = lambda: list(partitions.running)
            parts.cluster = Cluster(
                cluster,
                start_partition=partitions.start_leased,
                stop_partition=partitions.stop,
                running=partitions.status,
                on_notice=self._notice,
                timing=self.cluster_timing,
            )
            await parts.cluster.start()
            self._spawn(self._poll_elsewhere())
        await self._declare()
        from perdure.kafka import KafkaIntake  # the composition root starts the Kafka edge too

        db = self.database_path()
        members = db.with_name(db.name + ".kafka-members.json") if db is not None else None
        self.kafka = KafkaIntake(self, member_file=members)
        catalog.add_listener(self._catalog_changed)
        await self.kafka.start()
        from perdure.kafka.egress import Egress

        self.egress = Egress(self)
        effects.on_egress = self.egress.wake
        await self.egress.start()
        from perdure.kafka.deadletter import DeadLetterProducer

        self.dead_letter_producer = DeadLetterProducer(self)
        await self.dead_letter_producer.start()
        self._sweeper = Sweeper(self.clock, catalog.registry, opened.reader, self._expire)
        if self.sweep_interval is not None:
            self._spawn(self._sweeper.every(self.sweep_interval))

    def _notice(self, payload: str) -> None:
        """A notification of the cluster: deliveries arrived, invocations completed, catalog changed."""
        parts = self._parts
        if parts is None:
            return
        kind, _, rest = payload.partition(" ")
        if kind == "d":
            partition = parts.partitions.running.get(int(rest))
            if partition is not None:
                partition.poke()
        elif kind == "c":
            parts.router.completed_elsewhere(rest.split())
        elif kind == "catalog":
            parts.catalog.refresh()

    async def _poll_elsewhere(self) -> None:
        """The fallback of lost notifications: what runs elsewhere and is awaited here, and the catalog."""
        while True:
            await asyncio.sleep(1.0)
            parts = self._parts
            if parts is None:
                return
            try:
                parts.router.poll_elsewhere()
                parts.catalog.refresh()
            except StoreUnavailable as e:
                if parts.cluster is not None:
                    parts.cluster.outage.begins(e)

    async def _expire(self, command: Expire) -> list[Action]:
        """The sweeper's expiries, to the partitions of this node that own them (others sweep theirs)."""
        parts = self._started()
        by_partition: dict[int, list[str]] = {}
        for invocation_id in command.invocation_ids:
            partition = parts.partitions.for_id(invocation_id)
            if partition is not None:
                by_partition.setdefault(id(partition), []).append(invocation_id)
        actions: list[Action] = []
        for partition in parts.partitions.all():
            expired = by_partition.get(id(partition))
            if expired:
                actions += await partition.submit_and_wait(Expire(expired))
        return actions

    def _catalog_changed(self) -> None:
        if self.kafka is not None:  # whichever intake runs now (tests swap in their own)
            self.kafka.request_sync()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _declare(self) -> None:
        """Apply the Kafka clusters and subscriptions the app declares in code (idempotent)."""
        for name, properties in self.app.kafka_clusters.items():
            if self.kafka_clusters().get(name) != dict(properties):
                await self.put_kafka_cluster(name, properties)
        for declared in self.app.subscriptions:
            await self.create_subscription(declared.source, declared.sink_uri, declared.options, replace=True)

    async def sweep(self, limit: int = 1000) -> int:
        """Delete completed invocations past their retention; returns how many went."""
        if self._sweeper is None:
            raise PerdureError(_NOT_STARTED)
        before = self.counters.expired
        await self._sweeper.sweep(limit)
        return self.counters.expired - before

    @property
    def idle(self) -> bool:
        """Nothing queued or committing, and no attempt computing."""
        parts = self._started()
        return parts.partitions.idle and parts.attempts.all_blocked

    async def drain(self, timeout: float = 10.0) -> bool:  # noqa: ASYNC109 - a grace period, not a scope
        """Wait (up to `timeout` s) until no attempt is computing and every command is durable.

        Attempts waiting on timers or calls stay suspended or parked; they resume after restart.
        Returns False when the timeout passed first. Call before `stop()` for a clean shutdown.

        A node of a cluster hands its partitions over instead: each takes no more work in, lets its
        attempts finish (up to `timeout`), stops and gives its lease back, and the node leaves.
        """
        parts = self._started()
        if parts.cluster is not None:
            parts.partitions.handover_s = timeout
            await parts.cluster.stop()
            return not any(p.processor.failure for p in parts.partitions.all())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        quiet = 0
        while loop.time() < deadline:
            if self.idle:
                quiet += 1
                if quiet >= 3:
                    return True
            else:
                quiet = 0
            await asyncio.sleep(0.01)
        return False

    async def stop(self) -> None:
        """Stop: in-memory attempts are dropped (they resume from their journals next time)."""
        if self.dead_letter_producer is not None:
            await self.dead_letter_producer.stop()
            self.dead_letter_producer = None
        if self.egress is not None:
            await self.egress.stop()
            self.egress = None
        if self.kafka is not None:
            await self.kafka.stop()
            self.kafka = None
        for task in list(self._background):
            task.cancel()
        parts, self._parts = self._parts, None
        self._sweeper = None
        if parts is None:
            return
        if parts.cluster is not None:
            await parts.cluster.stop()  # drains each partition, hands its lease back, leaves
        else:
            for partition in parts.partitions.all():
                await partition.timers.stop()
        await parts.attempts.stop()
        await parts.partitions.stop_all()
        await parts.store.close()
        parts.router.cancel_waiters()

    def _started(self) -> Parts:
        if self._parts is None:
            raise PerdureError(_NOT_STARTED)
        return self._parts

    # ---- what runs here (metrics, tests, tools)

    @property
    def partitions(self) -> list[Partition]:
        """The partitions this engine runs."""
        return self._started().partitions.all()

    @property
    def cluster(self) -> Cluster | None:
        """This node's membership, when its database is shared by a cluster."""
        return self._started().cluster

    @property
    def invoker(self) -> InProcessInvoker:
        """The invoker of the app's own handlers."""
        return self._started().attempts.local

    @property
    def failure(self) -> BaseException | None:
        """What stopped a partition (a storage failure), if anything did."""
        return next((p.failure for p in self.partitions if p.failure is not None), None)

    def processor_stats(self) -> tuple[Stats, int]:
        """Processor counters summed over the partitions, and the commands queued now."""
        total = Stats()
        for p in self.partitions:
            s = p.stats
            total.commands += s.commands
            total.batches += s.batches
            total.commit_seconds += s.commit_seconds
            total.max_batch = max(total.max_batch, s.max_batch)
            total.failed_commands += s.failed_commands
        return total, sum(p.processor.pending for p in self.partitions)

    @property
    def timers_pending(self) -> int:
        return sum(len(p.timers) for p in self.partitions)

    def reader(self) -> Reader:
        """Read-only access to committed invocations, journals and state."""
        return self._started().store.reader()

    def database_path(self) -> Path | None:
        """The SQLite file behind the store, or None for other backends."""
        path = getattr(self._started().store, "path", None)
        return path if isinstance(path, Path) else None

    @property
    def store(self) -> Database | ClusterDatabase:
        """The store the engine opened (admin SQL asks it what it can do)."""
        return self._started().store

    # ---- calls and sends

    async def submit(
        self,
        service: str,
        handler: str,
        payload: bytes,
        *,
        key: str | None = None,
        idempotency_key: str | None = None,
        headers: Mapping[str, str] | None = None,
        delay: timedelta | float | None = None,
        wait: bool = False,
        invocation_id: str | None = None,
        new: bool = False,
    ) -> tuple[str, bool, asyncio.Future[Outcome] | None]:
        """Create an invocation (validated first); returns (id, previously accepted, result waiter).

        The lowest-level entry point: ingress and Kafka use it too. Returns once the invocation
        is durably accepted. `invocation_id` and `new` are for nodes that forward calls
        (`Router.submit`).
        """
        return await self._started().router.submit(
            service,
            handler,
            payload,
            key=key,
            idempotency_key=idempotency_key,
            headers=headers,
            delay=delay,
            wait=wait,
            invocation_id=invocation_id,
            new=new,
        )

    # ---- results and controls

    async def attach(self, invocation_id: str) -> Outcome:
        """Wait for an invocation's outcome (returns at once if it has completed)."""
        return await self._started().router.attach(invocation_id)

    def outcome_waiter(self, invocation_id: str) -> asyncio.Future[Outcome]:
        """A future of an invocation's outcome; pair it with `release_waiter` (see `Router`)."""
        return self._started().router.outcome_waiter(invocation_id)

    def release_waiter(self, invocation_id: str, waiter: asyncio.Future[Outcome]) -> None:
        """Forget a waiter nobody awaits any more (cancelling it); the invocation goes on."""
        if self._parts is not None:
            self._parts.router.release_waiter(invocation_id, waiter)
        elif not waiter.done():  # stopped: the router dropped its waiters already
            waiter.cancel()

    def add_completion_listener(self, fn: Callable[[str], None]) -> None:
        """Call `fn(invocation_id)` whenever an invocation completes (may be called before `start`)."""
        self._completion_listeners.append(fn)

    async def resume(self, invocation_id: str) -> None:
        """Resume a paused invocation (its retry count starts over)."""
        await self._started().router.control(Resume(invocation_id))

    async def pause(self, invocation_id: str) -> None:
        """Pause a running, suspended or backing-off invocation until `resume`."""
        await self._started().router.control(Pause(invocation_id))

    async def kill(self, invocation_id: str) -> None:
        """Stop an unfinished invocation now; it completes with a 409 "killed" failure."""
        await self._started().router.control(Kill(invocation_id))

    async def cancel(self, invocation_id: str) -> None:
        """Cancel: the handler sees `TerminalError` (409 "cancelled") at its next await and may
        compensate; the calls it waits on are cancelled too. Queued ones complete at once."""
        await self._started().router.control(Cancel(invocation_id))

    async def purge(self, invocation_id: str) -> None:
        """Delete a completed invocation's record and journal."""
        await self._started().router.control(Purge(invocation_id))

    def dead_letters(
        self,
        subscription: str | None = None,
        *,
        key: bytes | None = None,
        state: str | None = "parked",
        limit: int = 10_000,
    ) -> list[Invocation]:
        """Parked Kafka records (`Invocation.dead_letter`), in their original order: by subscription,
        topic, partition, offset. `state` `parked` (default: not re-driven nor discarded yet),
        `redriven`, or None for both; `key` the record key."""
        found = []
        for inv in self.reader().list_invocations(status=Status.PARKED, limit=limit):
            letter = inv.dead_letter
            if letter is None or (subscription is not None and letter.subscription != subscription):
                continue
            if (key is not None and letter.key != key) or (state is not None and letter.state != state):
                continue
            found.append(inv)
        found.sort(key=lambda i: _letter_order(i))
        return found

    async def redrive(self, invocation_id: str) -> str:
        """Run a parked Kafka record again (after a fix); returns the new invocation's id. Works
        from any node of a cluster (the owner of the record's partition applies it)."""
        from perdure.engine.deadletter import redrive_id

        inv = self.reader().get_invocation(invocation_id)
        letter = inv.dead_letter if inv is not None else None
        if letter is not None and letter.state != "parked":  # refused alike on every node
            raise ConflictError(f"{invocation_id}: cannot re-drive a record that was {letter.state}")
        n = len(letter.redrives) + 1 if letter is not None else 1
        await self._started().router.control(Redrive(invocation_id))
        return redrive_id(invocation_id, n)

    async def discard(self, invocation_id: str) -> None:
        """Give a parked Kafka record up: an ordinary failed invocation again."""
        await self._started().router.control(Discard(invocation_id))

    async def mark_produced(
        self, invocation_id: str, checkpoint: int | None = None, produced: bool = False
    ) -> bool:
        """The dead-letter producer's progress on a parked record of this node (False: not here)."""
        router = self._started().router
        if router.partition_for(invocation_id) is None:
            return False
        await router.submit_checked(
            MarkProduced(invocation_id, checkpoint, produced), invocation_id, invocation_id
        )
        return True

    async def complete_awakeable(
        self, awakeable_id: str, value: bytes | None = None, failure: Failure | None = None
    ) -> None:
        """Resolve (value bytes) or reject (failure) an awakeable; a completed one ignores it."""
        await self._started().router.complete_awakeable(awakeable_id, value, failure)

    # ---- the catalog: services, deployments, Kafka

    @property
    def catalog(self) -> Catalog:
        return self._started().catalog

    @property
    def router(self) -> Router:
        return self._started().router

    def service(self, name: str) -> ServiceBase | None:
        """A service by name: the app's own, or one a registered deployment serves."""
        return self.catalog.service(name)

    def handler(self, service: str, handler: str) -> Handler | None:
        return self.catalog.handler(service, handler)

    def services(self) -> list[ServiceBase]:
        return self.catalog.services()

    def remote_services(self) -> dict[str, RemoteService]:
        return self.catalog.remote_services()

    def deployments(self) -> list[Deployment]:
        return self.catalog.deployments()

    def deployment(self, deployment_id: str) -> Deployment | None:
        return self.catalog.deployment(deployment_id)

    async def register_deployment(self, uri: str, **options: Any) -> tuple[Deployment, bool]:
        """Discover `uri` and register it (`Catalog.register_deployment`); (deployment, replaced)."""
        return await self.catalog.register_deployment(uri, **options)

    async def remove_deployment(self, deployment_id: str, *, force: bool = False) -> None:
        await self.catalog.remove_deployment(deployment_id, force=force)

    def kafka_clusters(self) -> dict[str, dict[str, str]]:
        """Kafka clusters by name, with their client properties."""
        return self.catalog.kafka_clusters()

    async def put_kafka_cluster(self, name: str, properties: Mapping[str, str]) -> None:
        """Add or change a Kafka cluster (`{"bootstrap.servers": "127.0.0.1:9092"}`)."""
        await self.catalog.put_kafka_cluster(name, properties)

    async def delete_kafka_cluster(self, name: str) -> None:
        await self.catalog.delete_kafka_cluster(name)

    def subscriptions(self) -> list[Subscription]:
        return self.catalog.subscriptions()

    def subscription(self, subscription_id: str) -> Subscription | None:
        return self.catalog.subscription(subscription_id)

    async def create_subscription(
        self, source: str, sink: str, options: Mapping[str, str] | None = None, *, replace: bool = False
    ) -> Subscription:
        """Subscribe `kafka://CLUSTER/TOPIC` to `service://SVC/HANDLER` (`Catalog.create_subscription`)."""
        return await self.catalog.create_subscription(source, sink, options, replace=replace)

    async def delete_subscription(self, subscription_id: str) -> None:
        """Stop consuming; invocations already accepted go on."""
        await self.catalog.delete_subscription(subscription_id)

    async def ingest(
        self, subscription_id: str, topic: str, partition: int, records: Sequence[KafkaRecord]
    ) -> list[str]:
        """Turn records into invocations, exactly once (`Router.ingest`); the ids created."""
        return await self._started().router.ingest(subscription_id, topic, partition, records)

    def stored_offsets(self, subscription_id: str) -> dict[tuple[str, int], int]:
        """The next offset to consume per (topic, partition), as committed."""
        return self._started().router.stored_offsets(subscription_id)

    async def reset_offset(self, subscription_id: str, topic: str, partition: int, next_offset: int) -> None:
        """Continue a partition at `next_offset` after its log restarted (`Router.reset_offset`)."""
        await self._started().router.reset_offset(subscription_id, topic, partition, next_offset)


def _letter_order(inv: Invocation) -> tuple[str, str, int, int, int]:
    letter = inv.dead_letter
    assert letter is not None
    return (letter.subscription, letter.topic, letter.partition, letter.offset, inv.created_at)


#: The public name (`perdure.Engine`): a node running every partition of its own database.
Engine = Node
