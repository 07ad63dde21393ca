"""The event loop of `perdure dev`/`serve`: uvloop where installed, `PERDURE_LOOP` to choose.

The in-process tests run on pytest-asyncio's default (stdlib) loop; the real-process tests run
`perdure dev`, which picks uvloop automatically when it is installed (the dev extras install it).
This test runs the seed example once on each loop, through a real `perdure dev`, so the suite
covers both with one process start each."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

from perdure.runtime import loop

from .procs import refused_without, seed_example_through_dev

uvloop = pytest.importorskip("uvloop", reason="the dev extras install uvloop (perdure[fast])")


@pytest.mark.parametrize("name", ["asyncio", "uvloop"])
def test_dev_runs_the_seed_example_on_each_loop(tmp_path: Path, name: str) -> None:
    assert f"{name} loop" in seed_example_through_dev(tmp_path, {loop.ENV: name})


def test_the_default_is_uvloop_when_installed_and_the_env_can_force_either() -> None:
    assert loop.choice({}) == "uvloop"
    assert loop.choice({loop.ENV: "asyncio"}) == "asyncio"
    assert loop.choice({loop.ENV: " UVLOOP "}) == "uvloop"
    with pytest.raises(loop.LoopError, match="expected one of uvloop, asyncio"):
        loop.choice({loop.ENV: "trio"})


def test_run_uses_the_chosen_loop_and_settles_the_collector() -> None:
    async def which() -> str:
        return loop.current()

    threshold = gc.get_threshold()
    try:
        assert loop.run(which(), loop="uvloop") == "uvloop"
        assert loop.run(which(), loop="asyncio") == "asyncio"
        assert gc.get_threshold()[:2] == loop.GC_THRESHOLDS
        assert gc.get_threshold()[2] == threshold[2]  # the oldest generation's is left as it was
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()  # this is pytest's process: give it back its collector
        gc.set_threshold(*threshold)


def test_an_unusable_loop_is_one_line_before_anything_starts(tmp_path: Path) -> None:
    proc = refused_without("uvloop", tmp_path, {loop.ENV: "uvloop"})
    assert proc.returncode != 0
    assert "uvloop is not installed: pip install 'perdure[fast]'" in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr
