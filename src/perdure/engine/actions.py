"""What the engine asks the runtime to do once the batch that produced it is durable."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from perdure.storage.api import Outcome, Timer


@dataclass(frozen=True, slots=True)
class StartAttempt:
    """Run a new attempt: `start` is the StartMessage, `journal` the entries to replay.

    `deployment_id` is None for handlers served in-process; otherwise the remote deployment
    and `protocol_version` pinned at the invocation's first attempt.
    """

    invocation_id: str
    attempt: int
    service: str
    handler: str
    start: Any
    journal: Sequence[Any]
    deployment_id: str | None = None
    protocol_version: int = 0


@dataclass(frozen=True, slots=True)
class Notify:
    """Deliver notifications (results) to the attempt that is running now."""

    invocation_id: str
    attempt: int
    messages: Sequence[Any]


@dataclass(frozen=True, slots=True)
class AbortAttempt:
    """Drop the attempt running now without letting it report anything (kill, pause)."""

    invocation_id: str


@dataclass(frozen=True, slots=True)
class ScheduleTimer:
    timer: Timer


@dataclass(frozen=True, slots=True)
class Completed:
    """An invocation has its final result (answer whoever waits for it)."""

    invocation_id: str
    outcome: Outcome


@dataclass(frozen=True, slots=True)
class Accepted:
    """An `Invoke` was durably accepted; `previously` when the id already existed."""

    invocation_id: str
    previously: bool


@dataclass(frozen=True, slots=True)
class Rejected:
    """A command was refused: `code` 404 (no such invocation) or 409 (wrong state); `reason` says why."""

    invocation_id: str
    reason: str
    code: int = 409


@dataclass(frozen=True, slots=True)
class Delivered:
    """Effects were delivered to `partition`: its owner may apply them now."""

    partition: int


@dataclass(frozen=True, slots=True)
class EgressPending:
    """Records emitted by handlers of `partition` wait in its outbox: produce them to Kafka."""

    partition: int


Action = (
    StartAttempt
    | Notify
    | AbortAttempt
    | ScheduleTimer
    | Completed
    | Accepted
    | Rejected
    | Delivered
    | EgressPending
)
