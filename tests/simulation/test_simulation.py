"""The CI budget of the simulation: a fixed range of seeds (about 10 s on one core).

Run more with `python3 dev.py simulate --seeds 2000`; a failure names its seed, and
`python3 dev.py simulate --seeds 1 --seed S -v` replays it exactly, narrating the faults.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from perdure.engine import lifecycle
from perdure.engine.step import Step
from perdure.protocol import messages as pm
from perdure.storage.api import Timer
from perdure.storage.memory import _Transaction as Transaction

from .world import Config, Violation, World

CI_SEEDS = 150


@pytest.mark.parametrize("seed", range(CI_SEEDS))
def test_seed(seed: int) -> None:
    stats = asyncio.run(World(seed, Config()).run())
    assert stats.steps > Config().steps and stats.batches > 0


def test_a_seed_replays_exactly() -> None:
    first, second = (asyncio.run(World(7, Config()).run()) for _ in range(2))
    assert first == second and first.faults > 0 and first.invocations > 0


def _drop_run_results(monkeypatch: pytest.MonkeyPatch) -> None:
    """Attempts replay journals without their ctx.run results: stored steps run again."""
    read = Step.read_journal
    monkeypatch.setattr(
        Step,
        "read_journal",
        lambda self, inv: [m for m in read(self, inv) if not isinstance(m, pm.RunCompletion)],
    )


def _last_in_first_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """A key's queue hands the lock to its newest waiter."""
    pop = Transaction.inbox_pop

    def newest(self: Transaction, service: str, key: str) -> str | None:
        waiting = []
        while (invocation_id := pop(self, service, key)) is not None:
            waiting.append(invocation_id)
        for invocation_id in waiting[:-1]:
            self.inbox_push(service, key, invocation_id)
        return waiting[-1] if waiting else None

    monkeypatch.setattr(Transaction, "inbox_pop", newest)


def _lose_sleep_timers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every third sleep's timer is never stored."""
    schedule, count = lifecycle.schedule_timer, iter(range(1_000_000))

    def lossy(step: Step, timer: Timer) -> None:
        if timer.kind != "sleep" or next(count) % 3:
            schedule(step, timer)

    monkeypatch.setattr(lifecycle, "schedule_timer", lossy)


@pytest.mark.parametrize(
    ("break_engine", "caught"),
    [
        (_drop_run_results, "ran again after its result was stored"),
        (_last_in_first_out, "per-key FIFO"),
        (_lose_sleep_timers, "stuck"),
    ],
)
def test_the_invariants_catch_a_broken_engine(
    monkeypatch: pytest.MonkeyPatch, break_engine: Callable[[pytest.MonkeyPatch], None], caught: str
) -> None:
    break_engine(monkeypatch)
    found = []
    for seed in range(10):
        try:
            asyncio.run(World(seed, Config()).run())
        except Violation as e:
            found.append(str(e))
    assert found and all(caught in message for message in found), found[:3]
