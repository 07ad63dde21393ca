"""Clocks: the one source of time for timers, retries and handlers.

`SystemClock` is the wall clock. `ManualClock` only moves when told to (`advance`) or, with
`autojump`, when nothing has asked for the time for a short real-time moment while something
sleeps — then it jumps straight to the earliest deadline, so tests of hour-long sleeps take
milliseconds.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Protocol


class Clock(Protocol):
    def now_ms(self) -> int: ...
    async def sleep_until(self, deadline_ms: int) -> None: ...


class SystemClock:
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    async def sleep_until(self, deadline_ms: int) -> None:
        delay = (deadline_ms - self.now_ms()) / 1000
        if delay > 0:
            await asyncio.sleep(delay)


def _ms(delta: timedelta | float) -> int:
    if isinstance(delta, timedelta):
        return int(delta.total_seconds() * 1000)
    return int(delta * 1000)


class ManualClock:
    """A clock for tests.

        clock = ManualClock()
        clock.advance(timedelta(hours=1))    # fires every timer due within the hour

    With `autojump=True`, the clock jumps to the next deadline once nobody has read it for
    `idle_s` real seconds and `busy()` is false (the `Harness` sets it to "the engine is not idle",
    so a slow commit or a running attempt is never overtaken by a timer).
    """

    def __init__(
        self, start_ms: int = 1_767_225_600_000, *, autojump: bool = False, idle_s: float = 0.005
    ) -> None:
        self._now = start_ms
        self._sleepers: list[tuple[int, int, asyncio.Future[None]]] = []
        self._counter = itertools.count()
        self._reads = 0
        self._idle_s = idle_s
        self._autojump = autojump
        self._jumper: asyncio.Task[None] | None = None
        self.busy: Callable[[], bool] = _never

    def now_ms(self) -> int:
        self._reads += 1
        return self._now

    async def sleep_until(self, deadline_ms: int) -> None:
        if deadline_ms <= self._now:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (deadline_ms, next(self._counter), future))
        self._reads += 1
        if self._autojump and (self._jumper is None or self._jumper.done()):
            self._jumper = asyncio.get_running_loop().create_task(self._jump_when_idle())
        await future

    def advance(self, delta: timedelta | float) -> None:
        """Move time forward by `delta` (seconds or timedelta) and wake what is due."""
        self.set(self._now + _ms(delta))

    def set(self, now_ms: int) -> None:
        if now_ms < self._now:
            raise ValueError("a ManualClock cannot go backwards")
        self._now = now_ms
        while self._sleepers and self._sleepers[0][0] <= now_ms:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)

    @property
    def next_deadline(self) -> int | None:
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)
        return self._sleepers[0][0] if self._sleepers else None

    async def _jump_when_idle(self) -> None:
        while (deadline := self.next_deadline) is not None:
            seen = self._reads
            await asyncio.sleep(self._idle_s)
            if self._reads == seen and self.next_deadline == deadline and not self.busy():
                self.set(deadline)


def _never() -> bool:
    return False
