"""The router: submissions, attaches and controls go to the partition that owns their invocation.

Every way into the engine — `Engine`'s calls and sends, the HTTP ingress, the Kafka intake, the
admin API's controls — comes through here. A request is validated against the catalog first (the
target exists, the input decodes, the key fits the handler), then handed to the partition that owns
the invocation's id (`ids.partition_key`); callers waiting for a result are answered when that
partition's commit of the completion is durable.

In a cluster the owner may run on another node: the request is then written as a delivery for its
partition (`ClusterDatabase.send`, durable when it returns: that is the acceptance), a waiting
caller is answered when the completion is announced (`completed_elsewhere`, with `poll_elsewhere`
as the fallback), and Kafka records go in with a compare-and-set of their position
(`ClusterDatabase.ingest`).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta

from perdure.engine import bodies
from perdure.engine.actions import Accepted, Action, Completed, Rejected
from perdure.engine.commands import (
    Cancel,
    Command,
    CompleteSignal,
    Discard,
    Ingest,
    Invoke,
    KafkaRecord,
    Kill,
    Pause,
    Purge,
    Redrive,
    ResetOffset,
    Resume,
)
from perdure.engine.intake import plan, sink_target
from perdure.engine.lifecycle import CONTROLLABLE
from perdure.errors import ConflictError, InvalidInputError, SerdeError, UnknownTargetError
from perdure.protocol import awakeables, ids
from perdure.runtime.catalog import Catalog
from perdure.runtime.clock import Clock
from perdure.runtime.partition import Partition
from perdure.sdk.service import Handler
from perdure.storage.api import ClusterDatabase, Failure, Outcome, Position, Reader, Status

#: How many ids of invocations submitted to other nodes' partitions the router remembers, so an
#: attach right after the acceptance waits for the owner instead of answering "no invocation".
SUBMITTED_ELSEWHERE_KEPT = 10_000


def ms(value: timedelta | float | None) -> int | None:
    """A delay as milliseconds (floats are seconds)."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        return int(value.total_seconds() * 1000)
    return int(value * 1000)


def check_text(*, key: str | None, idempotency_key: str | None, headers: Mapping[str, str] | None) -> None:
    """Refuse text with no UTF-8 form (lone surrogates, which only Python code can make): stored,
    it would fail the whole batch it is committed in."""
    texts = [("key", key), ("idempotency key", idempotency_key)]
    texts += [(f"header {name!r}", f"{name}{value}") for name, value in (headers or {}).items()]
    for what, text in texts:
        if text is not None and not text.isascii():
            try:
                text.encode()
            except UnicodeEncodeError as e:
                raise InvalidInputError(
                    f"the {what} is not valid Unicode text: it has a lone surrogate at {e.start}"
                ) from None


class Router:
    """Routes by invocation id to `partition_for(id)` (see the module docstring)."""

    def __init__(
        self,
        catalog: Catalog,
        clock: Clock,
        partition_for: Callable[[str], Partition | None],
        reader: Callable[[], Reader],
        *,
        whole: Partition | None = None,
        cluster: ClusterDatabase | None = None,
        completion_listeners: list[Callable[[str], None]],
    ) -> None:
        self.catalog = catalog
        self.clock = clock
        self.partition_for = partition_for
        self.reader = reader
        # The partition that owns every key (one engine on its own database): Kafka offsets are
        # stored in its transactions, with the invocations made from the records. Else a cluster.
        self.whole = whole
        self._cluster = cluster
        self._sent = itertools.count()  # numbers the deliveries this node sends: sources are unique
        self._waiters: dict[str, list[asyncio.Future[Outcome]]] = {}
        # ids of invocations this node submitted to another node's partition, newest last: until
        # the owner applied the delivery the id is not in the store, yet attaching to it is valid
        self._submitted_elsewhere: dict[str, None] = {}
        self._completion_listeners = completion_listeners  # the node's: kept across restarts

    # ---- submissions

    def target(self, service: str, handler: str, key: str | None) -> Handler:
        """The handler a request names, or the error that says why there is none."""
        h = self.catalog.handler(service, handler)
        if h is None:
            if self.catalog.service(service) is None:
                raise UnknownTargetError(f"no service named {service!r}")
            raise UnknownTargetError(f"service {service!r} has no handler {handler!r}")
        if h.keyed and key is None:
            raise InvalidInputError(f"{h.qualified_name} is keyed: pass key=")
        if not h.keyed and key is not None:
            raise InvalidInputError(f"{h.qualified_name} is a service handler: it takes no key")
        return h

    async def submit(
        self,
        service: str,
        handler: str,
        payload: bytes,
        *,
        key: str | None = None,
        idempotency_key: str | None = None,
        headers: Mapping[str, str] | None = None,
        delay: timedelta | float | None = None,
        wait: bool = False,
    ) -> tuple[str, bool, asyncio.Future[Outcome] | None]:
        """Create an invocation (validated first); returns (id, previously accepted, result waiter).

        The lowest-level entry point: ingress and Kafka use it too. Returns once the invocation
        is durably accepted.
        """
        h = self.target(service, handler, key)
        check_text(key=key, idempotency_key=idempotency_key, headers=headers)
        try:
            h.input_serde.decode(payload)
        except SerdeError as e:
            raise InvalidInputError(f"invalid input for {h.qualified_name}: {e}") from e
        if idempotency_key is not None and not idempotency_key:
            raise InvalidInputError("an idempotency key must not be empty")
        if h.workflow_run:
            if idempotency_key is not None:
                raise InvalidInputError(
                    "a workflow's run handler takes no idempotency key: the workflow key is one"
                )
            assert key is not None
            invocation_id = ids.workflow_id(service, key)
        elif idempotency_key is not None:
            invocation_id = ids.idempotent_id(service, handler, key, idempotency_key)
        else:
            invocation_id = ids.random_id(service, key)
        fresh = idempotency_key is None and not h.workflow_run  # a random id: nobody has it yet
        waiter: asyncio.Future[Outcome] | None = None
        if wait:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.setdefault(invocation_id, []).append(waiter)
        delay_ms = ms(delay)
        command = Invoke(
            invocation_id=invocation_id,
            service=service,
            handler=handler,
            key=key,
            input=payload,
            headers=tuple((headers or {}).items()),
            idempotency_key=idempotency_key,
            execute_at=self.clock.now_ms() + delay_ms if delay_ms else None,
            fresh=fresh,
        )
        partition = self.partition_for(invocation_id)
        try:
            if partition is None:  # another node owns it: accepted once the delivery is durable
                existing = None if fresh else self.reader().get_invocation(invocation_id)
                if existing is None:
                    await self._send(bodies.Invoked(
                        invocation_id=invocation_id, service=service, handler=handler, key=key,
                        input=payload, headers=list(command.headers), idempotency_key=idempotency_key,
                        execute_at=command.execute_at, fresh=fresh,
                    ))  # fmt: skip
                    self._remember_submitted(invocation_id)
                    return invocation_id, False, waiter
                previously = True  # stored already: the owner would drop the delivery as a repeat
                if waiter is not None and existing.outcome is not None and existing.completed_at is not None:
                    waiter.set_result(existing.outcome)
                    self.release_waiter(invocation_id, waiter)
            else:
                actions = await partition.submit_and_wait(command)
                previously = any(type(a) is Accepted and a.previously for a in actions)
        except BaseException:
            if waiter is not None:
                self.release_waiter(invocation_id, waiter)
            raise
        if previously and wait and h.workflow_run:
            assert waiter is not None
            self.release_waiter(invocation_id, waiter)
            raise ConflictError(
                f"the workflow method was already invoked for {service}/{key}: attach to it instead"
            )
        return invocation_id, previously, waiter

    # ---- waiting for results

    async def attach(self, invocation_id: str) -> Outcome:
        """Wait for an invocation's outcome (returns at once if it has completed)."""
        waiter = self.outcome_waiter(invocation_id)
        try:
            return await waiter
        finally:
            self.release_waiter(invocation_id, waiter)

    def outcome_waiter(self, invocation_id: str) -> asyncio.Future[Outcome]:
        """A future of an invocation's outcome (already resolved if it has completed).

        For waiters that may give up (an HTTP client that disconnects): pair every call with
        `release_waiter` so nothing is left behind. Raises `UnknownTargetError` for an unknown id.
        """
        inv = self.reader().get_invocation(invocation_id)
        if inv is None and invocation_id not in self._submitted_elsewhere:
            raise UnknownTargetError(f"no invocation {invocation_id}")
        waiter: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        if inv is not None and inv.outcome is not None and inv.completed_at is not None:
            waiter.set_result(inv.outcome)
        else:  # no await since the read: a later completion is dispatched to this waiter
            self._waiters.setdefault(invocation_id, []).append(waiter)
        return waiter

    def release_waiter(self, invocation_id: str, waiter: asyncio.Future[Outcome]) -> None:
        """Forget a waiter nobody awaits any more (cancelling it); the invocation goes on."""
        waiters = self._waiters.get(invocation_id)
        if waiters is not None and waiter in waiters:
            waiters.remove(waiter)
            if not waiters:
                del self._waiters[invocation_id]
        if not waiter.done():
            waiter.cancel()

    def completed(self, action: Completed) -> None:
        """A partition made a completion durable: answer the waiters, tell the listeners."""
        for waiter in self._waiters.pop(action.invocation_id, ()):
            if not waiter.done():
                waiter.set_result(action.outcome)
        for listener in self._completion_listeners:
            listener(action.invocation_id)

    @property
    def waiting(self) -> set[str]:
        """Ids of the invocations someone waits for here."""
        return set(self._waiters)

    def completed_elsewhere(self, invocation_ids: Sequence[str]) -> None:
        """Another node announced completions: answer the waiters here, tell the listeners.

        The awaited ones are read in one query, however many one announcement names."""
        elsewhere = [i for i in invocation_ids if self.partition_for(i) is None]  # else answered already
        awaited = {i for i in elsewhere if i in self._waiters}
        stored = self.reader().get_invocations(list(awaited)) if awaited else {}
        for invocation_id in elsewhere:
            if invocation_id in awaited:
                inv = stored.get(invocation_id)
                if inv is None or inv.outcome is None or inv.status not in (Status.COMPLETED, Status.PARKED):
                    continue
                for waiter in self._waiters.pop(invocation_id, ()):
                    if not waiter.done():
                        waiter.set_result(inv.outcome)
            for listener in self._completion_listeners:
                listener(invocation_id)

    def poll_elsewhere(self) -> None:
        """The fallback of lost announcements: look up what is awaited here and runs elsewhere."""
        elsewhere = [i for i in self._waiters if self.partition_for(i) is None]
        if elsewhere:
            self.completed_elsewhere(elsewhere)

    def cancel_waiters(self) -> None:
        """The engine stops: nobody will answer the waiters (an HTTP caller gets a 503)."""
        for waiters in self._waiters.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.cancel()
        self._waiters.clear()

    # ---- controls

    async def submit_checked(self, command: Command, invocation_id: str, name: str) -> list[Action]:
        """Apply `command` in `invocation_id`'s partition; a refusal raises (404 →
        UnknownTargetError, 400 → InvalidInputError, else ConflictError) with `name` and the reason."""
        partition = self.partition_for(invocation_id)
        if partition is None:
            await self._send_control(command, invocation_id, name)
            return []
        actions = await partition.submit_and_wait(command)
        for action in actions:
            if type(action) is Rejected:
                error = {404: UnknownTargetError, 400: InvalidInputError}.get(action.code, ConflictError)
                raise error(f"{name}: {action.reason}")
        return actions

    async def control(self, command: Resume | Pause | Kill | Cancel | Purge | Redrive | Discard) -> None:
        await self.submit_checked(command, command.invocation_id, command.invocation_id)

    async def complete_awakeable(
        self, awakeable_id: str, value: bytes | None = None, failure: Failure | None = None
    ) -> None:
        """Resolve (value bytes) or reject (failure) an awakeable; a completed one ignores it."""
        try:
            invocation_id, idx = awakeables.parse(awakeable_id)
        except ValueError as e:
            raise InvalidInputError(str(e)) from e
        await self.submit_checked(
            CompleteSignal(invocation_id, idx, value, failure), invocation_id, awakeable_id
        )

    async def _send_control(self, command: Command, invocation_id: str, name: str) -> None:
        """A control of another node's invocation: checked against what is committed, then sent
        (what the owner finds by then decides, as if it had come a moment later)."""
        inv = self.reader().get_invocation(invocation_id)
        if inv is None:
            raise UnknownTargetError(f"{name}: no such invocation")
        verb = type(command).__name__.lower()
        body: bodies.Body
        if isinstance(command, CompleteSignal):
            body = bodies.Signaled(invocation_id, command.idx, command.value, command.failure)
        else:
            if inv.status not in CONTROLLABLE[verb]:
                raise ConflictError(f"{name}: cannot {verb} an invocation that is {inv.status.value}")
            if isinstance(command, Kill | Cancel):
                body = bodies.Stopped(invocation_id, kill=isinstance(command, Kill))
            else:
                body = bodies.Controlled(invocation_id, verb)
        await self._send(body)

    def _remember_submitted(self, invocation_id: str) -> None:
        submitted = self._submitted_elsewhere
        submitted[invocation_id] = None
        if len(submitted) > SUBMITTED_ELSEWHERE_KEPT:
            del submitted[next(iter(submitted))]

    async def _send(self, body: bodies.Body) -> None:
        assert self._cluster is not None
        target = ids.partition_of(body.invocation_id, self._cluster.partitions)
        source = f"n:{self._cluster.node}:{next(self._sent)}"
        await self._cluster.send([(target, source, bodies.encode(body))])

    # ---- Kafka

    async def ingest(
        self, subscription_id: str, topic: str, partition: int, records: Sequence[KafkaRecord]
    ) -> list[str]:
        """Turn records into invocations, exactly once; returns the ids created once durable.

        Records below the stored next offset are skipped. A value the sink's serde rejects becomes
        an invocation that is already failed (400, naming topic/partition/offset), so a bad record
        never blocks its partition.
        """
        sub = self.catalog.subscription(subscription_id)
        if sub is None:
            raise UnknownTargetError(f"{subscription_id}: no such subscription")
        rejected: dict[int, Failure] = {}
        h = self.catalog.handler(*sink_target(sub))
        if h is not None:
            for record in records:
                try:
                    h.input_serde.decode(record.value or b"")
                except SerdeError as e:
                    where = f"{topic}/{partition}/{record.offset}"
                    rejected[record.offset] = Failure(
                        400, f"record {where} rejected by {h.qualified_name}: {e}"
                    )
        from perdure.kafka.options import policy  # the Kafka package only where Kafka is used

        options = policy(sub.options)
        command = Ingest(
            subscription_id, sub.sink, topic, partition, records, rejected,
            on_failure=options.on_failure, key_missing=options.key_missing, ordering=options.ordering,
        )  # fmt: skip
        if self.whole is None:
            return await self._ingest_in_cluster(command)
        created = []
        for action in await self.whole.submit_and_wait(command):
            if type(action) is Accepted and not action.previously:
                created.append(action.invocation_id)
        return created

    async def _ingest_in_cluster(self, command: Ingest) -> list[str]:
        """The records' invocations as deliveries to their partitions, written with a compare-and-set
        of the subscription's position: a consumer that lost its Kafka partition commits nothing."""
        assert self._cluster is not None
        cluster = self._cluster
        expected = self.positions(command.subscription_id).get((command.topic, command.partition))
        invokes, after = plan(command, self.catalog.registry, expected)
        if after is None:
            return []
        sources = f"k:{command.subscription_id}:{command.topic}:{command.partition}:{after.epoch}"
        deliveries = [
            (
                ids.partition_of(i.invocation_id, cluster.partitions),
                f"{sources}:{offset}",
                bodies.encode(bodies.Invoked(
                    invocation_id=i.invocation_id, service=i.service, handler=i.handler, key=i.key,
                    input=i.input, headers=list(i.headers), failure=i.failure,
                    on_failure=i.on_failure, queue_key=i.queue_key,
                )),
            )
            for offset, i in invokes
        ]  # fmt: skip
        ok = await cluster.ingest(
            command.subscription_id, command.topic, command.partition, expected, after, deliveries
        )
        if not ok:
            raise ConflictError(
                f"{command.subscription_id}: the position of {command.topic}/{command.partition} moved"
                " (another consumer took the Kafka partition): re-reading from the stored offset"
            )
        created = [i.invocation_id for _, i in invokes]
        for invocation_id in created:  # its partition applies the delivery a moment later
            self._remember_submitted(invocation_id)
        return created

    def stored_offsets(self, subscription_id: str) -> dict[tuple[str, int], int]:
        """The next offset to consume per (topic, partition), as committed."""
        return {tp: position.next_offset for tp, position in self.positions(subscription_id).items()}

    def positions(self, subscription_id: str) -> dict[tuple[str, int], Position]:
        return self.reader().offsets(subscription_id)

    async def reset_offset(self, subscription_id: str, topic: str, partition: int, next_offset: int) -> None:
        """The partition's log restarted below the stored offset (a recreated topic, a dev broker
        that restarted empty): continue at `next_offset`; records at reused offsets count as new."""
        if self.whole is None:  # in a cluster: a compare-and-set of the position, as ingest does
            assert self._cluster is not None
            expected = self.positions(subscription_id).get((topic, partition))
            after = Position(next_offset, expected.epoch + 1 if expected is not None else 0)
            if not await self._cluster.ingest(subscription_id, topic, partition, expected, after, []):
                raise ConflictError(
                    f"{subscription_id}: the position of {topic}/{partition} moved while it was reset"
                    " (another consumer took the Kafka partition); reset it again"
                )
            return
        await self.whole.submit_and_wait(ResetOffset(subscription_id, topic, partition, next_offset))
