"""Remote-deployment benchmark: the seed handler on the official Python SDK, perdure vs restate-server.

The handler is bench/core.py's seed handler ported to `restate-sdk` (bench/remote_services.py:
virtual object `userUpdates`, exclusive `updateUserEvent`, 3 `ctx.run` + 1 `ctx.set`), served by
hypercorn (h2c and HTTP/1.1 on one loopback port, default settings). Every run starts a fresh SDK
process with the same command, and a fresh engine on a fresh data directory:

- perdure: `perdure dev` without an app (a subprocess; SQLite, synchronous=FULL by default);
- restate-server 1.7.12 (tests/interop/restate_server.py's binary; its default configuration
  except listeners on free loopback ports and, for Kafka, the cluster in its TOML file).

Modes: `bidi` registers the deployment over h2c (the SDK then announces BIDI_STREAM), `rr` with
`use_http_11: true` (REQUEST_RESPONSE: every `ctx.run` ends the attempt and the engine invokes
again with the journal, so an invocation is 4 HTTP requests to the SDK). Protocol: by default each
engine picks its own (perdure V7, the SDK's highest; restate-server V6, V7 being experimental);
`--protocol 6` caps the SDK's manifest at V6 for both, `--protocol 7` turns on restate-server's V7.

Paths:
- http: a separate load process (spawn; bench/ingress.py's raw HTTP/1.1 keep-alive client) calls
  `POST /userUpdates/{key}/updateUserEvent` over KEYS keys, CONCURRENCY closed-loop workers, after
  a warm-up of one call per key; calls/s and latency (first byte sent to last byte received).
- kafka: a tansu broker (`perdure.kafka.Broker`) on loopback; RECORDS records over KEYS keys and 4
  partitions are produced up front to a topic of the run's own, then the engine subscribes
  (perdure: `POST /kafka-clusters` + `POST /subscriptions`; restate-server:
  `[[ingress.kafka-clusters]]` + `POST /subscriptions`; the same options for both). Events/s is
  counted from the first completion to the last, so the consumer-group join is left out (its
  time is in the notes). Every record is one invocation and all of them are in flight at once (up
  to one per key), so latency percentiles would only measure the backlog: none are shown.

Completions are observed identically for both engines, in the SDK process: the handler records
its invocation id when it reaches its end and the bench reads `GET /bench/completions` (see
remote_services.py). CPU is the whole process group's user+system time over the measured window
(restate-server's threads, perdure's commit thread, hypercorn's supervisor and worker); peak RSS
is VmHWM of the engine's process. The notes flag a run that had a STALL (a call slower than 10 s,
or 10 s without a Kafka completion) or "other load" (CPU used outside this bench's processes, or
stolen by the hypervisor: another tenant of a shared VM), which makes it incomparable.

hypercorn (0.18) closes an HTTP/2 connection once it has taken 1,000 requests: it sends GOAWAY
and then drops the responses of the streams still open on it. An engine that keeps every stream
on one connection sees those invocations hang until its inactivity timeout (perdure before
975892a, which now moves to a new connection after 500 streams: the 1,001st sequential call took
~55 s); restate-server spreads its streams over ~25 connections. `--sdk-max-requests` raises the
limit to take hypercorn out of the comparison.

What the numbers said on 2 CPUs (af16030, median of 3): http bidi perdure 209 vs restate-server 163
calls/s, rr 127 vs 85; kafka bidi 245 vs 272 events/s (0.90; also 0.90 with both on V6), rr 141 vs
112. Kafka bidi is bound by the Python SDK process (one core) and by perdure's turnaround: in fast
runs the SDK is ~92% busy under either engine, in slow ones (perdure runs are bimodal, ~165-190 or
~235-280/s) the SDK and perdure's loop both idle about half the time. perdure's engine costs ~3.0
ms CPU per event against restate-server's ~2.1: the HTTP/2 client is ~40% of it (the `h2` library
~22%, HEADERS+HPACK per stream ~6%), the SQLite writer thread ~22%, storage reads ~11%, the state
machine ~5%. restate-server's peak RSS is ~310-420 MiB, perdure's 65-90 MiB.

    .venv/bin/python bench/remote.py --rounds 3                # the table; median of 3 alternating runs
    .venv/bin/python bench/remote.py --paths kafka --modes bidi --protocol 6
    .venv/bin/python bench/remote.py --paths http --modes rr --engines perdure --profile /tmp/prof
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from itertools import pairwise
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]

from ingress import RawClient, body_for, in_load_process, start_profile, stop_profile, summarize_profile
from perdure.kafka import Broker

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.interop: restate-server's binary and process helpers
from tests.interop.restate_server import VERSION, RestateServer, binary, die_with_parent  # noqa: E402

SERVICE, HANDLER = "userUpdates", "updateUserEvent"
PARTITIONS = 4
CLUSTER = "local"
START_TIMEOUT_S = 60.0
POLL_S = 0.2
OTHER_LOAD = 0.15  # cores used outside the bench's processes (or stolen) worth a note
STALL_S = 10.0  # a call this slow, or this long without a Kafka completion, is flagged in the notes
MODES = {"bidi": False, "rr": True}  # mode -> use_http_11
#: The same for both engines. tansu holds a consumer group's first join for half the session
#: timeout: librdkafka's default (45 s) would keep restate-server waiting ~23 s, aiokafka's (10 s) 5 s.
SUBSCRIPTION_OPTIONS = {"auto.offset.reset": "earliest", "session.timeout.ms": "6000"}
NAN = float("nan")

# ---- processes


def group_pids(pgid: int) -> list[int]:
    """The live processes of a process group (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid:
                found.append(int(entry.name))
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process (all its threads) so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def group_cpu(pgid: int) -> float:
    """User + system CPU seconds of a process group's live processes so far."""
    return sum(cpu_seconds(pid) for pid in group_pids(pgid))


def machine_cpu() -> tuple[float, float]:
    """CPU seconds the machine has spent so far: (user + nice + system, stolen by the hypervisor)."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    tick = os.sysconf("SC_CLK_TCK")
    return (fields[0] + fields[1] + fields[2]) / tick, fields[7] / tick


class Usage:
    """Over a window: the CPU the machine spent outside the processes this bench runs.

    On a small shared VM another tenant's load shows up here: a row with "other load" in its
    notes ran with less CPU than the others.
    """

    def __init__(self, groups: list[int], pids: tuple[int, ...] = ()) -> None:
        self.groups, self.pids = groups, pids
        self.started = time.monotonic()
        self.before = self._ours(), machine_cpu()

    def _ours(self) -> float:
        children = resource.getrusage(resource.RUSAGE_CHILDREN)  # the load processes, once reaped
        own = time.process_time() + children.ru_utime + children.ru_stime
        return own + sum(map(group_cpu, self.groups)) + sum(map(cpu_seconds, self.pids))

    def into(self, row: Row) -> None:
        ours, (busy, steal) = self._ours(), machine_cpu()
        seconds = time.monotonic() - self.started
        row.other_cores = max(0.0, busy - self.before[1][0] - (ours - self.before[0])) / seconds
        row.steal_cores = (steal - self.before[1][1]) / seconds


def peak_rss_mib(pid: int) -> float:
    """A process's peak resident set (VmHWM)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return NAN


def stop_group(proc: subprocess.Popen[Any], timeout: float = 15.0) -> None:
    """SIGTERM the process group `proc` leads (started with start_new_session), SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def listening_socket() -> socket.socket:
    """A bound, listening loopback socket to hand to a child (no race for a free port)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


def tail(path: Path, lines: int = 30) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


class Sdk:
    """`hypercorn remote_services:app` (default settings) on a pre-bound loopback port."""

    def __init__(self, tmp: Path, max_protocol: int | None, max_requests: int | None) -> None:
        self.log = log = tmp / "sdk.log"
        sock = listening_socket()
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        command = [sys.executable, "-m", "hypercorn", "--bind", f"fd://{sock.fileno()}"]
        if max_requests is not None:
            config = tmp / "hypercorn.toml"
            config.write_text(f"keep_alive_max_requests = {max_requests}\n")
            command += ["--config", str(config)]
        command.append("remote_services:app")
        env = {**os.environ, "PYTHONPATH": str(ROOT / "bench")}
        if max_protocol is not None:
            env["BENCH_MAX_PROTOCOL"] = str(max_protocol)
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                command,
                cwd=ROOT,
                env=env,
                pass_fds=[sock.fileno()],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        sock.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                if httpx.get(f"{self.url}/bench/completions", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"the SDK process did not start:\n{tail(log)}")
            time.sleep(0.05)

    def completions(self, tags: bool = False) -> dict[str, Any]:
        query = "?tags=1" if tags else ""
        answer: dict[str, Any] = httpx.get(f"{self.url}/bench/completions{query}", timeout=10).json()
        return answer

    def reset(self) -> None:
        httpx.post(f"{self.url}/bench/reset", timeout=10).raise_for_status()

    def worker_pid(self) -> int:
        """The process running the app: the group's busiest (hypercorn's worker child)."""
        return max(group_pids(self.proc.pid) or [self.proc.pid], key=cpu_seconds)

    def stop(self) -> None:
        stop_group(self.proc)


# ---- engines


def admin_post(admin: str, path: str, body: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
    response = httpx.post(f"{admin}{path}", json=body, timeout=timeout)
    if response.status_code not in (200, 201):
        raise SystemExit(f"POST {path} {body}: {response.status_code} {response.text}")
    answer: dict[str, Any] = response.json()
    return answer


class Perdure:
    """`perdure dev` without an app, on free ports; its banner read by a thread; stopped by pid."""

    name = "perdure"

    def __init__(self, tmp: Path, synchronous: str) -> None:
        self.log = tmp / "perdure.log"
        command = [sys.executable, "-m", "perdure.cli", "dev", "--db", str(tmp / "perdure.db")]
        command += ["--synchronous", synchronous, "--ingress-port", "0", "--admin-port", "0"]
        with self.log.open("ab") as err:
            self.proc = subprocess.Popen(
                command,
                stdout=subprocess.PIPE,
                stderr=err,
                stdin=subprocess.DEVNULL,
                text=True,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        self.urls: dict[str, str] = {}
        ready = threading.Event()

        def read() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                match = re.match(r"^\s+(ingress|admin)\s+(http://\S+)", line)
                if match:
                    self.urls[match.group(1)] = match.group(2).rstrip("/")
                if line.startswith("Ctrl-C"):
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(START_TIMEOUT_S) or not {"ingress", "admin"} <= self.urls.keys():
            self.stop()
            raise SystemExit(f"perdure dev did not start:\n{tail(self.log)}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def ingress(self) -> str:
        return self.urls["ingress"]

    def register(self, uri: str, use_http_11: bool) -> str:
        answer = admin_post(self.urls["admin"], "/deployments", {"uri": uri, "use_http_11": use_http_11})
        d = httpx.get(f"{self.urls['admin']}/deployments/{answer['id']}", timeout=10).json()
        return f"{d['protocol_type']} {d['http_version']} V{d['protocol_version']}"

    def subscribe(self, bootstrap: str, topic: str, options: dict[str, str]) -> None:
        cluster = {"name": CLUSTER, "properties": {"bootstrap.servers": bootstrap}}
        admin_post(self.urls["admin"], "/kafka-clusters", cluster)
        sink = f"service://{SERVICE}/{HANDLER}"
        admin_post(
            self.urls["admin"],
            "/subscriptions",
            {"source": f"kafka://{CLUSTER}/{topic}", "sink": sink, "options": options},
        )

    def stop(self) -> None:
        stop_group(self.proc, timeout=30.0)


class Restate(RestateServer):
    """restate-server with its default configuration except loopback listeners (and a Kafka cluster)."""

    name = "restate"

    def __init__(self, tmp: Path, kafka: str | None, partitions: int | None, v7: bool) -> None:
        super().__init__(tmp, protocol_v7=v7)
        self.kafka = kafka
        self.partitions = partitions
        self.start()

    def config(self) -> str:
        node, ingress, admin = self.ports["node"], self.ports["ingress"], self.ports["admin"]
        lines = [
            f'base-dir = "{self.base_dir / "data"}"',
            'listen-mode = "tcp"',
            f'bind-address = "127.0.0.1:{node}"',
            f'advertised-address = "http://127.0.0.1:{node}/"',
            "disable-telemetry = true",
        ]
        if self.partitions:
            lines.append(f"default-num-partitions = {self.partitions}")
        if self.protocol_v7:
            lines.append("experimental-enable-protocol-v7 = true")
        lines += ["", "[ingress]", f'bind-address = "127.0.0.1:{ingress}"']
        if self.kafka:
            lines += ["", "[[ingress.kafka-clusters]]", f'name = "{CLUSTER}"', f'brokers = ["{self.kafka}"]']
        lines += ["", "[admin]", f'bind-address = "127.0.0.1:{admin}"', "disable-web-ui = true"]
        return "\n".join(lines) + "\n"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def register(self, uri: str, use_http_11: bool) -> str:  # type: ignore[override]
        answer = super().register(uri, use_http_11=use_http_11)
        d = self.deployment(answer["id"])
        return f"{d['protocol_type']} {d['http_version']} V{7 if self.protocol_v7 else 6}"

    def subscribe(self, bootstrap: str, topic: str, options: dict[str, str]) -> None:
        sink = f"service://{SERVICE}/{HANDLER}"
        admin_post(
            self.admin,
            "/subscriptions",
            {"source": f"kafka://{CLUSTER}/{topic}", "sink": sink, "options": options},
        )


Engine = Perdure | Restate

# ---- the HTTP load (runs in its own process)


async def generate(
    host: str, port: int, concurrency: int, count: int, cap: float, keys: int, offset: int
) -> dict[str, Any]:
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    errors: Counter[str] = Counter()
    sent = 0

    async def worker(client: RawClient) -> None:
        nonlocal sent
        while sent < count:
            i = offset + sent
            sent += 1
            key, body = body_for(i, keys)
            t = time.perf_counter()
            try:
                status = await client.call(f"/{SERVICE}/{key}/{HANDLER}", body)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as e:
                errors[type(e).__name__] += 1
                await client.close()
                continue
            latencies.append(time.perf_counter() - t)
            statuses[status] += 1

    clients = [RawClient(host, port) for _ in range(concurrency)]
    started = time.perf_counter()
    timed_out = False
    try:
        async with asyncio.timeout(cap):
            await asyncio.gather(*(worker(c) for c in clients))
    except TimeoutError:
        timed_out = True
    seconds = time.perf_counter() - started
    for c in clients:
        await c.close()
    return {
        "latencies": latencies,
        "statuses": dict(statuses),
        "errors": dict(errors),
        "seconds": seconds,
        "timed_out": timed_out,
    }


def load_process(conn: Connection, *args: Any) -> None:
    conn.send(asyncio.run(generate(*args)))
    conn.close()


def run_load(
    ingress: str, concurrency: int, count: int, cap: float, keys: int, offset: int
) -> dict[str, Any]:
    host, port = ingress.removeprefix("http://").rsplit(":", 1)
    return in_load_process(load_process, (host, int(port), concurrency, count, cap, keys, offset), cap)


# ---- Kafka


async def produce(bootstrap: str, topic: str, count: int, keys: int) -> None:
    """`count` records (the HTTP path's bodies, keyed by user) on a new topic, all acked."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=512 * 1024)
    await producer.start()
    try:
        futures = []
        for i in range(count):
            key, value = body_for(i, keys)
            futures.append(await producer.send(topic, value, key=key.encode()))
        await producer.flush()
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


# ---- one run


@dataclass
class Row:
    """One (path, mode, engine) run."""

    path: str
    mode: str
    engine: str
    expected: int = 0
    done: int = 0
    seconds: float = NAN  # measured window
    latencies: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    engine_cpu: float = NAN
    sdk_cpu: float = NAN
    broker_cpu: float = NAN
    rss_mib: float = NAN
    join_s: float = NAN  # kafka: subscription created -> first completion
    pause_s: float = NAN  # kafka: the longest time without a completion, first to last
    protocol: str = ""
    timed_out: bool = False
    skipped: str = ""
    rounds: list[float] = field(default_factory=list)  # every round's rate, with --rounds
    stalled_rounds: list[int] = field(default_factory=list)  # which rounds had a stall
    other_cores: float = 0.0  # CPU used outside this bench's processes during the run
    steal_cores: float = 0.0

    @property
    def stalled(self) -> int:
        """Calls slower than STALL_S, or 1 when the Kafka completions paused that long."""
        return sum(1 for latency in self.latencies if latency > STALL_S) + (self.pause_s > STALL_S)

    @property
    def rate(self) -> float:
        return self.done / self.seconds if self.seconds and self.seconds > 0 else NAN

    def pct(self, q: float) -> float:
        if not self.latencies:
            return NAN
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    @property
    def error_count(self) -> int:
        return sum(self.errors.values()) + (self.expected - self.done if self.path == "kafka" else 0)


@dataclass
class Settings:
    calls: int
    concurrency: int
    records: int
    keys: int
    timeout: float
    restate_partitions: int | None
    synchronous: str  # perdure's SQLite fsync mode
    protocol: str  # default (each engine's own choice), 6 (the SDK announces V6 at most), 7
    sdk_max_requests: int | None
    profile: Path | None
    logs: Path | None


def start_engine(name: str, tmp: Path, kafka: str | None, s: Settings) -> Engine:
    if name == "perdure":
        return Perdure(tmp, s.synchronous)
    return Restate(tmp, kafka, s.restate_partitions, s.protocol == "7")


def profiled(row: Row, engine: Engine, sdk: Sdk, s: Settings, tmp: Path) -> list[subprocess.Popen[bytes]]:
    """py-spy on perdure and the SDK worker during the measured window (with --profile)."""
    if s.profile is None:
        return []
    spies = []
    targets = [("sdk", sdk.worker_pid())] + ([("perdure", engine.pid)] if engine.name == "perdure" else [])
    for who, pid in targets:
        spy = start_profile(pid, tmp / f"{row.path}-{row.mode}-{row.engine}-{who}.spy")
        if spy is not None:
            spies.append(spy)
    return spies


def save_profiles(spies: list[subprocess.Popen[bytes]], s: Settings, tmp: Path) -> None:
    for spy in spies:
        stop_profile(spy)
    if s.profile is None:
        return
    s.profile.mkdir(parents=True, exist_ok=True)
    for raw in tmp.glob("*.spy"):
        shutil.copy(raw, s.profile / raw.with_suffix(".collapsed").name)
        summarize_profile(raw, s.profile / raw.with_suffix(".txt").name)
        raw.unlink()


def run_http(row: Row, engine: Engine, sdk: Sdk, s: Settings, tmp: Path) -> None:
    warm = run_load(engine.ingress, s.concurrency, s.keys, s.timeout, s.keys, 0)  # one call per key
    if warm["statuses"].get(200, 0) == 0:
        raise SystemExit(
            f"{row.engine}: the warm-up had no successful call: {warm['statuses']} {warm['errors']}"
        )
    sdk.reset()
    cpu = (group_cpu(engine.pid), group_cpu(sdk.proc.pid))
    usage = Usage([engine.pid, sdk.proc.pid])
    spies = profiled(row, engine, sdk, s, tmp)
    result = run_load(engine.ingress, s.concurrency, s.calls, s.timeout, s.keys, s.keys)
    save_profiles(spies, s, tmp)
    usage.into(row)
    row.engine_cpu = group_cpu(engine.pid) - cpu[0]
    row.sdk_cpu = group_cpu(sdk.proc.pid) - cpu[1]
    row.expected = s.calls
    row.done = result["statuses"].get(200, 0)
    row.seconds = result["seconds"]
    row.latencies = result["latencies"]
    row.timed_out = result["timed_out"]
    row.errors = {**result["errors"], **{f"HTTP {k}": v for k, v in result["statuses"].items() if k != 200}}
    if row.timed_out:
        row.errors["timed out"] = s.calls - sum(result["statuses"].values()) - sum(result["errors"].values())


def run_kafka(row: Row, engine: Engine, sdk: Sdk, broker: Broker, topic: str, s: Settings, tmp: Path) -> None:
    row.expected = s.records
    cpu = (group_cpu(engine.pid), group_cpu(sdk.proc.pid), cpu_seconds(broker.pid or 0))
    usage = Usage([engine.pid, sdk.proc.pid], (broker.pid or 0,))
    subscribed = time.monotonic()
    engine.subscribe(broker.bootstrap_servers, topic, SUBSCRIPTION_OPTIONS)
    spies: list[subprocess.Popen[bytes]] = []
    deadline = subscribed + s.timeout
    summary = sdk.completions()
    while summary["count"] < s.records:
        if time.monotonic() > deadline:
            row.timed_out = True
            break
        if summary["count"] and not spies and s.profile is not None:
            spies = profiled(row, engine, sdk, s, tmp)
        time.sleep(POLL_S)
        summary = sdk.completions()
    save_profiles(spies, s, tmp)
    usage.into(row)
    row.engine_cpu = group_cpu(engine.pid) - cpu[0]
    row.sdk_cpu = group_cpu(sdk.proc.pid) - cpu[1]
    summary = sdk.completions(tags=True)
    row.broker_cpu = cpu_seconds(broker.pid or 0) - cpu[2]
    row.done = summary["count"]
    if summary["count"]:
        row.seconds = summary["last"] - summary["first"]
        row.join_s = summary["first"] - subscribed
        times = sorted(summary["tags"].values())
        row.pause_s = max((b - a for a, b in pairwise(times)), default=0.0)
    if row.timed_out:
        row.errors["not completed in time"] = s.records - row.done


def run_one(path: str, mode: str, name: str, s: Settings, broker: Broker | None, n: int) -> Row:
    row = Row(path, mode, name)
    with tempfile.TemporaryDirectory(prefix=f"perdure-bench-remote-{path}-{mode}-{name}-") as tmp_name:
        tmp = Path(tmp_name)
        topic = f"bench-{n}-{path}-{mode}-{name}"
        if broker is not None:
            asyncio.run(broker.create_topic(topic, PARTITIONS))
            asyncio.run(produce(broker.bootstrap_servers, topic, s.records, s.keys))
        engine: Engine | None = None
        sdk: Sdk | None = None
        try:
            engine = start_engine(name, tmp, broker.bootstrap_servers if broker else None, s)
            sdk = Sdk(tmp, 6 if s.protocol == "6" else None, s.sdk_max_requests)
            row.protocol = engine.register(sdk.url, MODES[mode])
            if broker is not None:
                run_kafka(row, engine, sdk, broker, topic, s, tmp)
            else:
                run_http(row, engine, sdk, s, tmp)
            row.rss_mib = peak_rss_mib(engine.pid)
        finally:
            if sdk is not None:
                sdk.stop()
            if engine is not None:
                engine.stop()
            if s.logs is not None:
                s.logs.mkdir(parents=True, exist_ok=True)
                for log in tmp.glob("*.log"):
                    shutil.copy(log, s.logs / f"{path}-{mode}-{name}-{log.name}")
    return row


# ---- the table


def median(rounds: list[Row]) -> Row:
    """The round with the median throughput, every round's throughput and stalls noted."""
    ordered = sorted(rounds, key=lambda r: r.rate if not math.isnan(r.rate) else -1.0)
    row = ordered[len(ordered) // 2]
    if len(rounds) > 1:
        row.rounds = [r.rate for r in rounds]
        row.stalled_rounds = [k + 1 for k, r in enumerate(rounds) if r.stalled]
    return row


def revision() -> str:
    """The perdure commit measured, and whether src/ had uncommitted changes."""
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "src"], capture_output=True, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown revision"
    return head + (" + uncommitted changes in src/" if changed else "")


def report(header: str, rows: list[Row]) -> None:
    titles = (
        "path", "mode", "engine", "done", "per s", "p50 ms", "p99 ms", "max ms", "errors",
        "engine CPU us/op", "SDK CPU us/op", "engine RSS MiB", "notes",
    )  # fmt: skip
    table = [titles]
    for r in rows:
        if r.skipped:
            table.append((r.path, r.mode, r.engine, *["-"] * 9, r.skipped))
            continue
        done = max(r.done, 1)
        notes = [r.protocol]
        if r.rounds:
            notes.append("rounds " + " / ".join(f"{rate:,.0f}" for rate in r.rounds))
        if r.other_cores > OTHER_LOAD or r.steal_cores > OTHER_LOAD:
            notes.append(f"other load {r.other_cores:.2f} cores, steal {r.steal_cores:.2f}")
        if r.stalled_rounds:
            notes.append(f"STALL in round(s) {', '.join(map(str, r.stalled_rounds))}")
        if r.path == "kafka":
            broker = r.broker_cpu / done * 1e6
            notes.append(f"subscribe->first {r.join_s:.1f} s; broker CPU {broker:.0f} us/op")
            if r.pause_s > STALL_S:
                notes.append(f"STALL: no completion for {r.pause_s:.1f} s")
        stalled = sum(1 for latency in r.latencies if latency > STALL_S)
        if stalled:
            notes.append(f"STALL: {stalled} call(s) > {STALL_S:g} s")
        if r.errors:
            notes.append(", ".join(f"{k}: {v}" for k, v in r.errors.items()))
        table.append(
            (
                r.path,
                r.mode,
                r.engine,
                f"{r.done:,}/{r.expected:,}",
                f"{r.rate:,.0f}",
                f"{r.pct(0.5):,.1f}" if r.latencies else "-",
                f"{r.pct(0.99):,.1f}" if r.latencies else "-",
                f"{max(r.latencies) * 1000:,.1f}" if r.latencies else "-",
                f"{r.error_count:,}",
                f"{r.engine_cpu / done * 1e6:,.0f}",
                f"{r.sdk_cpu / done * 1e6:,.0f}",
                f"{r.rss_mib:,.0f}",
                "; ".join(n for n in notes if n),
            )
        )
    widths = [max(len(line[i]) for line in table) for i in range(len(titles))]
    numeric = range(3, 12)
    rule = "  ".join("-" * w for w in widths)
    print(header)
    for k, line in enumerate(table):
        cells = [f"{c:>{widths[i]}}" if i in numeric else f"{c:<{widths[i]}}" for i, c in enumerate(line)]
        print("  ".join(cells).rstrip())
        if k == 0:
            print(rule)
    print(rule)
    by = {(r.path, r.mode, r.engine): r for r in rows if not r.skipped}
    verdicts = []
    for path, mode in dict.fromkeys((r.path, r.mode) for r in rows):
        p, q = by.get((path, mode, "perdure")), by.get((path, mode, "restate"))
        if p is None or q is None or not q.rate or math.isnan(q.rate):
            continue
        ratio = p.rate / q.rate
        verdict = ""
        if mode == "bidi":
            met = ratio >= 1 and not p.error_count
            verdict = f" (target >= 1: {'MET' if met else 'MISSED'})"
        verdicts.append(f"  {path} {mode}: perdure/restate throughput {ratio:.2f}{verdict}")
    if verdicts:
        print("ratios:")
        print("\n".join(verdicts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=2_000, help="http: measured calls per run")
    parser.add_argument("--concurrency", type=int, default=64, help="http: closed-loop callers")
    parser.add_argument("--records", type=int, default=5_000, help="kafka: records produced up front per run")
    parser.add_argument("--keys", type=int, default=1_000, help="distinct object keys")
    parser.add_argument("--paths", default="http,kafka")
    parser.add_argument("--modes", default="bidi,rr")
    parser.add_argument("--engines", default="perdure,restate")
    parser.add_argument("--timeout", type=float, default=300.0, help="cap of each measured phase, seconds")
    parser.add_argument(
        "--restate-partitions", type=int, help="restate-server default-num-partitions (its default: 24)"
    )
    parser.add_argument(
        "--synchronous",
        choices=["FULL", "NORMAL", "OFF"],
        default="FULL",
        help="perdure's SQLite fsync mode (FULL, the default: an fsync per commit)",
    )
    parser.add_argument(
        "--protocol",
        choices=["default", "6", "7"],
        default="default",
        help="service protocol: each engine's default (perdure V7, restate-server V6), V6 for both (the"
        " SDK's manifest capped), V7 for both (restate-server's experimental flag)",
    )
    parser.add_argument(
        "--sdk-max-requests",
        type=int,
        help="hypercorn keep_alive_max_requests (its default: 1000 requests per connection, then GOAWAY)",
    )
    parser.add_argument("--rounds", type=int, default=1, help="runs of each combination (median shown)")
    parser.add_argument("--profile", type=Path, help="py-spy perdure and the SDK worker into this directory")
    parser.add_argument("--logs", type=Path, help="copy every process's log into this directory")
    args = parser.parse_args()

    def chosen(text: str, allowed: tuple[str, ...], flag: str) -> list[str]:
        picked = [p.strip() for p in text.split(",") if p.strip()]
        if not picked or not set(picked) <= set(allowed):
            parser.error(f"{flag} takes a comma-separated subset of {','.join(allowed)}")
        return picked

    measured = revision()  # at the start: others may commit while the bench runs
    paths = chosen(args.paths, ("http", "kafka"), "--paths")
    modes = chosen(args.modes, ("bidi", "rr"), "--modes")
    engines = chosen(args.engines, ("perdure", "restate"), "--engines")
    s = Settings(
        args.calls, args.concurrency, args.records, args.keys, args.timeout,
        args.restate_partitions, args.synchronous, args.protocol, args.sdk_max_requests,
        args.profile, args.logs,
    )  # fmt: skip
    exe = binary()
    missing = ""
    if "restate" in engines and (exe is None or not exe.exists()):
        missing = f"restate-server {VERSION} is not installed (`python3 dev.py setup` installs it with npm)"
        print(f"skipping restate-server: {missing}", file=sys.stderr)

    runs: dict[tuple[str, str, str], list[Row]] = {}
    broker: Broker | None = None
    with tempfile.TemporaryDirectory(prefix="perdure-bench-remote-") as tmp:
        try:
            if "kafka" in paths:
                broker = Broker(log_path=Path(tmp) / "tansu.log")
                asyncio.run(broker.start())
            n = 0
            for path in paths:
                for _ in range(args.rounds):  # alternating engines, so drifts in the VM hit both
                    for mode in modes:
                        for name in engines:
                            n += 1
                            done = runs.setdefault((path, mode, name), [])
                            if name == "restate" and missing:
                                done[:] = [Row(path, mode, name, skipped=missing)]
                                continue
                            print(f"[{n}] {path} {mode} {name} ...", file=sys.stderr, flush=True)
                            row = run_one(path, mode, name, s, broker if path == "kafka" else None, n)
                            print(f"    {row.rate:,.0f}/s", file=sys.stderr, flush=True)
                            done.append(row)
        finally:
            if broker is not None:
                asyncio.run(broker.stop())
    partitions = args.restate_partitions or "default (24)"
    header = (
        "perdure remote bench: seed handler (3 ctx.run + 1 ctx.set, exclusive) on restate-sdk under"
        " hypercorn (a fresh process per run)\n"
        f"http: c={s.concurrency} x {s.calls:,} calls over {s.keys:,} keys after a warm-up of one call per"
        f" key; kafka: {s.records:,} records over {s.keys:,} keys, {PARTITIONS} partitions, events/s from"
        " the first completion to the last\n"
        f"perdure {measured} (perdure dev, sqlite synchronous={s.synchronous}); restate-server"
        f" {VERSION}, {partitions} partitions;"
        f" protocol {s.protocol}; hypercorn keep_alive_max_requests {s.sdk_max_requests or 'default (1000)'};"
        f" {args.rounds} round(s), the median shown"
        f" (python {sys.version.split()[0]}, {os.cpu_count()} CPUs)"
    )
    report(header, [median(rounds) for rounds in runs.values()])


if __name__ == "__main__":
    main()
