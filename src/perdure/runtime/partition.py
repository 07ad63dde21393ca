"""A partition: one store view, its state machine, its processor and its timers.

The single writer of the invocations, journals, state, inboxes and timers of the keys that hash to
it. Commands enter through `submit`; the actions of each durable batch go out through `dispatch`:
timers stay here, attempts and completions go to the node (`Effects`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from perdure.engine.actions import (
    AbortAttempt,
    Action,
    Completed,
    Notify,
    ScheduleTimer,
    StartAttempt,
)
from perdure.engine.commands import Command, Recover
from perdure.engine.counters import Counters
from perdure.engine.registry import Registry
from perdure.engine.state_machine import StateMachine
from perdure.runtime.clock import Clock
from perdure.runtime.processor import Processor, Stats
from perdure.runtime.timers import TimerService
from perdure.storage.api import Reader, Store


class Effects(Protocol):
    """What a partition's actions ask of the node: run attempts, answer whoever waits."""

    def start(self, action: StartAttempt) -> None: ...
    def notify(self, action: Notify) -> None: ...
    def abort(self, invocation_id: str) -> None: ...
    def completed(self, action: Completed) -> None: ...


class Partition:
    """The engine of the partitions `owns` covers (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        registry: Registry,
        clock: Clock,
        effects: Effects,
        *,
        counters: Counters,
        owns: Callable[[int], bool] = lambda partition_key: True,
    ) -> None:
        self.store = store
        self.owns = owns
        self._effects = effects
        self.machine = StateMachine(registry, clock.now_ms, counters=counters)
        self.processor = Processor(store, self.machine, self.dispatch)
        self.timers = TimerService(clock, self.processor.submit)

    async def start(self, reader: Reader) -> None:
        """Arm the stored timers, start processing, and restart the attempts a crash cut short."""
        self.timers.load(reader.all_timers())
        self.processor.start()
        self.timers.start()
        await self.processor.submit_and_wait(Recover())

    async def stop(self) -> None:
        """Stop firing timers, finish the queued commands, then stop (the store stays open)."""
        await self.timers.stop()
        await self.processor.stop()

    def submit(self, command: Command) -> None:
        self.processor.submit(command)

    async def submit_and_wait(self, command: Command) -> list[Action]:
        return await self.processor.submit_and_wait(command)

    @property
    def idle(self) -> bool:
        return self.processor.idle

    @property
    def failure(self) -> BaseException | None:
        return self.processor.failure

    @property
    def stats(self) -> Stats:
        return self.processor.stats

    def dispatch(self, actions: list[Action]) -> None:
        effects = self._effects
        for action in actions:
            if type(action) is Notify:
                effects.notify(action)
            elif type(action) is StartAttempt:
                effects.start(action)
            elif type(action) is AbortAttempt:
                effects.abort(action.invocation_id)
            elif type(action) is ScheduleTimer:
                self.timers.schedule(action.timer)
            elif type(action) is Completed:
                effects.completed(action)
