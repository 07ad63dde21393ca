"""Run simulations: `python -m tests.simulation --seeds N [--seed S] [--steps K] [-v]`.

Seeds run from S (default 0) to S+N-1. A failing seed prints its violation and the command that
replays it exactly; `-v` narrates every fault of a single seed.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import traceback

from .world import Config, Faults, Violation, World


def replay(seed: int, args: argparse.Namespace) -> str:
    flags = " --duplicate-outputs" if args.duplicate_outputs else ""
    return f"python3 dev.py simulate --seeds 1 --seed {seed} --steps {args.steps}{flags} -v"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python3 dev.py simulate", description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=100, help="how many seeds to run (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="the first seed (default 0)")
    parser.add_argument("--steps", type=int, default=Config().steps, help="steps with faults per seed")
    parser.add_argument("-v", "--verbose", action="store_true", help="narrate faults and crashes")
    parser.add_argument(
        "--duplicate-outputs",
        action="store_true",
        help="also duplicate an attempt's output (outside the transport contract: see network.py)",
    )
    args = parser.parse_args()
    config = Config(steps=args.steps, faults=Faults(duplicate_output=args.duplicate_outputs))
    started = time.perf_counter()
    total_steps = failures = 0
    for seed in range(args.seed, args.seed + args.seeds):
        narrate = (lambda line, s=seed: print(f"  [{s}] {line}")) if args.verbose else None
        try:
            stats = asyncio.run(World(seed, config, narrate).run())
        except Violation as e:
            failures += 1
            print(f"seed {seed}: FAILED: {e}")
            print(f"  replay: {replay(seed, args)}")
            continue
        except Exception:
            failures += 1
            print(f"seed {seed}: the simulator crashed:\n{traceback.format_exc()}")
            print(f"  replay: {replay(seed, args)}")
            continue
        total_steps += stats.steps
        if args.verbose or args.seeds == 1:
            print(f"seed {seed}: ok {stats}")
    seconds = time.perf_counter() - started
    print(
        f"{args.seeds} seeds, {total_steps:,} steps, {failures} failed, in {seconds:.1f} s"
        f" ({args.steps} steps with faults per seed, then drained)"
    )
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
