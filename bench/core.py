"""Core benchmark: the seed handler (3 `ctx.run` + 1 `ctx.set`, exclusive) over 1,000 keys, in-process.

Phase 1, saturation: a fixed number of invocations through a bounded pool of in-flight
`object_call`s — throughput, latency (submit → result), commits/s and commands per commit.
Phase 2, paced: open-loop arrivals at a fixed rate; latency is measured from each invocation's
*planned* send time, so a stalled engine shows up as latency rather than a lower send rate.
Each phase runs on a fresh database; the default store is SQLite with synchronous=FULL.

    .venv/bin/python bench/core.py                          # sqlite, synchronous=FULL
    .venv/bin/python bench/core.py --synchronous NORMAL
    .venv/bin/python bench/core.py --store memory:
    .venv/bin/python bench/core.py --store postgresql    # a fresh database per phase on 127.0.0.1:5432
    .venv/bin/python bench/core.py --count 5000 --cprofile /tmp/core.prof   # profile saturation
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

import perdure
from perdure import ObjectContext, VirtualObject
from perdure.storage.api import Status

TARGET_RATE = 5_000  # invocations/s at saturation
TARGET_P99_MS = 10.0  # at 1,000 invocations/s (issue 12)
SYNC_MODES = ["FULL", "NORMAL", "OFF"]
POSTGRES = os.environ.get("PERDURE_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432")

# ---- the seed handler, with in-memory "external systems" that are always ready


@dataclass
class UserUpdate:
    profile: dict[str, str]
    permissions: list[str] = field(default_factory=list)
    resources: list[str] = field(default_factory=list)


def update_profile(profile: dict[str, str]) -> str:
    return f"user-{profile['name']}"


def set_permissions(user_id: str, permissions: list[str]) -> str:
    return f"role-{'-'.join(sorted(permissions)) or 'none'}"


def provision_resources(user_id: str, role_id: str, resources: list[str]) -> bool:
    return True


users = VirtualObject("benchUsers")


@users.handler("update")
async def update(ctx: ObjectContext, event: UserUpdate) -> str:
    user_id = await ctx.run("update profile", update_profile, args=(event.profile,))
    role_id = await ctx.run("set permissions", set_permissions, args=(user_id, event.permissions))
    await ctx.run("provision resources", provision_resources, args=(user_id, role_id, event.resources))
    ctx.set("role", role_id)
    return role_id


app = perdure.App([users])

# ---- measuring


@dataclass
class Result:
    """One phase's measurements."""

    sent: int = 0
    done: int = 0
    failed: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)  # seconds
    commands: int = 0
    batches: int = 0
    commit_seconds: float = 0.0
    loop_cpu: float = 0.0  # CPU seconds of the event-loop thread (the engine, the handlers, SQL reads/writes)
    process_cpu: float = 0.0  # CPU seconds of the whole process (adds the commit thread)
    max_batch: int = 0
    journal_entries: int = 0
    timed_out: bool = False

    def pct(self, q: float) -> float:
        """The q-quantile latency in ms (nearest rank)."""
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def event_for(i: int, keys: list[str]) -> tuple[str, UserUpdate]:
    key = keys[i % len(keys)]
    permissions = ["read", "write"][: 1 + i % 2]
    return key, UserUpdate(profile={"name": key}, permissions=permissions, resources=[f"disk-{i}"])


def journal_entries(engine: perdure.Engine) -> int:
    """Journal entries stored so far: the sum of every completed invocation's journal_length."""
    reader = engine.reader()
    invs = reader.list_invocations(status=Status.COMPLETED, service=users.name, limit=sys.maxsize >> 1)
    return sum(inv.journal_length for inv in invs)


async def warm_up(engine: perdure.Engine, keys: list[str]) -> None:
    """One invocation per key: creates each key's rows and fills caches before the clock starts."""
    events = [event_for(i, keys) for i in range(len(keys))]
    await asyncio.gather(*(engine.object_call(update, key=key, arg=event) for key, event in events))


async def measured(
    engine: perdure.Engine, body: Callable[[Result], Coroutine[Any, Any, None]], cap: float
) -> Result:
    """Run one phase's body with the processor counters and the journal count diffed around it."""
    result = Result()
    stats, _ = engine.processor_stats()
    before = (stats.commands, stats.batches, stats.commit_seconds)
    entries_before = journal_entries(engine)
    for partition in engine.partitions:
        partition.stats.max_batch = 0
    started, cpu, thread_cpu = time.perf_counter(), time.process_time(), time.thread_time()
    try:
        async with asyncio.timeout(cap):
            await body(result)
    except TimeoutError:
        result.timed_out = True
    result.seconds = time.perf_counter() - started
    result.loop_cpu = time.thread_time() - thread_cpu
    result.process_cpu = time.process_time() - cpu
    stats, _ = engine.processor_stats()
    result.commands = stats.commands - before[0]
    result.batches = stats.batches - before[1]
    result.commit_seconds = stats.commit_seconds - before[2]
    result.max_batch = stats.max_batch
    result.journal_entries = journal_entries(engine) - entries_before
    return result


async def saturate(engine: perdure.Engine, keys: list[str], count: int, in_flight: int, cap: float) -> Result:
    """`count` invocations, `in_flight` at a time, keys round-robin."""

    async def body(result: Result) -> None:
        async def worker() -> None:
            while result.sent < count:
                i = result.sent
                result.sent += 1
                key, event = event_for(i, keys)
                t = time.perf_counter()
                try:
                    await engine.object_call(update, key=key, arg=event)
                except perdure.TerminalError:
                    result.failed += 1
                    continue
                result.latencies.append(time.perf_counter() - t)
                result.done += 1

        await asyncio.gather(*(worker() for _ in range(min(in_flight, count))))

    return await measured(engine, body, cap)


async def paced(engine: perdure.Engine, keys: list[str], rate: float, duration: float, cap: float) -> Result:
    """Open loop: invocation i is sent at t0 + i/rate whatever happened to the earlier ones."""
    total = int(rate * duration)

    async def body(result: Result) -> None:
        async def one(i: int, planned: float) -> None:
            key, event = event_for(i, keys)
            try:
                await engine.object_call(update, key=key, arg=event)
            except perdure.TerminalError:
                result.failed += 1
                return
            result.latencies.append(time.perf_counter() - planned)
            result.done += 1

        tasks: set[asyncio.Task[None]] = set()
        t0 = time.perf_counter()
        while result.sent < total:
            now = time.perf_counter()
            # Launch everything due (more than one if the loop was late), then sleep until the next.
            while result.sent < total and t0 + result.sent / rate <= now:
                task = asyncio.create_task(one(result.sent, t0 + result.sent / rate))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                result.sent += 1
            if result.sent < total:
                await asyncio.sleep(max(0.0, t0 + result.sent / rate - time.perf_counter()))
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()

    return await measured(engine, body, cap)


def recreate(database: str, *, create: bool = True) -> None:
    """Drop the benchmark's PostgreSQL database, then create it again unless told not to."""
    with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        if create:
            admin.execute(f"CREATE DATABASE {database}")


async def run_phase(
    store_url: str,
    keys: list[str],
    phase: Callable[[perdure.Engine], Coroutine[Any, Any, Result]],
    cap: float,
    profile: Path | None = None,
    partitions: int | None = None,
) -> Result:
    async with perdure.Engine(app, store=store_url, partitions=partitions) as engine:
        async with asyncio.timeout(cap):
            await warm_up(engine, keys)
        profiler = cProfile.Profile() if profile is not None else None
        if profiler is not None:
            profiler.enable()
        try:
            return await phase(engine)
        finally:
            if profiler is not None and profile is not None:
                profiler.disable()
                profiler.dump_stats(profile)


# ---- reporting


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def report(header: str, sat: Result | None, pace: Result | None, rate: float, rss: dict[str, float]) -> None:
    rows: list[tuple[str, str, str, str]] = []
    nan = float("nan")
    if sat is not None:
        s, done, batches = sat.seconds or nan, max(sat.done, 1), sat.batches or 1
        cut = " (TIMED OUT)" if sat.timed_out else ""
        commit = f"{sat.commit_seconds / batches * 1000:.1f} / {100 * sat.commit_seconds / s:.0f}%"
        cpu = f"{sat.loop_cpu / done * 1e6:.0f} / {sat.process_cpu / done * 1e6:.0f}"
        rows += [
            ("saturation", f"invocations done / failed{cut}", f"{sat.done:,} / {sat.failed}", ""),
            ("saturation", "invocations/s", f"{sat.done / s:,.0f}", f">= {TARGET_RATE:,}"),
            ("saturation", "latency p50 / p99 ms", f"{sat.pct(0.50):.1f} / {sat.pct(0.99):.1f}", ""),
            ("saturation", "commits/s (batches)", f"{sat.batches / s:,.0f}", ""),
            (
                "saturation",
                "commands per commit mean / max",
                f"{sat.commands / batches:.1f} / {sat.max_batch}",
                "",
            ),
            ("saturation", "commands per invocation", f"{sat.commands / done:.1f}", ""),
            ("saturation", "journal entries/s", f"{sat.journal_entries / s:,.0f}", ""),
            ("saturation", "journal entries per invocation", f"{sat.journal_entries / done:.1f}", ""),
            ("saturation", "commit wait ms per commit / % of wall", commit, ""),
            ("saturation", "CPU us per invocation: loop / process", cpu, ""),
            ("saturation", "peak RSS MiB after phase", f"{rss['saturation']:.0f}", ""),
        ]
    if pace is not None:
        s = pace.seconds or nan
        cut = " (TIMED OUT)" if pace.timed_out else ""
        counts = f"{pace.sent:,} / {pace.done:,} / {pace.failed}"
        latency = (
            f"{pace.pct(0.50):.1f} / {pace.pct(0.99):.1f} / {max(pace.latencies, default=nan) * 1000:.1f}"
        )
        cpu = f"{100 * pace.loop_cpu / s:.0f} / {100 * pace.process_cpu / s:.0f}"
        rows += [
            ("paced", f"invocations sent / done / failed{cut}", counts, ""),
            ("paced", "achieved rate /s (offered)", f"{pace.done / s:,.0f} ({rate:,.0f})", ""),
            ("paced", "latency from planned send p50 / p99 / max ms", latency, f"p99 <= {TARGET_P99_MS:.0f}"),
            ("paced", "commits/s", f"{pace.batches / s:,.0f}", ""),
            ("paced", "commands per commit", f"{pace.commands / (pace.batches or 1):.1f}", ""),
            ("paced", "CPU % of a core: loop / process", cpu, ""),
            ("paced", "peak RSS MiB after phase", f"{rss['paced']:.0f}", ""),
        ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    line = "  ".join("-" * w for w in widths)
    print(header, line, sep="\n")
    for r in rows:
        print(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]:<{widths[3]}}".rstrip())
    print(line)
    verdicts = []
    if sat is not None:
        ok = sat.done / (sat.seconds or nan) >= TARGET_RATE and not sat.timed_out
        verdicts.append(f">= {TARGET_RATE:,} invocations/s at saturation: {'MET' if ok else 'MISSED'}")
    if pace is not None:
        ok = pace.pct(0.99) <= TARGET_P99_MS and pace.done == pace.sent and not pace.timed_out
        verdicts.append(f"p99 <= {TARGET_P99_MS:.0f} ms at {rate:,.0f}/s: {'MET' if ok else 'MISSED'}")
    print("targets: " + "; ".join(verdicts))
    print("journal entries: counted from the store (sum of journal_length over the phase's invocations)")


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000, help="saturation: invocations")
    parser.add_argument(
        "--in-flight",
        type=int,
        default=2_000,
        help="saturation: calls in flight (beyond --keys, they queue behind their key)",
    )
    parser.add_argument("--keys", type=int, default=1_000, help="distinct object keys")
    parser.add_argument("--rate", type=float, default=1_000, help="paced: arrivals per second")
    parser.add_argument("--duration", type=float, default=5.0, help="paced: seconds of arrivals")
    parser.add_argument(
        "--store",
        default="sqlite",
        help="'sqlite' (a temp file, default), 'memory:' or 'postgresql' (a fresh database per phase)",
    )
    parser.add_argument("--partitions", type=int, help="postgresql: the new database's partition count")
    parser.add_argument("--synchronous", default="FULL", choices=SYNC_MODES, help="sqlite only")
    parser.add_argument("--phases", default="saturation,paced", help="comma-separated: saturation,paced")
    parser.add_argument("--timeout", type=float, default=120.0, help="abort a phase after this many seconds")
    parser.add_argument("--cprofile", type=Path, help="write a cProfile of the saturation phase here")
    parser.add_argument(
        "--loop", choices=["uvloop", "asyncio"], help="event loop (default: as perdure serves, PERDURE_LOOP)"
    )
    args = parser.parse_args()
    if args.store not in ("sqlite", "memory:", "postgresql"):
        parser.error("--store must be 'sqlite', 'memory:' or 'postgresql'")
    phases = {p.strip() for p in args.phases.split(",") if p.strip()}
    if not phases <= {"saturation", "paced"}:
        parser.error("--phases takes saturation and/or paced")
    args.phases = phases
    return args


async def main(args: argparse.Namespace) -> None:
    from perdure.runtime import loop as event_loop  # here: bench/instructions.py imports this module

    phases = args.phases

    keys = [f"user{i:04d}" for i in range(args.keys)]
    rss: dict[str, float] = {}
    sat = pace = None
    with tempfile.TemporaryDirectory(prefix="perdure-bench-") as tmp, contextlib.ExitStack() as drops:

        def url(name: str) -> str:
            if args.store == "memory:":
                return "memory:"
            if args.store == "postgresql":
                database = f"perdure_bench_{name}_{os.getpid()}"
                recreate(database)
                drops.callback(recreate, database, create=False)
                return f"{POSTGRES}/{database}"
            return f"sqlite:///{tmp}/{name}.db?synchronous={args.synchronous}"

        if "saturation" in phases:
            sat = await run_phase(
                url("saturation"),
                keys,
                lambda e: saturate(e, keys, args.count, args.in_flight, args.timeout),
                args.timeout,
                args.cprofile,
                args.partitions,
            )
            rss["saturation"] = rss_mib()
        if "paced" in phases:
            pace = await run_phase(
                url("paced"),
                keys,
                lambda e: paced(e, keys, args.rate, args.duration, args.timeout),
                args.timeout,
                partitions=args.partitions,
            )
            rss["paced"] = rss_mib()

    store = {"memory:": "memory", "postgresql": "postgresql"}.get(
        args.store, f"sqlite synchronous={args.synchronous}"
    )
    header = (
        f"perdure core bench: {store}; {args.keys:,} keys; exclusive handler with 3 ctx.run + 1 ctx.set; "
        f"saturation {args.count:,} invocations x {args.in_flight:,} in flight; paced {args.rate:,.0f}/s for "
        f"{args.duration:g} s (python {sys.version.split()[0]}, {event_loop.current()} loop)"
    )
    report(header, sat, pace, args.rate, rss)


if __name__ == "__main__":
    from perdure.runtime import loop as event_loop

    arguments = parse()
    event_loop.run(main(arguments), loop=arguments.loop)  # perdure's servers' loop and collector settings
