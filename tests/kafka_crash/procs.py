"""Kafka crash test helpers: the worker process, producing records, reading the store between lives."""

from __future__ import annotations

import asyncio
import os
import select
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec
from aiokafka import AIOKafkaProducer

from perdure.engine import catalog
from perdure.storage import open_store
from perdure.storage.api import Status

from .worker import CLUSTER, HANDLER, SERVICE

WORKER = Path(__file__).with_name("worker.py")


def key_of(seq: int, keys: int) -> str:
    return f"k{seq % keys:04d}"


def subscription_id(topic: str) -> str:
    return catalog.subscription_id(f"kafka://{CLUSTER}/{topic}", f"service://{SERVICE}/{HANDLER}")


class Produced:
    """Where each record landed: `where[seq] = (partition, offset)`; its key is `key_of(seq, keys)`."""

    def __init__(self, where: list[tuple[int, int]], keys: int) -> None:
        self.where = where
        self.keys = keys
        by_key: dict[str, list[int]] = defaultdict(list)
        for seq in range(len(where)):
            by_key[key_of(seq, keys)].append(seq)
        self._by_key = {k: sorted(seqs, key=lambda s: where[s]) for k, seqs in by_key.items()}

    def seqs_of_key(self, key: str) -> list[int]:
        """The key's records in offset order (one key, one partition)."""
        return self._by_key.get(key, [])


async def produce(bootstrap: str, topic: str, seqs: Sequence[int], keys: int) -> list[tuple[int, int]]:
    """Send `{"seq": n}` keyed `key_of(n)` for each n, in order; returns (partition, offset) of each."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=256 * 1024)
    await producer.start()
    try:
        futures = [
            await producer.send(topic, msgspec.json.encode({"seq": n}), key=key_of(n, keys).encode())
            for n in seqs
        ]
        await producer.flush()
        meta = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return [(m.partition, m.offset) for m in meta]


class Worker:
    """One worker process (`worker.py`); its stdout read without blocking, by the raw pipe."""

    def __init__(self, stderr: Path, *args: str) -> None:
        self.started_at = time.time()
        with stderr.open("ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(WORKER), *args], stdout=subprocess.PIPE, stderr=err
            )
        self.output = b""
        self.stamps: dict[bytes, float] = {}  # first word of an output line -> when the test read it

    def read_until(self, *markers: bytes, timeout: float) -> bool:
        """Read stdout until one of `markers` shows up (True), the pipe closes or the time is up (False)."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while not any(marker in self.output for marker in markers):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 4096)
                if not chunk:
                    return False
                self.output += chunk
                now = time.time()
                for line in self.output[: self.output.rfind(b"\n") + 1].splitlines():
                    if line:
                        self.stamps.setdefault(line.split()[0], now)
        return True

    def line(self, prefix: bytes) -> list[str]:
        """The words of the first output line starting with `prefix`."""
        for line in self.output.splitlines():
            if line.startswith(prefix):
                return line.decode().split()
        raise AssertionError(f"no {prefix!r} line in {self.output!r}")

    def kill(self) -> None:
        """SIGKILL by pid (only while unreaped, so the pid is still ours), then reap it."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def close(self) -> None:
        self.kill()
        if self.proc.stdout is not None:
            self.read_until(b"\0never\0", timeout=1.0)  # drain what it printed before dying
            self.proc.stdout.close()


@dataclass(frozen=True)
class Progress:
    """What a dead worker left in its database: offsets stored per partition, invocations completed."""

    offsets: dict[int, int]
    completed: int

    @property
    def ingested(self) -> int:
        return sum(self.offsets.values())


def progress(db: str, topic: str) -> Progress:
    if db.startswith("sqlite:///") and not Path(db.removeprefix("sqlite:///")).exists():
        return Progress({}, 0)
    store = open_store(db)
    try:
        reader = store.reader()
        stored = {tp: pos.next_offset for tp, pos in reader.offsets(subscription_id(topic)).items()}
        completed = reader.count_invocations()[Status.COMPLETED]
    finally:
        asyncio.run(store.close())
    return Progress({p: o for (t, p), o in stored.items() if t == topic}, completed)


def tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""
