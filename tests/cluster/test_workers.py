"""`perdure serve --workers 2`: its workers stop with their supervisor, even when it is SIGKILLed
(they get SIGTERM — drain, hand over, stop — instead of running on with nobody to stop them)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from .procs import Node


def workers_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == pid:
                found.append(int(entry.name))
    return found


def running(pid: int) -> bool:
    """Alive and not a zombie (whoever reaps orphans here may take its time)."""
    try:
        return (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]) != "Z"
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc"), reason="the parent-death signal is Linux's")
def test_workers_stop_when_their_supervisor_is_killed(postgres: Callable[[], str], tmp_path: Path) -> None:
    env = {"PERDURE_TEST_LOG": str(tmp_path / "steps.log"), "PERDURE_PARTITIONS": "4"}
    supervisor = Node(postgres(), stderr=tmp_path / "serve.stderr", args=("--workers", "2")).start(env)
    workers: list[int] = []
    try:
        answer = httpx.post(f"{supervisor.ingress}/counter/k/add", json="r1", timeout=20)
        assert answer.status_code == 200, answer.text
        workers = workers_of(supervisor.pid)
        assert len(workers) == 2, workers
        os.kill(supervisor.pid, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while any(running(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(running(w) for w in workers), "a worker outlived its supervisor"
    finally:
        supervisor.kill()
        for worker in workers:
            if running(worker):
                os.kill(worker, signal.SIGKILL)
