"""What the engine is asked to do: every change of state enters as one of these commands."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from perdure.storage.api import Caller, Delivery, Failure, Timer


@dataclass(frozen=True, slots=True)
class Invoke:
    """Create an invocation (from code, HTTP, Kafka or a timer). Idempotent by `invocation_id`."""

    invocation_id: str
    service: str
    handler: str
    key: str | None
    input: bytes
    headers: Sequence[tuple[str, str]] = ()
    idempotency_key: str | None = None
    caller: Caller | None = None
    execute_at: int | None = None  # ms since epoch; None or past = now
    failure: Failure | None = None  # create it already failed (e.g. a Kafka record its handler rejects)
    fresh: bool = False  # the id was just generated at random: no invocation can have it yet
    on_failure: str | None = None  # a Kafka record's dead-letter policy: "park" or "topic:NAME"
    queue_key: str | None = None  # a service invocation queued FIFO on this key (Kafka ordering=key)


@dataclass(frozen=True, slots=True)
class AttemptOutput:
    """Messages an attempt produced (commands, run proposals, End/Suspension/Error)."""

    invocation_id: str
    attempt: int
    messages: Sequence[Any]


@dataclass(frozen=True, slots=True)
class FireTimer:
    timer: Timer


@dataclass(frozen=True, slots=True)
class Resume:
    """Resume a paused invocation (an operator's decision); its retry count starts over."""

    invocation_id: str


@dataclass(frozen=True, slots=True)
class Kill:
    """Stop an unfinished invocation now, without running more of its code: it fails with 409."""

    invocation_id: str


@dataclass(frozen=True, slots=True)
class Cancel:
    """Ask an invocation to cancel: a CANCEL signal it observes at its next await (queued or
    scheduled ones complete at once with 409 "cancelled")."""

    invocation_id: str


@dataclass(frozen=True, slots=True)
class CompleteSignal:
    """Complete signal `idx` of an invocation (an awakeable) with a value or a failure."""

    invocation_id: str
    idx: int
    value: bytes | None = None
    failure: Failure | None = None


@dataclass(frozen=True, slots=True)
class Pause:
    """Stop retrying/running an invocation until it is resumed (it keeps its key)."""

    invocation_id: str


@dataclass(frozen=True, slots=True)
class Purge:
    """Forget a completed invocation: its status record and journal (not its object's state)."""

    invocation_id: str


@dataclass(frozen=True, slots=True)
class Expire:
    """Forget these completed invocations if their retention has passed (the retention sweeper)."""

    invocation_ids: Sequence[str]


@dataclass(frozen=True, slots=True)
class KafkaRecord:
    """One Kafka record as consumed: it becomes exactly one invocation."""

    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()  # the record's own headers, kept
    timestamp: int = 0  # ms since epoch


@dataclass(frozen=True, slots=True)
class Ingest:
    """Records of one (subscription, topic, partition), in offset order.

    Each record at or past the stored next offset becomes one invocation, and the next offset
    is stored in the same transaction. `rejected` maps offsets of records the sink cannot accept
    (its serde rejects the value, an object sink gets no key) to the failure they complete with.
    """

    subscription_id: str
    sink: str  # service://SERVICE/HANDLER
    topic: str
    partition: int
    records: Sequence[KafkaRecord]
    rejected: Mapping[int, Failure] = field(default_factory=dict)
    on_failure: str = "block"  # the subscription's dead-letter policy (`perdure.kafka.options.Policy`)
    key_missing: str = "fail"  # a record without a key for a keyed sink: "fail", or "empty" (key "")
    ordering: str | None = None  # "key": a service sink's records queue per Kafka key


@dataclass(frozen=True, slots=True)
class ResetOffset:
    """A partition's log restarted below the stored offset (recreated topic, empty dev broker):
    continue at `next_offset` in a new epoch, so records at reused offsets are not taken as seen."""

    subscription_id: str
    topic: str
    partition: int
    next_offset: int


@dataclass(frozen=True, slots=True)
class Deliver:
    """Apply the effects other partitions delivered to this one, oldest first (each exactly once)."""

    deliveries: Sequence[Delivery]


@dataclass(frozen=True, slots=True)
class EgressProduced:
    """The egress producer put these outbox records of `partition` in Kafka (or found them there):
    delete them, and store its checkpoints, (cluster, topic, Kafka partition) → offset
    (`perdure.kafka.egress` says why they make each record appear once)."""

    partition: int
    names: Sequence[bytes] = ()
    marks: Mapping[tuple[str, str, int], int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Recover:
    """Sent once at start: restart every invocation whose attempt was running at the crash."""

    reason: str = field(default="start")


@dataclass(frozen=True, slots=True)
class Redrive:
    """Run a parked Kafka record again (after a fix): a new invocation of the same input, queued
    behind its key's others; the parked one records it (`DeadLetter.redrives`)."""

    invocation_id: str


@dataclass(frozen=True, slots=True)
class Discard:
    """Drop a parked record: it becomes an ordinary failed invocation, forgotten after its retention."""

    invocation_id: str


@dataclass(frozen=True, slots=True)
class MarkProduced:
    """The dead-letter producer's progress on a parked record of a `topic:` policy: the topic
    partition's `checkpoint` (stored before the first produce), or `produced`."""

    invocation_id: str
    checkpoint: int | None = None
    produced: bool = False


Command = (
    Invoke
    | AttemptOutput
    | FireTimer
    | Resume
    | Redrive
    | Discard
    | MarkProduced
    | Kill
    | Cancel
    | CompleteSignal
    | Pause
    | Purge
    | Expire
    | Ingest
    | ResetOffset
    | Deliver
    | EgressProduced
    | Recover
)
