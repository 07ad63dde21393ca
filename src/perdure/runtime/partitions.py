"""The partitions a node runs, and which one owns an invocation.

Alone on its database (memory, SQLite) a node runs one partition that owns every key: each effect
stays inside it, as direct as ever. In a cluster (PostgreSQL) it runs the partitions it holds
leases of, each its own store view, state machine, processor and timers, and an invocation of any
other partition belongs to another node (`for_id` is None: the router delivers to it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from perdure.engine.commands import AttemptOutput
from perdure.engine.counters import Counters
from perdure.engine.registry import Registry
from perdure.engine.step import Partitioning
from perdure.protocol import ids
from perdure.runtime.clock import Clock
from perdure.runtime.delivery_reads import DeliveryReads
from perdure.runtime.partition import Effects, Partition
from perdure.storage.api import ClusterDatabase, Database, Lease

log = logging.getLogger("perdure.partitions")

#: How long a partition handed to another node may take to let its attempts finish.
HANDOVER_S = 5.0


class Partitions:
    def __init__(
        self,
        registry: Registry,
        clock: Clock,
        effects: Effects,
        counters: Counters,
        *,
        busy: Callable[[Callable[[str], bool]], bool],
        abort: Callable[[Callable[[str], bool]], None],
    ) -> None:
        self._registry = registry
        self._clock = clock
        self._effects = effects
        self._counters = counters
        self._busy = busy
        self._abort = abort
        self.whole: Partition | None = None
        self.running: dict[int, Partition] = {}
        self.count = 1
        self._cluster: ClusterDatabase | None = None
        self._delivery_reads: DeliveryReads | None = None
        self.handover_s = HANDOVER_S

    def all(self) -> list[Partition]:
        return [self.whole] if self.whole is not None else list(self.running.values())

    def for_id(self, invocation_id: str) -> Partition | None:
        """The partition of this node that owns `invocation_id`, if one does."""
        if self.whole is not None:
            return self.whole
        return self.running.get(ids.partition_of(invocation_id, self.count))

    def submit_output(self, output: AttemptOutput) -> None:
        """What an attempt sent, to its invocation's partition (dropped once it stopped here: the
        attempt was aborted with it)."""
        partition = self.for_id(output.invocation_id)
        if partition is not None and not partition.done:
            partition.submit(output)

    @property
    def idle(self) -> bool:
        return all(p.idle for p in self.all())

    # ---- alone on a database

    async def start_whole(self, store: Database) -> None:
        partition = Partition(store, self._registry, self._clock, self._effects, counters=self._counters)
        self.whole = partition
        await partition.start(store.reader().all_timers())

    # ---- in a cluster

    def join(self, database: ClusterDatabase) -> None:
        self._cluster = database
        self.count = database.partitions
        self._delivery_reads = DeliveryReads(lambda numbers, limit: database.deliveries(numbers, limit=limit))

    async def start_leased(self, lease: Lease) -> None:
        """Run partition `lease.partition`, whose lease this node just took."""
        database, reads = self._cluster, self._delivery_reads
        assert database is not None and reads is not None
        number = lease.partition
        partition = Partition(
            database.partition_store(lease),
            self._registry,
            self._clock,
            self._effects,
            counters=self._counters,
            number=number,
            partitioning=Partitioning(self.count, owns=number.__eq__),
            deliveries=reads.read,
        )
        timers = database.reader().all_timers(number)
        self.running[number] = partition
        try:
            await partition.start(timers)
        except BaseException:
            self.running.pop(number, None)
            await self._close(number, partition)
            raise
        log.info("partition %d runs here (epoch %d)", number, lease.epoch)

    def status(self) -> dict[int, bool]:
        """The partitions running here, with whether each one stopped by itself."""
        return {n: p.done for n, p in self.running.items()}

    async def stop(self, number: int, graceful: bool) -> None:
        """Stop running partition `number` here (graceful: its attempts may finish first)."""
        partition = self.running.get(number)
        if partition is None:
            return
        mine = self._mine(number)
        if graceful and not partition.done:
            await partition.quiesce()  # new deliveries and timers wait for the next owner
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.handover_s
            while loop.time() < deadline and (self._busy(mine) or not partition.idle):  # noqa: ASYNC110
                await asyncio.sleep(0.01)  # attempts report no event when they block
        del self.running[number]  # from here on, its invocations are another node's
        await self._close(number, partition)

    async def _close(self, number: int, partition: Partition) -> None:
        self._abort(self._mine(number))
        try:
            await partition.stop()
        except Exception as e:  # it had failed: the reason was logged when it did
            log.debug("partition %d stopped after a failure: %s", number, e)
        try:
            await partition.store.close()
        except Exception as e:
            log.debug("partition %d: closing its store: %s", number, e)

    def _mine(self, number: int) -> Callable[[str], bool]:
        count = self.count
        return lambda invocation_id: ids.partition_of(invocation_id, count) == number

    async def stop_all(self) -> None:
        if self.whole is not None:
            whole, self.whole = self.whole, None
            await whole.stop()
            return
        for number in sorted(self.running):
            await self.stop(number, graceful=False)
