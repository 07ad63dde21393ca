"""What survives a crash: the memory store's tables as of the last commit.

The memory store applies writes as they happen and cannot roll back, which is what a crash in
the middle of a batch needs. So the simulator copies its tables after every commit and, when
the node crashes, puts that copy back: exactly what a durable store would hold. It reaches into
`perdure.storage.memory`'s private tables on purpose — this is a test of the engine, not of the
store, and the store's conformance suite is where the backends are tested.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from perdure.storage.memory import Store


@dataclass(frozen=True)
class Snapshot:
    invocations: dict[str, bytes]
    journals: dict[str, dict[int, Any]]
    state: dict[tuple[str, str], dict[bytes, bytes]]
    locks: dict[tuple[str, str], str]
    inboxes: dict[tuple[str, str], deque[str]]
    timers: dict[str, Any]
    offsets: dict[tuple[str, str, int], Any]


def take(store: Store) -> Snapshot:
    t = store._tables
    return Snapshot(
        invocations=dict(t.invocations),  # values are encoded bytes: immutable
        journals={k: dict(v) for k, v in t.journals.items()},  # entries are frozen
        state={k: dict(v) for k, v in t.state.items()},
        locks=dict(t.locks),
        inboxes={k: deque(v) for k, v in t.inboxes.items()},
        timers=dict(t.timers),  # timers are frozen
        offsets=dict(t.offsets),  # positions are tuples
    )


def restore(store: Store, snapshot: Snapshot) -> None:
    """Put the tables back as of `snapshot` and close any open transaction (the process died)."""
    t = store._tables
    t.invocations = dict(snapshot.invocations)
    t.journals = {k: dict(v) for k, v in snapshot.journals.items()}
    t.state = {k: dict(v) for k, v in snapshot.state.items()}
    t.locks = dict(snapshot.locks)
    t.inboxes = {k: deque(v) for k, v in snapshot.inboxes.items()}
    t.timers = dict(snapshot.timers)
    t.offsets = dict(snapshot.offsets)
    store._current = None


def changed(before: Snapshot, store: Store) -> list[str]:
    """Ids of invocations whose stored record differs from `before` (added, changed, deleted)."""
    now = store._tables.invocations
    ids = [i for i, record in now.items() if before.invocations.get(i) != record]
    ids.extend(i for i in before.invocations if i not in now)
    return ids
