"""The timer service: fires durable timers (sleeps, delayed sends, retry backoff) when due.

Timers are stored by the engine in the same transaction that needs them; this service only keeps
a heap of them in memory (rebuilt from storage at start) and submits `FireTimer` when one is
due. Firing twice is harmless: the engine deletes a timer when it fires and ignores unknown ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
from collections.abc import Callable, Iterable

from perdure.engine.commands import FireTimer
from perdure.runtime.clock import Clock
from perdure.storage.api import Timer


class TimerService:
    def __init__(self, clock: Clock, submit: Callable[[FireTimer], None]) -> None:
        self._clock = clock
        self._submit = submit
        self._heap: list[tuple[int, str, Timer]] = []
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._heap)

    def load(self, timers: Iterable[Timer]) -> None:
        for timer in timers:
            self.schedule(timer)

    def schedule(self, timer: Timer) -> None:
        heapq.heappush(self._heap, (timer.fire_at, timer.id, timer))
        if self._heap[0][2] is timer:
            self._changed.set()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="perdure-timers")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        heap, clock = self._heap, self._clock
        while True:
            self._changed.clear()
            if not heap:
                await self._changed.wait()
                continue
            now = clock.now_ms()
            if heap[0][0] <= now:
                while heap and heap[0][0] <= now:
                    self._submit(FireTimer(heapq.heappop(heap)[2]))
                continue
            sleeper = asyncio.ensure_future(clock.sleep_until(heap[0][0]))
            changed = asyncio.ensure_future(self._changed.wait())
            try:
                await asyncio.wait((sleeper, changed), return_when=asyncio.FIRST_COMPLETED)
            finally:
                sleeper.cancel()
                changed.cancel()
