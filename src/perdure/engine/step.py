"""The context of applying one command: the transaction, the time, and the actions produced.

Invocations loaded during a step are cached so every function sees the same object, and
journal entries are staged; `flush()` writes both at the end of the command.

`partitioning` says which invocations this state machine owns: an effect on another one is not
applied but delivered to its owner (`deliver`), in the same transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from perdure.engine import bodies
from perdure.engine.actions import Action, Delivered
from perdure.engine.counters import Counters
from perdure.engine.registry import Registry
from perdure.protocol import ids
from perdure.protocol import messages as pm
from perdure.protocol.codec import RawMessage, message_type
from perdure.storage.api import Entry, Invocation, Transaction


@dataclass(frozen=True)
class Partitioning:
    """Which invocations a state machine owns: those whose id's partition `owns` accepts, of
    `count` partitions. The default owns every one (an engine alone on its database)."""

    count: int = 1
    owns: Callable[[int], bool] | None = None

    def partition_of(self, invocation_id: str) -> int:
        return ids.partition_of(invocation_id, self.count)

    def local(self, invocation_id: str) -> bool:
        return self.owns is None or self.owns(ids.partition_of(invocation_id, self.count))


EVERYTHING = Partitioning()


@dataclass(slots=True)
class Step:
    """One command's work (built per command: slots keep its attribute reads cheap)."""

    txn: Transaction
    now: int
    registry: Registry
    counters: Counters
    partitioning: Partitioning = EVERYTHING
    actions: list[Action] = field(default_factory=list)
    _loaded: dict[str, Invocation] = field(default_factory=dict)
    _staged: dict[str, tuple[int, list[Entry]]] = field(default_factory=dict)

    def local(self, invocation_id: str) -> bool:
        """Whether this state machine owns `invocation_id` (else its effects are delivered)."""
        p = self.partitioning
        return p.owns is None or p.local(invocation_id)

    def deliver(self, body: bodies.Body) -> None:
        """Write an effect on another partition's invocation, for its owner to apply."""
        target = self.partitioning.partition_of(body.invocation_id)
        self.txn.put_delivery(target, bodies.encode(body))
        self.counters.deliveries_sent += 1
        self.actions.append(Delivered(target))

    def load(self, invocation_id: str) -> Invocation | None:
        inv = self._loaded.get(invocation_id)
        if inv is None:
            inv = self.txn.get_invocation(invocation_id)
            if inv is not None:
                self._loaded[invocation_id] = inv
        return inv

    def track(self, inv: Invocation, *, fresh: bool = False) -> None:
        """Remember a new invocation so `flush()` stores it (`fresh`: its id was just generated at
        random, so the store need not look it up: it is registered as new at once)."""
        self._loaded[inv.id] = inv
        if fresh:
            self.txn.put_invocation(inv, new=True)

    def append(self, inv: Invocation, *messages: Any) -> None:
        """Stage entries at the end of `inv`'s journal."""
        staged = self._staged.get(inv.id)
        if staged is None:
            entries: list[Entry] = []
            self._staged[inv.id] = (inv.journal_length, entries)
        else:
            entries = staged[1]
        for message in messages:
            entries.append(Entry(message_type(message), message.SerializeToString()))
        count = len(messages)
        inv.journal_length += count
        self.counters.journal_entries += count
        inv.last_progress_at = self.now
        inv.attempts_since_progress = 0

    def forget(self, inv: Invocation) -> None:
        """Delete an invocation's record and journal."""
        self._loaded.pop(inv.id, None)
        self._staged.pop(inv.id, None)
        self.txn.delete_journal(inv.id)
        self.txn.delete_invocation(inv.id)

    def read_journal(self, inv: Invocation) -> list[Any]:
        """The whole journal of `inv`, decoded, including entries staged in this step."""
        self._write_journal(inv.id)
        return [decode_entry(e) for e in self.txn.read_journal(inv.id)]

    def _write_journal(self, invocation_id: str) -> None:
        staged = self._staged.pop(invocation_id, None)
        if staged is not None:
            self.txn.append_entries(invocation_id, staged[0], staged[1])

    def flush(self) -> None:
        for invocation_id, (start, entries) in self._staged.items():
            self.txn.append_entries(invocation_id, start, entries)
        self._staged.clear()
        put = self.txn.put_invocation
        for inv in self._loaded.values():
            inv.modified_at = self.now
            put(inv)
        self._loaded.clear()


def decode_entry(entry: Entry) -> Any:
    cls = pm.BY_TYPE.get(entry.type)
    if cls is None:
        return RawMessage(entry.type, entry.payload)
    return cls.FromString(entry.payload)
