"""SIGKILL the engine 10 times while 5,000 consumed records each emit one record with `ctx.emit`:
the output topic holds each emitted record exactly once.

The worker (`egress_worker.py`) consumes RECORDS records from the test's tansu broker (which
outlives every kill) and emits `{"seq": n}` per record to the output topic. It is killed after a
random number of completions in each life (seeded), restarted, and finally left to finish (every
invocation completed, the outbox empty). Every other life kills itself (SIGKILL too) right after
the producer put records in Kafka and before it deleted them from the outbox, the window a random
kill seldom hits: the next life must find those records in Kafka instead of producing them
again. Then the output topic, read to its end (read_committed), holds one record per input seq,
each with a distinct `perdure.egress.id`. (tansu has no transactions, so nothing is left
uncommitted: read_committed and read_uncommitted read the same records.)

Reproduce a run with PERDURE_CRASH_SEED=<seed printed by the test>.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import msgspec
import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from perdure.kafka import Broker
from perdure.protocol import egress as wire

from .procs import Worker, produce, tail

WORKER = Path(__file__).with_name("egress_worker.py")
RECORDS = 5_000
KEYS = 500
PARTITIONS = 4
KILLS = 10
KILL_AFTER_COMPLETIONS = (100, 450)  # per life, in steps of 50: about half is left for the end
KILL_JITTER_S = 0.03
START_TIMEOUT_S = 20.0
LIFE_TIMEOUT_S = 30.0
FINAL_TIMEOUT_S = 60.0


class EgressWorker(Worker):
    def __init__(self, stderr: Path, *args: str) -> None:  # the same, with egress_worker.py
        self.started_at = time.time()
        with stderr.open("ab") as err:
            command = [sys.executable, str(WORKER), *args]
            self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err)
        self.output = b""
        self.stamps: dict[bytes, float] = {}


async def read_topic(bootstrap: str, topic: str) -> list[tuple[bytes, dict[str, bytes]]]:
    """(value, headers) of every record of `topic`, read to the end of each partition."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, isolation_level="read_committed"
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        ends = await consumer.end_offsets(tps)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        todo = {tp for tp in tps if ends[tp] > 0}
        out = []
        deadline = time.monotonic() + 30
        while todo and time.monotonic() < deadline:
            for tp, records in (await consumer.getmany(timeout_ms=200, max_records=5_000)).items():
                out += [(r.value, dict(r.headers)) for r in records]
                if records and records[-1].offset + 1 >= ends[tp]:
                    todo.discard(tp)
        assert not todo, f"could not read {topic} to its end"
        return out
    finally:
        await consumer.stop()


@pytest.mark.slow
def test_sigkill_while_emitting_produces_each_record_once(crash_broker: Broker, tmp_path: Path) -> None:
    seed = int(os.environ.get("PERDURE_CRASH_SEED", random.randrange(2**32)))
    print(f"\negress kill test seed: {seed} (PERDURE_CRASH_SEED={seed} to replay the kill times)")
    rng = random.Random(seed)
    source, out = f"egin{seed}", f"egout{seed}"
    started = time.monotonic()
    bootstrap = crash_broker.bootstrap_servers
    asyncio.run(crash_broker.create_topic(source, PARTITIONS))
    asyncio.run(crash_broker.create_topic(out, PARTITIONS))
    asyncio.run(produce(bootstrap, source, range(RECORDS), KEYS))

    db, stderr = f"sqlite:///{tmp_path / 'egress.db'}", tmp_path / "worker.stderr"
    args = [
        *("--store", db, "--bootstrap", bootstrap),
        *("--topic", source, "--out", out, "--expected", str(RECORDS)),
    ]
    kills: list[int] = []
    dedups: list[int] = []  # records each life found in Kafka at its start
    for life in range(KILLS):
        target = rng.randrange(*KILL_AFTER_COMPLETIONS, 50)
        in_window = life % 2 == 0
        worker = EgressWorker(stderr, *args, *(("--die-in-window", str(target)) if in_window else ()))
        try:
            assert worker.read_until(b"STARTED", timeout=START_TIMEOUT_S), f"life {life}:\n{tail(stderr)}"
            if in_window:
                worker.read_until(b"\0never\0", timeout=LIFE_TIMEOUT_S)  # until it dies
                code = worker.proc.wait(timeout=5)
                assert code == -signal.SIGKILL, (
                    f"life {life}: exit {code}; {worker.output[-300:]!r} {tail(stderr)}"
                )
            else:
                reached = worker.read_until(b"\nAT %d\n" % target, b"DONE", timeout=LIFE_TIMEOUT_S)
                assert reached, (
                    f"life {life}: {target} completions not reached; output {worker.output[-300:]!r};"
                    f" stderr:\n{tail(stderr)}"
                )
                time.sleep(rng.uniform(0, KILL_JITTER_S))
                worker.kill()
        finally:
            worker.close()
        lines = worker.output.splitlines()
        found = [int(line.split()[1]) for line in lines if line.startswith(b"DEDUP")]
        dedups.append(max(found, default=0))
        assert b"DONE" not in worker.output, f"life {life} finished everything: the kill hit nothing"
        kills.append(target)

    worker = EgressWorker(stderr, *args)
    try:
        assert worker.read_until(b"DONE", timeout=FINAL_TIMEOUT_S), f"final run:\n{tail(stderr)}"
        assert worker.proc.wait(timeout=30) == 0
    finally:
        worker.close()

    records = asyncio.run(read_topic(bootstrap, out))
    seqs = Counter(msgspec.json.decode(value)["seq"] for value, _ in records)
    duplicated = {seq: n for seq, n in seqs.items() if n > 1}
    assert not duplicated, f"{len(duplicated)} produced more than once: {list(duplicated.items())[:5]}"
    assert sorted(seqs) == list(range(RECORDS)), f"{RECORDS - len(seqs)} records missing"
    assert len({headers[wire.RECORD_ID_HEADER] for _, headers in records}) == RECORDS
    print(
        f"{len(kills)} kills after {kills} completions (even lives: in the window); records each"
        f" life found in Kafka at its start: {dedups}; {len(records)} records out;"
        f" {time.monotonic() - started:.1f} s"
    )
    assert sum(dedups) > 0, "no life found records of the one before in Kafka: no kill hit the window"
