"""Three `perdure serve` nodes on one PostgreSQL database: one cluster.

Every node's ingress accepts any call: calls reach handlers of partitions the other nodes run, and
handlers call each other across partitions and nodes. Each key's requests are counted once, in order.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from perdure.storage import open_store
from perdure.storage.api import Status

from .procs import start, stop_all, wait_balanced

PARTITIONS = 6
KEYS = 30
SENDS = 9


@pytest.mark.slow
def test_three_nodes_share_the_partitions_and_serve_every_call(
    postgres: Callable[[], str], tmp_path: Path
) -> None:
    url = postgres()
    env = {"PERDURE_TEST_LOG": str(tmp_path / "steps.log"), "PERDURE_PARTITIONS": str(PARTITIONS)}
    nodes = start(url, 3, tmp_path, env=env)
    try:
        owners = wait_balanced(nodes, PARTITIONS)
        assert sorted(set(owners.values())) == [0, 1, 2]  # every node runs some

        async def load() -> list[dict[str, object]]:
            async with httpx.AsyncClient(timeout=20) as client:
                calls = []
                for i in range(KEYS * 3):
                    node = nodes[i % 3]
                    service = "relay" if i % 2 else "counter"
                    calls.append(client.post(f"{node.ingress}/{service}/k{i % KEYS}/add", json=f"r{i}"))
                answers = await asyncio.gather(*calls)
                assert [a.status_code for a in answers] == [200] * len(answers), [a.text for a in answers]
                return [a.json() for a in answers]

        answers = asyncio.run(load())
        assert {a["rid"] for a in answers} == {f"r{i}" for i in range(KEYS * 3)}
        # every key counted its three requests once each; state is read through any node
        for key in range(KEYS):
            state = httpx.get(f"{nodes[key % 3].admin}/state/counter/k{key}", timeout=5).json()["state"]
            assert sorted(state["seen"]) == sorted(f"r{i}" for i in range(key, KEYS * 3, KEYS))

        async def send_then_attach() -> None:
            """An attach right after a send, through the same node, finds the invocation even where
            the node does not own it (its owner applies the delivery a moment later); the send
            repeated with its idempotency key is `PreviouslyAccepted` on every node."""
            async with httpx.AsyncClient(timeout=20) as client:
                for i in range(SENDS):
                    node = nodes[i % 3]
                    url, once = f"{node.ingress}/counter/s{i}/add/send", {"idempotency-key": f"s{i}"}
                    sent = await client.post(url, json=f"s{i}", headers=once)
                    assert (sent.status_code, sent.json()["status"]) == (202, "Accepted"), sent.text
                    invocation_id = sent.json()["invocationId"]
                    attached = await client.get(f"{node.ingress}/restate/invocation/{invocation_id}/attach")
                    assert attached.status_code == 200, attached.text
                    assert attached.json()["rid"] == f"s{i}", attached.text
                    again = await client.post(url, json=f"s{i}", headers=once)  # owned here or not
                    assert again.json() == {"invocationId": invocation_id, "status": "PreviouslyAccepted"}

        asyncio.run(send_then_attach())
        view = nodes[0].cluster()
        assert view["partitions"] == PARTITIONS and sum(n["alive"] for n in view["nodes"]) == 3
        shown = subprocess.run(
            [sys.executable, "-m", "perdure.cli", "cluster", "--admin-url", nodes[1].admin],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert shown.returncode == 0, shown.stderr
        assert f"cluster — {PARTITIONS} partitions" in shown.stdout and shown.stdout.count(" yes ") == 3
    finally:
        stop_all(nodes)
    for node in nodes:
        assert "Traceback" not in node.stderr, node.stderr

    async def check() -> None:
        store = open_store(url)
        try:
            counts = store.reader().count_invocations()
            assert counts[Status.COMPLETED] == sum(counts.values()) == KEYS * 3 + KEYS * 3 // 2 + SENDS
        finally:
            await store.close()

    asyncio.run(check())
