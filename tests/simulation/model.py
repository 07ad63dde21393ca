"""The end state a drained world must reach, computed from what the workload asked.

- Every invocation has completed; no timer, key lock or queue is left.
- Every acknowledged invocation exists (it was durable when the client was told).
- Nothing failed unless a client cancelled or killed it, its caller, or the call it waited on
  (409), or it is a Kafka record its handler rejects (400).
- Every Kafka record produced became exactly one invocation, and the stored offsets are at the
  end of each partition.
- Per counter key: `total` is the sum of the `n` of its successful adds and `log` lists their
  ops in the order they entered the key's queue, each once.
- Every successful handler ran each of its `ctx.run` steps at least once.
- Per workflow key: at most one signal won its promise, and the run returned that value + its
  input.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from perdure.engine import intake
from perdure.engine.step import decode_entry
from perdure.protocol import messages as pm
from perdure.storage.api import Invocation, Status

from .invariants import Violation, _describe
from .workload import COUNTER, FLOW, WORKER, Op

if TYPE_CHECKING:
    from .world import World

_CALL_ID = pm.TYPE_OF[pm.CallInvocationIdCompletion]
_STEPS = {(COUNTER, "add"): "effect", (WORKER, "compute"): "compute", (FLOW, "run"): "effect"}


def check_end(w: World) -> None:
    from .world import SUBSCRIPTION, TOPIC

    w.invariants.scan()
    tables = w.store._tables
    invocations = {inv.id: inv for inv in w.invariants._invocations()}
    unfinished = [inv for inv in invocations.values() if inv.status is not Status.COMPLETED]
    if unfinished:
        raise Violation(
            "stuck after draining: " + "; ".join(f"{_describe(i)} {i.status.value}" for i in unfinished)
        )
    if tables.timers or tables.locks or tables.inboxes:
        raise Violation(f"left after draining: timers {list(tables.timers)}, locks {tables.locks}")
    missing = [i for i in w.client.acknowledged if i not in invocations]
    if missing:
        raise Violation(f"acknowledged but not stored: {missing}")

    inputs = {inv.id: _input(w, inv.id) for inv in invocations.values()}
    cancelled = _cancelled(w, invocations)
    for inv in invocations.values():
        outcome = inv.outcome
        assert outcome is not None
        if outcome.failure is None:
            step = _STEPS.get((inv.service, inv.handler))
            if step is not None and w.effects.runs.get((inv.id, step), 0) < 1:
                raise Violation(f"{_describe(inv)} succeeded but its ctx.run {step!r} never ran")
            continue
        poison = outcome.failure.code == 400 and inv.service == COUNTER and not inputs[inv.id]
        if not ((inv.id in cancelled and outcome.failure.code == 409) or poison):
            raise Violation(f"{_describe(inv)} failed: {outcome.failure}")

    offsets = {tp: p.next_offset for tp, p in w.store.reader().offsets(SUBSCRIPTION).items()}
    for partition, records in enumerate(w.log):
        if records and offsets.get((TOPIC, partition)) != len(records):
            raise Violation(
                f"partition {partition}: stored offset {offsets.get((TOPIC, partition))}, log {len(records)}"
            )
        for record in records:
            key = intake.object_key(record.key or b"")
            rid = intake.record_id(SUBSCRIPTION, TOPIC, partition, record.offset, COUNTER, key)
            if rid not in invocations:
                raise Violation(f"Kafka record {partition}/{record.offset} has no invocation")

    adds = {i: inv for i, inv in invocations.items() if (inv.service, inv.handler) == (COUNTER, "add")}
    ops = {i: msgspec.json.decode(inputs[i], type=Op) for i, inv in adds.items() if inputs[i]}
    seen_ops: dict[str, str] = {}
    for invocation_id, op in ops.items():
        if op.id in seen_ops:
            raise Violation(f"op {op.id} became two invocations: {seen_ops[op.id]} and {invocation_id}")
        seen_ops[op.id] = invocation_id
    for key in w.client.keys:
        ok = [i for k, i in w.invariants.entered if k == (COUNTER, key) and _succeeded(adds.get(i))]
        state = {
            k.decode(): msgspec.json.decode(v)
            for k, v in w.store.reader().get_all_state(COUNTER, key).items()
        }
        want_log = [ops[i].id for i in ok]
        want_total = sum(ops[i].n for i in ok)
        if state.get("log", []) != want_log or state.get("total", 0) != want_total:
            raise Violation(f"state of {key}: {state}, the model says total={want_total} log={want_log}")
    _workflows(w, invocations, inputs)


def _workflows(w: World, invocations: dict[str, Invocation], inputs: dict[str, bytes]) -> None:
    for key in w.client.flows:
        won = [
            inv
            for inv in invocations.values()
            if (inv.service, inv.handler, inv.key) == (FLOW, "signal", key)
            and inv.outcome is not None
            and inv.outcome.value == b'"won"'
        ]
        if len(won) > 1:
            raise Violation(f"workflow {key}: {len(won)} signals won the promise")
        runs = [i for i in invocations.values() if (i.service, i.handler, i.key) == (FLOW, "run", key)]
        for run in runs:
            if _succeeded(run) and won:
                want = msgspec.json.decode(inputs[won[0].id]) + msgspec.json.decode(inputs[run.id])
                assert run.outcome is not None
                if msgspec.json.decode(run.outcome.value or b"null") != want:
                    raise Violation(
                        f"workflow {key} returned {run.outcome.value!r}, the winning signal says {want}"
                    )


def _cancelled(w: World, invocations: dict[str, Invocation]) -> set[str]:
    """What a cancellation or kill may have failed: the targets, and through the call graph
    (a cancellation travels down to the calls waited on, their 409 back up to every caller —
    two callers may share one idempotent call, the second after it completed)."""
    failed = {
        i
        for i, inv in invocations.items()
        if inv.outcome and inv.outcome.failure and inv.outcome.failure.code == 409
    }
    edges: dict[str, set[str]] = {}
    for inv in invocations.values():
        for entry in w.store._tables.read_journal(inv.id):
            if entry.type == _CALL_ID:
                callee = decode_entry(entry).invocation_id
                edges.setdefault(inv.id, set()).add(callee)
                edges.setdefault(callee, set()).add(inv.id)
    targeted = w.client.targeted
    found = set(targeted)
    todo = list(targeted)
    while todo:
        for neighbour in edges.get(todo.pop(), ()):
            if neighbour in failed and neighbour not in found:
                found.add(neighbour)
                todo.append(neighbour)
    return found


def _succeeded(inv: Invocation | None) -> bool:
    return inv is not None and inv.outcome is not None and inv.outcome.failure is None


def _input(w: World, invocation_id: str) -> bytes:
    journal = w.store._tables.read_journal(invocation_id)
    message: Any = decode_entry(journal[0])
    return bytes(message.value.content)
