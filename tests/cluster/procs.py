"""Nodes of a cluster as real `perdure serve` processes on free loopback ports, stopped by pid."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
from tests.cli.procs import Server

APP = str(Path(__file__).with_name("app.py")) + ":app"


class Node(Server):
    """`perdure serve --app tests/cluster/app.py:app --db URL` on free ports."""

    def __init__(self, url: str, *, stderr: Path, args: tuple[str, ...] = ()) -> None:
        super().__init__(
            ["serve", "--app", APP, "--db", url, "--ingress-port", "0", "--admin-port", "0", *args],
            stderr=stderr,
        )

    def cluster(self) -> dict[str, Any]:
        answer: dict[str, Any] = httpx.get(self.admin + "/cluster", timeout=5).json()
        return answer

    def partitions(self) -> list[int]:
        """The partitions this node runs now (from its own admin API)."""
        return sorted(lease["partition"] for lease in self.cluster()["leases"] if lease["running_here"])

    def forwarded(self) -> int:
        """Calls this node's ingress passed to a neighbour since it started (its metrics)."""
        metrics = httpx.get(self.admin + "/metrics", timeout=5).text.splitlines()
        line = next(line for line in metrics if line.startswith("perdure_ingress_forwarded_total "))
        return int(line.split()[1])


def start(
    url: str, count: int, folder: Path, *, env: dict[str, str], args: tuple[str, ...] = ()
) -> list[Node]:
    nodes = []
    for n in range(count):
        nodes.append(Node(url, stderr=folder / f"node{n}.stderr", args=args).start(env))
    return nodes


def stop_all(nodes: list[Node]) -> None:
    """SIGTERM every node and wait for it to drain and exit (killed if it does not)."""
    for node in nodes:
        node.stop()
        node.kill()


def wait_balanced(nodes: list[Node], partitions: int, timeout: float = 20.0) -> dict[int, int]:
    """Until every partition runs on exactly one of `nodes`, each holding its share; partition -> node."""
    share = -(-partitions // len(nodes))
    deadline = time.monotonic() + timeout
    owners: dict[int, int] = {}
    while time.monotonic() < deadline:
        owners, ok = {}, True
        for n, node in enumerate(nodes):
            mine = node.partitions()
            ok = ok and len(mine) <= share
            for p in mine:
                ok = ok and p not in owners
                owners[p] = n
        if ok and len(owners) == partitions:
            return owners
        time.sleep(0.1)
    raise AssertionError(f"partitions not balanced after {timeout} s: {owners}")


def wait_owned(nodes: list[Node], partitions: int, timeout: float) -> float:
    """Seconds until every partition runs on one of `nodes` (survivors after a kill)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        owned: set[int] = set()
        for node in nodes:
            owned.update(node.partitions())
        if len(owned) == partitions:
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"partitions not all taken over after {timeout} s")
