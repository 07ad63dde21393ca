"""Measure the sqlite store alone under the storage calls the engine makes for the seed handler.

Every invocation goes through five commands, as in `bench/core.py` (invoke, three `ctx.run`s, output
with a `ctx.set`), each in a later batch than the one before; a batch carries `--batch` new
invocations plus the later steps of earlier ones (~5 x batch commands). Per invocation that is 6
record reads and puts, 9 journal entries, 2 lock reads, a state read and write, an inbox pop — the
mix `bench/core.py` profiles show. Invocation i uses key i % 1,000.

`serial` awaits each commit before the next begin (the store API before pipelining, so the same
workload runs on an older store too); `pipelined` begins the next batch as soon as the previous
commit was called, keeping up to `--depth` commits in flight. `--against REV` also runs the
workload (serial only) on the store of git revision REV, extracted into a temporary directory, and
prints both: before/after in one table.

    .venv/bin/python bench/storage.py [--invocations 20000] [--batch 250] [--modes serial,pipelined]
    .venv/bin/python bench/storage.py --against 7b18d5c^   # the store before write-behind/pipelining
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Awaitable
from pathlib import Path

from perdure.storage import sqlite
from perdure.storage.api import Entry, Invocation, Status, Transaction

KEYS = 1_000
SERVICE = "benchUsers"
PAYLOAD = b"x" * 60  # a typical small command/notification


def invoke(txn: Transaction, n: int) -> None:
    inv_id = f"inv_1{n * 7919 % 1_000_003:011d}{n:022d}"  # random-looking, like real ids
    assert txn.get_invocation(inv_id) is None
    key = f"user{n % KEYS:04d}"
    inv = Invocation(id=inv_id, service=SERVICE, handler="update", key=key, exclusive=True, created_at=n)
    txn.append_entries(inv_id, 0, [Entry(1, PAYLOAD)])
    inv.journal_length = 1
    if txn.get_lock(SERVICE, key) is None:
        txn.set_lock(SERVICE, key, inv_id)
    else:
        txn.inbox_push(SERVICE, key, inv_id)
    txn.get_all_state(SERVICE, key)
    txn.put_invocation(inv)


def step(txn: Transaction, n: int, stage: int) -> None:
    inv_id = f"inv_1{n * 7919 % 1_000_003:011d}{n:022d}"
    inv = txn.get_invocation(inv_id)
    assert inv is not None
    key = f"user{n % KEYS:04d}"
    if stage < 4:  # a ctx.run: its command and its completion
        txn.append_entries(inv_id, inv.journal_length, [Entry(2, PAYLOAD), Entry(3, PAYLOAD)])
        inv.journal_length += 2
        inv.modified_at = n + stage
        txn.put_invocation(inv)
        return
    txn.set_state(SERVICE, key, b"role", b"role-read-write")
    txn.append_entries(inv_id, inv.journal_length, [Entry(4, PAYLOAD), Entry(5, PAYLOAD)])
    inv.journal_length += 2
    inv.status = Status.COMPLETED
    txn.put_invocation(inv)
    if txn.get_lock(SERVICE, key) == inv_id:
        nxt = txn.inbox_pop(SERVICE, key)
        if nxt is None:
            txn.release_lock(SERVICE, key)
        else:
            txn.set_lock(SERVICE, key, nxt)
            txn.read_journal(nxt)


async def run(
    path: Path, synchronous: str, mode: str, invocations: int, batch: int, depth: int
) -> dict[str, float]:
    store = sqlite.Store(path, synchronous=synchronous)
    batches = (invocations + batch - 1) // batch
    in_flight: deque[Awaitable[None]] = deque()
    commit_wait = 0.0
    wall, cpu, loop_cpu = time.perf_counter(), time.process_time(), time.thread_time()
    for b in range(batches + 4):  # four more batches finish the last invocations' later stages
        txn = store.begin()
        for n in range(b * batch, min((b + 1) * batch, invocations)):
            invoke(txn, n)
        for stage in range(1, 5):
            first = (b - stage) * batch
            for n in range(max(first, 0), min(first + batch, invocations)):
                step(txn, n, stage)
        commit = store.commit(txn)
        if mode == "serial":
            started = time.perf_counter()
            await commit
            commit_wait += time.perf_counter() - started
        else:
            in_flight.append(asyncio.ensure_future(commit))
            if len(in_flight) >= depth:
                started = time.perf_counter()
                await in_flight.popleft()
                commit_wait += time.perf_counter() - started
    while in_flight:
        await in_flight.popleft()
    result = {
        "wall": time.perf_counter() - wall,
        "cpu": time.process_time() - cpu,
        "loop_cpu": time.thread_time() - loop_cpu,
        "commit_wait": commit_wait,
        "batches": batches + 4,
    }
    await store.close()
    return result


def against(rev: str, args: argparse.Namespace) -> list[str]:
    """This script's table rows for the store of git revision `rev` (serial mode only)."""
    root = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory(prefix="perdure-bench-") as tmp:
        archive = subprocess.run(["git", "archive", rev, "src"], cwd=root, check=True, capture_output=True)
        subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
        command = [sys.executable, __file__, "--modes", "serial", "--rows-only"]
        command += ["--invocations", str(args.invocations), "--batch", str(args.batch)]
        command += ["--synchronous", args.synchronous, "--label", rev]
        env = {**os.environ, "PYTHONPATH": str(Path(tmp) / "src")}
        done = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
    return done.stdout.splitlines()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invocations", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=250, help="new invocations per transaction")
    parser.add_argument("--depth", type=int, default=2, help="pipelined: commits in flight")
    parser.add_argument("--modes", default="serial,pipelined")
    parser.add_argument("--synchronous", default="FULL,NORMAL")
    parser.add_argument("--against", metavar="REV", help="also measure the store of this git revision")
    parser.add_argument("--label", default="this tree", help=argparse.SUPPRESS)
    parser.add_argument("--rows-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    rows = []
    for synchronous in args.synchronous.split(","):
        for mode in args.modes.split(","):
            with tempfile.TemporaryDirectory() as tmp:
                r = await run(
                    Path(tmp) / "bench.db", synchronous, mode, args.invocations, args.batch, args.depth
                )
            n = args.invocations
            rows.append(
                f"{args.label:<12}{synchronous:<12}{mode:<11}{n / r['wall']:>9,.0f}"
                f"{r['loop_cpu'] / n * 1e6:>13.0f}{r['cpu'] / n * 1e6:>12.0f}"
                f"{r['commit_wait'] / r['batches'] * 1e3:>13.1f}"
            )
    if args.rows_only:
        print("\n".join(rows))
        return
    if args.against:
        rows = against(args.against, args) + rows
    print(
        f"{args.invocations:,} invocations, {args.batch} new per transaction (~{5 * args.batch} commands);"
        f" {KEYS:,} keys; pipelined depth {args.depth}"
    )
    print(
        f"{'store':<12}{'synchronous':<12}{'mode':<11}{'inv/s':>9}{'loop us/inv':>13}{'cpu us/inv':>12}",
        end="",
    )
    print(f"{'wait ms/txn':>13}")
    print("\n".join(rows))


if __name__ == "__main__":
    asyncio.run(main())
