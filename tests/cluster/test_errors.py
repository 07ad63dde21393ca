"""A user's mistakes and the database's failures get clear errors, and lose nothing.

- a second cluster with another partition count on the same database is refused at start;
- `--workers 2` on a SQLite database is refused at start (one process writes a SQLite file);
- PostgreSQL unreachable during a run: the node retries with backoff, and once the database is back
  every request completes, once (unreachable at start: tests/cli/test_dev.py).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from . import load
from .procs import APP, Node, start, wait_balanced
from .proxy import Proxy


def _serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable,
        "-m",
        "perdure.cli",
        "serve",
        "--app",
        APP,
        "--ingress-port",
        "0",
        "--admin-port",
        "0",
    ]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=60, env=env)


@pytest.mark.slow
def test_another_partition_count_on_the_same_database_is_refused(
    postgres: Callable[[], str], tmp_path: Path
) -> None:
    url = postgres()
    env = {**os.environ, "PERDURE_TEST_LOG": str(tmp_path / "steps.log")}
    [first] = start(
        url, 1, tmp_path, env={"PERDURE_TEST_LOG": env["PERDURE_TEST_LOG"]}, args=("--partitions", "6")
    )
    try:
        refused = _serve("--db", url, "--partitions", "8", env=env)
    finally:
        first.stop()
        first.kill()
    assert refused.returncode == 1
    [line] = refused.stderr.strip().splitlines()
    assert "created with 6 partitions, not 8" in line and "--partitions" in line, line


def test_workers_on_a_sqlite_database_are_refused(tmp_path: Path) -> None:
    env = {**os.environ, "PERDURE_TEST_LOG": str(tmp_path / "steps.log")}
    refused = _serve("--db", str(tmp_path / "one.db"), "--workers", "2", env=env)
    assert refused.returncode == 1
    [line] = refused.stderr.strip().splitlines()
    assert "--workers 2 needs PostgreSQL" in line and "postgresql://" in line, line
    assert not (tmp_path / "one.db").exists()


@pytest.mark.slow
def test_a_database_outage_during_a_run_loses_nothing(postgres: Callable[[], str], tmp_path: Path) -> None:
    url, log = postgres(), tmp_path / "steps.log"
    parts = urlsplit(url)
    proxy = Proxy((parts.hostname or "127.0.0.1", parts.port or 5432))
    through = url.replace(f"{parts.hostname}:{parts.port}", f"127.0.0.1:{proxy.port}")
    env = {"PERDURE_TEST_LOG": str(log), "PERDURE_PARTITIONS": "4"}
    nodes: list[Node] = start(through, 1, tmp_path, env=env)
    requests, keys = 600, 50
    try:
        wait_balanced(nodes, 4)
        client = load.Load()
        outage: list[float] = []

        def cut_for_a_while() -> None:
            while client.acked < requests // 4:
                time.sleep(0.01)
            proxy.cut()
            outage.append(time.monotonic())
            time.sleep(3)
            proxy.restore()
            outage.append(time.monotonic())

        cutter = threading.Thread(target=cut_for_a_while, daemon=True)
        cutter.start()
        asyncio.run(
            load.run(lambda: [nodes[0].ingress], requests, keys, client, concurrency=16, deadline_s=90)
        )
        cutter.join(10)
        assert len(outage) == 2 and client.acked == requests
        outcome = asyncio.run(load.read(url))
        figures = load.check(outcome, log, {load.rid_of(i): load.key_of(i, keys) for i in range(requests)})
        assert nodes[0].proc is not None and nodes[0].proc.poll() is None  # it rode the outage out
        assert "the database did not answer" in nodes[0].stderr  # and said so, once
        assert "the database answers again" in nodes[0].stderr
        print(f"\noutage of 3 s: client retries {dict(client.retries)}; {figures}")
    finally:
        for node in nodes:
            node.kill()
        proxy.close()
