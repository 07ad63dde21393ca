"""Measure sqlite store throughput: group-committed batches of invocation puts and journal rows.

Each transaction puts 10 invocations and appends 50 journal rows (5 per invocation), then commits;
the table compares synchronous=FULL (fsync per commit) with NORMAL and OFF.

    .venv/bin/python bench/storage.py [--txns 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from perdure.storage import sqlite
from perdure.storage.api import Entry, Invocation, Status

PUTS_PER_TXN = 10
ROWS_PER_PUT = 5  # 50 journal rows per transaction
PAYLOAD = b"x" * 64  # a typical small command/notification


async def run(path: Path, synchronous: str, txns: int) -> tuple[float, float]:
    """Return (elapsed seconds, mean commit seconds) for `txns` transactions."""
    store = sqlite.Store(path, synchronous=synchronous)
    entries = [Entry(type=i, payload=PAYLOAD) for i in range(ROWS_PER_PUT)]
    commit_time = 0.0
    start = time.perf_counter()
    for t in range(txns):
        txn = store.begin()
        for p in range(PUTS_PER_TXN):
            n = t * PUTS_PER_TXN + p
            inv = Invocation(
                id=f"inv-{n:08d}",
                service="Bench",
                handler="run",
                key=f"k{n % 100}",
                status=Status.RUNNING,
                created_at=n,
                journal_length=ROWS_PER_PUT,
                waiting_completions=[1, 2],
            )
            txn.put_invocation(inv)
            txn.append_entries(inv.id, 0, entries)
        c = time.perf_counter()
        await store.commit(txn)
        commit_time += time.perf_counter() - c
    elapsed = time.perf_counter() - start
    await store.close()
    return elapsed, commit_time / txns


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--txns", type=int, default=2000)
    args = parser.parse_args()
    print(f"{args.txns} txns x ({PUTS_PER_TXN} invocation puts + {PUTS_PER_TXN * ROWS_PER_PUT} journal rows)")
    print(f"{'synchronous':<12}{'txns/s':>10}{'puts/s':>10}{'rows/s':>10}{'commit ms':>11}")
    for synchronous in ("FULL", "NORMAL", "OFF"):
        with tempfile.TemporaryDirectory() as tmp:
            elapsed, commit = await run(Path(tmp) / "bench.db", synchronous, args.txns)
        txns_s = args.txns / elapsed
        print(
            f"{synchronous:<12}{txns_s:>10,.0f}{txns_s * PUTS_PER_TXN:>10,.0f}"
            f"{txns_s * PUTS_PER_TXN * ROWS_PER_PUT:>10,.0f}{commit * 1000:>11.2f}"
        )


if __name__ == "__main__":
    asyncio.run(main())
