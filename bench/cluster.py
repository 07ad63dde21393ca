"""Cluster benchmark: the seed handler on PostgreSQL — one node, `--workers 2`, and failover times.

The server is `perdure serve --db postgresql://… --app bench/core.py:app` (a subprocess; with
`--workers 2`, two member processes sharing the ports), the handler bench/core.py's seed handler
(exclusive, 3 `ctx.run` + 1 `ctx.set`) over 1,000 keys, called over HTTP/1.1 keep-alive by
bench/ingress.py's raw client in a separate process:

- saturation: COUNT calls at concurrency 64 — calls/s, p50/p99, and CPU per invocation of the
  perdure processes and of PostgreSQL (every `postgres` process on the machine, so other load on it
  counts too: run it on a quiet machine), and PostgreSQL transactions per invocation (of the
  bench's database only: each read outside a transaction counts as one, whatever else runs);
- paced: 500 calls/s for PACED_S seconds, open loop, latency from each call's planned send time.

Failover: three nodes; ten times, a node running a partition is SIGKILLed while a client calls a
key of that partition through another node; the time from the kill to the first such call that
completes — its partition running on a survivor — then the node is started again.

Each configuration runs on a fresh database of its own (named with this process's pid, so concurrent
runs do not drop each other's; created and dropped on 127.0.0.1:5432).

    .venv/bin/python bench/cluster.py
    .venv/bin/python bench/cluster.py --count 20000 --skip failover
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg

from ingress import RawClient, Server, body_for, in_load_process
from perdure.protocol import ids

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "bench" / "core.py") + ":app"
SERVER = "postgresql://postgres@127.0.0.1:5432"
PARTITIONS = 24
TARGET_RATE, TARGET_P99_MS, TARGET_SCALE, TARGET_FAILOVER_S = 2_000, 30.0, 1.5, 5.0
RESTATE_RATE = 245  # restate-server 1.7 + its Python SDK, same handler, c=64 (docs/performance.md)
TICK = os.sysconf("SC_CLK_TCK")
STATS_S = 2.0  # PostgreSQL's backends report their transaction counts within about a second


def cpu_of(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        total += (int(fields[11]) + int(fields[12])) / TICK
    return total


def cpu_since(before: dict[int, float]) -> float:
    """CPU seconds the `postgres` processes used since `before` (pid -> seconds, `postgres_cpu()`):
    backends started since count whole, those that exited meanwhile are not counted (never
    negative: other runs' backends come and go)."""
    now = postgres_cpu()
    return sum(max(0.0, seconds - before.get(pid, 0.0)) for pid, seconds in now.items())


def postgres_cpu() -> dict[int, float]:
    return {pid: cpu_of([pid]) for pid in postgres_pids()}


def postgres_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "postgres":
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def children(pid: int) -> list[int]:
    found = [pid]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                found += children(int(entry.name))
    return found


class Database:
    def __init__(self, name: str) -> None:
        self.name = name
        with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            admin.execute(f"CREATE DATABASE {name}")
        self.url = f"{SERVER}/{name}"

    def drop(self) -> None:
        with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")

    def transactions(self) -> int:
        """Transactions run in this database so far, once its backends reported them (they do within
        a second of their last statement while busy: wait that long after a load first)."""
        with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as admin:
            row = admin.execute(
                "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s", (self.name,)
            ).fetchone()
        return int(row[0]) if row else 0


class Serve(Server):
    """`perdure serve` (with `--workers N` when N > 1) on free ports; stopped by pid."""

    def __init__(self, url: str, workers: int, log: Path) -> None:
        command = ["serve", "--app", APP, "--db", url, "--partitions", str(PARTITIONS)]
        command += ["--ingress-port", "0", "--admin-port", "0"]
        if workers > 1:
            command += ["--workers", str(workers)]
        super().__init__(command, log)

    def partitions(self) -> list[int]:
        leases = httpx.get(self.urls["admin"] + "/cluster", timeout=10).json()["leases"]
        return [lease["partition"] for lease in leases if lease["running_here"]]


# ---- load (in a separate process)


async def saturate(host: str, port: int, count: int, offset: int, keys: int, cap: float) -> dict[str, Any]:
    latencies: list[float] = []
    failed = 0
    sent = 0

    async def worker(client: RawClient) -> None:
        nonlocal sent, failed
        while sent < count:
            i = offset + sent
            sent += 1
            key, body = body_for(i, keys)
            t = time.perf_counter()
            status = await client.call(f"/benchUsers/{key}/update", body)
            if status == 200:
                latencies.append(time.perf_counter() - t)
            else:
                failed += 1

    clients = [RawClient(host, port) for _ in range(64)]
    started = time.perf_counter()
    try:
        async with asyncio.timeout(cap):
            await asyncio.gather(*(worker(c) for c in clients))
    except TimeoutError:
        pass
    seconds = time.perf_counter() - started
    for c in clients:
        await c.close()
    return {"latencies": latencies, "failed": failed, "seconds": seconds}


async def paced(host: str, port: int, rate: int, seconds: float, offset: int, keys: int) -> dict[str, Any]:
    """Open loop: call i is planned at start + i / rate; latency counts from the planned time."""
    latencies: list[float] = []
    failed = 0
    idle: list[RawClient] = []
    start = time.perf_counter() + 0.1
    total = int(rate * seconds)

    async def one(i: int) -> None:
        nonlocal failed
        planned = start + i / rate
        await asyncio.sleep(max(0.0, planned - time.perf_counter()))
        client = idle.pop() if idle else RawClient(host, port)
        key, body = body_for(offset + i, keys)
        status = await client.call(f"/benchUsers/{key}/update", body)
        idle.append(client)
        if status == 200:
            latencies.append(time.perf_counter() - planned)
        else:
            failed += 1

    async with asyncio.timeout(seconds + 60):
        await asyncio.gather(*(one(i) for i in range(total)))
    for c in idle:
        await c.close()
    return {"latencies": latencies, "failed": failed, "seconds": seconds}


def load_process(conn: Any, kind: str, *args: Any) -> None:
    conn.send(asyncio.run(saturate(*args) if kind == "saturate" else paced(*args)))
    conn.close()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else float("nan")


# ---- the runs


def throughput(workers: int, args: argparse.Namespace, tmp: Path) -> dict[str, float]:
    db = Database(f"perdure_bench_cluster_{workers}_{os.getpid()}")
    server = Serve(db.url, workers, tmp / f"serve{workers}.log")
    try:
        host, port = server.ingress
        in_load_process(load_process, ("saturate", host, port, args.keys, 0, args.keys, 120), 120)  # warm-up
        time.sleep(STATS_S)
        engine = children(server.proc.pid)
        pg_before, cpu_engine, xacts = postgres_cpu(), cpu_of(engine), db.transactions()
        high = in_load_process(
            load_process, ("saturate", host, port, args.count, args.keys, args.keys, 180), 180
        )
        done = max(len(high["latencies"]), 1)
        cpu_pg, cpu_engine = cpu_since(pg_before), cpu_of(children(server.proc.pid)) - cpu_engine
        time.sleep(STATS_S)
        xacts = db.transactions() - xacts
        low = in_load_process(
            load_process, ("paced", host, port, 500, args.paced_s, args.keys + args.count, args.keys), 120
        )
        return {
            "rate": len(high["latencies"]) / high["seconds"],
            "p50": pct(high["latencies"], 0.5),
            "p99": pct(high["latencies"], 0.99),
            "failed": high["failed"] + low["failed"],
            "engine_us": cpu_engine / done * 1e6,
            "pg_us": cpu_pg / done * 1e6,
            "xacts": xacts / done,
            "paced_p50": pct(low["latencies"], 0.5),
            "paced_p99": pct(low["latencies"], 0.99),
        }
    finally:
        server.stop()
        db.drop()


def key_in(partitions: list[int]) -> str:
    for n in range(100_000):
        key = f"user{n:04d}"
        if ids.partition_key("benchUsers", key) % PARTITIONS in partitions:
            return key
    raise AssertionError("no key found")


def failover(rounds: int, tmp: Path) -> list[float]:
    db = Database(f"perdure_bench_failover_{os.getpid()}")
    nodes = [Serve(db.url, 1, tmp / f"node{n}.log") for n in range(3)]
    times: list[float] = []
    try:
        for r in range(rounds):
            deadline = time.monotonic() + 30
            while not all(len(n.partitions()) == PARTITIONS // 3 for n in nodes):  # balanced
                if time.monotonic() > deadline:
                    raise SystemExit("the nodes did not balance")
                time.sleep(0.2)
            victim = nodes[r % 3]
            survivor = nodes[(r + 1) % 3]
            key = key_in(victim.partitions())
            url = survivor.urls["ingress"] + f"/benchUsers/{key}/update"
            _, body = body_for(0, 1)
            killed = time.monotonic()
            victim.stop(signal.SIGKILL)
            while True:
                try:
                    answer = httpx.post(
                        url, content=body, headers={"content-type": "application/json"}, timeout=30
                    )
                    if answer.status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
            times.append(time.monotonic() - killed)
            nodes[r % 3] = Serve(db.url, 1, tmp / f"node{r % 3}.log")
    finally:
        for node in nodes:
            node.stop()
        db.drop()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000, help="calls at concurrency 64")
    parser.add_argument("--keys", type=int, default=1_000)
    parser.add_argument("--paced-s", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=10, help="failovers")
    parser.add_argument("--skip", default="", help="comma-separated: one, two, failover")
    args = parser.parse_args()
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    rows: list[tuple[str, str, str, str]] = []
    with tempfile.TemporaryDirectory(prefix="perdure-bench-cluster-") as folder:
        tmp = Path(folder)
        results = {}
        for name, workers in (("one", 1), ("two", 2)):
            if name in skip:
                continue
            r = results[name] = throughput(workers, args, tmp)
            label = "1 node" if workers == 1 else "--workers 2"
            rows += [
                (label, "invocations/s at c=64", f"{r['rate']:,.0f}",
                 f">= {TARGET_RATE:,}" if workers == 1 else ""),
                (label, "  ratio to restate-server 1.7 (HTTP, c=64)", f"{r['rate'] / RESTATE_RATE:.1f}x", ""),
                (label, "latency p50 / p99 ms at c=64", f"{r['p50']:.1f} / {r['p99']:.1f}", ""),
                (label, "paced 500/s: p50 / p99 ms", f"{r['paced_p50']:.1f} / {r['paced_p99']:.1f}",
                 f"p99 <= {TARGET_P99_MS:g}" if workers == 1 else ""),
                (label, "CPU us per invocation: perdure / PostgreSQL",
                 f"{r['engine_us']:.0f} / {r['pg_us']:.0f}", ""),
                (label, "PostgreSQL transactions per invocation", f"{r['xacts']:.2f}", ""),
                (label, "failed calls", f"{r['failed']:.0f}", ""),
            ]  # fmt: skip
        if "one" in results and "two" in results:
            scale = results["two"]["rate"] / results["one"]["rate"]
            rows.append(("--workers 2", "throughput vs 1 node", f"{scale:.2f}x", f">= {TARGET_SCALE:g}x"))
        if "failover" not in skip:
            times = failover(args.rounds, tmp)
            rows.append(
                (
                    "3 nodes",
                    f"failover: kill -> moved partition's call done, median / max of {len(times)} s",
                    f"{statistics.median(times):.2f} / {max(times):.2f}",
                    f"<= {TARGET_FAILOVER_S:g}",
                )
            )
    print(
        f"perdure cluster bench: seed handler (3 ctx.run + 1 ctx.set), {args.keys:,} keys, {PARTITIONS}"
        f" partitions, PostgreSQL on 127.0.0.1; raw HTTP/1.1 client in a separate process"
        f" (python {sys.version.split()[0]}, {os.cpu_count()} CPUs)"
    )
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    line = "  ".join("-" * w for w in widths)
    print(line)
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    print(line)


if __name__ == "__main__":
    main()
