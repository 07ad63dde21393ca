"""The workload: what clients ask of the engine, drawn from the seed, and what they were told.

Clients send `counter/add` operations (now, delayed, with or without an idempotency key, and
again after a while: a client retrying), read totals through a shared handler, start workflows
and signal them, cancel and kill invocations, and produce Kafka records for the subscription.
What the client was *acknowledged* (an `Accepted` released after its commit) is what the engine
promised to run.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import msgspec

from perdure.engine.commands import Cancel, Command, Invoke, Kill, Pause, Resume
from perdure.protocol import ids

from .workload import COUNTER, FLOW, Op

_json = msgspec.json.Encoder()


@dataclass
class Client:
    rng: random.Random
    keys: list[str]
    flows: list[str]
    sent: dict[str, Invoke] = field(default_factory=dict)  # every Invoke sent, by invocation id
    acknowledged: set[str] = field(default_factory=set)
    targeted: set[str] = field(default_factory=set)  # asked to cancel or kill (maybe lost)
    paused: set[str] = field(default_factory=set)  # asked to pause, not resumed since
    pause_asked: set[str] = field(default_factory=set)  # ever asked to pause
    known: list[str] = field(default_factory=list)  # invocation ids a client may name
    ops: int = 0

    def op(self) -> Op:
        rng = self.rng
        self.ops += 1
        send_to = rng.choice(self.keys) if rng.random() < 0.2 else None
        return Op(
            id=f"op{self.ops}",
            n=rng.randint(1, 9),
            sleep_ms=rng.choice((0, 0, 0, 0, 120, 2_500)),
            compute=rng.random() < 0.2,
            awakeable=rng.random() < 0.15,
            send_to=send_to,
            send_n=rng.randint(1, 9) if send_to else 0,
            send_delay_ms=rng.choice((0, 0, 700)) if send_to else 0,
        )

    def command(self, now: int) -> Command:
        """The next thing a client asks (the caller puts it on a client connection)."""
        rng = self.rng
        roll = rng.random()
        if roll < 0.5:
            return self._add(now)
        if roll < 0.6 and self.sent:
            return self.sent[rng.choice(sorted(self.sent))]  # a retry: same invocation id
        if roll < 0.68:
            key = rng.choice(self.keys)
            return self._remember(Invoke(self._id(COUNTER, key), COUNTER, "get", key, b""))
        if roll < 0.78:
            key = rng.choice(self.flows)
            x = rng.randint(1, 9)
            return self._remember(Invoke(ids.workflow_id(FLOW, key), FLOW, "run", key, _json.encode(x)))
        if roll < 0.88:
            key = rng.choice(self.flows)
            return self.signal(key)
        if roll < 0.94 and self.known:
            target = rng.choice(self.known)
            self.targeted.add(target)
            return Kill(target) if rng.random() < 0.4 else Cancel(target)
        if self.known:  # an operator pauses an invocation and, later, resumes it
            target = rng.choice(self.known)
            if target in self.paused and rng.random() < 0.7:
                self.paused.discard(target)
                return Resume(target)
            self.paused.add(target)
            self.pause_asked.add(target)
            return Pause(target)
        return self._add(now)

    def signal(self, key: str) -> Invoke:
        value = self.rng.randint(10, 99)
        return self._remember(Invoke(self._id(FLOW, key), FLOW, "signal", key, _json.encode(value)))

    def _id(self, service: str, key: str) -> str:
        """A fresh id for a keyed target (like `ids.random_id`, but drawn from the seed)."""
        return ids.encode(ids.partition_key(service, key), self.rng.randbytes(16))

    def _add(self, now: int) -> Invoke:
        rng = self.rng
        key = rng.choice(self.keys)
        op = self.op()
        idempotency_key = f"idem-{op.id}" if rng.random() < 0.3 else None
        if idempotency_key is not None:
            invocation_id = ids.idempotent_id(COUNTER, "add", key, idempotency_key)
        else:
            invocation_id = self._id(COUNTER, key)
        delay = rng.choice((0, 0, 0, 300, 4_000))
        return self._remember(
            Invoke(
                invocation_id,
                COUNTER,
                "add",
                key,
                _json.encode(op),
                idempotency_key=idempotency_key,
                execute_at=now + delay if delay else None,
            )
        )

    def _remember(self, invoke: Invoke) -> Invoke:
        self.sent.setdefault(invoke.invocation_id, invoke)
        return invoke

    def accepted(self, invocation_id: str) -> None:
        if invocation_id not in self.acknowledged:
            self.acknowledged.add(invocation_id)
            self.known.append(invocation_id)
