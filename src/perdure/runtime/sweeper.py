"""The retention sweeper: completed invocations past their retention are deleted, freeing their
idempotency keys (and a finished workflow's key)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta

from perdure.defaults import RETENTION_MS
from perdure.engine.actions import Action
from perdure.engine.commands import Expire
from perdure.engine.registry import Registry
from perdure.runtime.clock import Clock
from perdure.storage.api import Reader

log = logging.getLogger("perdure.engine")


class Sweeper:
    def __init__(
        self,
        clock: Clock,
        registry: Registry,
        reader: Callable[[], Reader],
        submit: Callable[[Expire], Awaitable[list[Action]]],
    ) -> None:
        self._clock = clock
        self._registry = registry
        self._reader = reader
        self._submit = submit

    async def sweep(self, limit: int = 1000) -> None:
        """Submit `Expire` for every completed invocation older than the shortest retention (the
        engine checks each one's own retention)."""
        cursor: tuple[int, str] | None = None
        shortest = min(  # services of deployments registered since start count too
            (
                min(h.idempotency_retention_ms, h.journal_retention_ms, h.workflow_retention_ms)
                for hs in self._registry.services.values()
                for h in hs.values()
            ),
            default=RETENTION_MS,
        )
        while True:
            rows = self._reader().completed_before(self._clock.now_ms() - shortest, after=cursor, limit=limit)
            if rows:
                await self._submit(Expire([invocation_id for _, invocation_id in rows]))
            if len(rows) < limit:
                return
            cursor = rows[-1]

    async def every(self, interval: timedelta) -> None:
        interval_ms = int(interval.total_seconds() * 1000)
        while True:
            await self._clock.sleep_until(self._clock.now_ms() + interval_ms)
            try:
                await self.sweep()
            except Exception:
                log.exception("retention sweep failed; retrying later")
