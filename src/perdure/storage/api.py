"""Storage ports: the records perdure persists and the narrow per-table interfaces over them.

The engine reads and writes through one `Transaction` per batch of commands; a backend commits
the whole batch atomically (one fsync for many commands — group commit). Readers used by tools,
tests and the admin API go through `Reader`, which only ever sees committed data.

Every backend (`memory`, `sqlite`, later `postgres`) passes the same conformance suite
(`tests/storage/test_conformance.py`).
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from typing import TYPE_CHECKING, NamedTuple, Protocol, TypeVar, runtime_checkable

import msgspec

if TYPE_CHECKING:
    from perdure.storage import sql

T = TypeVar("T")


class Status(enum.StrEnum):
    """Where an invocation is in its lifecycle."""

    SCHEDULED = "scheduled"  # delayed: waits for its invoke timer
    PENDING = "pending"  # in its key's inbox, behind another exclusive invocation
    RUNNING = "running"  # an attempt is (or should be) executing
    SUSPENDED = "suspended"  # waits for a notification, nothing in memory
    BACKING_OFF = "backing-off"  # last attempt failed, waits for its retry timer
    PAUSED = "paused"  # retries exhausted (or paused by an operator); resume to continue
    COMPLETED = "completed"  # has a result: a value or a terminal failure
    PARKED = "parked"  # failed for good, its Kafka record kept in the dead-letter store (`dead_letter`)


class Failure(msgspec.Struct, frozen=True):
    code: int
    message: str


class Outcome(msgspec.Struct, frozen=True):
    """The result of a completed invocation: exactly one of `value` or `failure` is set."""

    value: bytes | None = None
    failure: Failure | None = None


class Caller(msgspec.Struct, frozen=True):
    """Where to route a call's result: the calling invocation and its completion id.

    `attach`: the caller attached to an invocation it did not start (AttachInvocationCommand),
    so the result goes back as that command's notification rather than a call's.
    """

    invocation_id: str
    completion_id: int
    attach: bool = False


class Redrive(msgspec.Struct, frozen=True):
    """One re-drive of a parked record: when, and the invocation it started."""

    at: int  # ms since epoch
    invocation_id: str


class DeadLetter(msgspec.Struct, kw_only=True):
    """A Kafka record parked by its subscription's `on.failure` policy (`park` or `topic:NAME`).

    The invocation stays with status PARKED — failed, its key released — until it is discarded;
    `state` says what happened to it since: `parked` (waiting), `redriven` (`redrives` lists the
    invocations that ran it again) or `discarded`. For `topic:NAME`, `checkpoint` is the dead-letter
    topic partition's end offset stored before the first produce (the record, if produced, is at or
    past it) and `produced` says it is in the topic.
    """

    subscription: str
    topic: str
    partition: int
    offset: int
    key: bytes | None
    headers: list[tuple[str, bytes]]
    value: bytes | None
    error: Failure
    attempts: int
    policy: str  # "park" | "topic:NAME"
    parked_at: int = 0
    state: str = "parked"
    redrives: list[Redrive] = msgspec.field(default_factory=list)
    redrive_of: str | None = None  # this invocation was a re-drive of that parked one
    checkpoint: int | None = None
    produced: bool = False


class Invocation(msgspec.Struct, kw_only=True):
    """The status record of one invocation (the journal is stored separately)."""

    id: str
    service: str
    handler: str
    key: str | None = None
    exclusive: bool = False  # holds its key's lock while it runs (exclusive/workflow-run handlers)
    status: Status = Status.RUNNING
    created_at: int = 0  # ms since epoch
    modified_at: int = 0
    execute_at: int | None = None  # for scheduled (delayed) invocations
    idempotency_key: str | None = None
    callers: list[Caller] = msgspec.field(default_factory=list)  # where to send the result
    attempt: int = 0  # attempts started so far; the current attempt's epoch
    failures: int = 0  # failed attempts counted by the retry policy
    last_failure: Failure | None = None
    next_retry_at: int | None = None
    journal_length: int = 0  # entries stored (commands + notifications)
    command_count: int = 0
    attempt_start_length: int = 0  # journal length when the current attempt started
    last_progress_at: int = 0  # when the journal last grew (for ctx.run retry accounting)
    attempts_since_progress: int = 0
    waiting_completions: list[int] = msgspec.field(default_factory=list)
    waiting_signals: list[int] = msgspec.field(default_factory=list)
    waiting_named_signals: list[str] = msgspec.field(default_factory=list)
    # handles completed during this attempt: completion ids, minus signal indexes, signal names
    notified: list[int | str] = msgspec.field(default_factory=list)
    outcome: Outcome | None = None
    completed_at: int | None = None
    retention_until: int | None = None  # completed records are kept until then
    random_seed: int = 0
    deployment_id: str | None = None  # pinned at the first attempt; None: served in-process
    protocol_version: int = 0  # service protocol version pinned with the deployment
    on_failure: str | None = None  # a Kafka record's dead-letter policy ("park", "topic:NAME")
    queue_key: str | None = None  # the key an exclusive service invocation queues on (Kafka ordering=key)
    dead_letter: DeadLetter | None = None  # set when parked


class Timer(msgspec.Struct, frozen=True):
    """A durable timer. `id` is unique and deterministic, so firing one twice is harmless."""

    id: str
    fire_at: int  # ms since epoch
    kind: str  # "sleep" | "invoke" | "retry" | "cleanup"
    invocation_id: str
    completion_id: int = 0


class Subscription(msgspec.Struct, frozen=True):
    """`kafka://CLUSTER/TOPIC` → `service://SVC/HANDLER`, with consumer options (Restate's shape)."""

    id: str
    source: str
    sink: str
    options: dict[str, str] = msgspec.field(default_factory=dict)


class KafkaCluster(msgspec.Struct, frozen=True):
    """A named Kafka cluster and its client properties (`bootstrap.servers`, …)."""

    name: str
    properties: dict[str, str] = msgspec.field(default_factory=dict)


class Deployment(msgspec.Struct, kw_only=True):
    """A remote endpoint serving handlers over Restate's service protocol (HTTP).

    `manifest` is the endpoint manifest (JSON) as discovered; `http_version` is the one discovery
    succeeded with ("1.1" or "2"), used for every invocation; `protocol_version` is what new
    invocations negotiate: min(the deployment's max, the engine's max).
    """

    id: str  # dp_…
    uri: str
    protocol_mode: str  # "BIDI_STREAM" | "REQUEST_RESPONSE"
    http_version: str
    min_protocol_version: int
    max_protocol_version: int
    protocol_version: int
    additional_headers: dict[str, str] = msgspec.field(default_factory=dict)
    manifest: bytes = b"{}"
    created_at: int = 0


class StoreUnavailable(Exception):
    """The database did not answer (a lost connection, a restart, a failover). Retryable: what hit it
    stops — a partition stops, its waiting callers get an error — and starts again from the durable
    state once the database answers; nothing acknowledged is lost."""


class SchemaError(RuntimeError):
    """The database's schema is newer than this code (upgrade perdure), or it was created with
    another partition count than the one asked for. Not retryable."""


class LeaseLost(Exception):
    """Another node took the partition (this one was paused or cut off past its lease): its commits
    are refused, so the partition stops here. Not retryable on this node until it takes the
    partition again."""


class ServiceRevision(msgspec.Struct, frozen=True):
    """Which deployment serves a service now, and how many registrations it has seen."""

    deployment_id: str
    revision: int


class CatalogSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """The catalog as committed at `version`: deployments (by id) and which serves each service,
    Kafka clusters (by name), subscriptions (by id)."""

    version: int = 0
    deployments: dict[str, Deployment] = msgspec.field(default_factory=dict)
    revisions: dict[str, ServiceRevision] = msgspec.field(default_factory=dict)
    clusters: dict[str, KafkaCluster] = msgspec.field(default_factory=dict)
    subscriptions: dict[str, Subscription] = msgspec.field(default_factory=dict)


class CatalogChange(msgspec.Struct, kw_only=True):
    """Rows to put (a value) or delete (None) in each catalog table."""

    deployments: dict[str, Deployment | None] = msgspec.field(default_factory=dict)
    revisions: dict[str, ServiceRevision | None] = msgspec.field(default_factory=dict)
    clusters: dict[str, KafkaCluster | None] = msgspec.field(default_factory=dict)
    subscriptions: dict[str, Subscription | None] = msgspec.field(default_factory=dict)

    def applied_to(self, snapshot: CatalogSnapshot) -> CatalogSnapshot:
        """`snapshot` with this change, at the next version."""
        return CatalogSnapshot(
            version=snapshot.version + 1,
            deployments=_merged(snapshot.deployments, self.deployments),
            revisions=_merged(snapshot.revisions, self.revisions),
            clusters=_merged(snapshot.clusters, self.clusters),
            subscriptions=_merged(snapshot.subscriptions, self.subscriptions),
        )


def _merged(rows: Mapping[str, T], change: Mapping[str, T | None]) -> dict[str, T]:
    merged = dict(rows)
    for name, row in change.items():
        if row is None:
            merged.pop(name, None)
        else:
            merged[name] = row
    return merged


class Position(NamedTuple):
    """Where a subscription is in one Kafka partition: the next offset, and the partition's epoch.

    The epoch grows when the partition was reset (its log was recreated, e.g. a dev broker that
    restarted empty): invocation ids of records include it, so new records at old offsets are new.
    """

    next_offset: int
    epoch: int = 0


class Delivery(msgspec.Struct, frozen=True):
    """An effect on an invocation of partition `partition`, written by another partition (or node):
    applied and deleted by the owner in `id` order."""

    id: int
    partition: int
    body: bytes


class Entry(msgspec.Struct, frozen=True, array_like=True):
    """One journal entry as stored: the protocol message type and its encoded payload."""

    type: int
    payload: bytes


class InvocationTable(Protocol):
    def get_invocation(self, invocation_id: str) -> Invocation | None: ...
    def put_invocation(self, invocation: Invocation, *, new: bool = False) -> None:
        """Store the record; `new`: its id was just generated and cannot be stored yet (a fresh
        random id), so a backend need not look it up."""
        ...

    def delete_invocation(self, invocation_id: str) -> None: ...
    def invocations_with_status(self, status: Status) -> list[Invocation]: ...


class JournalTable(Protocol):
    def append_entries(self, invocation_id: str, start_index: int, entries: Sequence[Entry]) -> None:
        """Store `entries` at indexes start_index, start_index+1, … (replacing any already there)."""
        ...

    def read_journal(self, invocation_id: str) -> list[Entry]: ...
    def delete_journal(self, invocation_id: str) -> None: ...


class StateTable(Protocol):
    def get_state(self, service: str, key: str, name: bytes) -> bytes | None: ...
    def get_all_state(self, service: str, key: str) -> dict[bytes, bytes]: ...
    def set_state(self, service: str, key: str, name: bytes, value: bytes) -> None: ...
    def clear_state(self, service: str, key: str, name: bytes) -> None: ...
    def clear_all_state(self, service: str, key: str) -> None: ...


class InboxTable(Protocol):
    """Per (service, key): the invocation holding the exclusive lock and a FIFO of waiters."""

    def get_lock(self, service: str, key: str) -> str | None: ...
    def set_lock(self, service: str, key: str, invocation_id: str) -> None: ...
    def release_lock(self, service: str, key: str) -> None: ...
    def inbox_push(self, service: str, key: str, invocation_id: str) -> None: ...
    def inbox_pop(self, service: str, key: str) -> str | None:
        """Remove and return the oldest waiting invocation id, or None."""
        ...

    def inbox_remove(self, service: str, key: str, invocation_id: str) -> bool: ...


class TimerTable(Protocol):
    def put_timer(self, timer: Timer) -> None: ...
    def delete_timer(self, timer_id: str) -> bool:
        """Delete; True if it existed."""
        ...

    def get_timer(self, timer_id: str) -> Timer | None: ...


class OffsetTable(Protocol):
    """The next offset to consume per (subscription, topic, Kafka partition), stored in the same
    transaction as the invocations made from the records before it."""

    def get_offset(self, subscription_id: str, topic: str, partition: int) -> Position | None: ...
    def set_offset(self, subscription_id: str, topic: str, partition: int, position: Position) -> None: ...


class OutboxTable(Protocol):
    """Deliveries: effects on another partition's invocations, in the sender's transaction (outbox),
    applied and deleted in the owner's (inbox). Only stores with several partitions have them."""

    def put_delivery(self, partition: int, body: bytes) -> None: ...
    def delete_delivery(self, delivery_id: int) -> None: ...


class Transaction(
    InvocationTable, JournalTable, StateTable, InboxTable, TimerTable, OffsetTable, OutboxTable, Protocol
):
    """All write ports of one batch; committed or discarded as a whole by its store."""


class Reader(Protocol):
    """Read-only access to committed data (tools, tests, the admin API)."""

    def get_invocation(self, invocation_id: str) -> Invocation | None: ...
    def get_invocations(self, invocation_ids: Sequence[str]) -> dict[str, Invocation]:
        """The stored invocations among `invocation_ids`, by id (an unknown id is left out), read in
        one query: a node told of many completions at once looks them up together."""
        ...

    def read_journal(self, invocation_id: str) -> list[Entry]: ...
    def get_all_state(self, service: str, key: str) -> dict[bytes, bytes]: ...
    def list_invocations(
        self, *, status: Status | None = None, service: str | None = None, limit: int = 100
    ) -> list[Invocation]:
        """Up to `limit` invocations matching every given filter, oldest first (created_at, then id)."""
        ...

    def all_timers(self, partition: int | None = None) -> list[Timer]:
        """Every stored timer (of `partition`, in a store that has several), ordered by fire time:
        used to rebuild the timer wheel at start."""
        ...

    def completed_before(
        self, modified_before: int, *, after: tuple[int, str] | None = None, limit: int = 1000
    ) -> list[tuple[int, str]]:
        """(modified_at, id) of completed invocations last modified before `modified_before`.

        Ordered by (modified_at, id) and starting after `after`: a cursor for the retention sweeper.
        """
        ...

    def count_invocations(self) -> dict[Status, int]:
        """Invocations per status; every status is present, with 0 when none."""
        ...

    def offsets(self, subscription_id: str) -> dict[tuple[str, int], Position]:
        """The stored position per (topic, Kafka partition) of a subscription."""
        ...


class Store(Protocol):
    """A storage backend. One writer: at most one open transaction at a time.

    Pipelining: `commit(txn)` takes the transaction over when it is *called* — before its result
    is awaited — so `begin()` may be called right after, while earlier transactions are still
    becoming durable. Such a new transaction reads its own writes, then those of every earlier
    transaction (durable or not), then durable data. Transactions become durable strictly in the
    order they were committed; awaiting `commit(txn)` returns once `txn` and every earlier one
    are durable (after their fsync), and only then may their effects be released. At most three
    transactions may be committing when `begin()` is called (it raises RuntimeError beyond that).
    `rollback(txn)` discards the open transaction only; committing ones are not affected.

    Fail-stop: if a commit fails (I/O error, disk full), that commit raises its error and the store
    refuses all further work — every later `begin()` and `commit()` raises (for sqlite,
    `perdure.storage.sqlite.StoreFailed`); transactions committed after the failed one were not
    applied. A `Reader` sees only durable data (the memory store excepted: it is not durable).

    Example (a processor pipelining two batches)::

        txn = store.begin()
        ...  # apply batch 1
        first = asyncio.ensure_future(store.commit(txn))
        txn = store.begin()  # batch 1 is still becoming durable
        ...  # apply batch 2, reading batch 1's writes
        second = asyncio.ensure_future(store.commit(txn))
        await first  # release batch 1's actions now, batch 2's after `await second`
    """

    def begin(self) -> Transaction: ...
    def commit(self, txn: Transaction) -> Awaitable[None]:
        """Make the transaction durable. Must not block the event loop on fsync.

        The hand-off happens in the call itself (see the class docstring), so a backend implements
        this as a plain method that returns something to await: a future the writer settles (no
        task needed to wait for it) or a coroutine.
        """
        ...

    def rollback(self, txn: Transaction) -> None: ...
    def reader(self) -> Reader: ...
    async def close(self) -> None: ...


class CatalogStore(Protocol):
    """Deployments, Kafka clusters and subscriptions, in tables of their own, changed by
    compare-and-set on the catalog's version (several engines may share one database)."""

    def read_catalog(self) -> CatalogSnapshot:
        """The committed catalog."""
        ...

    async def write_catalog(self, expected_version: int, change: CatalogChange) -> bool:
        """Apply `change` if the committed version is still `expected_version` (it becomes the next
        one); False when someone else changed the catalog first (read it again and retry)."""
        ...


class Database(Store, CatalogStore, Protocol):
    """A store with its catalog: what an engine that owns every partition opens (memory, SQLite)."""


class Lease(NamedTuple):
    """Partition `partition` held by `node` (None: free) at `epoch`, with its high-water marks."""

    partition: int
    node: str | None
    epoch: int
    seq: int = 0
    inbox_seq: int = 0


class Member(NamedTuple):
    """A node of a cluster as the database knows it."""

    node: str
    alive: bool
    host: str
    pid: int
    ingress_url: str
    admin_url: str
    started_at: str


class Membership(Protocol):
    """Nodes and partition leases of a shared database (statements that never block the loop)."""

    node: str

    async def join(self, ttl_ms: int, *, host: str, pid: int, ingress_url: str, admin_url: str) -> None: ...
    async def heartbeat(self, ttl_ms: int) -> bool:
        """Extend this node's life; False when it had lapsed (others may have taken its partitions)."""
        ...

    async def leases(self) -> list[Lease]: ...
    async def alive(self) -> list[str]: ...
    async def members(self) -> list[Member]: ...
    async def acquire(self, partition: int) -> Lease | None:
        """Take `partition` if it is free or its holder is not alive (a new epoch); None otherwise."""
        ...

    async def release(self, partition: int, epoch: int) -> None: ...
    async def leave(self) -> None: ...
    async def backlog(self) -> dict[int, int]: ...


@runtime_checkable
class SqlStore(Protocol):
    """A store that offers its data for read-only SQL (`perdure.storage.sql`)."""

    def sql_base(self, everything: bool) -> sql.Base:
        """The base layer; `everything`: a store that copies rows out copies journals and state
        too (queries over invocations alone do not need them)."""
        ...


@runtime_checkable
class ClusterDatabase(CatalogStore, Protocol):
    """A database several engines share: partitions leased to nodes, deliveries between them."""

    node: str
    partitions: int

    @property
    def membership(self) -> Membership: ...

    def reader(self) -> Reader: ...
    def partition_store(self, lease: Lease) -> Store:
        """The store of a partition this node holds `lease` of: its commits check the lease."""
        ...

    def deliveries(self, partitions: Sequence[int], *, limit: int = 1000) -> dict[int, list[Delivery]]:
        """The oldest `limit` deliveries waiting for each of `partitions`, oldest first, by partition
        (one with none is left out), read in one query."""
        ...

    async def send(self, deliveries: Sequence[tuple[int, str, bytes]]) -> None:
        """Write deliveries (partition, unique source, body) of no partition's transaction (an
        ingress submission for another node's partition); returns once they are durable."""
        ...

    async def ingest(
        self,
        subscription_id: str,
        topic: str,
        partition: int,
        expected: Position | None,
        new: Position,
        deliveries: Sequence[tuple[int, str, bytes]],
    ) -> bool:
        """Kafka records in: move the stored position from `expected` to `new` and write the records'
        deliveries, in one transaction — or nothing (False) when the stored position is not
        `expected` (another consumer moved it: a rebalance)."""
        ...

    def notifications(self) -> AsyncIterator[str]:
        """Payloads of the cluster's channel: `d <partition>` (deliveries arrived), `c <id>…`
        (invocations completed), `catalog` (the catalog changed)."""
        ...

    async def close(self) -> None: ...
