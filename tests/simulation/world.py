"""One simulated node: the real state machine and memory store, driven step by step by a seed.

Each step is one of: a client sends a command; the network delivers a message; the engine
applies a batch of commands in one transaction, commits it and releases its actions; an attempt
runs until it waits or ends; a blocked attempt is suspended (its inactivity timeout); the clock
moves and due timers fire; the Kafka consumer polls. Faults are steps too: an attempt crashes,
a message is lost or duplicated, a timer or a Kafka batch is delivered again, the node crashes
(in the middle of a batch, or after a commit before its actions were released) and restarts
from what was committed, with `Recover` as its first command — as `Engine.start` does.

Batches are applied and committed one at a time (the processor's pipelining is the store's
concern, tested in `tests/storage/test_pipelining.py`): handlers only ever run between batches,
so at any point where user code runs the memory store holds exactly what was committed.
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from perdure.engine import catalog
from perdure.engine.actions import (
    AbortAttempt,
    Accepted,
    Notify,
    ScheduleTimer,
    StartAttempt,
)
from perdure.engine.commands import (
    AttemptOutput,
    Command,
    CompleteSignal,
    FireTimer,
    Ingest,
    Invoke,
    KafkaRecord,
    Recover,
    Resume,
)
from perdure.engine.state_machine import StateMachine
from perdure.engine.step import decode_entry
from perdure.protocol import messages as pm
from perdure.runtime.catalog import registry_of
from perdure.runtime.clock import ManualClock
from perdure.storage.api import Failure, Status, Timer
from perdure.storage.memory import Store

from . import durable
from .attempts import Attempts, Running
from .client import Client
from .invariants import Invariants, Violation
from .model import check_end
from .network import Channel, Network
from .workload import COUNTER, Effects, Op, build_app

TOPIC = "ops"
SOURCE = f"kafka://local/{TOPIC}"
SINK = f"service://{COUNTER}/add"
SUBSCRIPTION = catalog.subscription_id(SOURCE, SINK)


@dataclass(frozen=True)
class Faults:
    """Chances per step (or per delivery, per batch) of each fault."""

    crash_attempt: float = 0.03  # weight of the step that crashes an attempt in memory
    lose: float = 0.02  # a delivered message is lost: its stream breaks
    duplicate: float = 0.03  # a delivered message arrives twice
    duplicate_output: bool = False  # …also an attempt's output to the engine
    node_crash: float = 0.01  # per batch: the node dies mid-batch or just after the commit
    redeliver: float = 0.15  # a Kafka poll starts again below what it already delivered
    timer_twice: float = 0.05  # a due timer is submitted twice


@dataclass(frozen=True)
class Config:
    steps: int = 500  # steps with clients and faults; then the world drains without faults
    keys: int = 3
    flows: int = 2
    partitions: int = 2
    faults: Faults = field(default_factory=Faults)


@dataclass
class Stats:
    seed: int
    steps: int = 0
    batches: int = 0
    commands: int = 0
    attempts: int = 0
    node_crashes: int = 0
    faults: int = 0
    invocations: int = 0


class World:
    def __init__(self, seed: int, config: Config | None = None, narrate: Callable[[str], None] | None = None):
        self.seed = seed
        self.config = config or Config()
        self.rng = random.Random(seed)
        self.narrate = narrate or (lambda line: None)
        self.stats = Stats(seed)
        self.effects = Effects()
        self.app = build_app(self.effects)
        self.registry = registry_of(self.app)
        self.clock = ManualClock()
        self.store = Store()
        self.machine = StateMachine(self.registry, self.clock.now_ms)
        self.snapshot = durable.take(self.store)
        self.inbox: deque[Command] = deque()  # commands the processor has received, in order
        self.net = Network()
        self.timers: list[tuple[int, str, Timer]] = []
        self.attempts = Attempts(self.app, self.clock.now_ms)
        keys = [f"k{i}" for i in range(self.config.keys)]
        self.client = Client(self.rng, keys, [f"f{i}" for i in range(self.config.flows)])
        self.log: list[list[KafkaRecord]] = [[] for _ in range(self.config.partitions)]
        self.positions = [0] * self.config.partitions  # the consumer's, in memory
        self.invariants = Invariants(self)
        self.effects.check = self.invariants.run_executed
        self.draining = False

    # ---- the loop

    async def run(self) -> Stats:
        for _ in range(self.config.steps):
            await self._step()
        await self._drain()
        check_end(self)
        self.stats.invocations = len(self.store._tables.invocations)
        return self.stats

    async def _step(self) -> None:
        self.stats.steps += 1
        rng, f = self.rng, self.config.faults
        live = list(self.attempts.live.values())
        runnable = [r for r in live if r.runnable]
        blocked = [r for r in live if r.blocked and self._may_suspend(r)]
        choices: list[tuple[str, float]] = [
            ("client", 2.0),
            ("produce", 0.6),
            ("clock", 0.7),
            ("deliver", 6.0 if self.net else 0.0),
            ("batch", 4.0 if self.inbox else 0.0),
            ("attempt", 6.0 if runnable else 0.0),
            ("suspend", 0.4 if blocked else 0.0),
            ("crash", f.crash_attempt if live else 0.0),
            ("poll", 1.5 if self._behind() else 0.0),
        ]
        names = [n for n, w in choices if w > 0]
        what = rng.choices(names, weights=[w for _, w in choices if w > 0])[0]
        if what == "client":
            self._send_client(self.client.command(self.clock.now_ms()))
        elif what == "produce":
            self._produce()
        elif what == "clock":
            self._advance()
        elif what == "deliver":
            self._deliver(faults=True)
        elif what == "batch":
            await self._batch(faults=True)
        elif what == "attempt":
            self._run_attempt(rng.choice(runnable))
        elif what == "suspend":
            self._suspend(rng.choice(blocked))
        elif what == "crash":
            self._crash_attempt(rng.choice(live))
        elif what == "poll":
            self._poll(faults=True)
        self.invariants.after_step()

    async def _drain(self) -> None:
        """No more clients or faults: run until nothing is left to do, then check the end state."""
        self.draining = True
        for key in self.client.flows:  # every workflow that may wait on its promise gets one
            self._send_client(self.client.signal(key))
        for _ in range(50_000):
            self.stats.steps += 1
            live = list(self.attempts.live.values())
            runnable = [r for r in live if r.runnable]
            choices = [
                ("deliver", 3.0 if self.net else 0.0),
                ("batch", 2.0 if self.inbox else 0.0),
                ("attempt", 3.0 if runnable else 0.0),
                ("poll", 1.0 if self._behind() else 0.0),
            ]
            enabled = [(n, w) for n, w in choices if w > 0]
            if enabled:
                what = self.rng.choices([n for n, _ in enabled], weights=[w for _, w in enabled])[0]
                if what == "deliver":
                    self._deliver(faults=False)
                elif what == "batch":
                    await self._batch(faults=False)
                elif what == "attempt":
                    self._run_attempt(self.rng.choice(runnable))
                else:
                    self._poll(faults=False)
            elif paused := self._paused():
                for invocation_id in paused:  # the operator resumes what they paused
                    self._send_client(Resume(invocation_id))
            elif blocked := [r for r in live if r.blocked and self._may_suspend(r)]:
                self._suspend(blocked[0])  # nothing else to do: its inactivity timeout passes
            elif self.timers:
                self._advance()
            elif orphans := self._orphaned_awakeables():
                for command in orphans:  # their resolver was killed: an outside system completes them
                    self._send_client(command)
            else:
                self.invariants.after_step()
                return
            self.invariants.after_step()
        raise Violation("the world did not quiesce within 50,000 steps after the faults stopped")

    def _orphaned_awakeables(self) -> list[CompleteSignal]:
        """Adds suspended on an awakeable (signal 17+) with the value their op expects."""
        found = []
        for inv in self.invariants._invocations():
            signals = [i for i in inv.waiting_signals if i >= pm.FIRST_AWAKEABLE_SIGNAL]
            if inv.status is Status.SUSPENDED and signals:
                first = decode_entry(self.store._tables.read_journal(inv.id)[0])
                op = msgspec.json.decode(first.value.content, type=Op)
                found.append(CompleteSignal(inv.id, signals[0], value=msgspec.json.encode(op.n)))
        return found

    def _paused(self) -> list[str]:
        return sorted(i.id for i in self.invariants._invocations() if i.status is Status.PAUSED)

    # ---- the engine

    async def _batch(self, *, faults: bool) -> None:
        rng = self.rng
        size = rng.randint(1, min(4, len(self.inbox)))
        batch = [self.inbox.popleft() for _ in range(size)]
        txn = self.store.begin()
        results = []
        for command in batch:
            before = self.invariants.before_apply(txn, command)
            try:
                actions = self.machine.apply(txn, command)
            except Exception as e:
                raise Violation(f"the engine raised applying {_short(command)}: {e!r}") from e
            self.invariants.after_apply(txn, command, actions, before)
            results.append((command, actions))
        if faults and rng.random() < self.config.faults.node_crash / 2:
            self._crash_node("in the middle of a batch")
            return
        await self.store.commit(txn)
        self.stats.batches += 1
        self.stats.commands += len(batch)
        previous, self.snapshot = self.snapshot, durable.take(self.store)
        self.invariants.committed(previous)
        if faults and rng.random() < self.config.faults.node_crash / 2:
            self._crash_node("after a commit, before its actions were released")
            return
        for command, actions in results:
            self._release(command, actions)

    def _release(self, command: Command, actions: list[Any]) -> None:
        for action in actions:
            kind = type(action)
            if kind is StartAttempt:
                self._start(action)
            elif kind is Notify:
                self.net.send(("notify", action.invocation_id, str(action.attempt)), action)
            elif kind is AbortAttempt:
                self.attempts.abort(action.invocation_id)
            elif kind is ScheduleTimer:
                heapq.heappush(self.timers, (action.timer.fire_at, action.timer.id, action.timer))
            elif kind is Accepted:
                if isinstance(command, Invoke) and command.invocation_id == action.invocation_id:
                    self.client.accepted(action.invocation_id)
                elif isinstance(command, AttemptOutput):
                    self.client.known.append(action.invocation_id)  # a child: clients may name it

    def _start(self, action: StartAttempt) -> None:
        self.stats.attempts += 1
        started = self.attempts.start(action)
        if isinstance(started, list):  # failed at once, as the invoker reports it
            self._to_engine(action.invocation_id, action.attempt, started)

    def _crash_node(self, why: str) -> None:
        """The process dies: only what was committed survives; the node restarts and recovers."""
        self.stats.node_crashes += 1
        self.stats.faults += 1
        self.narrate(f"NODE CRASH {why}")
        durable.restore(self.store, self.snapshot)
        self.invariants.restored()
        self.attempts.clear()
        self.net.clear()
        self.inbox.clear()
        self.machine = StateMachine(self.registry, self.clock.now_ms)
        reader = self.store.reader()
        self.timers = [(t.fire_at, t.id, t) for t in reader.all_timers()]
        heapq.heapify(self.timers)
        stored = reader.offsets(SUBSCRIPTION)
        self.positions = [
            stored[TOPIC, p].next_offset if (TOPIC, p) in stored else 0 for p in range(self.config.partitions)
        ]
        self.inbox.append(Recover())

    # ---- attempts

    def _run_attempt(self, running: Running) -> None:
        for out in self.attempts.step(running):
            self._to_engine(running.invocation_id, running.number, out)

    def _may_suspend(self, running: Running) -> bool:
        """The invoker never suspends an attempt whose `ctx.run` result is being stored."""
        vm = running.attempt.vm
        return not any(vm.is_pending_run(h) for h in running.attempt.blocked_on)

    def _suspend(self, running: Running) -> None:
        self.narrate(f"suspend {running.invocation_id[-6:]}#{running.number}")
        for out in self.attempts.suspend(running):
            self._to_engine(running.invocation_id, running.number, out)

    def _crash_attempt(self, running: Running) -> None:
        """The attempt dies (its deployment crashed); the transport tells the engine, after
        what the attempt had already sent."""
        self.stats.faults += 1
        self.narrate(f"CRASH attempt {running.invocation_id[-6:]}#{running.number}")
        self.attempts.crash(running)
        error = pm.ErrorMessage(code=502, message="the attempt's connection broke")
        self._to_engine(running.invocation_id, running.number, [error])

    def _to_engine(self, invocation_id: str, number: int, messages: list[Any]) -> None:
        self.net.send(("out", invocation_id, str(number)), AttemptOutput(invocation_id, number, messages))

    # ---- the network

    def _send_client(self, command: Command) -> None:
        self.net.send(("client", str(self.rng.randrange(3))), command)

    def _deliver(self, *, faults: bool) -> None:
        rng, f = self.rng, self.config.faults
        channel = rng.choice(self.net.busy())
        message = self.net.pop(channel)
        kind = channel[0]
        if faults and rng.random() < f.lose:
            self.stats.faults += 1
            self.narrate(f"LOST on {_channel(channel)}: {_short(message)}")
            if kind != "client":
                self._break(channel[1], int(channel[2]))
            return
        copies = 1
        if faults and rng.random() < f.duplicate and (kind != "out" or f.duplicate_output):
            self.stats.faults += 1
            self.narrate(f"DUPLICATED on {_channel(channel)}: {_short(message)}")
            copies = 2
        for _ in range(copies):
            if kind == "notify":
                self.attempts.notify(message.invocation_id, message.attempt, list(message.messages))
            else:
                self.inbox.append(message)

    def _break(self, invocation_id: str, number: int) -> None:
        """A message of this attempt was lost: its connection is gone, in both directions."""
        self.net.drop(("out", invocation_id, str(number)))
        self.net.drop(("notify", invocation_id, str(number)))
        running = self.attempts.live.get(invocation_id)
        if running is not None and running.number == number:
            self.attempts.crash(running)
        error = pm.ErrorMessage(code=502, message="the attempt's connection broke")
        self.inbox.append(AttemptOutput(invocation_id, number, [error]))

    # ---- time

    def _advance(self) -> None:
        rng = self.rng
        now = self.clock.now_ms()
        target = now + rng.randint(1, 400)
        if self.timers and (self.draining or rng.random() < 0.5):
            target = max(target if not self.draining else now, self.timers[0][0])
        self.clock.set(target)
        while self.timers and self.timers[0][0] <= target:
            _, _, timer = heapq.heappop(self.timers)
            self.inbox.append(FireTimer(timer))
            if not self.draining and rng.random() < self.config.faults.timer_twice:
                self.stats.faults += 1
                self.inbox.append(FireTimer(timer))

    # ---- Kafka

    def _produce(self) -> None:
        rng = self.rng
        partition = rng.randrange(self.config.partitions)
        key = rng.choice(self.client.keys)
        op = Op(id=f"rec{partition}.{len(self.log[partition])}", n=rng.randint(1, 9))
        records = self.log[partition]
        value = None if rng.random() < 0.03 else _encode(op)  # a poison record now and then
        records.append(KafkaRecord(offset=len(records), key=key.encode(), value=value))

    def _behind(self) -> bool:
        return any(pos < len(records) for pos, records in zip(self.positions, self.log, strict=True))

    def _poll(self, *, faults: bool) -> None:
        rng = self.rng
        behind = [p for p in range(self.config.partitions) if self.positions[p] < len(self.log[p])]
        partition = rng.choice(behind)
        start = self.positions[partition]
        if faults and start > 0 and rng.random() < self.config.faults.redeliver:
            start = rng.randrange(start)  # a rebalance: records are delivered again
            self.stats.faults += 1
        records = self.log[partition][start : start + rng.randint(1, 4)]
        self.positions[partition] = max(self.positions[partition], records[-1].offset + 1)
        rejected = {r.offset: _poison(r) for r in records if r.value is None}
        self.inbox.append(Ingest(SUBSCRIPTION, SINK, TOPIC, partition, records, rejected))


def _encode(op: Op) -> bytes:
    return msgspec.json.encode(op)


def _poison(record: KafkaRecord) -> Failure:
    """What the Kafka intake tells the engine of a record its handler's serde rejects."""
    return Failure(400, f"record {TOPIC}/{record.offset} has no value")


def _channel(channel: Channel) -> str:
    return "/".join(c[-6:] for c in channel)


def _short(message: Any) -> str:
    name = type(message).__name__
    if isinstance(message, AttemptOutput):
        inner = ",".join(
            type(m).__name__.removesuffix("Message").removesuffix("Command") for m in message.messages
        )
        return f"{name}({message.invocation_id[-6:]}#{message.attempt}: {inner})"
    if isinstance(message, Notify):
        return f"{name}({message.invocation_id[-6:]}#{message.attempt})"
    invocation_id = getattr(message, "invocation_id", None)
    return f"{name}({invocation_id[-6:]})" if isinstance(invocation_id, str) else name


__all__ = ["Config", "Faults", "Stats", "Status", "Violation", "World"]
