"""Dead letters: a Kafka record whose invocation failed for good, parked instead of blocking its key.

A subscription with `on.failure` = `park` or `topic:NAME` accepts its records as invocations that
carry the policy (`Invocation.on_failure`). When one fails for good — a terminal error, its retry
policy exhausted, or a record the sink cannot take (undecodable, no key) — `park` keeps it with
status PARKED and a `DeadLetter`: the record as consumed (rebuilt from the invocation's input
entry, which holds its value and headers), the error and the attempts. Its key's lock is released
in the same transaction, so the key's later records go on.

`redrive` runs a parked record again as a new invocation with the same input, in the parked one's
partition. Re-drives of one key's records applied in their offset order queue in that order behind
the key (`perdure.engine.lifecycle.enqueue`), which is what keeps their original order. The new
invocation carries the same policy: if it fails again, it is parked in turn (`redrive_of` says
which record it re-drove).
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from perdure.engine import lifecycle
from perdure.engine.actions import Rejected
from perdure.engine.commands import Invoke, MarkProduced
from perdure.engine.step import Step
from perdure.protocol import ids
from perdure.storage.api import DeadLetter, Failure, Invocation, Redrive, Status

#: Headers the intake puts before a record's own (`perdure.engine.intake.headers`).
_INTAKE_HEADERS = (
    "kafka.topic",
    "kafka.partition",
    "kafka.offset",
    "kafka.timestamp",
    "restate.subscription.id",
)
#: The header a re-driven invocation's input carries: the parked invocation it re-drives.
REDRIVE_HEADER = "perdure.redrive.of"


def record_of(headers: list[tuple[str, str]]) -> tuple[dict[str, str], bytes | None, list[tuple[str, bytes]]]:
    """Split an input's headers into the intake's (`kafka.*`), the record key, the record's own headers."""
    intake = dict(headers[: len(_INTAKE_HEADERS)])
    rest = headers[len(_INTAKE_HEADERS) :]
    key = None
    if rest and rest[0][0] == "kafka.key":
        key = base64.urlsafe_b64decode(rest[0][1])
        rest = rest[1:]
    own = []
    for name, value in rest:
        if name == REDRIVE_HEADER:
            intake[name] = value
            continue
        if value.startswith("base64:"):
            own.append((name, base64.urlsafe_b64decode(value[7:])))
        else:
            own.append((name, value.encode()))
    return intake, key, own


def _input(step: Step, inv: Invocation) -> Any:
    journal = step.read_journal(inv)
    return journal[0] if journal else None


def park(step: Step, inv: Invocation, failure: Failure) -> None:
    """Keep `inv`'s record in the dead-letter store (called as it completes with `failure`)."""
    entry = _input(step, inv)
    headers = [(h.key, h.value) for h in entry.headers] if entry is not None else []
    intake, key, own = record_of(headers)
    inv.status = Status.PARKED
    inv.retention_until = None  # kept until discarded
    inv.dead_letter = DeadLetter(
        subscription=intake.get("restate.subscription.id", ""),
        topic=intake.get("kafka.topic", ""),
        partition=int(intake.get("kafka.partition", -1)),
        offset=int(intake.get("kafka.offset", -1)),
        key=key,
        headers=own,
        value=entry.value.content if entry is not None else None,
        error=failure,
        attempts=inv.attempt,
        policy=inv.on_failure or "park",
        parked_at=step.now,
        redrive_of=intake.get(REDRIVE_HEADER),
    )
    step.counters.parked += 1


def redrive_id(parked_id: str, n: int) -> str:
    """The n-th re-drive of a parked invocation: in its partition, the same id however often the
    command is applied (a command replayed after a crash finds the invocation it created)."""
    digest = hashlib.blake2b(f"redrive\0{parked_id}\0{n}".encode(), digest_size=16).digest()
    return ids.encode(ids.partition_key_of(parked_id), digest)


def _parked(step: Step, invocation_id: str, verb: str) -> Invocation | None:
    inv = step.load(invocation_id)
    if inv is None:
        step.actions.append(Rejected(invocation_id, "no such invocation", code=404))
        return None
    letter = inv.dead_letter
    if inv.status is not Status.PARKED or letter is None:
        step.actions.append(
            Rejected(invocation_id, f"cannot {verb} an invocation that is {inv.status.value}")
        )
        return None
    if letter.state != "parked":
        step.actions.append(Rejected(invocation_id, f"cannot {verb} a record that was {letter.state}"))
        return None
    return inv


def redrive(step: Step, invocation_id: str) -> None:
    inv = _parked(step, invocation_id, "re-drive")
    if inv is None:
        return
    letter = inv.dead_letter
    assert letter is not None
    entry = _input(step, inv)
    if entry is None:
        step.actions.append(Rejected(invocation_id, "its input is gone"))
        return
    headers = [(h.key, h.value) for h in entry.headers if h.key != REDRIVE_HEADER]
    headers.append((REDRIVE_HEADER, inv.id))
    new_id = redrive_id(inv.id, len(letter.redrives) + 1)
    letter.redrives.append(Redrive(at=step.now, invocation_id=new_id))
    letter.state = "redriven"
    lifecycle.invoke(
        step,
        Invoke(
            invocation_id=new_id,
            service=inv.service,
            handler=inv.handler,
            key=inv.key,
            input=entry.value.content,
            headers=headers,
            on_failure=inv.on_failure,
            queue_key=inv.queue_key,
        ),
    )
    step.track(inv)


def discard(step: Step, invocation_id: str) -> None:
    """The record is given up: an ordinary failed invocation again, forgotten after its retention."""
    inv = _parked(step, invocation_id, "discard")
    if inv is None:
        return
    assert inv.dead_letter is not None
    inv.dead_letter.state = "discarded"
    inv.status = Status.COMPLETED
    info = step.registry.get(inv.service, inv.handler)
    inv.retention_until = step.now + (info.journal_retention_ms if info is not None else 0)
    step.track(inv)


def mark_produced(step: Step, cmd: MarkProduced) -> None:
    inv = step.load(cmd.invocation_id)
    if inv is None or inv.dead_letter is None:
        return
    letter = inv.dead_letter
    if cmd.checkpoint is not None and letter.checkpoint is None:
        letter.checkpoint = cmd.checkpoint
    if cmd.produced:
        letter.produced = True
    step.track(inv)
