"""Kafka benchmark: the seed handler (3 `ctx.run` + 1 `ctx.set`, exclusive) fed by a Kafka subscription.

The engine runs in this process on SQLite (synchronous=FULL by default), its subscription declared
with the `App` (as users write it); the broker is tansu, a subprocess on a free loopback port.

Phase 1, saturation: COUNT JSON records over 1,000 keys and 4 partitions are produced up front,
then the engine starts and drains them. Throughput is counted from the first completion to the
last (the consumer-group join before it is reported apart); latency is from each record's send
to its invocation's completion, so it is mostly the backlog's queueing.
Phase 2, paced: a separate producer process sends at a fixed rate (open loop; each record's
*planned* send time is its start, so a stall shows as latency) to an engine already consuming.
A completion is observed by an engine completion listener: the invocation's result is durable.
Each phase has its own database and topic. The latency rows below p50/p99 split it in legs, from
the producer's ack times and a wrapper around `engine.ingest` (batch sizes are counted there too).

What the numbers said on 2 CPUs (tansu 0.6, aiokafka 0.14): saturation is bound by the engine's
CPU per invocation on the event loop (~370 us; the Kafka consumer and intake are ~3% of samples,
`Ingest` ~100 us per record; ingest batches are ~870 records, so batching is not the limit).
The paced latency is set by tansu, which holds a fetch for about half of `fetch.wait.max.ms` even
when records arrive (raw aiokafka, 500 ms default: p50 ~130 ms, p99 ~250 ms); a lower
`fetch.wait.max.ms` trades that for more fetches and more, smaller ingest batches. Before the
first record, tansu holds a group join for half of `session.timeout.ms` (3 s with the 6 s default).

    .venv/bin/python bench/kafka.py
    .venv/bin/python bench/kafka.py --phases saturation --cprofile /tmp/kafka.prof
    .venv/bin/python bench/kafka.py --option fetch.wait.max.ms=10 --option session.timeout.ms=1000
    .venv/bin/py-spy record -r 250 --threads -o /tmp/kafka.svg -- \
        .venv/bin/python bench/kafka.py --phases saturation
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]
from core import event_for, update, users  # the seed handler, as bench/core.py runs it

import perdure
from perdure.engine import catalog
from perdure.engine.intake import record_id
from perdure.kafka import Broker
from perdure.runtime import loop as event_loop
from perdure.sdk.service import KafkaSubscription

TARGET_RATE = 4_000  # events/s at saturation
TARGET_P99_MS = 25.0  # produce -> completion at the paced rate
RESTATE = (
    "restate-server 1.7 + its Python SDK, same handler: ~380-410 events/s at saturation;"
    " paced p99 ~420-440 ms at 200/s"
)
PARTITIONS = 4
LEGS = (
    "p50 / p99 ms: send -> acked by broker",
    "acked -> handed to ingest (fetch)",
    "ingest -> accepted (durable)",
    "accepted -> completed",
)
CLUSTER = "bench"
SYNC_MODES = ["FULL", "NORMAL", "OFF"]

# ---- producing


def encode(i: int, keys: list[str]) -> tuple[bytes, bytes]:
    key, event = event_for(i, keys)
    return key.encode(), msgspec.json.encode(event)


async def produce_up_front(bootstrap: str, topic: str, count: int, keys: list[str]) -> list[Sent]:
    """Every record at once (batched); each one's send time and where it landed."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=512 * 1024)
    await producer.start()
    try:
        stamped = []
        acked = [0.0] * count
        for i in range(count):
            key, value = encode(i, keys)
            future = await producer.send(topic, value, key=key)
            future.add_done_callback(lambda _f, i=i: acked.__setitem__(i, time.monotonic()))
            stamped.append((time.monotonic(), future))
        await producer.flush()
        return [Sent(t, acked[i], (await f).partition, (await f).offset) for i, (t, f) in enumerate(stamped)]
    finally:
        await producer.stop()


async def produce_paced(bootstrap: str, topic: str, rate: float, duration: float, keys: int) -> None:
    """The paced producer (a child process): prints one JSON list of [planned, acked, partition, offset]."""
    names = [f"user{i:04d}" for i in range(keys)]
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await producer.start()
    try:
        total = int(rate * duration)
        futures = []
        acked = [0.0] * total
        t0 = time.monotonic()
        for i in range(total):
            planned = t0 + i / rate
            await asyncio.sleep(max(0.0, planned - time.monotonic()))
            key, value = encode(i, names)
            future = await producer.send(topic, value, key=key)
            future.add_done_callback(lambda _f, i=i: acked.__setitem__(i, time.monotonic()))
            futures.append((planned, future))
        await producer.flush()
        out = []
        for i, (planned, future) in enumerate(futures):
            meta = await future
            out.append([planned, acked[i], meta.partition, meta.offset])
    finally:
        await producer.stop()
    print(json.dumps(out), flush=True)


# ---- measuring


@dataclass(frozen=True)
class Sent:
    """A record's send and ack times (time.monotonic(), system-wide on Linux) and where it landed."""

    at: float
    acked: float
    partition: int
    offset: int


@dataclass
class Result:
    """One phase's measurements."""

    records: int = 0
    done: int = 0
    started: float = 0.0  # the engine start (saturation) or the first send (paced)
    first: float = float("nan")  # first completion
    last: float = float("nan")  # last completion
    latencies: list[float] = field(default_factory=list)  # seconds, send -> completion
    # The same records' latency in legs: send -> acked by the broker (producer, broker append), ->
    # handed to `ingest` (fetch, consumer), -> `ingest` returned (accepted durably), -> completed
    # (key queue, handler, commits).
    legs: tuple[list[float], ...] = field(default_factory=lambda: ([], [], [], []))
    ingest_calls: int = 0
    ingest_records: int = 0
    ingest_max: int = 0
    commands: int = 0
    batches: int = 0
    commit_seconds: float = 0.0
    loop_cpu: float = 0.0
    process_cpu: float = 0.0
    broker_cpu: float = 0.0
    timed_out: bool = False

    def pct(self, q: float, of: list[float] | None = None) -> float:
        """The q-quantile latency in ms (nearest rank)."""
        values = self.latencies if of is None else of
        if not values:
            return float("nan")
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    @property
    def busy(self) -> float:
        return self.last - self.first


class Phase:
    """One engine on a fresh database, consuming one topic; completions timed by a listener."""

    def __init__(self, broker: Broker, store_url: str, topic: str, options: dict[str, str]) -> None:
        self.broker = broker
        self.topic = topic
        subscription = KafkaSubscription(f"kafka://{CLUSTER}/{topic}", update, options)
        self.app = perdure.App(
            [users],
            kafka_clusters={CLUSTER: {"bootstrap.servers": broker.bootstrap_servers}},
            subscriptions=[subscription],
        )
        self.sub_id = catalog.subscription_id(subscription.source, subscription.sink_uri)
        self.engine = perdure.Engine(self.app, store=store_url)
        self.done_at: dict[str, float] = {}
        self.ingested_at: dict[tuple[int, int], tuple[float, float]] = {}  # (partition, offset) -> legs
        self.expected = 0
        self.all_done = asyncio.Event()
        self.result = Result()
        self.engine.add_completion_listener(self._completed)
        self._count_ingest()

    def _completed(self, invocation_id: str) -> None:
        self.done_at[invocation_id] = time.monotonic()
        if len(self.done_at) >= self.expected:
            self.all_done.set()

    def _count_ingest(self) -> None:
        """Wrap the engine's `ingest` (which the Kafka intake calls): batch sizes, when each record came."""
        ingest, result, ingested_at = self.engine.ingest, self.result, self.ingested_at

        async def counted(
            subscription_id: str, topic: str, partition: int, records: Sequence[Any]
        ) -> list[str]:
            result.ingest_calls += 1
            result.ingest_records += len(records)
            result.ingest_max = max(result.ingest_max, len(records))
            called = time.monotonic()
            ids = await ingest(subscription_id, topic, partition, records)
            returned = time.monotonic()
            for record in records:
                ingested_at.setdefault((partition, record.offset), (called, returned))
            return ids

        self.engine.ingest = counted  # type: ignore[method-assign]

    def invocation_id(self, i: int, sent: Sent, keys: list[str]) -> str:
        key = event_for(i, keys)[0]
        return record_id(self.sub_id, self.topic, sent.partition, sent.offset, users.name, key)

    async def wait_assigned(self) -> None:
        """Until the subscription's consumer holds every partition (the group join is over)."""
        while True:
            intake = self.engine.kafka
            stats = intake.stats() if intake is not None else []
            if stats and len(stats[0].partitions) == PARTITIONS:
                return
            await asyncio.sleep(0.01)

    def finish(self, sent: list[Sent], keys: list[str]) -> Result:
        r = self.result
        r.records = len(sent)
        for i, s in enumerate(sent):
            at = self.done_at.get(self.invocation_id(i, s, keys))
            if at is not None:
                r.latencies.append(at - s.at)
                called, returned = self.ingested_at.get((s.partition, s.offset), (s.acked, s.acked))
                legs = (s.acked - s.at, called - s.acked, returned - called, at - returned)
                for leg, value in zip(r.legs, legs, strict=True):
                    leg.append(value)
        r.done = len(r.latencies)
        if self.done_at:
            r.first, r.last = min(self.done_at.values()), max(self.done_at.values())
        return r


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU of another process so far (Linux /proc)."""
    if pid is None:
        return float("nan")
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid: int | None = None) -> float:
    """Peak RSS of this process (pid None) or of another one (VmHWM)."""
    if pid is None:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


class Meter:
    """Processor counters and CPU time, diffed around a phase's busy part."""

    def __init__(self, engine: perdure.Engine, broker_pid: int | None) -> None:
        self.engine, self.broker_pid = engine, broker_pid
        stats, _ = engine.processor_stats()
        self.before = (stats.commands, stats.batches, stats.commit_seconds)
        self.cpu = (time.thread_time(), time.process_time(), cpu_seconds(broker_pid))

    def into(self, r: Result) -> None:
        stats, _ = self.engine.processor_stats()
        r.commands = stats.commands - self.before[0]
        r.batches = stats.batches - self.before[1]
        r.commit_seconds = stats.commit_seconds - self.before[2]
        r.loop_cpu = time.thread_time() - self.cpu[0]
        r.process_cpu = time.process_time() - self.cpu[1]
        r.broker_cpu = cpu_seconds(self.broker_pid) - self.cpu[2]


async def saturation(
    broker: Broker,
    store_url: str,
    options: dict[str, str],
    count: int,
    keys: list[str],
    cap: float,
    profile: Path | None,
) -> Result:
    topic = "bench-saturation"
    await broker.create_topic(topic, PARTITIONS)
    sent = await produce_up_front(broker.bootstrap_servers, topic, count, keys)
    phase = Phase(broker, store_url, topic, options)
    phase.expected = count
    profiler = cProfile.Profile() if profile is not None else None
    phase.result.started = time.monotonic()
    async with phase.engine as engine:
        meter = Meter(engine, broker.pid)
        if profiler is not None:
            profiler.enable()
        try:
            async with asyncio.timeout(cap):
                await phase.all_done.wait()
        except TimeoutError:
            phase.result.timed_out = True
        finally:
            if profiler is not None and profile is not None:
                profiler.disable()
                profiler.dump_stats(profile)
        meter.into(phase.result)
    return phase.finish(sent, keys)


async def paced(
    broker: Broker,
    store_url: str,
    options: dict[str, str],
    rate: float,
    duration: float,
    keys: list[str],
    cap: float,
) -> Result:
    topic = "bench-paced"
    await broker.create_topic(topic, PARTITIONS)
    phase = Phase(broker, store_url, topic, options)
    phase.expected = int(rate * duration)
    async with phase.engine as engine:
        async with asyncio.timeout(cap):
            await phase.wait_assigned()
        meter = Meter(engine, broker.pid)
        command = [sys.executable, __file__, "--produce-paced", broker.bootstrap_servers, topic]
        command += [str(rate), str(duration), str(len(keys))]
        producer = await asyncio.create_subprocess_exec(*command, stdout=subprocess.PIPE)
        try:
            async with asyncio.timeout(duration + cap):
                out, _ = await producer.communicate()
                await phase.all_done.wait()
        except TimeoutError:
            phase.result.timed_out = True
            out = b"[]"
        finally:
            if producer.returncode is None:
                producer.kill()  # by its pid
                await producer.wait()
        meter.into(phase.result)
    sent = [Sent(*row) for row in json.loads(out or b"[]")]
    result = phase.finish(sent, keys)
    result.started = sent[0].at if sent else float("nan")
    return result


# ---- reporting


def report(header: str, sat: Result | None, pace: Result | None, rate: float, rss: dict[str, float]) -> None:
    rows: list[tuple[str, str, str, str]] = []
    nan = float("nan")
    for name, r in (("saturation", sat), ("paced", pace)):
        if r is None:
            continue
        busy = r.busy or nan
        cut = " (TIMED OUT)" if r.timed_out else ""
        done = max(r.done, 1)
        if name == "saturation":
            rows += [
                (name, f"records handled / produced{cut}", f"{r.done:,} / {r.records:,}", ""),
                (name, "events/s (first -> last completion)", f"{r.done / busy:,.0f}", f">= {TARGET_RATE:,}"),
                (name, "engine start -> first completion s", f"{r.first - r.started:.2f}", ""),
                (name, "events/s incl. start and group join", f"{r.done / (r.last - r.started):,.0f}", ""),
            ]
        else:
            rows += [
                (name, f"records sent / handled{cut}", f"{r.records:,} / {r.done:,}", ""),
                (name, "achieved rate /s (offered)", f"{r.done / busy:,.0f} ({rate:,.0f})", ""),
            ]
        what = "produce -> completion" if name == "saturation" else "planned send -> completion"
        rows += [
            (
                name,
                f"{what} p50 / p99 / max ms",
                f"{r.pct(0.5):,.1f} / {r.pct(0.99):,.1f} / {max(r.latencies, default=nan) * 1000:,.1f}",
                f"p99 <= {TARGET_P99_MS:.0f}" if name == "paced" else "",
            ),
            *(
                (name, f"  {leg}", f"{r.pct(0.5, values):,.1f} / {r.pct(0.99, values):,.1f}", "")
                for leg, values in zip(LEGS, r.legs, strict=True)
            ),
            (
                name,
                "ingest calls; records per call mean / max",
                f"{r.ingest_calls:,}; {r.ingest_records / (r.ingest_calls or 1):.1f} / {r.ingest_max}",
                "",
            ),
            (
                name,
                "commits/s; commands per commit",
                f"{r.batches / busy:,.0f}; {r.commands / (r.batches or 1):.1f}",
                "",
            ),
            (name, "commit wait % of wall", f"{100 * r.commit_seconds / busy:.0f}%", ""),
            (
                name,
                "CPU us per event: loop / process / broker",
                " / ".join(f"{cpu / done * 1e6:.0f}" for cpu in (r.loop_cpu, r.process_cpu, r.broker_cpu)),
                "",
            ),
            (
                name,
                "peak RSS MiB: engine process / broker",
                f"{rss[name]:.0f} / {rss[name + ' broker']:.0f}",
                "",
            ),
        ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    line = "  ".join("-" * w for w in widths)
    print(header, line, sep="\n")
    for row in rows:
        print("  ".join(f"{cell:{'>' if i == 2 else '<'}{widths[i]}}" for i, cell in enumerate(row)).rstrip())
    print(line)
    verdicts = []
    if sat is not None:
        ok = sat.done == sat.records and sat.done / (sat.busy or nan) >= TARGET_RATE and not sat.timed_out
        verdicts.append(f">= {TARGET_RATE:,} events/s at saturation: {'MET' if ok else 'MISSED'}")
    if pace is not None:
        ok = pace.pct(0.99) <= TARGET_P99_MS and pace.done == pace.records and not pace.timed_out
        verdicts.append(f"p99 <= {TARGET_P99_MS:.0f} ms at {rate:,.0f}/s: {'MET' if ok else 'MISSED'}")
    print("targets: " + "; ".join(verdicts))
    print(f"reference: {RESTATE}")


def parse_options(pairs: list[str]) -> dict[str, str]:
    options = {"auto.offset.reset": "earliest"}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--option takes NAME=VALUE, not {pair!r}")
        options[name] = value
    return options


async def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=20_000, help="saturation: records produced up front")
    parser.add_argument("--keys", type=int, default=1_000, help="distinct record keys (object keys)")
    parser.add_argument("--rate", type=float, default=500, help="paced: records per second")
    parser.add_argument("--duration", type=float, default=10.0, help="paced: seconds of sending")
    parser.add_argument("--synchronous", default="FULL", choices=SYNC_MODES)
    parser.add_argument("--phases", default="saturation,paced", help="comma-separated: saturation,paced")
    parser.add_argument("--option", action="append", default=[], help="subscription option NAME=VALUE")
    parser.add_argument("--timeout", type=float, default=120.0, help="abort a phase after this many seconds")
    parser.add_argument("--cprofile", type=Path, help="write a cProfile of the saturation phase here")
    args = parser.parse_args(argv)
    phases = {p.strip() for p in args.phases.split(",") if p.strip()}
    if not phases <= {"saturation", "paced"}:
        parser.error("--phases takes saturation and/or paced")
    options = parse_options(args.option)
    keys = [f"user{i:04d}" for i in range(args.keys)]
    rss: dict[str, float] = {}
    sat = pace = None
    with tempfile.TemporaryDirectory(prefix="perdure-bench-kafka-") as tmp:
        broker = Broker(log_path=Path(tmp) / "tansu.log")
        await broker.start()
        try:

            def url(name: str) -> str:
                return f"sqlite:///{tmp}/{name}.db?synchronous={args.synchronous}"

            if "saturation" in phases:
                sat = await saturation(
                    broker, url("saturation"), options, args.count, keys, args.timeout, args.cprofile
                )
                rss["saturation"], rss["saturation broker"] = peak_rss_mib(), peak_rss_mib(broker.pid)
            if "paced" in phases:
                pace = await paced(
                    broker, url("paced"), options, args.rate, args.duration, keys, args.timeout
                )
                rss["paced"], rss["paced broker"] = peak_rss_mib(), peak_rss_mib(broker.pid)
        finally:
            await broker.stop()
    shown = ", ".join(f"{k}={v}" for k, v in sorted(options.items()))
    header = (
        f"perdure kafka bench: sqlite synchronous={args.synchronous}; tansu broker; {PARTITIONS} partitions;"
        f" {args.keys:,} keys; exclusive handler with 3 ctx.run + 1 ctx.set; saturation {args.count:,}"
        f" records produced up front; paced {args.rate:,.0f}/s for {args.duration:g} s; options {shown}"
        f" (python {sys.version.split()[0]}, {event_loop.current()} loop)"
    )
    report(header, sat, pace, args.rate, rss)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--produce-paced"]:
        bootstrap, topic, rate, duration, keys = sys.argv[2:7]
        asyncio.run(produce_paced(bootstrap, topic, float(rate), float(duration), int(keys)))
    else:  # the engine on perdure's servers' loop and collector settings (PERDURE_LOOP chooses)
        event_loop.run(main(sys.argv[1:]))
