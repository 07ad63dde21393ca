"""Graceful handover: a node SIGTERMed under load lets its attempts finish, hands its partitions
back, and leaves — no attempt fails because of it, nothing is lost, nothing runs twice."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from perdure.storage import open_store

from . import load
from .procs import Node, start, wait_balanced, wait_owned

PARTITIONS = 6
KEYS = 200
REQUESTS = 3_000


@pytest.mark.slow
def test_sigterm_hands_partitions_over_without_a_failed_attempt(
    postgres: Callable[[], str], tmp_path: Path
) -> None:
    url, log = postgres(), tmp_path / "steps.log"
    env = {"PERDURE_TEST_LOG": str(log), "PERDURE_PARTITIONS": str(PARTITIONS), "PERDURE_TEST_STEP_MS": "2"}
    nodes: list[Node] = start(url, 3, tmp_path, env=env)
    live = list(nodes)
    try:
        wait_balanced(nodes, PARTITIONS)
        client = load.Load()
        stopped: list[tuple[int, float, float]] = []

        def terminate() -> None:
            while client.acked < REQUESTS // 3:
                time.sleep(0.02)
            leaving = live.pop(1)
            code, seconds = leaving.stop()
            stopped.append((code, seconds, wait_owned(live, PARTITIONS, timeout=30)))

        worker = threading.Thread(target=terminate, daemon=True)
        worker.start()
        asyncio.run(load.run(lambda: [n.ingress for n in live], REQUESTS, KEYS, client, deadline_s=120))
        worker.join(60)
        [(code, seconds, moved)] = stopped
        assert code == 0 and "stopped cleanly" in nodes[1].output, nodes[1].stderr

        outcome = asyncio.run(load.read(url))
        load.check(outcome, log, {load.rid_of(i): load.key_of(i, KEYS) for i in range(REQUESTS)})

        async def failed_attempts() -> list[str]:
            store = open_store(url)
            try:
                invocations = store.reader().list_invocations(limit=10**9)
                return [f"{i.id}: {i.last_failure}" for i in invocations if i.failures or i.last_failure]
            finally:
                await store.close()

        assert asyncio.run(failed_attempts()) == []
        print(f"\nSIGTERM: node stopped in {seconds:.2f} s, its partitions ran elsewhere after {moved:.2f} s;"
              f" client retries {dict(client.retries)}")  # fmt: skip
    finally:
        for node in nodes:
            node.kill()
    assert "Traceback" not in nodes[1].stderr, nodes[1].stderr
