"""What the Kafka intake reports: plain dataclasses for the admin API, the CLI and metrics."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class PartitionStats:
    """One partition as this consumer sees it.

    `consumed_offset` is the next offset whose record is not yet durably accepted (the offset
    stored with the invocations; before any, the consumer's position); `high_watermark` is the
    broker's next offset, known after the first fetch; `lag` is their difference. `in_flight`
    counts invocations accepted from this partition that have not completed (since the intake
    started); `oldest_pending_ms` is the age of the oldest of them. `paused` is true while the
    partition is held: by backpressure, or for a retry after a failed ingest. `last_fetch_ms` is
    the age of the broker's last fetch response for it (it answers about twice a second).
    """

    topic: str
    partition: int
    consumed_offset: int | None
    high_watermark: int | None
    lag: int | None
    in_flight: int
    oldest_pending_ms: int | None
    paused: bool
    last_fetch_ms: int | None = None


@dataclass(frozen=True, slots=True)
class SubscriptionStats:
    """One subscription's consumer: its state and the partitions assigned to it.

    `state` is `starting`, `running`, `retrying` (the broker is unreachable or silent for 15 s,
    or an ingest failed: it retries with backoff), `error` (it cannot run as configured: unknown
    cluster or sink, bad option; fixed by changing the subscription) or `stopped`. `error` says
    why; a running subscription may carry one too (a stored offset past a partition's end).
    """

    subscription_id: str
    source: str
    sink: str
    group_id: str | None
    state: str
    error: str | None
    records: int  # records durably accepted since the intake started
    partitions: list[PartitionStats] = field(default_factory=list)
