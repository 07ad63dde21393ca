"""Fencing: a node paused past its lease (SIGSTOP) while it runs invocations writes nothing after.

Node X runs slow invocations (a 1.5 s `ctx.run` step) when it is stopped. Its heartbeat lapses, the
other nodes take its partitions and run the invocations to completion. Then X continues (SIGCONT):
its steps finish and propose their results, but every commit checks the partition's lease, so none
of them lands — the stored results are the other nodes' — no step ran again after its result was
stored, and X rejoins as a healthy member that runs partitions again.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import msgspec
import pytest

from perdure.protocol import ids

from .procs import start, wait_balanced, wait_owned

PARTITIONS = 6
INVOCATIONS = 8


def partition_of(key: str) -> int:
    return ids.partition_key("counter", key) % PARTITIONS


@pytest.mark.slow
def test_a_paused_node_that_lost_its_leases_writes_nothing_and_rejoins(
    postgres: Callable[[], str], tmp_path: Path
) -> None:
    url, log = postgres(), tmp_path / "steps.log"
    env = {"PERDURE_TEST_LOG": str(log), "PERDURE_PARTITIONS": str(PARTITIONS)}
    env["PERDURE_TEST_SLOW_MS"] = "1500"
    nodes = start(url, 3, tmp_path, env=env)
    paused = nodes[1]
    try:
        owners = wait_balanced(nodes, PARTITIONS)
        mine = {p for p, n in owners.items() if n == 1}
        keys = [k for k in (f"k{i}" for i in range(1000)) if partition_of(k) in mine][:INVOCATIONS]
        sent = []
        for n, key in enumerate(keys):  # through another node's ingress: delivered to X's partitions
            answer = httpx.post(f"{nodes[0].ingress}/counter/{key}/slow/send", json=f"s{n}", timeout=10)
            assert answer.status_code == 202, answer.text
            sent.append(answer.json()["invocationId"])
        deadline = time.monotonic() + 15
        while sum(f"start {paused.pid}" in line for line in _lines(log)) < INVOCATIONS:
            assert time.monotonic() < deadline, "the slow steps did not start on node X"
            time.sleep(0.02)

        os.kill(paused.pid, signal.SIGSTOP)
        taken = wait_owned([nodes[0], nodes[2]], PARTITIONS, timeout=30)
        results = {}
        for invocation_id in sent:
            attached = httpx.get(f"{nodes[2].ingress}/restate/invocation/{invocation_id}/attach", timeout=30)
            assert attached.status_code == 200, attached.text
            results[invocation_id] = attached.json()
        os.kill(paused.pid, signal.SIGCONT)
        time.sleep(3)  # X's steps finish and propose their results: fenced

        for invocation_id, answer in results.items():
            stored = httpx.get(f"{nodes[0].ingress}/restate/invocation/{invocation_id}/output", timeout=10)
            assert stored.json() == answer  # nothing of X's replaced what the others stored
        lines = [line.split() for line in _lines(log)]
        for n in range(INVOCATIONS):
            rid, token = f"s{n}", results[sent[n]]["token"]
            entries = [(t, int(pid)) for r, t, pid in lines if r == rid]
            stored = next(i for i, (t, _) in enumerate(entries) if t == token)
            assert entries[stored][1] != paused.pid, f"{rid}: the paused node's result was stored"
            assert all(t != "start" for t, _ in entries[stored + 1 :]), f"{rid} ran again after it was stored"
            finished_on_x = [t for t, pid in entries if pid == paused.pid and t != "start"]
            assert finished_on_x, f"{rid}: X's step never finished, so nothing was fenced"
            state = httpx.get(f"{nodes[0].admin}/state/counter/{keys[n]}", timeout=5).json()["state"]
            assert state["seen"] == [rid]  # counted once

        # X rejoins: healthy, alive, and it runs partitions again
        assert httpx.get(paused.admin + "/health", timeout=5).status_code == 200
        wait_balanced(nodes, PARTITIONS, timeout=30)
        view = msgspec.json.decode(httpx.get(nodes[0].admin + "/cluster", timeout=5).content)
        assert sum(n["alive"] for n in view["nodes"]) == 3
        print(f"\npaused node's partitions taken by the others {taken:.1f} s after SIGSTOP")
    finally:
        for node in nodes:
            if node.proc is not None and node.proc.poll() is None:
                os.kill(node.pid, signal.SIGCONT)
            node.kill()
    assert "Traceback" not in paused.stderr, paused.stderr


def _lines(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []
