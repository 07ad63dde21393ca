"""Attempts of real SDK handlers, stepped by hand instead of by an event loop.

The in-process invoker (`perdure.runtime.invoker`) runs `Attempt.execute()` as an asyncio task.
Here the coroutine is driven with `send(None)`: it runs until the handler waits for a durable
result (it yields the future it waits on) or ends. The simulator decides when each attempt
runs, when it learns a notification, and when it is suspended or crashed — so the interleaving
of attempts is drawn from the seed, never from the event loop.

Must be used inside a running event loop (`Attempt.wait` creates its futures with
`asyncio.get_running_loop()`), but nothing is ever scheduled on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from perdure.engine.actions import StartAttempt
from perdure.protocol import messages as pm
from perdure.protocol.vm import VM
from perdure.sdk.attempt import Attempt
from perdure.sdk.service import App


@dataclass
class Running:
    """One attempt in memory: its SDK `Attempt` and the coroutine executing the handler."""

    invocation_id: str
    number: int
    attempt: Attempt
    coro: Coroutine[Any, Any, None]
    waiting: asyncio.Future[None] | None = None
    started: bool = False
    outputs: list[list[Any]] = field(default_factory=list)

    @property
    def runnable(self) -> bool:
        """It has not run yet, or the result it waits for is in."""
        return not self.started or (self.waiting is not None and self.waiting.done())

    @property
    def blocked(self) -> bool:
        return self.started and self.waiting is not None and not self.waiting.done()


class Attempts:
    """The attempts in memory, keyed by invocation id (one per invocation, like the invoker)."""

    def __init__(self, app: App, now_ms: Callable[[], int]) -> None:
        self._app = app
        self._now_ms = now_ms
        self.live: dict[str, Running] = {}

    def start(self, action: StartAttempt) -> Running | list[Any]:
        """A new attempt (replacing an older one of the invocation), or the messages that fail it
        at once (as the invoker sends them: unknown handler, journal that cannot be replayed)."""
        self.abort(action.invocation_id)
        handler = self._app.handler(action.service, action.handler)
        if handler is None:
            return [pm.ErrorMessage(code=404, message=f"no handler {action.service}/{action.handler}")]
        try:
            vm = VM(action.start, action.journal, handler=handler.qualified_name)
        except Exception as e:
            return [pm.ErrorMessage(code=pm.PROTOCOL_VIOLATION, message=f"cannot replay the journal: {e}")]
        outputs: list[list[Any]] = []
        attempt = Attempt(handler, vm, send=outputs.append, now_ms=self._now_ms)
        running = Running(action.invocation_id, action.attempt, attempt, attempt.execute(), outputs=outputs)
        self.live[action.invocation_id] = running
        return running

    def step(self, running: Running) -> list[list[Any]]:
        """Run the handler until it waits or ends; returns the outputs it flushed meanwhile."""
        running.started = True
        waiting = running.waiting
        running.waiting = None
        if waiting is not None:
            assert waiting.done()
        try:
            yielded = running.coro.send(None)
        except StopIteration:
            self._forget(running)
        else:
            assert isinstance(yielded, asyncio.Future), f"a handler awaited {yielded!r}, not a durable result"
            running.waiting = yielded
        out, running.outputs[:] = list(running.outputs), []
        return out

    def notify(self, invocation_id: str, number: int, messages: list[Any]) -> bool:
        """Deliver notifications to that attempt if it is still in memory (else dropped, as the
        invoker drops them: the next attempt replays them from the journal)."""
        running = self.live.get(invocation_id)
        if running is None or running.number != number:
            return False
        for message in messages:
            running.attempt.notify(message)
        return True

    def suspend(self, running: Running) -> list[list[Any]]:
        """The inactivity timeout: a blocked handler suspends (its Suspension message is sent)."""
        running.attempt.suspend()
        return self.step(running) if running.runnable else []

    def abort(self, invocation_id: str) -> None:
        """Drop the attempt without it reporting anything (AbortAttempt, a replaced attempt)."""
        running = self.live.pop(invocation_id, None)
        if running is not None:
            running.attempt.abort()
            self._close(running)

    def crash(self, running: Running) -> None:
        """The attempt dies where it stands (its process or connection is gone)."""
        self.live.pop(running.invocation_id, None)
        running.attempt.abort()
        self._close(running)

    def clear(self) -> None:
        for running in list(self.live.values()):
            self.crash(running)

    def _forget(self, running: Running) -> None:
        if self.live.get(running.invocation_id) is running:
            del self.live[running.invocation_id]

    @staticmethod
    def _close(running: Running) -> None:
        running.coro.close()
        waiting = running.waiting
        if waiting is not None and waiting.done() and not waiting.cancelled():
            waiting.exception()  # retrieved: asyncio would warn about it otherwise
