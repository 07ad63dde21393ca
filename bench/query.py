"""Time `POST /query` (Restate's dialect, DataFusion) on a SQLite store of 100,000 invocations.

The store is the one bench/console.py builds (copies of real invocations of the seed handler:
completed, failed, suspended with updates queued behind). The admin app is called in-process, as
uvicorn would call it, with the queries Restate's CLI sends (`restate invocations describe`,
`invocations list`, `state get`) and whole-table queries. Each query runs `--runs` times; the table
shows the median and slowest wall time and the median CPU time of the process (the machine is
shared: CPU time is the steadier figure). Whole-table queries read every invocation out of the
store, so they are bounded by the admin's query time limit (2 s by default): the bench raises it
to 60 s to measure them, and says which would fail under the default.

    .venv/bin/python bench/query.py [--invocations 100000] [--runs 5] [--db /tmp/console.db]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(_ROOT / "bench"), str(_ROOT / "examples")]

import user_updates  # noqa: E402  (the seed example, from examples/)

import console  # noqa: E402  (bench/console.py: the same 100,000-invocation store)
from perdure.admin import Admin  # noqa: E402
from perdure.runtime.node import Engine  # noqa: E402

DEFAULT_LIMIT_S = 2.0


async def post(admin: Admin, sql: str, *, arrow: bool) -> tuple[float, float, int, bytes]:
    """One POST /v4/query through the ASGI app: (wall ms, CPU ms, status, body)."""
    accept = b"application/vnd.apache.arrow.stream" if arrow else b"application/json"
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v4/query",
        "query_string": b"",
        "headers": [(b"accept", accept), (b"content-type", b"application/json")],
    }
    body = json.dumps({"query": sql}).encode()
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    wall, cpu = time.perf_counter(), time.process_time()
    await admin(scope, receive, send)
    return (
        (time.perf_counter() - wall) * 1000,
        (time.process_time() - cpu) * 1000,
        sent[0]["status"],
        sent[1]["body"],
    )


async def measure(db: Path, runs: int, count: int) -> list[tuple[str, float, float, float, str]]:
    async with Engine(user_updates.app, store=f"sqlite:///{db}", sweep_interval=None) as engine:
        admin = Admin(engine, query_timeout=60.0, max_rows=1_000_000)
        one = console.invocation_id(count // 2)
        key = console.key_of(7)
        queries = [
            ("one invocation by id (CLI describe)", f"SELECT * FROM sys_invocation WHERE id = '{one}'", True),
            ("one invocation by id, JSON", f"SELECT * FROM sys_invocation WHERE id = '{one}'", False),
            ("its journal", f"SELECT * FROM sys_journal WHERE id = '{one}' ORDER BY index", True),
            (
                "one key's state (CLI state get)",
                f"SELECT key, value FROM state WHERE service_name = 'userUpdates' AND service_key = '{key}'",
                True,
            ),
            (
                "invocations of one key",
                f"SELECT id, status FROM sys_invocation WHERE target_service_key = '{key}'",
                True,
            ),
            (
                "CLI invocations list (non-completed, 100)",
                "SELECT id FROM sys_invocation inv WHERE status != 'completed'"
                " ORDER BY inv.created_at DESC, inv.id LIMIT 100",
                True,
            ),
            ("count(*) of all invocations", "SELECT count(*) FROM sys_invocation", True),
            (
                "whole table, a column only records hold",
                "SELECT max(journal_size) FROM sys_invocation",
                True,
            ),
            (
                "status counts (whole table)",
                "SELECT status, count(*) FROM sys_invocation GROUP BY status",
                True,
            ),
        ]
        rows = []
        for label, sql, arrow in queries:
            walls, cpus = [], []
            for _ in range(runs):
                wall, cpu, status, body = await post(admin, sql, arrow=arrow)
                assert status == 200, (sql, body[:300])
                walls.append(wall)
                cpus.append(cpu)
            verdict = "ok" if max(walls) < DEFAULT_LIMIT_S * 1000 else f"> {DEFAULT_LIMIT_S:g} s limit"
            rows.append((label, statistics.median(walls), max(walls), statistics.median(cpus), verdict))
        return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invocations", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--db", type=Path, help="keep the filled database here (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = args.db or Path(tmp) / "query.db"
        if db.exists():
            print(f"reusing {db}")
        else:
            started = time.perf_counter()
            shapes = asyncio.run(console.templates())
            console.fill(db, shapes, args.invocations, int(time.time() * 1000))
            print(
                f"filled {db} with {args.invocations:,} invocations in {time.perf_counter() - started:.1f} s"
            )
        rows = asyncio.run(measure(db, args.runs, args.invocations))
    print(f"\nPOST /v4/query, {args.invocations:,} invocations (SQLite), {args.runs} runs each")
    print(f"{'query':<44} {'median ms':>10} {'max ms':>9} {'CPU ms':>8}  default limit")
    for label, median, worst, cpu, verdict in rows:
        print(f"{label:<44} {median:>10.1f} {worst:>9.1f} {cpu:>8.1f}  {verdict}")


if __name__ == "__main__":
    main()
