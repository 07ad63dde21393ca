"""Instructions per invocation of the seed handler in-process, counted by valgrind (callgrind).

Wall-clock rates vary by ±15 % on a shared machine; instruction counts do not. The script runs
itself twice under `valgrind --tool=callgrind` — `--count 0` (start, warm-up, stop) and
`--count N` — and reports (instructions(N) − instructions(0)) / N: the process's work per
invocation, startup excluded. Memory store by default (the engine, SDK and loop alone; SQLite's
writer thread would add its own instructions), 64 calls in flight over 1,000 keys, on the event
loop perdure's servers use (`perdure.runtime.loop`).

    .venv/bin/python bench/instructions.py                    # 1,000 invocations, memory store
    .venv/bin/python bench/instructions.py --count 2000 --store sqlite
    PYTHONPATH=/tmp/base/src .venv/bin/python bench/instructions.py   # another checkout's perdure
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


async def workload(count: int, store: str, in_flight: int, keys: int) -> None:
    import core  # the seed handler, as in bench/core.py

    import perdure

    names = [f"user{i:04d}" for i in range(keys)]
    with tempfile.TemporaryDirectory(prefix="perdure-instr-") as tmp:
        url = "memory:" if store == "memory" else f"sqlite:///{tmp}/i.db?synchronous=FULL"
        async with perdure.Engine(core.app, store=url) as engine:
            await core.warm_up(engine, names)
            sent = 0

            async def worker() -> None:
                nonlocal sent
                while sent < count:
                    key, event = core.event_for(sent, names)
                    sent += 1
                    await engine.object_call(core.update, key=key, arg=event)

            await asyncio.gather(*(worker() for _ in range(min(in_flight, count))))


def run_loop(count: int, store: str, in_flight: int, keys: int) -> None:
    try:  # perdure's servers' loop setup (gc, uvloop); older checkouts have none
        from perdure.runtime.loop import run
    except ImportError:
        run = asyncio.run
    run(workload(count, store, in_flight, keys))


def callgrind(count: int, args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="perdure-callgrind-") as tmp:
        out = Path(tmp) / "callgrind.out"
        cmd = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            sys.executable,
            __file__,
            "--child",
            str(count),
            "--store",
            args.store,
            "--in-flight",
            str(args.in_flight),
            "--keys",
            str(args.keys),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ, timeout=3600)
        if proc.returncode != 0:
            sys.exit(f"valgrind failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        m = re.search(r"Collected : (\d+)", proc.stderr)
        if m is None:
            sys.exit(f"no instruction count in valgrind's output:\n{proc.stderr[-3000:]}")
        return int(m.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1_000, help="invocations measured")
    parser.add_argument("--store", default="memory", choices=["memory", "sqlite"])
    parser.add_argument("--in-flight", type=int, default=64)
    parser.add_argument("--keys", type=int, default=1_000)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        run_loop(args.child, args.store, args.in_flight, args.keys)
        return
    import perdure

    if shutil.which("valgrind") is None:
        print("instructions per invocation: skipped, valgrind is not installed (apt-get install valgrind)")
        return
    base = callgrind(0, args)
    total = callgrind(args.count, args)
    per = (total - base) / args.count
    print(f"perdure at {Path(perdure.__file__).parent}; store {args.store}; {args.in_flight} in flight")
    print(f"instructions: start+warm-up+stop {base / 1e6:,.0f}M; with {args.count:,} invocations", end=" ")
    print(f"{total / 1e6:,.0f}M")
    print(f"instructions per invocation: {per:,.0f}")


if __name__ == "__main__":
    main()
