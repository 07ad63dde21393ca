"""Context types, by capability: what a handler may do is what its context type offers.

    Context               services: run, sleep, calls, sends, request, random/uuid/time
    ObjectSharedContext   + key, get, state_keys            (shared object handlers: read-only)
    ObjectContext         + set, clear, clear_all           (exclusive object handlers)

A shared handler annotated with `ObjectSharedContext` cannot call `set` without a type error.
"""

from __future__ import annotations

import random as _random
import uuid as _uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol, TypeVar

from perdure.retry import RetryPolicy

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


@dataclass(frozen=True)
class Request:
    """What started this invocation: its id, input headers, raw body, and the attempt number."""

    id: str
    headers: Mapping[str, str]
    body: bytes
    attempt: int


class DurableAwaitable(Protocol[T_co]):
    """A result recorded in the journal; await it (or combine with `gather`/`select`)."""

    def __await__(self) -> Any: ...
    def done(self) -> bool: ...


class CallHandle(DurableAwaitable[T_co], Protocol[T_co]):
    """A call in flight: await it for the result, or `invocation_id()` for the callee's id."""

    async def invocation_id(self) -> str: ...


class SendHandle(Protocol):
    """A one-way send: the callee's invocation id is known once the send is recorded."""

    async def invocation_id(self) -> str: ...


class Context(Protocol):
    """The context of a service handler."""

    def request(self) -> Request: ...

    async def run(
        self,
        name: str,
        fn: Callable[..., T] | Callable[..., Awaitable[T]],
        args: Sequence[Any] = (),
        *,
        retry: RetryPolicy | None = None,
        type_hint: Any = None,
    ) -> T:
        """Run `fn(*args)` once and record its result; on replay return the recorded result.

        Exceptions retry the attempt (per `retry`, else the handler's policy); `TerminalError`
        or exhausting `retry` records a failure, raised here as `TerminalError`.
        """
        ...

    def sleep(self, delay: timedelta | float, *, name: str = "") -> DurableAwaitable[None]:
        """Durable sleep (seconds or timedelta): await it, or race it with `select`.

        The timer survives restarts; a long sleep suspends the handler (nothing stays in memory).
        """
        ...

    def service_call(
        self,
        handler: Callable[..., Awaitable[T]],
        arg: Any = None,
        *,
        idempotency_key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> CallHandle[T]: ...

    def object_call(
        self,
        handler: Callable[..., Awaitable[T]],
        key: str,
        arg: Any = None,
        *,
        idempotency_key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> CallHandle[T]: ...

    def service_send(
        self,
        handler: Callable[..., Awaitable[Any]],
        arg: Any = None,
        *,
        delay: timedelta | float | None = None,
        idempotency_key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> SendHandle: ...

    def object_send(
        self,
        handler: Callable[..., Awaitable[Any]],
        key: str,
        arg: Any = None,
        *,
        delay: timedelta | float | None = None,
        idempotency_key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> SendHandle: ...

    def generic_call(
        self,
        service: str,
        handler: str,
        arg: bytes = b"",
        *,
        key: str | None = None,
        idempotency_key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> CallHandle[bytes]: ...

    def generic_send(
        self,
        service: str,
        handler: str,
        arg: bytes = b"",
        *,
        key: str | None = None,
        delay: timedelta | float | None = None,
        idempotency_key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> SendHandle: ...

    def emit(
        self,
        topic: str,
        value: Any,
        key: str | bytes | None = None,
        headers: Mapping[str, str] | None = None,
        *,
        cluster: str | None = None,
    ) -> SendHandle:
        """Produce a record to Kafka exactly once, after this step is committed.

        The record is journaled with the handler's other commands (a replay does not emit it
        again) and produced by the engine once the journal entry is durable; a crash after that
        neither loses nor repeats it. `value`: bytes as is, str as UTF-8, anything else as JSON;
        `key` decides the Kafka partition (murmur2, as Java clients); `headers` are the record's.
        `cluster` names a configured Kafka cluster (default: the only one configured). Every
        record carries its id in header `perdure.egress.id`, the handle's `invocation_id()`::

            ctx.emit("orders-confirmed", {"order": order_id}, key=ctx.key())
        """
        ...

    def awakeable(self, *, type_hint: Any = None) -> tuple[str, DurableAwaitable[Any]]:
        """(id, future): give the id to another system; it completes the future over HTTP
        (`POST /restate/awakeables/{id}/resolve|reject`) or from a handler."""
        ...

    def resolve_awakeable(self, awakeable_id: str, value: Any = None) -> None: ...
    def reject_awakeable(self, awakeable_id: str, reason: str, code: int = 500) -> None: ...

    def cancel_invocation(self, invocation_id: str) -> None:
        """Cancel another invocation: it sees `TerminalError` (409) at its next await."""
        ...

    def random(self) -> _random.Random:
        """A random generator seeded per invocation: the same numbers on every replay."""
        ...

    def uuid(self) -> _uuid.UUID:
        """A UUID4 from `random()`: stable across replays."""
        ...

    async def time(self) -> float:
        """The current time (seconds since epoch), recorded so replays see the same value."""
        ...


class ObjectSharedContext(Context, Protocol):
    """Context of a shared object handler: it may read the key's state, not write it."""

    def key(self) -> str: ...
    async def get(self, name: str, *, type_hint: Any = None) -> Any:
        """The value stored under `name`, or None."""
        ...

    async def state_keys(self) -> list[str]: ...


class ObjectContext(ObjectSharedContext, Protocol):
    """Context of an exclusive object handler: reads and writes the key's state."""

    def set(self, name: str, value: Any) -> None:
        """Store `value` (JSON, or bytes as-is) under `name`; committed with the journal."""
        ...

    def clear(self, name: str) -> None: ...
    def clear_all(self) -> None: ...


class DurablePromise(Protocol):
    """A workflow's named promise, completed once by any of its handlers."""

    async def value(self) -> Any:
        """Wait until it is resolved (raises `TerminalError` if rejected); survives restarts."""
        ...

    async def peek(self) -> Any: ...
    async def resolve(self, value: Any) -> None: ...
    async def reject(self, message: str, code: int = 500) -> None: ...


class WorkflowSharedContext(ObjectSharedContext, Protocol):
    """Context of a workflow's shared handlers: read state, use promises."""

    def promise(self, name: str, *, type_hint: Any = None) -> DurablePromise: ...


class WorkflowContext(ObjectContext, Protocol):
    """Context of a workflow's run handler: state, promises, everything an object handler has."""

    def promise(self, name: str, *, type_hint: Any = None) -> DurablePromise: ...
