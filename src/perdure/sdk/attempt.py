"""Running one attempt of a handler: the context implementation on top of `protocol.vm`.

An `Attempt` owns a VM and the handler's task. The transport (in-process or HTTP) feeds it
notifications with `notify()`, receives the messages it produces through `send`, and may end it
early with `suspend()` (drop it from memory until a result arrives) or `abort()`.
"""

from __future__ import annotations

import asyncio
import functools
import random as _random
import traceback
import typing
import uuid as _uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any, TypeVar

import msgspec

from perdure.errors import JournalMismatchError, SerdeError, Suspended, TerminalError
from perdure.protocol import awakeables
from perdure.protocol import egress as egress_wire
from perdure.protocol import messages as pm
from perdure.protocol.vm import VM
from perdure.retry import RetryPolicy
from perdure.sdk import serde
from perdure.sdk.context import Request
from perdure.sdk.futures import CallFuture, DurableFuture, DurablePromise, SendFuture, failure_of
from perdure.sdk.service import Handler, ServiceKind, handler_of

T = TypeVar("T")

_JSON = msgspec.json.Encoder()


def _delay_ms(delay: timedelta | float) -> int:
    if isinstance(delay, timedelta):
        return int(delay.total_seconds() * 1000)
    return int(delay * 1000)


@functools.lru_cache(maxsize=4096)
def _return_serde(fn: Callable[..., Any]) -> serde.Serde:
    try:
        hint = typing.get_type_hints(fn).get("return", Any)
    except Exception:
        hint = Any
    if hint is None or hint is type(None):
        return serde.JSON_ANY
    return serde.for_type(hint)


_CANCEL = -pm.CANCEL_SIGNAL  # the handle of the CANCEL signal


def _none(notification: Any) -> None:
    return None


def _check_awakeable(awakeable_id: str) -> None:
    try:
        awakeables.parse(awakeable_id)
    except ValueError as e:
        raise TerminalError(str(e), 400) from e


class RunFailed(Exception):
    """A `ctx.run` step raised; the attempt fails and is retried after `next_retry_delay`."""

    def __init__(self, name: str, cause: BaseException, next_retry_delay: int | None) -> None:
        super().__init__(f"step {name!r} failed: {type(cause).__name__}: {cause}")
        self.next_retry_delay = next_retry_delay


class Attempt:
    """One attempt of one handler: the context handed to user code, and its driver."""

    def __init__(
        self,
        handler: Handler,
        vm: VM,
        *,
        send: Callable[[list[Any]], None],
        now_ms: Callable[[], int],
        on_blocked: Callable[[Attempt, Sequence[int]], None] | None = None,
    ) -> None:
        self.handler = handler
        self.vm = vm
        self._send = send
        self._now_ms = now_ms
        self._on_blocked = on_blocked
        self._waiter: asyncio.Future[None] | None = None
        self._waiting: Sequence[int] = ()
        self._wait_all = False
        self._input_closed = False
        self._aborted = False
        self._cancel_seen = False
        self.wait_seq = 0  # bumps on every new blocking wait (lets transports time inactivity)
        self._random: _random.Random | None = None
        self._request: Request | None = None

    # ---- driving

    async def execute(self) -> None:
        """Run the handler until the attempt ends (output, suspension or error), then flush."""
        vm, handler = self.vm, self.handler
        try:
            try:
                arg = handler.input_serde.decode(vm.input.value.content) if handler.takes_input else None
            except SerdeError as e:
                raise TerminalError(f"invalid input for {handler.qualified_name}: {e}", 400) from e
            result = await (handler.fn(self, arg) if handler.takes_input else handler.fn(self))
            try:
                payload = handler.output_serde.encode(result)
            except SerdeError as e:
                raise SerdeError(f"{handler.qualified_name} returned a value its serde rejects: {e}") from e
            vm.sys_output(value=payload)
            vm.sys_end()
        except TerminalError as e:
            if not vm.finished:
                try:
                    vm.sys_output(failure=pm.Failure(code=e.status_code, message=e.message))
                    vm.sys_end()
                except JournalMismatchError as mismatch:
                    # Failing where the journal records more: raised in this `except`, the
                    # mismatch would escape the attempt, which then reports nothing at all.
                    vm.fail(pm.JOURNAL_MISMATCH, str(mismatch))
        except Suspended:
            pass
        except JournalMismatchError as e:
            if not vm.finished:
                vm.fail(pm.JOURNAL_MISMATCH, str(e))
        except RunFailed as e:
            if not vm.finished:
                vm.fail(500, str(e), stacktrace=traceback.format_exc(), next_retry_delay=e.next_retry_delay)
        except asyncio.CancelledError:
            raise  # the runtime stops this attempt; the next one resumes from the journal
        except BaseException as e:  # also SystemExit and the like: one handler never stops the node
            if not vm.finished:
                vm.fail(500, f"{type(e).__name__}: {e}", stacktrace=traceback.format_exc())
        finally:
            self._flush()

    def notify(self, message: Any) -> None:
        """Deliver a notification from the runtime; wakes the handler if it was waiting on it."""
        self.vm.notify(message)
        if self._waiter is not None and not self._waiter.done() and self._satisfied():
            self._waiter.set_result(None)

    def suspend(self) -> None:
        """Close the input: a blocked handler suspends now, a running one at its next wait."""
        self._input_closed = True
        if self._waiter is not None and not self._waiter.done() and not self._satisfied():
            self.vm.suspend(self._waiting)
            self._waiter.set_exception(Suspended())

    def abort(self) -> None:
        """Stop without reporting anything (the runtime has already decided the outcome)."""
        self._input_closed = True
        self._aborted = True
        self.vm.finished = True
        self.vm.take_output()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(Suspended())

    @property
    def blocked_on(self) -> Sequence[int]:
        """Handles the handler is waiting for right now (empty when it is running)."""
        return self._waiting if self._waiter is not None and not self._waiter.done() else ()

    # ---- internals

    def _flush(self) -> None:
        out = self.vm.take_output()
        if out and not self._aborted:
            self._send(out)

    def _satisfied(self) -> bool:
        """The wait is over: its results are in, or a cancellation is to be observed."""
        ready = self.vm.is_ready
        if not self._cancel_seen and ready(_CANCEL):
            return True
        if len(self._waiting) == 1:
            return ready(self._waiting[0])
        if self._wait_all:
            return all(ready(h) for h in self._waiting)
        return any(ready(h) for h in self._waiting)

    def _cancelled(self) -> bool:
        """True when this wait must observe the cancellation: it arrived before the awaited results.

        Decided by journal order (arrival), so a replay raises at the same await as the first run.
        """
        vm = self.vm
        if self._cancel_seen or not vm.is_ready(_CANCEL):
            return False
        cancel_at = vm.arrival(_CANCEL)
        arrivals = [vm.arrival(h) for h in self._waiting if vm.is_ready(h)]
        if self._wait_all:
            done = len(arrivals) == len(self._waiting) and max(arrivals, default=-1) < cancel_at
        else:
            done = bool(arrivals) and min(arrivals) < cancel_at
        return not done

    def _observe_cancellation(self) -> None:
        """Cancel the calls in flight (they learn it at their next await), then fail this await."""
        self._cancel_seen = True
        vm = self.vm
        cancel_at = vm.arrival(_CANCEL)
        for result_handle, id_handle in vm.calls.items():
            known = vm.is_ready(id_handle) and vm.arrival(id_handle) < cancel_at
            finished = vm.is_ready(result_handle) and vm.arrival(result_handle) < cancel_at
            if known and not finished:
                vm.sys_send_signal(str(vm.result(id_handle).invocation_id), pm.CANCEL_SIGNAL)
        raise TerminalError("cancelled", 409)

    async def wait(self, handles: Sequence[int], *, wait_all: bool = False) -> None:
        """Block until any (or all) of `handles` have results."""
        if self._waiter is not None:
            raise RuntimeError(
                "a handler can await one durable result at a time: combine them with "
                "perdure.gather() or perdure.select(), not asyncio.gather()"
            )
        self._waiting, self._wait_all = handles, wait_all
        if self._satisfied():
            if self._cancelled():
                self._observe_cancellation()
            return
        if self._input_closed:
            self.vm.suspend(handles)
            self._flush()
            raise Suspended()
        self._flush()
        self._waiter = asyncio.get_running_loop().create_future()
        self.wait_seq += 1
        if self._on_blocked is not None:
            self._on_blocked(self, handles)
        try:
            await self._waiter
        finally:
            self._waiter = None
        if self.vm.finished and not self._satisfied():
            raise Suspended()
        if self._cancelled():
            self._observe_cancellation()

    def _decoder(self, s: serde.Serde) -> Callable[[Any], Any]:
        def decode(notification: Any) -> Any:
            failure = failure_of(notification)
            if failure is not None:
                raise failure
            try:
                return s.decode(notification.value.content)
            except SerdeError as e:
                # The value is in the journal: it will never decode on a retry either.
                raise TerminalError(f"a result does not fit the expected type: {e}", 500) from e

        return decode

    # ---- Context

    def request(self) -> Request:
        if self._request is None:
            self._request = Request(
                id=self.vm.invocation_id,
                headers={h.key: h.value for h in self.vm.input.headers},
                body=self.vm.input.value.content,
                attempt=self.vm.start.retry_count_since_last_stored_entry,
            )
        return self._request

    def key(self) -> str:
        return self.vm.key

    async def run(
        self,
        name: str,
        fn: Callable[..., Any],
        args: Sequence[Any] = (),
        *,
        retry: RetryPolicy | None = None,
        type_hint: Any = None,
    ) -> Any:
        vm = self.vm
        handle = vm.sys_run(name)
        result_serde = serde.for_type(type_hint) if type_hint is not None else _return_serde(fn)
        if not vm.is_ready(handle):
            try:
                value = fn(*args)
                if isinstance(value, Awaitable):
                    value = await value
                vm.propose_run(handle, value=result_serde.encode(value))
            except TerminalError as e:
                vm.propose_run(handle, failure=pm.Failure(code=e.status_code, message=e.message))
            except Exception as e:
                attempts = vm.start.retry_count_since_last_stored_entry + 1
                elapsed = vm.start.duration_since_last_stored_entry
                if retry is not None and retry.exhausted(attempts, elapsed):
                    message = f"step {name!r} failed after {attempts} attempts: {type(e).__name__}: {e}"
                    vm.propose_run(handle, failure=pm.Failure(code=500, message=message))
                else:
                    delay = retry.delay_ms(attempts) if retry is not None else None
                    raise RunFailed(name, e, delay) from e
        await self.wait([handle])
        return self._decoder(result_serde)(vm.result(handle))

    def sleep(self, delay: timedelta | float, *, name: str = "") -> DurableFuture:
        handle = self.vm.sys_sleep(self._now_ms() + _delay_ms(delay), name)
        return DurableFuture(self, handle, _none)

    def _call(
        self,
        service: str,
        handler: str,
        key: str | None,
        parameter: bytes,
        decode: Callable[[Any], Any],
        idempotency_key: str | None,
        headers: Mapping[str, str] | None,
    ) -> CallFuture:
        id_handle, handle = self.vm.sys_call(
            service,
            handler,
            parameter,
            key=key or "",
            headers=tuple((headers or {}).items()),
            idempotency_key=idempotency_key,
        )
        return CallFuture(self, id_handle, handle, decode)

    def _send_to(
        self,
        service: str,
        handler: str,
        key: str | None,
        parameter: bytes,
        delay: timedelta | float | None,
        idempotency_key: str | None,
        headers: Mapping[str, str] | None,
    ) -> SendFuture:
        invoke_time = self._now_ms() + _delay_ms(delay) if delay else 0
        id_handle = self.vm.sys_send(
            service,
            handler,
            parameter,
            key=key or "",
            headers=tuple((headers or {}).items()),
            idempotency_key=idempotency_key,
            invoke_time=invoke_time,
        )
        return SendFuture(self, id_handle)

    def service_call(
        self,
        handler: Callable[..., Awaitable[T]],
        arg: Any = None,
        *,
        idempotency_key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> CallFuture:
        return self._handler_call(handler, None, arg, idempotency_key, headers)

    def _handler_call(
        self,
        handler: Callable[..., Awaitable[Any]],
        key: str | None,
        arg: Any,
        idempotency_key: str | None,
        headers: Mapping[str, str] | None,
    ) -> CallFuture:
        """A call to a decorated handler: its serdes encode the argument and decode the result."""
        h = handler_of(handler)
        parameter = h.input_serde.encode(arg)
        return self._call(
            h.service.name, h.name, key, parameter, self._decoder(h.output_serde), idempotency_key, headers
        )

    def object_call(
        self,
        handler: Callable[..., Awaitable[T]],
        key: str,
        arg: Any = None,
        *,
        idempotency_key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> CallFuture:
        return self._handler_call(handler, key, arg, idempotency_key, headers)

    def service_send(
        self,
        handler: Callable[..., Awaitable[Any]],
        arg: Any = None,
        *,
        delay: timedelta | float | None = None,
        idempotency_key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> SendFuture:
        h = handler_of(handler)
        return self._send_to(
            h.service.name, h.name, None, h.input_serde.encode(arg), delay, idempotency_key, headers
        )

    def object_send(
        self,
        handler: Callable[..., Awaitable[Any]],
        key: str,
        arg: Any = None,
        *,
        delay: timedelta | float | None = None,
        idempotency_key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> SendFuture:
        h = handler_of(handler)
        return self._send_to(
            h.service.name, h.name, key, h.input_serde.encode(arg), delay, idempotency_key, headers
        )

    def generic_call(
        self,
        service: str,
        handler: str,
        arg: bytes = b"",
        *,
        key: str | None = None,
        idempotency_key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> CallFuture:
        return self._call(
            service, handler, key, arg, self._decoder(serde.BytesSerde()), idempotency_key, headers
        )

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
    ) -> SendFuture:
        return self._send_to(service, handler, key, arg, delay, idempotency_key, headers)

    def emit(
        self,
        topic: str,
        value: Any,
        key: str | bytes | None = None,
        headers: Mapping[str, str] | None = None,
        *,
        cluster: str | None = None,
    ) -> SendFuture:
        """Produce a Kafka record once, after the commit: a send to `perdure.kafka/emit`."""
        try:
            target = egress_wire.target(topic, cluster)
        except ValueError as e:
            raise TerminalError(str(e), 400) from e
        if isinstance(value, bytes):
            payload = value
        elif isinstance(value, str):
            payload = value.encode()
        else:
            try:
                payload = _JSON.encode(value)
            except (TypeError, msgspec.EncodeError) as e:
                raise SerdeError(f"cannot emit {type(value).__name__} to {topic!r}: {e}") from e
        sent = [(k, v) for k, v in (headers or {}).items() if k != egress_wire.KEY_HEADER]
        if key is not None:
            raw = key.encode() if isinstance(key, str) else key
            sent.append((egress_wire.KEY_HEADER, egress_wire.encode_key(raw)))
        id_handle = self.vm.sys_send(
            egress_wire.SERVICE, egress_wire.HANDLER, payload, key=target, headers=sent
        )
        return SendFuture(self, id_handle)

    def awakeable(self, *, type_hint: Any = None) -> tuple[str, DurableFuture]:
        """An id to hand to another system, and a future completed when it resolves or rejects it.

        Complete it over HTTP (`POST /restate/awakeables/{id}/resolve`) or from a handler
        (`ctx.resolve_awakeable(id, value)`); it survives suspension and restarts.
        """
        handle = self.vm.new_signal()
        awakeable = awakeables.awakeable_id(self.vm.start.id, -handle)
        s = serde.for_type(type_hint) if type_hint is not None else serde.JSON_ANY
        return awakeable, DurableFuture(self, handle, self._decoder(s))

    def resolve_awakeable(self, awakeable_id: str, value: Any = None) -> None:
        _check_awakeable(awakeable_id)
        self.vm.sys_complete_awakeable(awakeable_id, value=_JSON.encode(value))

    def reject_awakeable(self, awakeable_id: str, reason: str, code: int = 500) -> None:
        _check_awakeable(awakeable_id)
        self.vm.sys_complete_awakeable(awakeable_id, failure=pm.Failure(code=code, message=reason))

    def promise(self, name: str, *, type_hint: Any = None) -> DurablePromise:
        """A workflow's durable promise `name` (workflow handlers only)."""
        if self.handler.service.kind is not ServiceKind.WORKFLOW:
            raise TerminalError(
                f"promises exist only in workflows; {self.handler.qualified_name} is not one", 400
            )
        return DurablePromise(
            self, name, serde.for_type(type_hint) if type_hint is not None else serde.JSON_ANY
        )

    def workflow_call(
        self,
        handler: Callable[..., Awaitable[T]],
        key: str,
        arg: Any = None,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> CallFuture:
        """Call a workflow handler (its run, once per key, or a shared one) and await the result."""
        return self.object_call(handler, key, arg, headers=headers)

    def workflow_send(
        self,
        handler: Callable[..., Awaitable[Any]],
        key: str,
        arg: Any = None,
        *,
        delay: timedelta | float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> SendFuture:
        return self.object_send(handler, key, arg, delay=delay, headers=headers)

    def cancel_invocation(self, invocation_id: str) -> None:
        """Ask another invocation to cancel: it sees a 409 `TerminalError` at its next await."""
        self.vm.sys_send_signal(invocation_id, pm.CANCEL_SIGNAL)

    def random(self) -> _random.Random:
        if self._random is None:
            seed = self.vm.start.random_seed or int.from_bytes(self.vm.start.id[-8:] or b"\0", "big")
            self._random = _random.Random(seed)
        return self._random

    def uuid(self) -> _uuid.UUID:
        return _uuid.UUID(int=self.random().getrandbits(128), version=4)

    async def time(self) -> float:
        now = self._now_ms
        return float(await self.run("time", lambda: now() / 1000, type_hint=float))

    # ---- object state

    async def get(self, name: str, *, type_hint: Any = None) -> Any:
        read = self.vm.sys_get_state(name.encode())
        value = read.value
        if read.handle is not None:
            await self.wait([read.handle])
            notification = self.vm.result(read.handle)
            value = notification.value.content if notification.WhichOneof("result") == "value" else None
        if value is None:
            return None
        return (serde.for_type(type_hint) if type_hint is not None else serde.JSON_ANY).decode(value)

    async def state_keys(self) -> list[str]:
        handle, keys = self.vm.sys_state_keys()
        if handle is not None:
            await self.wait([handle])
            keys = list(self.vm.result(handle).state_keys.keys)
        return [k.decode() for k in keys]

    def set(self, name: str, value: Any) -> None:
        try:
            payload = _JSON.encode(value)
        except (TypeError, msgspec.EncodeError) as e:
            raise SerdeError(f"cannot store state {name!r}: {e}") from e
        self.vm.sys_set_state(name.encode(), payload)

    def clear(self, name: str) -> None:
        self.vm.sys_clear_state(name.encode())

    def clear_all(self) -> None:
        self.vm.sys_clear_all_state()
