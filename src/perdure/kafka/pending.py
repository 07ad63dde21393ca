"""Invocations accepted from Kafka and not yet completed, per partition: what backpressure counts."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable


class Slot:
    """The pending invocations of one (subscription, partition), oldest first."""

    __slots__ = ("ids", "on_completed")

    def __init__(self, on_completed: Callable[[Slot], None] | None = None) -> None:
        self.ids: dict[str, float] = {}  # invocation id -> monotonic time accepted (insertion order)
        self.on_completed = on_completed

    def __len__(self) -> int:
        return len(self.ids)

    def oldest_age_ms(self, now: float | None = None) -> int | None:
        for accepted in self.ids.values():
            return int(((now if now is not None else time.monotonic()) - accepted) * 1000)
        return None


class Tracker:
    """Maps each pending invocation id to its slot; fed by the engine's completion listener.

    An invocation may complete before `ingest` has returned its id (an already-failed one, or a
    very fast handler): completions of unknown ids are remembered while any ingest is in flight,
    in a bounded cache, so such an id is never counted as pending forever.
    """

    def __init__(self, early_capacity: int = 100_000) -> None:
        self._owner: dict[str, Slot] = {}
        self._early: dict[str, None] = {}
        self._early_capacity = early_capacity
        self._ingesting = 0

    def __len__(self) -> int:
        return len(self._owner)

    def begin(self) -> None:
        """An ingest is about to be submitted."""
        self._ingesting += 1

    def end(self, slot: Slot | None = None, ids: Iterable[str] = (), now: float | None = None) -> None:
        """An ingest returned (or failed, with no ids): its ids are pending unless already completed."""
        self._ingesting -= 1
        if slot is not None:
            accepted = now if now is not None else time.monotonic()
            early, owner, pending = self._early, self._owner, slot.ids
            for invocation_id in ids:
                if early and invocation_id in early:
                    del early[invocation_id]
                    continue
                owner[invocation_id] = slot
                pending[invocation_id] = accepted
        if self._ingesting == 0:
            self._early.clear()

    def completed(self, invocation_id: str) -> None:
        """The engine's completion listener."""
        slot = self._owner.pop(invocation_id, None)
        if slot is None:
            if self._ingesting:
                early = self._early
                early[invocation_id] = None
                if len(early) > self._early_capacity:
                    del early[next(iter(early))]
            return
        slot.ids.pop(invocation_id, None)
        if slot.on_completed is not None:
            slot.on_completed(slot)

    def forget(self, slot: Slot) -> None:
        """Stop counting a slot's invocations (its subscription is gone)."""
        for invocation_id in slot.ids:
            self._owner.pop(invocation_id, None)
        slot.ids.clear()
