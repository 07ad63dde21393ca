"""This node's part in a cluster: membership, the partitions it leases, and the notifications it hears.

Every `heartbeat` the node extends its life in the database; every `balance` it compares the leases
with the live nodes: it stops partitions whose lease another node took (they could commit nothing
anyway: every commit checks the lease), takes free partitions and those of nodes no longer alive up
to its share, ceil(partitions / live nodes), and hands back what exceeds it (gracefully: the
partition drains first). A partition that stopped by itself (a lost database connection) is
stopped here too and taken again once the database answers. Notifications (deliveries arrived,
invocations completed, catalog changed) go to `on_notice`.

A node's SIGKILL ends its database sessions at once, so the others see it gone at their next
balance; a paused node is seen gone when its heartbeat lapses (`ttl`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import random
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from perdure.storage.api import ClusterDatabase, Lease, StoreUnavailable

log = logging.getLogger("perdure.cluster")

#: Partitions handed back per balancing round when a node holds more than its share.
HAND_BACK = 4


@dataclass(frozen=True)
class Timing:
    """How often a node beats and balances, and how long a silent node counts as alive."""

    heartbeat_s: float = 0.5
    balance_s: float = 0.5
    ttl_ms: int = 3_000
    retry_max_s: float = 2.0


class Outage:
    """Says once that the database stopped answering, and once that it answers again."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.since: float | None = None

    def begins(self, error: BaseException) -> None:
        if self.since is None:
            self.since = time.monotonic()
            log.warning("node %s: the database did not answer (%s); retrying until it does", self.node, error)
        else:
            log.debug("node %s: the database still does not answer: %s", self.node, error)

    def over(self) -> None:
        if self.since is not None:
            log.warning(
                "node %s: the database answers again after %.1f s", self.node, time.monotonic() - self.since
            )
            self.since = None


class Cluster:
    """Membership and leases of this node (see the module docstring).

    `start_partition(lease)` runs a partition this node just took; `stop_partition(number,
    graceful)` stops one (graceful: let its attempts finish first); `running()` is what runs now,
    by number, with whether each one stopped by itself.
    """

    def __init__(
        self,
        database: ClusterDatabase,
        *,
        start_partition: Callable[[Lease], Awaitable[None]],
        stop_partition: Callable[[int, bool], Awaitable[None]],
        running: Callable[[], dict[int, bool]],
        on_notice: Callable[[str], None],
        timing: Timing = Timing(),
    ) -> None:
        self.database = database
        self.node = database.node
        self._start_partition = start_partition
        self._stop_partition = stop_partition
        self._running = running
        self._on_notice = on_notice
        self.timing = timing
        self._epochs: dict[int, int] = {}  # partitions taken by this node, with their epochs
        self._tasks: list[asyncio.Task[None]] = []
        self.urls = ("", "")
        self._owners: dict[int, str] = {}  # partition -> node, as of the last balance
        self._neighbours: set[str] = set()  # other live nodes on this host
        self.outage = Outage(self.node)

    async def start(self, *, ingress_url: str = "", admin_url: str = "") -> None:
        """Join the cluster and take this node's share of the partitions before returning."""
        self.urls = (ingress_url, admin_url)
        await self._join()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._listen(), name="perdure-cluster-listen"),
            loop.create_task(self._beat(), name="perdure-cluster-heartbeat"),
        ]
        await self.balance()
        self._tasks.append(loop.create_task(self._balance_every(), name="perdure-cluster-balance"))

    async def advertise(self, *, ingress_url: str, admin_url: str) -> None:
        """Where this node's ingress and admin API listen (shown by `perdure cluster`)."""
        self.urls = (ingress_url, admin_url)
        with contextlib.suppress(StoreUnavailable):
            await self._join()

    async def _join(self) -> None:
        ingress, admin = self.urls
        await self.database.membership.join(
            self.timing.ttl_ms,
            host=socket.gethostname(),
            pid=os.getpid(),
            ingress_url=ingress,
            admin_url=admin,
        )

    async def stop(self) -> None:
        """Stop every partition gracefully, give back the leases and leave the cluster."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
        self._tasks = []
        await asyncio.gather(*(self._stop_partition(number, True) for number in sorted(self._running())))
        self._epochs.clear()
        with contextlib.suppress(StoreUnavailable):
            await self.database.membership.leave()

    def neighbour_for(self, partition: int) -> str | None:
        """The live node on this machine that ran `partition` at the last balancing round, if any
        (`perdure.runtime.peers` forwards its calls there)."""
        owner = self._owners.get(partition)
        return owner if owner in self._neighbours else None

    @property
    def owned(self) -> dict[int, int]:
        """Partitions this node holds, with their lease epochs."""
        return dict(self._epochs)

    # ---- the loops

    async def _beat(self) -> None:
        while True:
            try:
                if not await self.database.membership.heartbeat(self.timing.ttl_ms):
                    log.warning("node %s: its heartbeat had lapsed; it joins again", self.node)
                    await self._join()
                self.outage.over()
            except StoreUnavailable as e:
                self.outage.begins(e)
            await asyncio.sleep(self.timing.heartbeat_s)

    async def _balance_every(self) -> None:
        while True:
            await asyncio.sleep(self.timing.balance_s * random.uniform(0.8, 1.2))
            try:
                await self.balance()
            except StoreUnavailable as e:
                self.outage.begins(e)
            except Exception:
                log.exception("node %s: balancing partitions failed", self.node)

    async def balance(self) -> None:
        """Match the partitions running here to the leases and this node's share (see the module doc)."""
        membership = self.database.membership
        for number, stopped in self._running().items():  # stopped by itself: a storage failure
            if stopped:
                log.warning("node %s: partition %d stopped; taken again when possible", self.node, number)
                await self._stop_partition(number, False)
                self._epochs.pop(number, None)
        leases = await membership.leases()
        members = await membership.members()
        alive = {m.node for m in members if m.alive} | {self.node}
        here = socket.gethostname()
        self._neighbours = {m.node for m in members if m.alive and m.host == here} - {self.node}
        self._owners = {lease.partition: lease.node for lease in leases if lease.node is not None}
        for lease in leases:
            epoch = self._epochs.get(lease.partition)
            if epoch is not None and (lease.node != self.node or lease.epoch != epoch):
                log.warning("node %s: partition %d was taken by %s", self.node, lease.partition, lease.node)
                self._epochs.pop(lease.partition)
                await self._stop_partition(lease.partition, False)
        share = math.ceil(len(leases) / len(alive))
        free = [
            lease.partition
            for lease in leases
            if lease.partition not in self._epochs
            and (lease.node is None or lease.node not in alive or lease.node == self.node)
        ]
        random.shuffle(free)  # nodes starting together spread over the partitions
        for number in free:
            if len(self._epochs) >= share:
                break
            taken = await membership.acquire(number)
            if taken is None:
                continue
            self._epochs[number] = taken.epoch
            try:
                await self._start_partition(taken)
            except StoreUnavailable as e:
                log.warning("node %s: cannot start partition %d: %s", self.node, number, e)
                self._epochs.pop(number, None)
                await self._stop_partition(number, False)
        # more than the share: another node has less (shares add up to all partitions); hand some
        # back, gracefully, for it to take
        excess = sorted(self._epochs)[share:][:HAND_BACK]
        for number in excess:
            epoch = self._epochs.pop(number)
            await self._stop_partition(number, True)
            await membership.release(number, epoch)
            log.info("node %s: handed partition %d back (its share is %d)", self.node, number, share)

    async def _listen(self) -> None:
        delay = 0.05
        while True:
            try:
                async for payload in self.database.notifications():
                    delay = 0.05
                    self._on_notice(payload)
            except StoreUnavailable as e:
                self.outage.begins(e)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.timing.retry_max_s)
