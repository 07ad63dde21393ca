"""Test harness: the real engine, in-process, on the memory store, with a `ManualClock`.

async with Harness(perdure.App([counter])) as h:
    await h.object_call(add, key="a", arg=1)
    invocation_id = await h.object_send(add, key="a", arg=1, delay=60)
    await h.advance(timedelta(minutes=1))      # fire timers due, wait until the engine is idle
    assert h.state("counter", "a") == {"total": 2}
    assert h.status(invocation_id).status is Status.COMPLETED
    print(h.journal(invocation_id))
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import msgspec

from perdure.engine.step import decode_entry
from perdure.protocol import messages as pm
from perdure.protocol.codec import message_type
from perdure.runtime.clock import ManualClock
from perdure.runtime.node import Engine
from perdure.sdk.service import App
from perdure.storage.api import ClusterDatabase, Database, Invocation, Status

__all__ = ["Harness", "JournalEntry", "ManualClock", "Status"]


@dataclass(frozen=True)
class JournalEntry:
    index: int
    type: str  # e.g. "RunCommand", "RunCompletionNotification"
    message: Any  # the decoded protocol message


class Harness(Engine):
    """An `Engine` for tests: memory store and a `ManualClock` unless given others.

    `default_store` is the store of harnesses made without one (a test suite may run on another
    backend by setting it, e.g. a PostgreSQL URL; `default_partitions` then says how many).
    """

    default_store: str = "memory:"
    default_partitions: int | None = None

    def __init__(
        self,
        app: App,
        *,
        clock: ManualClock | None = None,
        autojump: bool = False,
        store: str | Database | ClusterDatabase | None = None,
    ) -> None:
        self.manual_clock = clock or ManualClock(autojump=autojump)
        self.manual_clock.busy = self._busy
        # No background retention sweeps on a test clock: tests call `await h.sweep()`.
        super().__init__(
            app,
            self.default_store if store is None else store,
            clock=self.manual_clock,
            sweep_interval=None,
            partitions=self.default_partitions,
        )

    def _busy(self) -> bool:
        """Something is queued, committing or computing: an autojump waits for it."""
        return self._parts is not None and not self.idle

    async def __aenter__(self) -> Harness:
        await self.start()
        return self

    async def settle(self, *, max_rounds: int = 100_000) -> None:
        """Wait until nothing is queued, committing or running (every attempt is blocked)."""
        stable = 0
        for _ in range(max_rounds):
            await asyncio.sleep(0)
            if self.idle:
                stable += 1
                if stable >= 5:
                    return
            else:
                stable = 0
        raise TimeoutError("the engine did not settle")

    async def advance(self, delta: timedelta | float) -> None:
        """Move the clock forward, then settle (timers due fire and their effects run)."""
        await self.settle()
        self.manual_clock.advance(delta)
        await self.settle()

    def state(self, service: str, key: str) -> dict[str, Any]:
        """An object's committed state, JSON-decoded."""
        raw = self.reader().get_all_state(service, key)
        return {k.decode(): msgspec.json.decode(v) for k, v in raw.items()}

    def status(self, invocation_id: str) -> Invocation:
        inv = self.reader().get_invocation(invocation_id)
        if inv is None:
            raise KeyError(f"no invocation {invocation_id}")
        return inv

    def journal(self, invocation_id: str) -> list[JournalEntry]:
        out = []
        for index, entry in enumerate(self.reader().read_journal(invocation_id)):
            message = decode_entry(entry)
            out.append(JournalEntry(index, pm.NAME_OF.get(message_type(message), hex(entry.type)), message))
        return out
