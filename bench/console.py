"""Time the admin routes behind the web console on a SQLite store holding 100,000 invocations.

The store is filled with copies of real invocations of the seed handler (examples/user_updates.py,
run once in-process on the test harness): completed ones with their 9-entry journals, failed
ones (a terminal error), keys suspended in their 5 s sleep with updates queued behind them.
Copies get fresh ids, creation times spread over the last hour, 2,000 keys and an idempotency key
each. Then the admin app is called in-process, as uvicorn would call it, and each route is timed
from request to the last byte of the answer — the server time of the console's pages (`--runs`
times each; the table shows the median and the slowest). Issue 14 asks for ≤ 300 ms for the list
and one invocation.

    .venv/bin/python bench/console.py [--invocations 100000] [--runs 20] [--db /tmp/console.db]
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

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

import user_updates  # the seed example, from examples/

from perdure.admin import Admin
from perdure.protocol import ids
from perdure.runtime.node import Engine
from perdure.storage import sqlite
from perdure.storage.api import Entry, Invocation, Status
from perdure.testing import Harness

SERVICE, HANDLER = "userUpdates", "updateUserEvent"
KEYS = 2_000
BATCH = 5_000
HOUR_MS = 3_600_000

Template = tuple[Invocation, list[Entry]]


async def templates() -> dict[str, Template]:
    """One invocation of each shape, recorded by the real engine on the harness."""
    user_updates.systems.not_ready_times = 0
    async with Harness(user_updates.app) as h:
        done = await h.object_send(user_updates.update_user_event, key="a", arg=update("a"))
        failed = await h.generic_send(SERVICE, HANDLER, b'{"profile": {}}', key="b")
        sleeping = await h.object_send(user_updates.update_user_event, key="c", arg=update("c", new=True))
        await h.settle()
        queued = await h.object_send(user_updates.update_user_event, key="c", arg=update("c"))
        await h.settle()
        reader = h.reader()
        shapes = {"completed": done, "failed": failed, "suspended": sleeping, "pending": queued}
        found = {}
        for name, invocation_id in shapes.items():
            inv = reader.get_invocation(invocation_id)
            assert inv is not None
            found[name] = (inv, reader.read_journal(invocation_id))
    assert found["suspended"][0].status is Status.SUSPENDED and found["pending"][0].status is Status.PENDING
    return found


def update(name: str, *, new: bool = False) -> user_updates.UserUpdate:
    profile = {"name": name, **({"account": "new"} if new else {})}
    return user_updates.UserUpdate(profile=profile, permissions=["read", "write"], resources=["disk-1"])


def shape_of(n: int) -> str:
    """Mostly completed; 2% failed; every 100th key suspended with a queue behind it."""
    if n % 50 == 7:
        return "failed"
    key = n % KEYS
    if key % 100 == 3:
        return "suspended" if n < KEYS else "pending"
    return "completed"


def key_of(n: int) -> str:
    return f"user{n % KEYS:05d}"


def invocation_id(n: int) -> str:
    return ids.idempotent_id(SERVICE, HANDLER, key_of(n), f"update-{n}")


def fill(path: Path, shapes: dict[str, Template], count: int, now_ms: int) -> None:
    store = sqlite.Store(path, synchronous="OFF")

    async def write() -> None:
        for start in range(0, count, BATCH):
            txn = store.begin()
            for n in range(start, min(count, start + BATCH)):
                inv, journal = shapes[shape_of(n)]
                copy = msgspec.structs.replace(
                    inv,
                    id=invocation_id(n),
                    key=key_of(n),
                    created_at=now_ms - HOUR_MS + n * HOUR_MS // count,
                    idempotency_key=f"update-{n}",
                )
                copy.modified_at = copy.created_at + 40
                if copy.completed_at is not None:
                    copy.completed_at = copy.modified_at
                txn.put_invocation(copy)
                txn.append_entries(copy.id, 0, journal)
                assert copy.key is not None
                if copy.status is Status.SUSPENDED:
                    txn.set_lock(SERVICE, copy.key, copy.id)
                elif copy.status is Status.PENDING:
                    txn.inbox_push(SERVICE, copy.key, copy.id)
                if copy.status is Status.COMPLETED and n < KEYS:
                    txn.set_state(SERVICE, copy.key, b"role", b'"role-read-write"')
            await store.commit(txn)
        await store.close()

    asyncio.run(write())


async def call(admin: Admin, path: str, query: str = "") -> tuple[float, int, Any]:
    """One GET through the ASGI app: (milliseconds until the body is out, status, JSON)."""
    scope = {"type": "http", "method": "GET", "path": path, "query_string": query.encode(), "headers": []}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    started = time.perf_counter()
    await admin(scope, receive, send)
    elapsed = (time.perf_counter() - started) * 1000
    return elapsed, sent[0]["status"], json.loads(sent[1]["body"])


async def measure(db: Path, runs: int, count: int) -> list[tuple[str, float, float, int]]:
    async with Engine(user_updates.app, store=f"sqlite:///{db}", sweep_interval=None) as engine:
        admin = Admin(engine)
        _, _, page = await call(admin, "/invocations", "order=desc&limit=1")
        newest = page["invocations"][0]
        blocked = key_of(103)
        middle = invocation_id(count // 2)[5:20]  # part of an invocation id from the middle
        routes = [
            ("list, newest first (the console's default)", "/invocations", "order=desc&limit=50"),
            ("list, oldest first", "/invocations", "limit=50"),
            ("list, next page (cursor)", "/invocations", "order=desc&limit=50&cursor={cursor}"),
            ("list, status=suspended", "/invocations", "status=suspended&order=desc"),
            ("list, service + key", "/invocations", f"service={SERVICE}&key={blocked}&order=desc"),
            ("list, created in the last 5 minutes", "/invocations", "order=desc&created_after={recent}"),
            ("list, search a whole id", "/invocations", f"q={invocation_id(count // 2)}&order=desc"),
            ("list, search an id fragment (1 match)", "/invocations", f"q={middle}&order=desc"),
            ("list, search an idempotency key", "/invocations", f"q=update-{count // 3}&order=desc"),
            ("list, search with no match (full scan)", "/invocations", "q=zzz-none&order=desc"),
            ("list, error text (2% match)", "/invocations", "error=profile.name&order=desc"),
            ("list, deployment=in-process", "/invocations", "deployment=in-process&order=desc"),
            ("one invocation with its journal", f"/invocations/{newest['id']}", ""),
            ("overview: /activity (15 min)", "/activity", ""),
            ("state: keys of userUpdates", f"/services/{SERVICE}/keys", ""),
            ("state: one key, its lock and inbox", f"/services/{SERVICE}/keys/{blocked}", ""),
        ]
        _, _, first = await call(admin, "/invocations", "order=desc&limit=50")
        recent = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 300))
        rows = []
        for label, path, query in routes:
            query = query.format(cursor=first["next_cursor"], recent=recent)
            times = []
            found = 0
            for _ in range(runs):
                ms, status, body = await call(admin, path, query)
                assert status == 200, (path, query, body)
                times.append(ms)
                found = len(body.get("invocations", body.get("keys", body.get("journal", [0]))))
            rows.append((label, statistics.median(times), max(times), found))
        return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invocations", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--db", type=Path, help="keep the filled database here (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = args.db or Path(tmp) / "console.db"
        if db.exists():
            print(f"reusing {db}")
        else:
            started = time.perf_counter()
            shapes = asyncio.run(templates())
            fill(db, shapes, args.invocations, int(time.time() * 1000))
            took = time.perf_counter() - started
            print(f"filled {db} with {args.invocations:,} invocations in {took:.1f} s")
        rows = asyncio.run(measure(db, args.runs, args.invocations))
    print(f"\nadmin routes behind the console, {args.invocations:,} invocations, {args.runs} runs each")
    print(f"{'route':<44} {'median ms':>10} {'max ms':>8} {'rows':>5}")
    for label, median, slowest, found in rows:
        print(f"{label:<44} {median:>10.1f} {slowest:>8.1f} {found:>5}")


if __name__ == "__main__":
    main()
