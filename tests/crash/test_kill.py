"""SIGKILL the engine mid-run, again and again, then check nothing was lost, doubled or reordered.

The worker (`worker.py`) runs a virtual object whose three `ctx.run` steps each append a line with
a fresh token to a log outside perdure and return that token. After the kills, one last run must
finish; then the journal, the outputs and the state must agree with the log:

- every invocation completed once, its output holding the tokens its journal recorded;
- a step whose result was stored never ran again: the stored token is the step's last log line
  (earlier lines are executions whose result a kill lost);
- each key's state counts its invocations once and saw them in submission order.

Reproduce a run with PERDURE_CRASH_SEED=<seed printed by the test>.
"""

from __future__ import annotations

import asyncio
import os
import random
import select
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import pytest

from perdure.engine.step import decode_entry
from perdure.protocol import ids
from perdure.protocol import messages as pm
from perdure.storage import open_store
from perdure.storage.api import Status

from .worker import HANDLER, SERVICE, STEPS, idempotency_key, key_of

WORKER = Path(__file__).with_name("worker.py")
TRIALS = 20
MIN_MID_RUN_KILLS = 15
INVOCATIONS = 200
KEYS = 20
# Steps of up to 0.75 s (0.375 s on average) make one key's ten invocations about 11 s of work, of
# which twenty kills after 0.05-1.0 s each leave roughly half for the final run.
STEP_MS = 500
KILL_AFTER_S = (0.05, 1.0)
START_TIMEOUT_S = 20.0
FINAL_TIMEOUT_S = 120.0

_RUN_COMMAND = pm.TYPE_OF[pm.RunCommand]
_RUN_COMPLETION = pm.TYPE_OF[pm.RunCompletion]


class Worker:
    """One worker process; its stdout read without blocking, by the raw pipe."""

    def __init__(self, store: str, log: Path, stderr: Path) -> None:
        with stderr.open("ab") as err:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    str(WORKER),
                    "--store",
                    store,
                    "--log",
                    str(log),
                    "--invocations",
                    str(INVOCATIONS),
                    "--keys",
                    str(KEYS),
                    "--step-ms",
                    str(STEP_MS),
                ],
                stdout=subprocess.PIPE,
                stderr=err,
            )
        self.output = b""

    def read_until(self, marker: bytes, timeout: float) -> bool:
        """Read stdout until `marker` shows up (True), the pipe closes or the time is up (False)."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while marker not in self.output:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 4096)
                if not chunk:
                    return False
                self.output += chunk
        return True

    def kill(self) -> None:
        """SIGKILL by pid (only while unreaped, so the pid is still ours), then reap it."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def close(self) -> None:
        self.kill()
        if self.proc.stdout is not None:
            self.read_until(b"\0never\0", timeout=1.0)  # drain what it printed before dying
            self.proc.stdout.close()


@dataclass
class Log:
    """The steps' trail: the tokens of every execution of each (invocation, step), in write order."""

    runs: dict[tuple[int, int], list[str]] = field(default_factory=lambda: defaultdict(list))
    lines: int = 0

    @classmethod
    def read(cls, path: Path) -> Log:
        log = cls()
        for line in path.read_text().splitlines():
            tag, step, token = line.split(" ")
            log.runs[int(tag), int(step)].append(token)
            log.lines += 1
        return log


def _line_count(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def _tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_sigkill_mid_run_loses_and_repeats_nothing(
    backend: str, tmp_path: Path, postgres: Callable[[], str]
) -> None:
    seed = int(os.environ.get("PERDURE_CRASH_SEED", random.randrange(2**32)))
    print(f"\nkill test seed: {seed} (PERDURE_CRASH_SEED={seed} to replay the kill times)")
    rng = random.Random(seed)
    db = f"sqlite:///{tmp_path / 'crash.db'}" if backend == "sqlite" else postgres()
    log, stderr = tmp_path / "steps.log", tmp_path / "worker.stderr"
    started = time.monotonic()

    mid_run_kills = mid_step_kills = 0
    for trial in range(TRIALS):
        worker = Worker(db, log, stderr)
        try:
            assert worker.read_until(b"STARTED", START_TIMEOUT_S), (
                f"trial {trial}: the worker did not start; stderr:\n{_tail(stderr)}"
            )
            lines_before = _line_count(log)
            time.sleep(rng.uniform(*KILL_AFTER_S))
            worker.kill()
        finally:
            worker.close()
        if b"DONE" not in worker.output:
            mid_run_kills += 1
            mid_step_kills += _line_count(log) > lines_before
    kill_phase_s = time.monotonic() - started

    worker = Worker(db, log, stderr)
    try:
        finished = worker.read_until(b"DONE", FINAL_TIMEOUT_S)
        assert finished, f"the final run did not finish; output {worker.output!r}; stderr:\n{_tail(stderr)}"
        assert worker.proc.wait(timeout=30) == 0
    finally:
        worker.close()
    total_s = time.monotonic() - started

    trail = Log.read(log)
    repeated = _verify(db, trail)
    print(
        f"kills: {TRIALS}, mid-run: {mid_run_kills} ({mid_step_kills} after steps had run in that life),"
        f" finished before the kill: {TRIALS - mid_run_kills};"
        f" step executions: {trail.lines} for {INVOCATIONS * len(STEPS)} steps,"
        f" re-executed (result lost in a kill): {trail.lines - INVOCATIONS * len(STEPS)}"
        f" over {repeated} steps; kill phase {kill_phase_s:.1f} s, total {total_s:.1f} s"
    )
    assert mid_run_kills >= MIN_MID_RUN_KILLS, f"only {mid_run_kills} of {TRIALS} kills hit an unfinished run"


def _verify(db: str, trail: Log) -> int:
    """Check the store against the log; returns how many steps ran more than once."""
    store = open_store(db)
    try:
        reader = store.reader()
        counts = reader.count_invocations()
        assert counts[Status.COMPLETED] == INVOCATIONS, counts
        assert sum(counts.values()) == INVOCATIONS, counts

        for i in range(INVOCATIONS):
            invocation_id = ids.idempotent_id(SERVICE, HANDLER, key_of(i, KEYS), idempotency_key(i))
            inv = reader.get_invocation(invocation_id)
            assert inv is not None, f"invocation {i} is missing"
            assert inv.status is Status.COMPLETED, (i, inv.status)
            assert inv.outcome is not None and inv.outcome.failure is None, (i, inv.outcome)
            output = msgspec.json.decode(inv.outcome.value or b"")

            journal = reader.read_journal(invocation_id)
            runs = sum(entry.type == _RUN_COMMAND for entry in journal)
            assert runs == len(STEPS), f"invocation {i} journaled {runs} steps"
            completions = sorted(
                (decode_entry(entry) for entry in journal if entry.type == _RUN_COMPLETION),
                key=lambda c: c.completion_id,
            )
            journaled = [msgspec.json.decode(c.value.content) for c in completions]
            assert output == journaled, f"invocation {i}: output {output} but journal {journaled}"

            for step, token in zip(STEPS, journaled, strict=True):
                executions = trail.runs.get((i, step), [])
                assert token in executions, f"invocation {i} step {step}: stored token never logged"
                assert executions[-1] == token, (
                    f"invocation {i} step {step} ran again after its result was stored: {executions}"
                )

        extra = set(trail.runs) - {(i, s) for i in range(INVOCATIONS) for s in STEPS}
        assert not extra, f"steps of unknown invocations ran: {sorted(extra)[:5]}"

        for k in range(KEYS):
            key = key_of(k, KEYS)
            stored = reader.get_all_state(SERVICE, key)
            state = {name.decode(): msgspec.json.decode(value) for name, value in stored.items()}
            tags = list(range(k, INVOCATIONS, KEYS))
            assert state == {"count": len(tags), "seen": tags}, f"key {key}"
        return sum(len(tokens) > 1 for tokens in trail.runs.values())
    finally:
        asyncio.run(store.close())
