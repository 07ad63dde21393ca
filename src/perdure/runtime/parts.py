"""What a started node is made of, and how its partitions' actions reach the rest of it."""

from __future__ import annotations

from collections.abc import Callable

from perdure.engine.actions import Completed, Notify, StartAttempt
from perdure.runtime.attempts import Attempts
from perdure.runtime.catalog import Catalog
from perdure.runtime.cluster import Cluster
from perdure.runtime.partitions import Partitions
from perdure.runtime.router import Router
from perdure.storage.api import ClusterDatabase, Database


class Parts:
    """What a started node is made of (all of it, or nothing)."""

    def __init__(
        self,
        store: Database | ClusterDatabase,
        catalog: Catalog,
        partitions: Partitions,
        attempts: Attempts,
        router: Router,
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.partitions = partitions
        self.attempts = attempts
        self.router = router
        self.cluster: Cluster | None = None


class NodeEffects:
    """A partition's actions for the rest of the node: attempts run, completions answered."""

    __slots__ = ("on_egress", "parts")

    def __init__(self) -> None:
        self.parts: Parts | None = None  # set once the node's parts are built
        self.on_egress: Callable[[int], None] | None = None  # the Kafka egress, once started

    def _parts(self) -> Parts:
        assert self.parts is not None
        return self.parts

    def start(self, action: StartAttempt) -> None:
        self._parts().attempts.start(action)

    def notify(self, action: Notify) -> None:
        self._parts().attempts.notify(action)

    def abort(self, invocation_id: str) -> None:
        self._parts().attempts.abort(invocation_id)

    def abort_where(self, which: Callable[[str], bool]) -> None:
        self._parts().attempts.abort_where(which)

    def busy(self, which: Callable[[str], bool]) -> bool:
        return self._parts().attempts.busy(which)

    def completed(self, action: Completed) -> None:
        self._parts().router.completed(action)

    def delivered(self, partition: int) -> None:
        """Wake the partition at once when it runs here (others hear it by NOTIFY)."""
        running = self._parts().partitions.running.get(partition)
        if running is not None:
            running.poke()

    def egress_pending(self, partition: int) -> None:
        if self.on_egress is not None:
            self.on_egress(partition)
