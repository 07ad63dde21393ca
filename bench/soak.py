"""Chaos soak: `perdure dev --kafka embedded` under mixed HTTP + Kafka load, SIGKILLed and restarted
again and again; at the end nothing acknowledged is lost, nothing is done twice, every key's
counter and order are exact, and no recorded `ctx.run` step ran again. Not part of CI.

Each cycle starts `perdure dev bench/soak_app.py:app --kafka embedded` on one SQLite file, creates
the topic in the fresh embedded broker, and loads it for a random 0.3–2 s: HTTP sends
(`POST /soak/{key}/add/send`, idempotency key = event id, a key's events one after another) and
Kafka records (keyed by the object key) over KEYS keys. Then SIGKILL — of perdure, and of its
embedded tansu broker by the pid the banner shows (a SIGKILLed parent takes no child with it).

What a client of a durable service does after a crash, the soak does: unanswered HTTP events are
sent again with the same idempotency key; Kafka events are produced again when the dead broker
took them with it — those at or past the offset the engine had stored for their partition (read
from the database while nothing runs), in their original order, before any new event.

The last cycle drains (every event sent, every invocation done), stops with SIGTERM, and the
database and the step log are checked:

- per key: `count` is its number of events; `seen` has every event once, each source's events in
  the order they were produced (HTTP: sent; Kafka: produced) — lost, duplicated, out of order;
- one completed invocation per event, whose output names the event;
- the step token the journal recorded is in the log once, as the event's last execution.

    .venv/bin/python bench/soak.py                              # 1,000 keys, 100 kills
    .venv/bin/python bench/soak.py --keys 2000 --kills 150 --seed 7

Only loopback addresses; every loop is bounded in count and time; processes are stopped by pid.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]

from perdure.engine import catalog
from perdure.storage import open_store

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "bench" / "soak_app.py") + ":app"
TOPIC, PARTITIONS = "soak", 4
SOURCE, SINK = f"kafka://local/{TOPIC}", "service://soak/add"
SUBSCRIPTION = catalog.subscription_id(SOURCE, SINK)
_URL = re.compile(r"^\s+(ingress|admin)\s+(http://\S+)\s*$")
_KAFKA = re.compile(r"local = (\S+) \(embedded tansu broker, pid (\d+)")

_JSON = {"accept": "application/json"}  # /query answers Arrow otherwise, as restate-server does


@dataclass
class Server:
    """One `perdure dev` process: its URLs, its embedded broker, stopped by pid."""

    proc: subprocess.Popen[str]
    ingress: str = ""
    admin: str = ""
    kafka: str = ""
    broker_pid: int = 0

    @classmethod
    def start(cls, db: Path, env: dict[str, str], stderr: Path, timeout: float = 60) -> Server:
        command = [sys.executable, "-m", "perdure.cli", "dev", APP, "--db", str(db), "--kafka", "embedded"]
        command += ["--ingress-port", "0", "--admin-port", "0"]
        with stderr.open("a") as err:
            proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
        server = cls(proc)
        deadline = time.monotonic() + timeout
        assert proc.stdout is not None
        for line in proc.stdout:  # the banner; ends with the Ctrl-C line
            if (m := _URL.match(line)) is not None:
                setattr(server, m.group(1), m.group(2))
            if (k := _KAFKA.search(line)) is not None:
                server.kafka, server.broker_pid = k.group(1), int(k.group(2))
            if line.startswith("Ctrl-C or SIGTERM") or time.monotonic() > deadline:
                break
        if not (server.ingress and server.admin and server.kafka):
            server.kill()
            raise SystemExit(f"perdure dev did not start; see {stderr}")
        return server

    def kill(self) -> None:
        """SIGKILL perdure, then the broker it leaves behind; reap. Safe to call again: a pid is
        signalled only while it is still ours (never after it was reaped and could be reused)."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(15)
        if self.broker_pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.broker_pid, signal.SIGKILL)
            _wait_gone(self.broker_pid)
            self.broker_pid = 0
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def stop(self) -> int:
        """SIGTERM: drain and stop (the broker goes with it)."""
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(60)
        _wait_gone(self.broker_pid)
        self.broker_pid = 0
        return code


def _wait_gone(pid: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while pid and time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


@dataclass
class Load:
    """Every event the soak made, and what became of it so far."""

    keys: list[str]
    rng: random.Random
    http: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))  # key -> events, in order
    http_acked: dict[str, int] = field(default_factory=Counter)  # key -> events acknowledged (a prefix)
    kafka: list[tuple[str, str]] = field(default_factory=list)  # (key, event), in the order made
    kafka_consumed: set[str] = field(default_factory=set)  # stored by the engine (offset below next)
    produced: dict[str, tuple[int, int]] = field(
        default_factory=dict
    )  # event -> (partition, offset) this run
    errors: Counter[str] = field(default_factory=Counter)
    ever_produced: set[str] = field(default_factory=set)
    reproduced: int = 0  # Kafka events produced again: the broker that had them died unconsumed
    resent: int = 0  # HTTP events sent again (same idempotency key): their answer was lost
    sent: set[str] = field(default_factory=set)

    def new_http(self, key: str) -> str:
        event = f"h.{key}.{len(self.http[key])}"
        self.http[key].append(event)
        return event

    def new_kafka(self, count: int) -> None:
        made = Counter(k for k, _ in self.kafka)
        for _ in range(count):
            key = self.rng.choice(self.keys)
            self.kafka.append((key, f"k.{key}.{made[key]}"))
            made[key] += 1

    def kafka_todo(self) -> list[tuple[str, str]]:
        return [(k, e) for k, e in self.kafka if e not in self.kafka_consumed]

    @property
    def total(self) -> int:
        return sum(len(v) for v in self.http.values()) + len(self.kafka)


async def http_load(load: Load, ingress: str, until: float, concurrency: int, *, new: bool = True) -> None:
    """Each worker takes a key nobody is sending to, and sends its next event (or the one that
    got no answer) with the event as idempotency key; stops at `until` (or, with `new=False`,
    once no event is left unanswered)."""
    busy: set[str] = set()

    async def worker(client: httpx.AsyncClient) -> None:
        for _ in range(100_000):
            keys = load.keys if new else [k for k in load.keys if load.http_acked[k] < len(load.http[k])]
            if time.monotonic() >= until or not keys:
                return
            key = load.rng.choice(keys)
            if key in busy:
                continue
            busy.add(key)
            try:
                acked = load.http_acked[key]
                event = load.http[key][acked] if acked < len(load.http[key]) else load.new_http(key)
                load.resent += event in load.sent
                load.sent.add(event)
                response = await client.post(
                    f"{ingress}/soak/{key}/add/send", json=event, headers={"idempotency-key": event}
                )
                if response.status_code == 202:
                    load.http_acked[key] += 1
                else:
                    load.errors[f"http {response.status_code}"] += 1
            except httpx.HTTPError as e:
                load.errors[type(e).__name__] += 1
                await asyncio.sleep(0.05)
            finally:
                busy.discard(key)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=10) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))


async def kafka_load(load: Load, bootstrap: str, until: float, new: int) -> None:
    """Produce what the last broker lost, then `new` new events, in order; stops at `until`."""
    load.new_kafka(new)
    load.produced = {}
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, request_timeout_ms=5000)
    try:
        await producer.start()  # the restarted broker may not answer yet: then next cycle
        for start in range(0, 1_000_000, 100):
            batch = load.kafka_todo()[start : start + 100]
            if not batch or time.monotonic() >= until:
                return
            sends = [await producer.send(TOPIC, json.dumps(e).encode(), key=k.encode()) for k, e in batch]
            # every future is awaited, failed ones too: the first failure ends this load
            results = await asyncio.gather(*sends, return_exceptions=True)
            for (_, event), meta in zip(batch, results, strict=True):
                if isinstance(meta, BaseException):
                    raise meta
                load.produced[event] = (meta.partition, meta.offset)
                load.reproduced += event in load.ever_produced
                load.ever_produced.add(event)
    except Exception as e:  # the broker died under us: what was not acknowledged is produced again
        load.errors[f"kafka {type(e).__name__}"] += 1
    finally:
        await asyncio.wait_for(producer.stop(), 10)


async def create_topic(bootstrap: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(TOPIC, num_partitions=PARTITIONS, replication_factor=1)])
    finally:
        await admin.close()


async def stored_offsets(db: Path) -> dict[int, int]:
    store = open_store(f"sqlite:///{db}")
    try:
        positions = store.reader().offsets(SUBSCRIPTION)
        return {p: position.next_offset for (t, p), position in positions.items() if t == TOPIC}
    finally:
        await store.close()


async def cycle(load: Load, server: Server, seconds: float, first: bool, args: argparse.Namespace) -> None:
    """Load the server for `seconds`, and SIGKILL it in the middle of that load."""
    await create_topic(server.kafka)
    async with httpx.AsyncClient(timeout=10) as client:
        if first:
            body = {"source": SOURCE, "sink": SINK, "options": {"auto.offset.reset": "earliest"}}
            response = await client.post(server.admin + "/subscriptions", json=body)
            assert response.status_code in (200, 201), response.text
    kill_at = time.monotonic() + seconds

    async def killer() -> None:
        await asyncio.sleep(seconds)
        await asyncio.to_thread(server.kill)

    until = kill_at + 1.0  # the load goes on into the kill: requests and produces in flight fail
    await asyncio.gather(
        killer(),
        http_load(load, server.ingress, until, args.concurrency),
        kafka_load(load, server.kafka, until, args.kafka_per_cycle),
    )


async def drain(load: Load, server: Server, args: argparse.Namespace, within: float = 300) -> float:
    """Send every unanswered HTTP event, produce every unconsumed Kafka event, and wait until every
    event is counted; returns how long the counting took."""
    deadline = time.monotonic() + within
    await http_load(load, server.ingress, deadline, args.concurrency, new=False)
    await kafka_load(load, server.kafka, deadline, 0)
    started = time.monotonic()
    sql = "SELECT sum(CAST(value_utf8 AS INTEGER)) AS n FROM state WHERE service_name = 'soak'"
    query = {"query": sql + " AND key = 'count'"}
    async with httpx.AsyncClient(timeout=10) as client:
        while time.monotonic() < deadline:
            answer = await client.post(server.admin + "/query", json=query, headers=_JSON)
            rows = answer.json()["rows"]  # Restate's JSON leaves NULLs out: no "n" before any state
            if (rows[0].get("n") or 0) >= load.total:
                break
            await asyncio.sleep(0.5)
    return time.monotonic() - started


async def verify(load: Load, db: Path, log: Path) -> dict[str, int]:
    """The database and the step log against every event the soak made."""
    store = open_store(f"sqlite:///{db}")
    try:
        reader = store.reader()
        wanted: dict[str, list[str]] = defaultdict(list)
        for key, events in load.http.items():
            wanted[key] += events
        for key, event in load.kafka:
            wanted[key].append(event)
        figures: Counter[str] = Counter()
        for key in load.keys:
            state = {k.decode(): json.loads(v) for k, v in reader.get_all_state("soak", key).items()}
            seen: list[str] = state.get("seen", [])
            counts = Counter(seen)
            figures["lost"] += sum(1 for e in wanted[key] if e not in counts)
            figures["duplicated"] += sum(n - 1 for n in counts.values() if n > 1)
            figures["unknown"] += sum(1 for e in counts if e not in set(wanted[key]))
            figures["count mismatches"] += state.get("count", 0) != len(wanted[key])
            for source in ("h.", "k."):
                mine = [e for e in seen if e.startswith(source)]
                figures["out of order"] += mine != sorted(mine, key=lambda e: int(e.rsplit(".", 1)[1]))
        outputs: dict[str, list[str]] = defaultdict(list)
        for inv in reader.list_invocations(service="soak", limit=10 * load.total + 1000):
            if inv.outcome is not None and inv.outcome.value is not None:
                output = json.loads(inv.outcome.value)
                outputs[output["event"]].append(output["token"])
            else:
                figures["unfinished or failed invocations"] += 1
        every = [event for events in wanted.values() for event in events]
        figures["events with other than one invocation"] = sum(
            1 for e in every if len(outputs.get(e, [])) != 1
        )
        executions: dict[str, list[str]] = defaultdict(list)
        for line in (await asyncio.to_thread(log.read_text)).splitlines():
            event, token = line.split()
            executions[event].append(token)
        for event, tokens in outputs.items():
            logged = executions.get(event, [])
            figures["recorded step re-run"] += logged.count(tokens[0]) != 1 or logged[-1] != tokens[0]
            figures["step re-executions before its record (at-least-once)"] += len(logged) - 1
        return dict(figures)
    finally:
        await store.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=16, help="HTTP requests in flight")
    parser.add_argument("--kafka-per-cycle", type=int, default=150, help="new Kafka events per cycle")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--max-minutes", type=float, default=30, help="stop the kills after this long")
    args = parser.parse_args()
    # the producer's broker dies with every kill: its connection errors are expected, and counted
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="perdure-soak-"))
    db, log, stderr = tmp / "soak.db", tmp / "steps.log", tmp / "perdure.err"
    env = {**os.environ, "PERDURE_SOAK_LOG": str(log)}
    load = Load([f"key{i:05d}" for i in range(args.keys)], rng)
    kills = 0
    print(f"soak seed {seed}, work dir {tmp}", flush=True)
    for n in range(args.kills + 1):
        last = n == args.kills or time.monotonic() - started > args.max_minutes * 60
        server = Server.start(db, env, stderr)
        try:
            if last:
                await create_topic(server.kafka)
                drained = await drain(load, server, args)
                code = server.stop()
                break
            await cycle(load, server, rng.uniform(0.3, 2.0), n == 0, args)
        finally:
            server.kill()  # a no-op once stopped or killed
        kills += 1
        offsets = await stored_offsets(db)
        load.kafka_consumed |= {e for e, (p, o) in load.produced.items() if o < offsets.get(p, 0)}
        if kills % 10 == 0:
            print(
                f"  {kills} kills, {load.total:,} events so far, {time.monotonic() - started:.0f} s",
                flush=True,
            )
    figures = await verify(load, db, log)
    seconds = time.monotonic() - started
    http = sum(len(v) for v in load.http.values())
    rows = [
        ("keys", f"{args.keys:,}"),
        ("SIGKILLs of perdure dev (+ its broker), each followed by a restart", f"{kills}"),
        ("events over HTTP (sends, idempotency key = event)", f"{http:,}"),
        ("events over Kafka (embedded broker)", f"{len(load.kafka):,}"),
        ("HTTP events sent again after a kill (same idempotency key)", f"{load.resent:,}"),
        ("Kafka events produced again (their broker died before ingesting them)", f"{load.reproduced:,}"),
        ("client errors around the kills (each retried)", f"{sum(load.errors.values()):,}"),
        *((name, f"{value:,}") for name, value in sorted(figures.items())),
        ("final drain: all events counted after", f"{drained:.1f} s"),
        ("SIGTERM exit code", f"{code}"),
        ("run time", f"{seconds / 60:.1f} min"),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"\nchaos soak (seed {seed})")
    for name, value in rows:
        print(f"  {name:<{width}}  {value:>10}")
    bad = {k: v for k, v in figures.items() if v and not k.startswith("step re-executions")}
    sys.exit(1 if bad or code != 0 else 0)


if __name__ == "__main__":
    asyncio.run(main())
