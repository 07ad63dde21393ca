"""Two `perdure serve` nodes on one machine: a call for the other node's partition is forwarded to it
over its peer socket (`perdure.runtime.peers`) instead of travelling through the database; with
`PERDURE_FORWARD=off` it takes the durable path. Either way every call is answered once, with the
same answers, idempotent repeats included; a service call runs in a partition of the node it came to.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from perdure.protocol import ids
from perdure.runtime import peers

from .procs import Node, start, stop_all, wait_balanced

PARTITIONS = 6
KEYS = 24


def seen_by(node: Node, key: str, *, count: int) -> list[str]:
    """The request ids counter/`key` has seen, once it has seen `count` (sends run on their own)."""
    deadline = time.monotonic() + 10
    while True:
        seen: list[str] = httpx.get(f"{node.admin}/state/counter/{key}", timeout=5).json()["state"]["seen"]
        if len(seen) >= count or time.monotonic() > deadline:
            return seen
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize("forward", ["on", "off"])
def test_calls_for_a_neighbours_partitions_are_forwarded_to_it(
    postgres: Callable[[], str], tmp_path: Path, forward: str
) -> None:
    env = {
        "PERDURE_TEST_LOG": str(tmp_path / "steps.log"),
        "PERDURE_PARTITIONS": str(PARTITIONS),
        peers.ENV: forward,
    }
    nodes = start(postgres(), 2, tmp_path, env=env)
    try:
        owners = wait_balanced(nodes, PARTITIONS)
        time.sleep(1.5)  # a balancing round after the last move: each node knows who runs what
        entry = nodes[0]
        elsewhere = sum(owners[ids.partition_key("counter", f"k{i}") % PARTITIONS] == 1 for i in range(KEYS))
        assert 0 < elsewhere < KEYS

        async def load() -> None:
            async with httpx.AsyncClient(timeout=20) as client:
                calls = [client.post(f"{entry.ingress}/counter/k{i}/add", json=f"r{i}") for i in range(KEYS)]
                answers = await asyncio.gather(*calls)
                expected = [(200, f"r{i}") for i in range(KEYS)]
                assert [(a.status_code, a.json()["rid"]) for a in answers] == expected
                # an idempotent send, through each node: one invocation, found again wherever it is
                once = {"idempotency-key": "once"}
                sent = [
                    await client.post(f"{node.ingress}/counter/k0/add/send", json="once", headers=once)
                    for node in (entry, nodes[1], entry)
                ]
                statuses = [s.json()["status"] for s in sent]
                if forward == "on":
                    assert statuses == ["Accepted", "PreviouslyAccepted", "PreviouslyAccepted"]
                else:  # a repeat while the first is still a delivery on its way may say Accepted
                    assert statuses[0] == "Accepted"
                    assert set(statuses) <= {"Accepted", "PreviouslyAccepted"}
                assert len({s.json()["invocationId"] for s in sent}) == 1
                said = await client.post(f"{entry.ingress}/echo/say", json="hi")
                assert (said.status_code, said.json()) == (200, "hi")
                # a service call runs in a partition of the node it came to: nothing to forward
                sent_echo = await client.post(f"{entry.ingress}/echo/say/send", json="x")
                partition = ids.partition_of(sent_echo.json()["invocationId"], PARTITIONS)
                assert owners[partition] == 0

        asyncio.run(load())
        k0 = owners[ids.partition_key("counter", "k0") % PARTITIONS]  # the sends of "once"
        on = forward == "on"
        assert entry.forwarded() == (elsewhere + 2 * (k0 == 1) if on else 0)
        assert nodes[1].forwarded() == (int(k0 == 0) if on else 0)
        assert sorted(seen_by(nodes[1], "k0", count=2)) == ["once", "r0"]  # the send ran once
        seen = {line.split()[0] for line in (tmp_path / "steps.log").read_text().splitlines()}
        assert seen == {f"r{i}" for i in range(KEYS)} | {"once"}
    finally:
        stop_all(nodes)
    for node in nodes:
        assert "Traceback" not in node.stderr, node.stderr
