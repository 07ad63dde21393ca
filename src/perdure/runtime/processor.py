"""The partition processor: applies commands in batches and commits each batch once.

Group commit: while one batch is being made durable (fsync off the event loop), new commands
queue up; the next batch takes all of them, up to `max_batch`. Commits are pipelined: batch N+1
is applied and handed to the store's writer while batch N is still committing (the store's
transactions see earlier, not yet durable writes and become durable strictly in order), so the
writer finds it queued the moment N is done instead of one loop wake-up later. At most
`IN_FLIGHT` batches commit at once. Actions are released only after the commit that produced
them returned — nothing is visible before it is durable.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from perdure.engine.actions import Action
from perdure.engine.commands import Command
from perdure.engine.state_machine import StateMachine
from perdure.storage.api import LeaseLost, Store, StoreUnavailable, Transaction

log = logging.getLogger("perdure.processor")

_Waiter = asyncio.Future[list[Action]] | None

#: Batches handed to the store and not yet released (the store allows three committing at begin()).
IN_FLIGHT = 2


@dataclass
class Stats:
    """Counters for metrics and benchmarks."""

    commands: int = 0
    batches: int = 0
    commit_seconds: float = 0.0
    max_batch: int = 0
    failed_commands: int = 0


class ProcessorStopped(RuntimeError):
    """The processor is not running (stopped, or failed: see the log for the cause)."""


class Processor:
    def __init__(
        self,
        store: Store,
        machine: StateMachine,
        dispatch: Callable[[list[Action]], None],
        *,
        max_batch: int = 2048,
    ) -> None:
        self._store = store
        self._machine = machine
        self._dispatch = dispatch
        self._max_batch = max_batch
        self._queue: deque[tuple[Command, _Waiter]] = deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.failure: BaseException | None = None
        self.stats = Stats()
        self._busy = False

    @property
    def pending(self) -> int:
        return len(self._queue)

    @property
    def idle(self) -> bool:
        """Nothing queued and no batch being applied or committed."""
        return not self._queue and not self._busy

    def submit(self, command: Command) -> None:
        """Queue a command; its effects happen after it is committed."""
        if self.failure is not None:
            raise ProcessorStopped(f"the engine stopped after a storage failure: {self.failure}")
        self._queue.append((command, None))
        self._wakeup.set()

    async def submit_and_wait(self, command: Command) -> list[Action]:
        """Queue a command and wait until it is durable; returns the actions it produced."""
        if self.failure is not None:
            raise ProcessorStopped(f"the engine stopped after a storage failure: {self.failure}")
        waiter: asyncio.Future[list[Action]] = asyncio.get_running_loop().create_future()
        self._queue.append((command, waiter))
        self._wakeup.set()
        return await waiter

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="perdure-processor")

    async def stop(self) -> None:
        """Finish the commands already queued, then stop."""
        if self._task is None:
            return
        self._queue.append((_STOP, None))  # type: ignore[arg-type]
        self._wakeup.set()
        try:
            await self._task
        finally:
            self._task = None

    async def _run(self) -> None:
        queue = self._queue
        committing: deque[_Commit] = deque()  # handed to the store, oldest first
        try:
            while True:
                if not queue:
                    if committing:
                        await self._finish(committing.popleft())
                        continue
                    self._busy = False
                    self._wakeup.clear()
                    await self._wakeup.wait()
                self._busy = True
                batch = [queue.popleft() for _ in range(min(len(queue), self._max_batch))]
                stop = any(cmd is _STOP for cmd, _ in batch)
                batch = [(cmd, w) for cmd, w in batch if cmd is not _STOP]
                if batch:
                    txn = self._store.begin()
                    try:
                        results = [self._machine.apply(txn, command) for command, _ in batch]
                    except (StoreUnavailable, LeaseLost):
                        self._store.rollback(txn)
                        raise  # not a bad command: the partition stops and starts again later
                    except Exception:
                        # An engine bug on one command must not take the others down:
                        # redo them one by one, each in its own transaction.
                        self._store.rollback(txn)
                        while committing:
                            await self._finish(committing.popleft())
                        for item in batch:
                            await self._process_one(item)
                    else:
                        committing.append(self._start_commit(txn, batch, results))
                        if len(committing) >= IN_FLIGHT:
                            await self._finish(committing.popleft())
                if stop:
                    while committing:
                        await self._finish(committing.popleft())
                    return
        except BaseException as e:
            if isinstance(e, LeaseLost | StoreUnavailable):  # expected in a cluster: no traceback
                log.warning("partition processor stopped: %s", e)
            elif not isinstance(e, asyncio.CancelledError):
                log.exception("partition processor failed; the engine stops accepting work")
            self.failure = e
            self._busy = False
            failed = [w for _, w in queue] + [w for c in committing for _, w in c.batch]
            for commit in committing:  # they fail too (the store is fail-stop): nobody awaits them
                commit.task.add_done_callback(_retrieve)
            for waiter in failed:
                if waiter is not None and not waiter.done():
                    waiter.set_exception(ProcessorStopped(f"the engine stopped: {e!r}"))
            raise

    def _start_commit(
        self, txn: Transaction, batch: list[tuple[Command, _Waiter]], results: list[list[Action]]
    ) -> _Commit:
        # store.commit() hands the transaction to the writer now; what it returns only awaits
        # durability (a layered store's future as it is; another store's coroutine in a task)
        return _Commit(asyncio.ensure_future(self._store.commit(txn)), batch, results, time.perf_counter())

    async def _finish(self, commit: _Commit) -> None:
        await commit.task
        self._record(len(commit.batch), time.perf_counter() - commit.started)
        self._release(commit.batch, commit.results)

    async def _process_one(self, item: tuple[Command, _Waiter]) -> None:
        command, waiter = item
        txn = self._store.begin()
        try:
            actions = self._machine.apply(txn, command)
        except (StoreUnavailable, LeaseLost):
            self._store.rollback(txn)
            raise
        except Exception as e:
            self._store.rollback(txn)
            self.stats.failed_commands += 1
            log.exception("engine failed to apply %r; the command was dropped", command)
            if waiter is not None and not waiter.done():
                waiter.set_exception(e)
            return
        started = time.perf_counter()
        await self._store.commit(txn)
        self._record(1, time.perf_counter() - started)
        self._release([item], [actions])

    def _record(self, size: int, seconds: float) -> None:
        stats = self.stats
        stats.commands += size
        stats.batches += 1
        stats.commit_seconds += seconds
        stats.max_batch = max(stats.max_batch, size)

    def _release(self, batch: list[tuple[Command, _Waiter]], results: list[list[Action]]) -> None:
        for (_, waiter), actions in zip(batch, results, strict=True):
            try:
                self._dispatch(actions)
            except Exception:
                log.exception("dispatching actions failed")
            if waiter is not None and not waiter.done():
                waiter.set_result(actions)


@dataclass
class _Commit:
    """A batch whose transaction is being committed; its actions wait for the commit."""

    task: asyncio.Future[None]
    batch: list[tuple[Command, _Waiter]]
    results: list[list[Action]]
    started: float


_STOP = object()


def _retrieve(task: asyncio.Future[None]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: no "exception was never retrieved" at exit
