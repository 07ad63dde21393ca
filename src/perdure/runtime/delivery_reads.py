"""The deliveries of a node's partitions, read for all that ask in one loop turn with one query.

In a cluster each partition looks for what others delivered to it when poked, and again after each
`Deliver` it applied. One group commit or one burst of notifications pokes several partitions at
once: their reads are collected until the loop's next turn (`call_soon`) and made with one query
(`ClusterDatabase.deliveries`), each partition handed its own rows. The read still runs on the loop
thread's connection, as every read of the node does.

A partition asks again only after the `Deliver` of its previous answer committed, so the exactly-once
rule of `Partition._apply_deliveries` holds as with a read of its own: what a partition applies is
deleted before its next read begins. A read that fails fails every partition that asked.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from perdure.storage.api import Delivery

#: Deliveries a partition applies per `Deliver` command: the most one read hands it.
DELIVERY_BATCH = 500

#: `read(partitions, limit)`: the oldest `limit` deliveries of each of `partitions`, by partition.
Read = Callable[[Sequence[int], int], dict[int, list[Delivery]]]


class DeliveryReads:
    """Reads deliveries for the partitions that asked in one loop turn (see the module docstring)."""

    def __init__(self, read: Read) -> None:
        self._read = read
        self._asked: list[tuple[int, asyncio.Future[list[Delivery]]]] = []

    def read(self, partition: int) -> asyncio.Future[list[Delivery]]:
        """The deliveries waiting for `partition`, oldest first, once the batch of this turn is read."""
        future: asyncio.Future[list[Delivery]] = asyncio.get_running_loop().create_future()
        if not self._asked:
            future.get_loop().call_soon(self._read_asked)
        self._asked.append((partition, future))
        return future

    def _read_asked(self) -> None:
        asked, self._asked = self._asked, []
        waiting = [(p, f) for p, f in asked if not f.done()]  # a stopped partition stopped waiting
        if not waiting:
            return
        try:
            found = self._read(sorted({p for p, _ in waiting}), DELIVERY_BATCH)
        except Exception as e:  # the database is away: each partition stops, as its own read would
            for _, future in waiting:
                future.set_exception(e)
            return
        for partition, future in waiting:
            future.set_result(found.get(partition, []))
