"""The in-process invoker: runs attempts of the app's handlers on this event loop.

Protocol messages pass as objects between the handler's VM and the engine — no sockets, no
framing. An attempt blocked on something slow is *suspended*: its coroutine is unwound and it
holds no memory until the engine restarts it with a longer journal. Long sleeps suspend at once;
other waits (calls, lazy state) after the handler's inactivity timeout.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from perdure.defaults import INACTIVITY_TIMEOUT_MS
from perdure.engine.actions import Notify, StartAttempt
from perdure.engine.commands import AttemptOutput
from perdure.protocol import messages as pm
from perdure.protocol.vm import VM
from perdure.runtime.clock import Clock
from perdure.sdk.attempt import Attempt
from perdure.sdk.service import App

log = logging.getLogger("perdure.invoker")


class InProcessInvoker:
    def __init__(
        self,
        app: App,
        submit: Callable[[AttemptOutput], None],
        clock: Clock,
        *,
        suspend_sleeps_over_ms: int = 1000,
    ) -> None:
        self._app = app
        self._submit = submit
        self._clock = clock
        self._suspend_sleeps_over_ms = suspend_sleeps_over_ms
        self._running: dict[str, tuple[int, Attempt]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._idle: dict[str, asyncio.Task[None]] = {}  # inactivity timers of blocked attempts
        self.started = 0
        self.suspended = 0

    @property
    def active(self) -> int:
        """Attempts held in memory now."""
        return len(self._running)

    @property
    def all_blocked(self) -> bool:
        """True when every attempt in memory waits for a result (none is computing)."""
        return all(attempt.blocked_on for _, attempt in self._running.values())

    def running(self) -> list[str]:
        """Ids of the invocations with an attempt in memory."""
        return list(self._running)

    def busy(self, invocation_id: str) -> bool:
        """Whether the invocation's attempt is computing (not waiting for a result)."""
        current = self._running.get(invocation_id)
        return current is not None and not current[1].blocked_on

    def start(self, action: StartAttempt) -> None:
        handler = self._app.handler(action.service, action.handler)
        invocation_id, number = action.invocation_id, action.attempt
        if handler is None:  # the engine's registry is built from the same app; defensive only
            error = pm.ErrorMessage(code=404, message=f"no handler {action.service}/{action.handler}")
            self._submit(AttemptOutput(invocation_id, number, [error]))
            return
        previous = self._running.get(invocation_id)
        if previous is not None:
            previous[1].abort()

        def send(messages: list[Any]) -> None:
            self._submit(AttemptOutput(invocation_id, number, messages))

        try:
            vm = VM(action.start, action.journal, handler=handler.qualified_name)
        except Exception as e:
            send([pm.ErrorMessage(code=pm.PROTOCOL_VIOLATION, message=f"cannot replay the journal: {e}")])
            return
        attempt = Attempt(handler, vm, send=send, now_ms=self._clock.now_ms, on_blocked=self._blocked)
        self._running[invocation_id] = (number, attempt)
        self.started += 1
        task = asyncio.get_running_loop().create_task(self._run(invocation_id, number, attempt))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, invocation_id: str, number: int, attempt: Attempt) -> None:
        try:
            await attempt.execute()
        except asyncio.CancelledError:
            pass  # the engine is stopping; the attempt resumes from its journal next time
        except BaseException:
            log.exception("attempt %s #%d crashed", invocation_id, number)
        finally:
            current = self._running.get(invocation_id)
            if current is not None and current[0] == number:
                del self._running[invocation_id]
                self._cancel_idle(invocation_id)

    def notify(self, action: Notify) -> None:
        current = self._running.get(action.invocation_id)
        if current is None or current[0] != action.attempt:
            return  # that attempt has ended; the next one replays these results
        attempt = current[1]
        for message in action.messages:
            attempt.notify(message)
        if not attempt.blocked_on:
            self._cancel_idle(action.invocation_id)

    def abort(self, invocation_id: str) -> None:
        """Drop the attempt in memory, if any, without it reporting anything more."""
        current = self._running.pop(invocation_id, None)
        if current is not None:
            current[1].abort()
        self._cancel_idle(invocation_id)

    def _cancel_idle(self, invocation_id: str) -> None:
        task = self._idle.pop(invocation_id, None)
        if task is not None:
            task.cancel()

    def _blocked(self, attempt: Attempt, handles: Sequence[int]) -> None:
        vm = attempt.vm
        if any(vm.is_pending_run(h) for h in handles):
            return  # a ctx.run result is being stored: it comes back in a moment
        deadlines = [vm.sleep_deadline(h) for h in handles]
        now = self._clock.now_ms()
        if all(d is not None for d in deadlines):
            if min(d for d in deadlines if d is not None) - now > self._suspend_sleeps_over_ms:
                self._suspend(attempt)
            return
        timeout = attempt.handler.options.inactivity_timeout
        timeout_ms = int(timeout.total_seconds() * 1000) if timeout is not None else INACTIVITY_TIMEOUT_MS
        self._cancel_idle(vm.invocation_id)
        self._idle[vm.invocation_id] = asyncio.get_running_loop().create_task(
            self._suspend_when_idle(attempt, attempt.wait_seq, now + timeout_ms)
        )

    async def _suspend_when_idle(self, attempt: Attempt, wait_seq: int, deadline: int) -> None:
        await self._clock.sleep_until(deadline)
        if attempt.wait_seq == wait_seq and attempt.blocked_on:
            self._suspend(attempt)

    def _suspend(self, attempt: Attempt) -> None:
        self.suspended += 1
        attempt.suspend()

    async def stop(self) -> None:
        """Abort every attempt in memory (they resume from their journals on the next start)."""
        for _, attempt in list(self._running.values()):
            attempt.abort()
        self._running.clear()
        tasks = [*self._tasks, *self._idle.values()]
        self._idle.clear()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
