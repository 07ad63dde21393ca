"""Durable futures: results recorded in the journal, awaited by handlers and combined with
`gather` / `select`. Each waits through its `Attempt`, which suspends or wakes it."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from perdure.errors import TerminalError
from perdure.protocol import messages as pm
from perdure.sdk import serde

if TYPE_CHECKING:
    from perdure.sdk.attempt import Attempt


def failure_of(notification: Any) -> TerminalError | None:
    """The `TerminalError` a failed notification carries, or None."""
    if notification.WhichOneof("result") == "failure":
        return TerminalError(notification.failure.message, notification.failure.code)
    return None


class DurableFuture:
    """Awaitable result of a journaled operation; `decode` maps the notification to the value."""

    __slots__ = ("_attempt", "_decode", "handle")

    def __init__(self, attempt: Attempt, handle: int, decode: Callable[[Any], Any]) -> None:
        self._attempt = attempt
        self.handle = handle
        self._decode = decode

    def done(self) -> bool:
        return self._attempt.vm.is_ready(self.handle)

    def value(self) -> Any:
        """The result of a done future (raises its `TerminalError` if it failed)."""
        return self._decode(self._attempt.vm.result(self.handle))

    async def _get(self) -> Any:
        await self._attempt.wait([self.handle])
        return self.value()

    def __await__(self) -> Any:
        return self._get().__await__()


class CallFuture(DurableFuture):
    """A call: await for the result, `invocation_id()` for the callee's id."""

    __slots__ = ("_id_handle",)

    def __init__(self, attempt: Attempt, id_handle: int, handle: int, decode: Callable[[Any], Any]) -> None:
        super().__init__(attempt, handle, decode)
        self._id_handle = id_handle

    async def invocation_id(self) -> str:
        await self._attempt.wait([self._id_handle])
        return str(self._attempt.vm.result(self._id_handle).invocation_id)


class DurablePromise:
    """A workflow's named promise: `await value()` waits until some handler resolves or rejects it."""

    __slots__ = ("_attempt", "_name", "_serde")

    def __init__(self, attempt: Attempt, name: str, s: serde.Serde) -> None:
        self._attempt = attempt
        self._name = name
        self._serde = s

    async def value(self) -> Any:
        """Wait for the promise (across suspensions and restarts); raises TerminalError if rejected."""
        a = self._attempt
        handle = a.vm.sys_get_promise(self._name)
        await a.wait([handle])
        return a._decoder(self._serde)(a.vm.result(handle))

    async def peek(self) -> Any:
        """The value if resolved now, else None (raises TerminalError if rejected)."""
        a = self._attempt
        handle = a.vm.sys_peek_promise(self._name)
        await a.wait([handle])
        notification = a.vm.result(handle)
        if notification.WhichOneof("result") == "void":
            return None
        return a._decoder(self._serde)(notification)

    async def resolve(self, value: Any) -> None:
        """Complete with a value; raises TerminalError (409) if it was already completed."""
        await self._complete(value=self._serde.encode(value))

    async def reject(self, message: str, code: int = 500) -> None:
        await self._complete(failure=pm.Failure(code=code, message=message))

    async def _complete(self, *, value: bytes | None = None, failure: Any = None) -> None:
        a = self._attempt
        handle = a.vm.sys_complete_promise(self._name, value=value, failure=failure)
        await a.wait([handle])
        error = failure_of(a.vm.result(handle))
        if error is not None:
            raise error


class SendFuture:
    __slots__ = ("_attempt", "_id_handle")

    def __init__(self, attempt: Attempt, id_handle: int) -> None:
        self._attempt = attempt
        self._id_handle = id_handle

    async def invocation_id(self) -> str:
        await self._attempt.wait([self._id_handle])
        return str(self._attempt.vm.result(self._id_handle).invocation_id)


async def gather(*futures: DurableFuture) -> list[Any]:
    """Wait for all futures; return their results in order (raises the first failure by position)."""
    if not futures:
        return []
    attempt = futures[0]._attempt
    await attempt.wait([f.handle for f in futures], wait_all=True)
    return [f.value() for f in futures]


async def select(**futures: DurableFuture) -> tuple[str, Any]:
    """Wait for the first future to complete: returns (its name, its result).

    The winner is decided by the order results were journaled, so a replay picks the same one.
    """
    if not futures:
        raise ValueError("select() needs at least one future")
    first = next(iter(futures.values()))
    attempt = first._attempt
    await attempt.wait([f.handle for f in futures.values()])
    vm = attempt.vm
    name, winner = min(
        ((n, f) for n, f in futures.items() if vm.is_ready(f.handle)), key=lambda nf: vm.arrival(nf[1].handle)
    )
    return name, winner.value()
