"""The CI budget of the simulation: a fixed range of seeds (about 10 s on one core).

Run more with `python3 dev.py simulate --seeds 2000`; a failure names its seed, and
`python3 dev.py simulate --seeds 1 --seed S -v` replays it exactly, narrating the faults.
"""

from __future__ import annotations

import asyncio

import pytest

from .world import Config, World

CI_SEEDS = 150


@pytest.mark.parametrize("seed", range(CI_SEEDS))
def test_seed(seed: int) -> None:
    stats = asyncio.run(World(seed, Config()).run())
    assert stats.steps > Config().steps and stats.batches > 0


def test_a_seed_replays_exactly() -> None:
    first, second = (asyncio.run(World(7, Config()).run()) for _ in range(2))
    assert first == second and first.faults > 0 and first.invocations > 0
