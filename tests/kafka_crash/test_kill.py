"""SIGKILL the engine again and again while it ingests Kafka records and runs their handlers.

RECORDS records `{"seq": n}` over KEYS keys and PARTITIONS partitions are produced up front to the
test's own tansu broker, which outlives every kill. The worker (`worker.py`) consumes them through a
subscription declared in its app; its exclusive handler runs one `ctx.run` step that appends a line
with a fresh token to a log outside perdure, then counts the record in the key's state and appends
its seq to the key's `seen` list. The worker is killed at random moments (seeded: after a random
number of completions in each life), restarted each time, and finally left to finish. Then:

- every record became exactly one invocation, completed, with the id derived from its
  (subscription, topic, partition, offset); nothing else was invoked; the stored offsets are the
  end of each partition;
- each key's `count` is its number of records and its `seen` list is its records in offset order;
- a step whose result was stored never ran again: the token in the record's journal (and output)
  is the last log line for that record (earlier lines are executions whose result a kill lost).

Reproduce a run with PERDURE_CRASH_SEED=<seed printed by the test>.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest

from perdure.engine.intake import record_id
from perdure.engine.step import decode_entry
from perdure.kafka import Broker
from perdure.protocol import messages as pm
from perdure.storage import open_store
from perdure.storage.api import Status

from .procs import Produced, Progress, Worker, key_of, produce, progress, subscription_id, tail
from .worker import PROGRESS_EVERY, SERVICE

RECORDS = 20_000
KEYS = 1_000
PARTITIONS = 4
KILLS = 12
MIN_MID_RUN_KILLS = 10
# Each life is killed after 200-1,400 completions (plus up to 50 ms), while ingest (held to
# MAX_PENDING per partition) and handlers are both busy: about half the records are left for the
# final run.
KILL_AFTER_COMPLETIONS = (200, 1_500)
KILL_JITTER_S = 0.05
MAX_PENDING = 250
STEP_MS = 3.0  # the step sleeps up to this after its effect, before its result is stored
# tansu holds a group join for half the session timeout, and a killed member stays in the group
# until its session expires: short, so each life consumes ~1.3 s after its start (~11 s by default).
OPTIONS = ("session.timeout.ms=1000", "heartbeat.interval.ms=100")
START_TIMEOUT_S = 20.0
LIFE_TIMEOUT_S = 30.0
FINAL_TIMEOUT_S = 60.0

_RUN_COMPLETION = pm.TYPE_OF[pm.RunCompletion]


def read_log(path: Path) -> dict[tuple[str, int], list[str]]:
    """The tokens of every execution of each record's step, in write order."""
    runs: dict[tuple[str, int], list[str]] = defaultdict(list)
    for line in path.read_text().splitlines():
        key, seq, token = line.split(" ")
        runs[key, int(seq)].append(token)
    return runs


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_sigkill_while_consuming_loses_and_repeats_nothing(
    backend: str, crash_broker: Broker, tmp_path: Path, postgres: Callable[[], str]
) -> None:
    seed = int(os.environ.get("PERDURE_CRASH_SEED", random.randrange(2**32)))
    print(f"\nkafka kill test seed: {seed} (PERDURE_CRASH_SEED={seed} to replay the kill times)")
    rng = random.Random(seed)
    topic = f"kill{seed}"
    started = time.monotonic()
    asyncio.run(crash_broker.create_topic(topic, PARTITIONS))
    where = asyncio.run(produce(crash_broker.bootstrap_servers, topic, range(RECORDS), KEYS))
    produced = Produced(where, KEYS)
    assert len({p for p, _ in where}) == PARTITIONS

    db = f"sqlite:///{tmp_path / 'kafka.db'}" if backend == "sqlite" else postgres()
    log, stderr = tmp_path / "steps.log", tmp_path / "worker.stderr"
    args = [
        *("--store", db, "--log", str(log), "--bootstrap", crash_broker.bootstrap_servers),
        *("--topic", topic, "--expected", str(RECORDS), "--step-ms", str(STEP_MS)),
        *("--max-pending", str(MAX_PENDING)),
        *(arg for option in OPTIONS for arg in ("--option", option)),
    ]

    at_kills: list[Progress] = []
    to_consuming: list[float] = []
    lines_at_kills: list[int] = []
    for life in range(KILLS):
        worker = Worker(stderr, *args)
        try:
            assert worker.read_until(b"STARTED", timeout=START_TIMEOUT_S), (
                f"life {life}: the worker did not start; stderr:\n{tail(stderr)}"
            )
            # Kill after a random number of completions in this life (counted by the worker, so
            # the kills land mid-run however fast the machine is), a little after it said so.
            target = rng.randrange(*KILL_AFTER_COMPLETIONS, PROGRESS_EVERY)
            reached = worker.read_until(b"\nAT %d\n" % target, b"DONE", timeout=LIFE_TIMEOUT_S)
            assert reached, f"life {life}: {target} completions not reached; stderr:\n{tail(stderr)}"
            to_consuming.append(worker.stamps.get(b"CONSUMING", float("nan")) - worker.started_at)
            time.sleep(rng.uniform(0, KILL_JITTER_S))
            worker.kill()
        finally:
            worker.close()
        if b"DONE" in worker.output:
            break
        at_kills.append(progress(db, topic))
        lines_at_kills.append(log.read_bytes().count(b"\n"))
    kill_phase_s = time.monotonic() - started

    worker = Worker(stderr, *args)
    try:
        assert worker.read_until(b"DONE", timeout=FINAL_TIMEOUT_S), (
            f"the final run did not finish; output {worker.output!r}; stderr:\n{tail(stderr)}"
        )
        assert worker.proc.wait(timeout=30) == 0
    finally:
        worker.close()
    total_s = time.monotonic() - started

    runs = read_log(log)
    _verify(db, topic, produced, runs)
    executions = sum(len(tokens) for tokens in runs.values())
    repeated = sum(len(tokens) > 1 for tokens in runs.values())
    print(
        f"kills: {len(at_kills)} (all mid-run); records ingested / completed at each kill:"
        f" {', '.join(f'{p.ingested}/{p.completed}' for p in at_kills)}"
    )
    print(
        f"step executions: {executions} for {RECORDS} records; re-executed because a kill lost the"
        f" result: {executions - RECORDS} executions over {repeated} records;"
        f" log lines at each kill: {', '.join(map(str, lines_at_kills))}"
    )
    print(
        "each life's start to its first ingest (nan: killed while still finishing what it recovered):"
        f" {', '.join(f'{t:.1f}' for t in to_consuming)} s"
    )
    print(f"kill phase {kill_phase_s:.1f} s, total {total_s:.1f} s (with producing, the final run, checks)")
    assert len(at_kills) >= MIN_MID_RUN_KILLS, f"only {len(at_kills)} kills hit an unfinished run"
    assert len({p.ingested for p in at_kills}) > 1, "every kill found the same ingest progress"


def _verify(db: str, topic: str, produced: Produced, runs: dict[tuple[str, int], list[str]]) -> None:
    store = open_store(db)
    try:
        reader = store.reader()
        counts = reader.count_invocations()
        assert counts[Status.COMPLETED] == RECORDS and sum(counts.values()) == RECORDS, counts

        sub = subscription_id(topic)
        ends = defaultdict(int)
        for partition, offset in produced.where:
            ends[partition] = max(ends[partition], offset + 1)
        assert {tp: pos.next_offset for tp, pos in reader.offsets(sub).items()} == dict(
            ((topic, p), end) for p, end in ends.items()
        )

        for seq, (partition, offset) in enumerate(produced.where):
            key = key_of(seq, KEYS)
            invocation_id = record_id(sub, topic, partition, offset, SERVICE, key)
            inv = reader.get_invocation(invocation_id)
            assert inv is not None, f"record {seq} ({partition}/{offset}) has no invocation"
            assert inv.key == key, (seq, inv.key)
            assert inv.outcome is not None and inv.outcome.failure is None, (seq, inv.outcome)
            output = msgspec.json.decode(inv.outcome.value or b"")
            journal = reader.read_journal(invocation_id)
            stored = [decode_entry(e) for e in journal if e.type == _RUN_COMPLETION]
            assert len(stored) == 1, f"record {seq}: {len(stored)} step results journaled"
            token = msgspec.json.decode(stored[0].value.content)
            assert output == token, f"record {seq}: output {output} but journal {token}"
            executions = runs.get((key, seq), [])
            assert token in executions, f"record {seq}: the stored token was never logged"
            assert executions[-1] == token, f"record {seq}: the step ran again after its result was stored"

        extra = set(runs) - {(key_of(s, KEYS), s) for s in range(RECORDS)}
        assert not extra, f"steps of unknown records ran: {sorted(extra)[:5]}"

        for k in range(KEYS):
            key = key_of(k, KEYS)
            stored_state = reader.get_all_state(SERVICE, key).items()
            state = {n.decode(): msgspec.json.decode(v) for n, v in stored_state}
            expected = produced.seqs_of_key(key)
            assert expected == sorted(expected)  # one producer: offset order is send order
            assert state == {"count": len(expected), "seen": expected}, f"key {key}"
    finally:
        asyncio.run(store.close())
