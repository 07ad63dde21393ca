"""Typed calls and sends — `object_call`, `service_send`, `generic_call`… — over one `submit`.

`Node` is a `Client`: these methods only encode the argument with the handler's serde, submit it,
and decode the outcome (raising `TerminalError` for a failed one).

    total = await engine.object_call(add, key="alice", arg=5)
    invocation_id = await engine.object_send(emit, key="alice", delay=timedelta(seconds=1))
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta
from typing import Any, TypeVar

from perdure.errors import TerminalError
from perdure.sdk.service import Handler, handler_of
from perdure.storage.api import Outcome

T = TypeVar("T")


class Client(ABC):
    """The typed call API; subclasses provide `submit` (the node: its router's)."""

    @abstractmethod
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
        """Create an invocation; (id, previously accepted, result waiter when `wait`)."""

    async def _call(
        self, h: Handler, key: str | None, payload: bytes, idempotency_key: str | None, headers: Any
    ) -> Outcome:
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
        return outcome

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
        h = handler_of(handler)
        outcome = await self._call(h, key, h.input_serde.encode(arg), idempotency_key, headers)
        result: T = h.output_serde.decode(outcome.value or b"")
        return result

    async def service_call(
        self,
        handler: Callable[..., Awaitable[T]],
        arg: Any = None,
        *,
        idempotency_key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> T:
        h = handler_of(handler)
        outcome = await self._call(h, None, h.input_serde.encode(arg), idempotency_key, headers)
        result: T = h.output_serde.decode(outcome.value or b"")
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
        h = handler_of(handler)
        payload = h.input_serde.encode(arg)
        return await self.generic_send(
            h.service.name,
            h.name,
            payload,
            key=key,
            delay=delay,
            idempotency_key=idempotency_key,
            headers=headers,
        )

    async def service_send(
        self,
        handler: Callable[..., Awaitable[Any]],
        arg: Any = None,
        *,
        delay: timedelta | float | None = None,
        idempotency_key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> str:
        h = handler_of(handler)
        payload = h.input_serde.encode(arg)
        return await self.generic_send(
            h.service.name, h.name, payload, delay=delay, idempotency_key=idempotency_key, headers=headers
        )

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
