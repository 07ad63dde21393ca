"""The node: the one composition root. It builds the engine's parts from configuration and
wires them together: store → state machine → processor → (invoker, timer service, waiters).

    async with perdure.Engine(app, store="sqlite:///perdure.db") as engine:
        await engine.object_call(update_user_event, key="alice", arg=event)
        invocation_id = await engine.object_send(emit, key="alice", delay=timedelta(seconds=1))

An engine opened on an existing store resumes everything unfinished.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from perdure.engine import deployments as deployment_catalog
from perdure.engine.actions import (
    AbortAttempt,
    Accepted,
    Action,
    Completed,
    Notify,
    ScheduleTimer,
    StartAttempt,
    SubscriptionsChanged,
)
from perdure.engine.commands import (
    Cancel,
    CompleteSignal,
    Expire,
    Invoke,
    Kill,
    Pause,
    Purge,
    Recover,
    Resume,
)
from perdure.engine.counters import Counters
from perdure.engine.registry import HandlerInfo, Registry
from perdure.engine.state_machine import StateMachine
from perdure.errors import (
    ConflictError,
    InvalidInputError,
    PerdureError,
    SerdeError,
    TerminalError,
    UnknownTargetError,
)
from perdure.protocol import awakeables, ids
from perdure.retry import DEFAULT
from perdure.runtime.clock import Clock, SystemClock
from perdure.runtime.deployments import Deployments
from perdure.runtime.invoker import InProcessInvoker
from perdure.runtime.processor import Processor
from perdure.runtime.subscriptions import Subscriptions
from perdure.runtime.timers import TimerService
from perdure.sdk.service import App, Handler, ServiceKind, handler_of
from perdure.storage import open_store, sqlite
from perdure.storage.api import Deployment, Failure, Outcome, Reader, Store

if TYPE_CHECKING:
    from perdure.kafka import KafkaIntake
    from perdure.runtime.remote import RemoteInvoker

T = TypeVar("T")


def _ms(value: timedelta | float | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, timedelta):
        return int(value.total_seconds() * 1000)
    return int(value * 1000)


def registry_of(app: App) -> Registry:
    """The engine's view of an app's services."""
    registry = Registry()
    for service in app.services:
        for handler in service.handlers.values():
            opts = handler.options
            registry.add(
                service.name,
                HandlerInfo(
                    name=handler.name,
                    keyed=handler.keyed,
                    exclusive=handler.exclusive,
                    workflow_run=handler.workflow_run,
                    workflow=service.kind is ServiceKind.WORKFLOW,
                    retry_policy=opts.retry_policy or DEFAULT,
                    inactivity_timeout_ms=_ms(opts.inactivity_timeout) or 60_000,
                    idempotency_retention_ms=_ms(opts.idempotency_retention) or 24 * 3600 * 1000,
                    journal_retention_ms=_ms(opts.journal_retention) or 24 * 3600 * 1000,
                    workflow_retention_ms=_ms(opts.workflow_retention) or 24 * 3600 * 1000,
                ),
            )
    return registry


def _check_text(*, key: str | None, idempotency_key: str | None, headers: Mapping[str, str] | None) -> None:
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


class Engine(Subscriptions, Deployments):
    """perdure's engine in this process: an async context manager.

    `store` is a URL (`"memory:"`, `"sqlite:///path.db"`) or a `Store`; `clock` defaults to the
    wall clock (tests pass a `ManualClock`). Every `sweep_interval` (None: never; call `sweep()`)
    completed invocations past their retention are deleted, freeing their idempotency keys.
    """

    def __init__(
        self,
        app: App,
        store: str | Store = "memory:",
        *,
        clock: Clock | None = None,
        sweep_interval: timedelta | None = timedelta(minutes=1),
    ) -> None:
        self.app = app
        self.sweep_interval = sweep_interval
        self.clock: Clock = clock or SystemClock()
        self._store_arg = store
        self._store: Store | None = None
        self._waiters: dict[str, list[asyncio.Future[Outcome]]] = {}
        self._processor: Processor | None = None
        self._invoker: InProcessInvoker | None = None
        self._remote_invoker: RemoteInvoker | None = None
        self._registry = Registry()  # the engine's view of services: the app's, then deployments'
        self._deployment_cache: dict[str, Deployment] = {}
        self._remote = None
        self._timers: TimerService | None = None
        self.counters = Counters()
        self._completion_listeners: list[Callable[[str], None]] = []
        self.kafka: KafkaIntake | None = None
        self._background: set[asyncio.Task[None]] = set()

    # ---- lifecycle

    async def __aenter__(self) -> Engine:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        store = open_store(self._store_arg) if isinstance(self._store_arg, str) else self._store_arg
        self._store = store
        registry = registry_of(self.app)
        deployment_catalog.load(store.reader(), registry)
        self._registry = registry
        machine = StateMachine(registry, self.clock.now_ms)
        self.counters = machine.counters
        processor = Processor(store, machine, self._dispatch)
        self._processor = processor
        self._invoker = InProcessInvoker(self.app, processor.submit, self.clock)
        from perdure.runtime.remote import RemoteInvoker  # h2 and h11 load with a started engine only

        self._remote_invoker = RemoteInvoker(
            processor.submit, self.clock, self.deployment_for_invoker, timeouts_of=self._timeouts_of
        )
        self._timers = TimerService(self.clock, processor.submit)
        self._timers.load(store.reader().all_timers())
        processor.start()
        self._timers.start()
        await processor.submit_and_wait(Recover())
        await self._declare()
        from perdure.kafka import KafkaIntake  # the composition root starts the Kafka edge too

        db = self.database_path()
        members = db.with_name(db.name + ".kafka-members.json") if db is not None else None
        self.kafka = KafkaIntake(self, member_file=members)
        await self.kafka.start()
        if self.sweep_interval is not None:
            interval_ms = int(self.sweep_interval.total_seconds() * 1000)
            self._spawn(self._sweep_every(interval_ms))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def sweep(self, limit: int = 1000) -> int:
        """Delete completed invocations past their retention; returns how many went."""
        expired_before = self.counters.expired
        cursor: tuple[int, str] | None = None
        shortest = min(  # services of deployments registered since start count too
            (
                min(h.idempotency_retention_ms, h.journal_retention_ms, h.workflow_retention_ms)
                for hs in self._registry.services.values()
                for h in hs.values()
            ),
            default=24 * 3600 * 1000,
        )
        while True:
            rows = self.reader().completed_before(self.clock.now_ms() - shortest, after=cursor, limit=limit)
            if rows:
                await self.processor.submit_and_wait(Expire([invocation_id for _, invocation_id in rows]))
            if len(rows) < limit:
                return self.counters.expired - expired_before
            cursor = rows[-1]

    async def _sweep_every(self, interval_ms: int) -> None:
        while True:
            await self.clock.sleep_until(self.clock.now_ms() + interval_ms)
            try:
                await self.sweep()
            except Exception:
                logging.getLogger("perdure.engine").exception("retention sweep failed; retrying later")

    async def _declare(self) -> None:
        """Apply the Kafka clusters and subscriptions the app declares in code (idempotent)."""
        for name, properties in self.app.kafka_clusters.items():
            if self.kafka_clusters().get(name) != dict(properties):
                await self.put_kafka_cluster(name, properties)
        for declared in self.app.subscriptions:
            await self.create_subscription(declared.source, declared.sink_uri, declared.options, replace=True)

    async def drain(self, timeout: float = 10.0) -> bool:  # noqa: ASYNC109 - a grace period, not a scope
        """Wait (up to `timeout` s) until no attempt is computing and every command is durable.

        Attempts waiting on timers or calls stay suspended or parked; they resume after restart.
        Returns False when the timeout passed first. Call before `stop()` for a clean shutdown.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        quiet = 0
        while loop.time() < deadline:
            remote = self._remote_invoker
            if self.processor.idle and self.invoker.all_blocked and (remote is None or remote.all_blocked):
                quiet += 1
                if quiet >= 3:
                    return True
            else:
                quiet = 0
            await asyncio.sleep(0.01)
        return False

    async def stop(self) -> None:
        """Stop: in-memory attempts are dropped (they resume from their journals next time)."""
        if self.kafka is not None:
            await self.kafka.stop()
            self.kafka = None
        for task in list(self._background):
            task.cancel()
        if self._timers is not None:
            await self._timers.stop()
        if self._invoker is not None:
            await self._invoker.stop()
        if self._remote_invoker is not None:
            await self._remote_invoker.stop()
        if self._processor is not None:
            await self._processor.stop()
        if self._store is not None:
            await self._store.close()
        for waiters in self._waiters.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.cancel()
        self._waiters.clear()
        self._store = self._processor = self._invoker = self._timers = None
        self._remote_invoker = None
        self._remote = None

    # ---- the composition: where actions go

    def _dispatch(self, actions: list[Action]) -> None:
        invoker, remote, timers = self._invoker, self._remote_invoker, self._timers
        assert invoker is not None and remote is not None and timers is not None
        for action in actions:
            if type(action) is Notify:
                invoker.notify(action)
                remote.notify(action)
            elif type(action) is StartAttempt:
                if action.deployment_id is None:
                    invoker.start(action)
                else:
                    remote.start(action)
            elif type(action) is AbortAttempt:
                invoker.abort(action.invocation_id)
                remote.abort(action.invocation_id)
            elif type(action) is ScheduleTimer:
                timers.schedule(action.timer)
            elif type(action) is Completed:
                for waiter in self._waiters.pop(action.invocation_id, ()):
                    if not waiter.done():
                        waiter.set_result(action.outcome)
                for listener in self._completion_listeners:
                    listener(action.invocation_id)
            elif type(action) is SubscriptionsChanged and self.kafka is not None:
                self._spawn(self.kafka.sync())

    @property
    def processor(self) -> Processor:
        if self._processor is None:
            raise PerdureError("the engine is not started: use `async with Engine(...)`")
        return self._processor

    @property
    def invoker(self) -> InProcessInvoker:
        if self._invoker is None:
            raise PerdureError("the engine is not started: use `async with Engine(...)`")
        return self._invoker

    @property
    def timers(self) -> TimerService:
        if self._timers is None:
            raise PerdureError("the engine is not started: use `async with Engine(...)`")
        return self._timers

    def reader(self) -> Reader:
        """Read-only access to committed invocations, journals and state."""
        if self._store is None:
            raise PerdureError("the engine is not started: use `async with Engine(...)`")
        return self._store.reader()

    def database_path(self) -> Path | None:
        """The SQLite file behind the store, or None for other backends (read-only tools open it)."""
        if self._store is None:
            raise PerdureError("the engine is not started: use `async with Engine(...)`")
        return self._store.path if isinstance(self._store, sqlite.Store) else None

    # ---- starting invocations

    def _target(self, service: str, handler: str, key: str | None) -> Handler:
        h = self.handler(service, handler)
        if h is None:
            if self.service(service) is None:
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
        h = self._target(service, handler, key)
        _check_text(key=key, idempotency_key=idempotency_key, headers=headers)
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
        waiter: asyncio.Future[Outcome] | None = None
        if wait:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.setdefault(invocation_id, []).append(waiter)
        delay_ms = _ms(delay)
        command = Invoke(
            invocation_id=invocation_id,
            service=service,
            handler=handler,
            key=key,
            input=payload,
            headers=tuple((headers or {}).items()),
            idempotency_key=idempotency_key,
            execute_at=self.clock.now_ms() + delay_ms if delay_ms else None,
        )
        try:
            actions = await self.processor.submit_and_wait(command)
        except BaseException:
            if waiter is not None:
                self.release_waiter(invocation_id, waiter)
            raise
        previously = any(type(a) is Accepted and a.previously for a in actions)
        if previously and wait and h.workflow_run:
            assert waiter is not None
            self.release_waiter(invocation_id, waiter)
            raise ConflictError(
                f"the workflow method was already invoked for {service}/{key}: attach to it instead"
            )
        return invocation_id, previously, waiter

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
        if inv is None:
            raise UnknownTargetError(f"no invocation {invocation_id}")
        waiter: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        if inv.outcome is not None and inv.completed_at is not None:
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

    async def resume(self, invocation_id: str) -> None:
        """Resume a paused invocation (its retry count starts over)."""
        await self._submit_checked(Resume(invocation_id), invocation_id)

    async def pause(self, invocation_id: str) -> None:
        """Pause a running, suspended or backing-off invocation until `resume`."""
        await self._submit_checked(Pause(invocation_id), invocation_id)

    async def kill(self, invocation_id: str) -> None:
        """Stop an unfinished invocation now; it completes with a 409 "killed" failure."""
        await self._submit_checked(Kill(invocation_id), invocation_id)

    async def cancel(self, invocation_id: str) -> None:
        """Cancel: the handler sees `TerminalError` (409 "cancelled") at its next await and may
        compensate; the calls it waits on are cancelled too. Queued ones complete at once."""
        await self._submit_checked(Cancel(invocation_id), invocation_id)

    async def complete_awakeable(
        self, awakeable_id: str, value: bytes | None = None, failure: Failure | None = None
    ) -> None:
        """Resolve (value bytes) or reject (failure) an awakeable; a completed one ignores it."""
        try:
            invocation_id, idx = awakeables.parse(awakeable_id)
        except ValueError as e:
            raise InvalidInputError(str(e)) from e
        await self._submit_checked(CompleteSignal(invocation_id, idx, value, failure), awakeable_id)

    async def purge(self, invocation_id: str) -> None:
        """Delete a completed invocation's record and journal."""
        await self._submit_checked(Purge(invocation_id), invocation_id)

    async def _call(
        self,
        h: Handler,
        key: str | None,
        arg: Any,
        idempotency_key: str | None,
        headers: Mapping[str, str] | None,
    ) -> Any:
        payload = h.input_serde.encode(arg)
        _, _, waiter = await self.submit(
            h.service.name,
            h.name,
            payload,
            key=key,
            idempotency_key=idempotency_key,
            headers=headers,
            wait=True,
        )
        assert waiter is not None
        outcome = await waiter
        if outcome.failure is not None:
            raise TerminalError(outcome.failure.message, outcome.failure.code)
        return h.output_serde.decode(outcome.value or b"")

    async def object_call(
        self,
        handler: Callable[..., Awaitable[T]],
        key: str,
        arg: Any = None,
        *,
        idempotency_key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> T:
        """Call an object handler and wait for its output (raises `TerminalError` on failure)."""
        result: T = await self._call(handler_of(handler), key, arg, idempotency_key, headers)
        return result

    async def service_call(
        self,
        handler: Callable[..., Awaitable[T]],
        arg: Any = None,
        *,
        idempotency_key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> T:
        result: T = await self._call(handler_of(handler), None, arg, idempotency_key, headers)
        return result

    async def object_send(
        self,
        handler: Callable[..., Awaitable[Any]],
        key: str,
        arg: Any = None,
        *,
        delay: timedelta | float | None = None,
        idempotency_key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> str:
        """Send without waiting; returns the invocation id once it is durably accepted."""
        return await self._send(handler_of(handler), key, arg, delay, idempotency_key, headers)

    async def service_send(
        self,
        handler: Callable[..., Awaitable[Any]],
        arg: Any = None,
        *,
        delay: timedelta | float | None = None,
        idempotency_key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> str:
        return await self._send(handler_of(handler), None, arg, delay, idempotency_key, headers)

    async def _send(
        self,
        h: Handler,
        key: str | None,
        arg: Any,
        delay: timedelta | float | None,
        idempotency_key: str | None,
        headers: Mapping[str, str] | None,
    ) -> str:
        payload = h.input_serde.encode(arg)
        invocation_id, _, _ = await self.submit(
            h.service.name,
            h.name,
            payload,
            key=key,
            delay=delay,
            idempotency_key=idempotency_key,
            headers=headers,
        )
        return invocation_id

    async def generic_call(
        self,
        service: str,
        handler: str,
        arg: bytes = b"",
        *,
        key: str | None = None,
        idempotency_key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> bytes:
        """Call by name with raw bytes in and out."""
        _, _, waiter = await self.submit(
            service, handler, arg, key=key, idempotency_key=idempotency_key, headers=headers, wait=True
        )
        assert waiter is not None
        outcome = await waiter
        if outcome.failure is not None:
            raise TerminalError(outcome.failure.message, outcome.failure.code)
        return outcome.value or b""

    async def generic_send(
        self,
        service: str,
        handler: str,
        arg: bytes = b"",
        *,
        key: str | None = None,
        delay: timedelta | float | None = None,
        idempotency_key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> str:
        invocation_id, _, _ = await self.submit(
            service, handler, arg, key=key, delay=delay, idempotency_key=idempotency_key, headers=headers
        )
        return invocation_id
