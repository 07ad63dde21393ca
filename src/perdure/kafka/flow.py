"""Flow control of one subscription: `max.concurrency` (invocations in flight) and `rate` (records
accepted per second).

Both act where records are accepted, before `engine.ingest`: a batch is handed over in chunks, each
waiting for room (`Concurrency`) and for tokens (`Rate`). Acceptance itself is unchanged — each
chunk stores the partition's next offset with its invocations, and the chunks of a partition are
accepted in order — so exactly-once acceptance holds, and a record waits in the consumer (not in
the engine) until it may start. "In flight" is what the intake's tracker counts: invocations
accepted by this consumer and not completed (a parked or failed one is completed; a paused one,
with `on.failure=block`, holds its place until it is resumed).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class Concurrency:
    """At most `limit` invocations in flight: those `in_flight()` counts plus chunks being accepted."""

    def __init__(self, limit: int, in_flight: Callable[[], int]) -> None:
        self.limit = limit
        self._in_flight = in_flight
        self.reserved = 0
        self._changed = asyncio.Event()

    def room(self) -> int:
        return self.limit - self._in_flight() - self.reserved

    async def acquire(self, n: int) -> None:
        """Wait until `n` more (n <= limit) fit, and reserve them until `release`."""
        while self.room() < n:
            self._changed.clear()
            await self._changed.wait()
        self.reserved += n

    def release(self, n: int) -> None:
        """The reserved chunk was accepted (its invocations now count as in flight) or dropped."""
        self.reserved -= n
        self.changed()

    def changed(self) -> None:
        """An invocation completed (or a reservation ended): waiters look again."""
        self._changed.set()


class Rate:
    """A token bucket: `per_second` records, in bursts of at most a tenth of a second's worth."""

    def __init__(self, per_second: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_second = per_second
        self.burst = max(1.0, per_second / 10)
        self._clock = clock
        self._tokens = self.burst
        self._at = clock()

    @property
    def chunk(self) -> int:
        """The largest number of records one `take` may ask for."""
        return max(1, int(self.burst))

    async def take(self, n: int) -> None:
        """Wait until `n` (at most `chunk`) records may be accepted."""
        while True:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.per_second)
            self._at = now
            if self._tokens >= n:
                self._tokens -= n
                return
            await asyncio.sleep((n - self._tokens) / self.per_second)
