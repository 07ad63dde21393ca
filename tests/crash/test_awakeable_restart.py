"""Awakeables survive a SIGKILL: a real `perdure dev` on SQLite is killed by pid while three
invocations wait on awakeables (two suspended, one still in memory), restarted on the same file,
and the awakeables are then resolved and rejected over HTTP (by the CLI and by plain requests).
Each invocation completes exactly once: its publish and ship side effects happen once each.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from perdure.cli import cli
from perdure.kafka.broker import free_port
from perdure.protocol import awakeables, ids

APP = str(Path(__file__).with_name("awakeable_app.py")) + ":app"
START_TIMEOUT_S = 30.0


class Dev:
    """`perdure dev APP` on free loopback ports, in a child process we stop by its pid."""

    def __init__(self, db: Path, effects: Path, log: Path) -> None:
        self.ingress_port, self.admin_port = free_port(), free_port()
        while self.admin_port == self.ingress_port:
            self.admin_port = free_port()
        args = ["dev", APP, "--db", str(db), "--ingress-port", str(self.ingress_port)]
        args += ["--admin-port", str(self.admin_port)]
        with log.open("ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "perdure.cli", *args],
                stdout=subprocess.DEVNULL,
                stderr=err,
                env={**os.environ, "PERDURE_TEST_EFFECTS": str(effects)},
            )
        self.log = log
        wait_until(self.healthy, START_TIMEOUT_S, "perdure dev to answer")

    @property
    def ingress(self) -> str:
        return f"http://127.0.0.1:{self.ingress_port}"

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def healthy(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"perdure dev exited with {self.proc.returncode}:\n{self.log.read_text()}")
        try:
            return (
                httpx.get(self.ingress + "/restate/health", timeout=1).status_code == 200
                and httpx.get(self.admin + "/health", timeout=1).status_code == 200
            )
        except httpx.HTTPError:
            return False

    def status(self, invocation_id: str) -> dict[str, object]:
        answer: dict[str, object] = httpx.get(f"{self.admin}/invocations/{invocation_id}", timeout=5).json()
        return answer

    def stop(self, sig: signal.Signals) -> int:
        """Signal our child by pid (only while it is unreaped) and reap it."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
        return self.proc.wait(timeout=20)


def wait_until(condition: Callable[[], object], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        time.sleep(0.02)


def lines(effects: Path, prefix: str) -> list[str]:
    text = effects.read_text() if effects.exists() else ""
    return [line for line in text.splitlines() if line.startswith(prefix)]


@pytest.fixture
def servers() -> Iterator[list[Dev]]:
    started: list[Dev] = []
    yield started
    for dev in started:
        dev.stop(signal.SIGKILL)  # a no-op for the ones already stopped


@pytest.mark.slow
def test_awakeables_resolved_after_sigkill_and_restart_complete_once(
    servers: list[Dev], tmp_path: Path
) -> None:
    db, effects, log = tmp_path / "dev.db", tmp_path / "effects.log", tmp_path / "dev.log"
    dev = Dev(db, effects, log)
    servers.append(dev)
    sent = {}
    for name in ("a1", "a2"):
        response = httpx.post(f"{dev.ingress}/approvals/quick/send", json=name, timeout=10)
        assert response.status_code == 202, response.text
        sent[name] = response.json()["invocationId"]
    sent["w1"] = ids.workflow_id("approval", "w1")
    response = httpx.post(f"{dev.ingress}/approval/w1/run/send", json="w1", timeout=10)
    assert response.status_code == 202 and response.json()["invocationId"] == sent["w1"]

    def published_and_journaled() -> bool:
        for name, invocation_id in sent.items():
            status = dev.status(invocation_id)
            journal = status.get("journal") or []
            assert isinstance(journal, list)
            if not any(e["type"] == "RunCompletionNotification" for e in journal):
                return False  # the publish step's result is not durable yet
            if name != "w1" and status["status"] != "suspended":
                return False
        return True

    wait_until(published_and_journaled, 15, "every publish step journaled, the quick ones suspended")
    assert dev.status(sent["w1"])["status"] == "running"  # waiting in memory: 60 s inactivity timeout
    dev.stop(signal.SIGKILL)

    restarted = Dev(db, effects, log)
    servers.append(restarted)
    ids_by_name = {line.split()[1]: line.split()[2] for line in lines(effects, "published ")}
    assert sorted(ids_by_name) == ["a1", "a2", "w1"]
    for name, awakeable_id in ids_by_name.items():
        assert awakeables.parse(awakeable_id)[0] == sent[name]

    ingress = ["--ingress-url", restarted.ingress]
    result = CliRunner().invoke(cli, ["awakeables", "resolve", ids_by_name["a1"], '"ops"', *ingress])
    assert (result.exit_code, result.output.strip()) == (0, f"resolved {ids_by_name['a1']}"), result.output
    result = CliRunner().invoke(cli, ["awakeables", "reject", ids_by_name["a2"], "not today", *ingress])
    assert (result.exit_code, result.output.strip()) == (0, f"rejected {ids_by_name['a2']}"), result.output
    response = httpx.post(f"{restarted.ingress}/restate/a/{ids_by_name['w1']}/resolve", json="hr", timeout=10)
    assert (response.status_code, response.content) == (202, b"")

    answers = {
        "a1": httpx.get(f"{restarted.ingress}/restate/invocation/{sent['a1']}/attach", timeout=15),
        "a2": httpx.get(f"{restarted.ingress}/restate/invocation/{sent['a2']}/attach", timeout=15),
        "w1": httpx.get(f"{restarted.ingress}/restate/workflow/approval/w1/attach", timeout=15),
    }
    assert {name: (r.status_code, r.json()) for name, r in answers.items()} == {
        "a1": (200, "a1 approved by ops"),
        "a2": (200, "a2 rejected (500): not today"),
        "w1": (200, "w1 approved by hr"),
    }
    # Completing them again changes nothing; then a clean stop.
    result = CliRunner().invoke(cli, ["awakeables", "resolve", ids_by_name["a2"], '"late"', *ingress])
    assert result.exit_code == 0
    assert restarted.stop(signal.SIGTERM) == 0

    published = sorted(f"published {name} {i}" for name, i in ids_by_name.items())
    assert sorted(lines(effects, "published ")) == published  # once each: never re-run after the kill
    assert sorted(lines(effects, "shipped ")) == [
        "shipped a1 approved by ops",
        "shipped a2 rejected (500): not today",
        "shipped w1 approved by hr",
    ]
