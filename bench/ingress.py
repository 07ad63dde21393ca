"""Ingress benchmark: HTTP calls of the seed handler through `perdure dev`, from a separate process.

The server is `perdure dev bench/core.py:app` (a subprocess: engine + SQLite + ingress + admin, as
users run it); the handler is bench/core.py's seed handler (exclusive, 3 `ctx.run` + 1 `ctx.set`)
over 1,000 keys. The load generator runs in another process (multiprocessing, spawn): closed-loop
workers, each on its own keep-alive HTTP/1.1 connection, calling `POST /benchUsers/{key}/update`
and timing each call from the first byte sent to the last byte received.

Two clients: `raw` (asyncio streams writing HTTP/1.1 by hand) and `httpx` (AsyncClient with a
64-connection pool). Measured on 2 CPUs: raw costs ~90 µs of client CPU per call at c=64, httpx
~5,800 µs (its pool bookkeeping grows with the pool), so httpx itself caps the load at ~170 calls/s
and steals the server's CPU. `raw` is the default; `--client httpx` reproduces that.

    .venv/bin/python bench/ingress.py                             # c=64 then c=1, sqlite FULL
    .venv/bin/python bench/ingress.py --synchronous NORMAL
    .venv/bin/python bench/ingress.py --client httpx --count 5000
    .venv/bin/python bench/ingress.py --profile /tmp/ingress.txt  # py-spy the server during c=64
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "bench" / "core.py") + ":app"
TARGET_RATE = 3_000  # calls/s at concurrency 64
TARGET_P50_MS = 2.0  # at concurrency 1 (issue 12)
RESTATE = (
    "restate-server 1.7 + its Python SDK, same handler and machine class: ~230-260 calls/s at c=64 "
    "(p50 ~240-280 ms); p50 ~11 ms at c=1"
)
START_TIMEOUT_S = 30.0

# ---- the server


class Server:
    """A perdure server command (`dev …`, `serve …`) on free ports; stdout read by a thread, stopped
    by pid. `command` follows `perdure`; it must take `--ingress-port 0 --admin-port 0`."""

    def __init__(self, command: list[str], log: Path) -> None:
        self._log = log.open("a")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "perdure.cli", *command],
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        self.urls: dict[str, str] = {}
        ready = threading.Event()

        def read() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                match = re.match(r"^\s+(ingress|admin)\s+(http://\S+)", line)
                if match:
                    self.urls[match.group(1)] = match.group(2)
                if line.startswith("Ctrl-C"):
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(START_TIMEOUT_S) or "ingress" not in self.urls:
            self.stop()
            sys.exit(f"perdure {command[0]} did not start; see {log}")

    @property
    def ingress(self) -> tuple[str, int]:
        host, port = self.urls["ingress"].removeprefix("http://").rsplit(":", 1)
        return host, int(port)

    def cpu_seconds(self) -> float:
        """User + system CPU of the server process so far (Linux /proc)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


# ---- the load generator (runs in its own process)


def body_for(i: int, keys: int) -> tuple[str, bytes]:
    key = f"user{i % keys:04d}"
    event = {
        "profile": {"name": key},
        "permissions": ["read", "write"][: 1 + i % 2],
        "resources": [f"disk-{i}"],
    }
    return key, json.dumps(event, separators=(",", ":")).encode()


class RawClient:
    """HTTP/1.1 keep-alive over asyncio streams: just enough for perdure's JSON answers."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def call(self, path: str, body: bytes) -> int:
        reused = self.writer is not None
        try:
            return await self._call(path, body)
        except (asyncio.IncompleteReadError, ConnectionResetError):
            if not reused:
                raise
            # The server closed the kept-alive connection while it sat idle, before our request
            # reached it: send it once more on a new connection, as HTTP clients do.
            await self.close()
            return await self._call(path, body)

    async def _call(self, path: str, body: bytes) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(
            f"POST {path} HTTP/1.1\r\nhost: {self.host}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n".encode()
            + body
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        match = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
        await self.reader.readexactly(int(match.group(1)) if match else 0)
        if re.search(rb"(?i)\r\nconnection:\s*close", head):
            await self.close()
        return status

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


async def generate(
    host: str, port: int, client: str, concurrency: int, count: int, cap: float, keys: int, offset: int
) -> dict[str, Any]:
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    errors: Counter[str] = Counter()
    sent = 0
    base = f"http://{host}:{port}"

    async def worker(call: Callable[[str, bytes], Any]) -> None:
        nonlocal sent
        while sent < count:
            i = offset + sent
            sent += 1
            key, body = body_for(i, keys)
            t = time.perf_counter()
            try:
                status = await call(f"/benchUsers/{key}/update", body)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as e:
                errors[type(e).__name__] += 1
                continue
            except Exception as e:  # httpx errors
                errors[type(e).__name__] += 1
                continue
            latencies.append(time.perf_counter() - t)
            statuses[status] += 1

    started, cpu = time.perf_counter(), time.process_time()
    timed_out = False
    if client == "httpx":
        import httpx

        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as http:

            async def httpx_call(path: str, body: bytes) -> int:
                response = await http.post(path, content=body, headers={"content-type": "application/json"})
                return response.status_code

            try:
                async with asyncio.timeout(cap):
                    await asyncio.gather(*(worker(httpx_call) for _ in range(concurrency)))
            except TimeoutError:
                timed_out = True
    else:
        clients = [RawClient(host, port) for _ in range(concurrency)]
        try:
            async with asyncio.timeout(cap):
                await asyncio.gather(*(worker(c.call) for c in clients))
        except TimeoutError:
            timed_out = True
        for c in clients:
            await c.close()
    return {
        "latencies": latencies,
        "statuses": dict(statuses),
        "errors": dict(errors),
        "seconds": time.perf_counter() - started,
        "client_cpu": time.process_time() - cpu,
        "timed_out": timed_out,
    }


def load_process(conn: Connection, *args: Any) -> None:
    conn.send(asyncio.run(generate(*args)))
    conn.close()


def in_load_process(target: Callable[..., None], args: tuple[Any, ...], cap: float) -> dict[str, Any]:
    """Run `target(conn, *args)` in a spawned process (load off the server's cores' event loop)
    and return the dict it sends back; gives up `cap` + 60 s later."""
    ctx = mp.get_context("spawn")
    receiver, sender = ctx.Pipe(duplex=False)
    process = ctx.Process(target=target, args=(sender, *args))
    process.start()
    sender.close()
    try:
        if not receiver.poll(cap + 60):
            raise SystemExit("the load generator did not report")
        result: dict[str, Any] = receiver.recv()
    finally:
        process.join(10)
        if process.is_alive():
            process.kill()
    return result


def run_load(
    server: Server, client: str, concurrency: int, count: int, cap: float, keys: int, offset: int
) -> Phase:
    host, port = server.ingress
    cpu_before = server.cpu_seconds()
    result = in_load_process(load_process, (host, port, client, concurrency, count, cap, keys, offset), cap)
    phase = Phase(concurrency=concurrency, **result)
    phase.server_cpu = server.cpu_seconds() - cpu_before
    return phase


# ---- results


@dataclass
class Phase:
    concurrency: int
    latencies: list[float]
    statuses: dict[int, int]
    errors: dict[str, int]
    seconds: float
    client_cpu: float
    timed_out: bool
    server_cpu: float = 0.0
    ok: int = field(init=False)

    def __post_init__(self) -> None:
        self.ok = self.statuses.get(200, 0)

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds else float("nan")

    def pct(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def report(header: str, high: Phase | None, low: Phase | None) -> None:
    rows: list[tuple[str, str, str, str]] = []
    for phase, target in ((high, f">= {TARGET_RATE:,} calls/s"), (low, f"p50 <= {TARGET_P50_MS:g} ms")):
        if phase is None:
            continue
        c = f"c={phase.concurrency}"
        cut = " (TIMED OUT)" if phase.timed_out else ""
        other = {k: v for k, v in phase.statuses.items() if k != 200}
        bad = f" / {other}" if other else ""
        errors = f" / errors {phase.errors}" if phase.errors else ""
        worst = max(phase.latencies, default=float("nan")) * 1000
        lat = f"{phase.pct(0.5):.2f} / {phase.pct(0.99):.2f} / {worst:.1f}"
        done = max(phase.ok, 1)
        rows += [
            (c, f"calls 200{cut}", f"{phase.ok:,}{bad}{errors}", ""),
            (c, "calls/s", f"{phase.rate:,.0f}", target if phase is high else ""),
            (c, "latency p50 / p99 / max ms", lat, target if phase is low else ""),
            (
                c,
                "server CPU us per call / % of a core",
                f"{phase.server_cpu / done * 1e6:.0f} / {100 * phase.server_cpu / phase.seconds:.0f}",
                "",
            ),
            (c, "client CPU us per call", f"{phase.client_cpu / done * 1e6:.0f}", ""),
        ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    line = "  ".join("-" * w for w in widths)
    print(header, line, sep="\n")
    for r in rows:
        print(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]:<{widths[3]}}".rstrip())
    print(line)
    verdicts = []
    if high is not None:
        met = high.rate >= TARGET_RATE and not high.timed_out and not high.errors
        verdicts.append(f">= {TARGET_RATE:,} calls/s at c={high.concurrency}: {'MET' if met else 'MISSED'}")
    if low is not None:
        met = low.pct(0.5) <= TARGET_P50_MS and not low.timed_out and not low.errors
        verdicts.append(f"p50 <= {TARGET_P50_MS:g} ms at c={low.concurrency}: {'MET' if met else 'MISSED'}")
    print("targets: " + "; ".join(verdicts))
    print(f"reference: {RESTATE}")


# ---- profiling the server with py-spy


def start_profile(pid: int, raw: Path) -> subprocess.Popen[bytes] | None:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        print("py-spy not found: pip install py-spy (into .venv) to profile", file=sys.stderr)
        return None
    return subprocess.Popen(
        [
            spy,
            "record",
            "--pid",
            str(pid),
            "--rate",
            "200",
            "--format",
            "raw",
            "--output",
            str(raw),
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop_profile(spy: subprocess.Popen[bytes]) -> None:
    spy.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
    try:
        spy.wait(30)
    except subprocess.TimeoutExpired:
        spy.kill()
        spy.wait()


#: Where a sample's time goes: the innermost frame whose file path holds one of these.
LAYERS = (
    ("perdure/storage", "storage (sqlite writer thread, readers)"),
    ("perdure/ingress", "ingress (ASGI app)"),
    ("perdure/engine", "engine state machine"),
    ("perdure/runtime", "runtime (processor, invoker, timers)"),
    ("perdure/sdk", "sdk (handler context, serde)"),
    ("perdure/protocol", "protocol (messages, codec, VM)"),
    ("bench/core.py", "the handler itself"),
    ("uvicorn/", "uvicorn"),
    ("h11/", "h11 (HTTP/1.1 parsing)"),
    ("msgspec", "msgspec"),
    ("json/", "json (stdlib)"),
    ("asyncio/", "asyncio event loop"),
    ("selectors.py", "asyncio event loop"),
)


def _function(frame: str) -> tuple[str, str]:
    """`"Writer._apply (/x/perdure/storage/sqlite/_writer.py:87)"` -> (name with file, path)."""
    match = re.match(r"^(.*) \((.*?)(?::\d+)?\)$", frame)
    if match is None:
        return frame, ""
    name, path = match.groups()
    return f"{name} ({path.rsplit('/', 1)[-1]})", path


def summarize_profile(raw: Path, out: Path | None, top: int = 15) -> str:
    """Own time per function and per layer, from py-spy's collapsed stacks (active samples only)."""
    own: Counter[str] = Counter()
    layers: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_function(f) for f in stack.split(";")]
        total += count
        own[frames[-1][0]] += count
        layer = "other"
        for _, path in reversed(frames):
            found = next((label for needle, label in LAYERS if needle in path), None)
            if found is not None:
                layer = found
                break
        layers[layer] += count
    if not total:
        return "py-spy recorded no samples"
    lines = [f"server profile (py-spy, {total:,} active samples at 200 Hz, all threads, c=64 phase)"]
    lines.append("own time by layer (innermost frame that belongs to one):")
    lines += [f"  {100 * n / total:5.1f}%  {layer}" for layer, n in layers.most_common()]
    lines.append(f"own time, top {top} functions:")
    lines += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in own.most_common(top)]
    text = "\n".join(lines)
    if out is not None:
        out.write_text(text + "\n")
    return text


# ---- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000, help="calls at high concurrency")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--low-count", type=int, default=2_000, help="calls at concurrency 1")
    parser.add_argument("--keys", type=int, default=1_000)
    parser.add_argument("--timeout", type=float, default=60.0, help="cap of each phase, seconds")
    parser.add_argument("--client", choices=["raw", "httpx"], default="raw")
    parser.add_argument("--synchronous", choices=["FULL", "NORMAL", "OFF"], default="FULL")
    parser.add_argument("--phases", default="high,low", help="comma-separated: high (c=64), low (c=1)")
    parser.add_argument(
        "--profile",
        type=Path,
        help="py-spy the server during the high phase: summary to this file, stacks to *.collapsed",
    )
    args = parser.parse_args()
    phases = {p.strip() for p in args.phases.split(",") if p.strip()}

    high = low = None
    with tempfile.TemporaryDirectory(prefix="perdure-bench-ingress-") as tmp:
        db = Path(tmp) / "bench.db"
        command = ["dev", APP, "--db", str(db), "--synchronous", args.synchronous]
        server = Server([*command, "--ingress-port", "0", "--admin-port", "0"], Path(tmp) / "server.log")
        try:
            # Warm-up: one call per key (creates each key's rows), not measured.
            run_load(server, args.client, args.concurrency, args.keys, args.timeout, args.keys, 0)
            offset = args.keys
            if "high" in phases:
                spy = start_profile(server.proc.pid, Path(tmp) / "spy.txt") if args.profile else None
                high = run_load(
                    server, args.client, args.concurrency, args.count, args.timeout, args.keys, offset
                )
                offset += args.count
                if spy is not None:
                    stop_profile(spy)
            if "low" in phases:
                low = run_load(server, args.client, 1, args.low_count, args.timeout, args.keys, offset)
        finally:
            code = server.stop()
        if args.profile and (Path(tmp) / "spy.txt").exists():
            shutil.copy(Path(tmp) / "spy.txt", args.profile.with_suffix(".collapsed"))  # for flamegraphs
            profile = summarize_profile(Path(tmp) / "spy.txt", args.profile)
        else:
            profile = None
    header = (
        f"perdure ingress bench: perdure dev (subprocess) + {args.client} HTTP/1.1 keep-alive client in a "
        f"separate process; seed handler (3 ctx.run + 1 ctx.set), {args.keys:,} keys; sqlite "
        f"synchronous={args.synchronous}; c={args.concurrency} x {args.count:,}, c=1 x {args.low_count:,} "
        f"(python {sys.version.split()[0]}, {os.cpu_count()} CPUs)"
    )
    report(header, high, low)
    if code != 0:
        print(f"perdure dev exited with status {code}")
    if profile is not None:
        print(profile)


if __name__ == "__main__":
    main()
