"""The examples in examples/ run as part of the suite (in-process, ManualClock)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from types import ModuleType

import perdure
from perdure.storage.api import Status
from perdure.testing import Harness

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"examples_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


async def test_user_updates_retries_with_a_durable_sleep_until_the_profile_is_ready() -> None:
    ex = _load("user_updates")
    ex.systems.not_ready_times = 2
    async with Harness(ex.app) as h:
        update = ex.UserUpdate(profile={"name": "ada"}, permissions=["read"], resources=["disk"])
        invocation_id = await h.object_send(ex.update_user_event, key="ada", arg=update)
        queued = await h.object_send(ex.update_user_event, key="ada", arg=update)
        await h.settle()
        assert h.status(invocation_id).status is Status.SUSPENDED  # sleeping 5 s, not in memory
        assert h.status(queued).status is Status.PENDING  # same user: waits its turn
        await h.advance(timedelta(seconds=5))
        assert h.status(invocation_id).status is Status.SUSPENDED  # second "not ready"
        await h.advance(timedelta(seconds=5))
        assert (await h.attach(invocation_id)).value == b'"role-read"'
        await h.settle()
        assert h.status(queued).status is Status.COMPLETED
        assert h.state("userUpdates", "ada") == {"role": "role-read"}
        assert ex.systems.asked["ada"] == 4  # 3 for the first update, 1 for the second
        assert ex.systems.provisioned["user-ada"] == ["disk", "disk"]
        names = [e.message.name for e in h.journal(invocation_id) if e.type == "RunCommand"]
        assert names == [
            "update profile",
            "update profile",
            "update profile",
            "set permissions",
            "provision resources",
        ]
        bad = await h.object_send(ex.update_user_event, key="x", arg=ex.UserUpdate(profile={}))
        outcome = await h.attach(bad)
        assert outcome.failure is not None and outcome.failure.code == 400


async def test_profile_enricher_emits_the_enriched_profile_after_a_second() -> None:
    ex = _load("profile_enricher")
    ex.downstream.clear()
    async with Harness(ex.app) as h:
        await h.object_call(ex.user_event, key="bob", arg=ex.UserProfile("bob", "Bob", "bob@example.com"))
        await h.object_call(ex.feature_event, key="bob", arg="dark-mode")
        await h.advance(0.5)
        await h.object_call(ex.feature_event, key="bob", arg="beta")
        assert ex.downstream == []
        await h.advance(0.5)
        assert ex.downstream == [
            ("bob", ex.UserProfile("bob", "Bob", "bob@example.com", ["dark-mode", "beta"]))
        ]
        assert h.state("profile", "bob") == {}
        try:
            await h.object_call(ex.feature_event, key="nobody", arg="x")
        except perdure.TerminalError as e:
            assert (e.status_code, e.message) == (404, "User not found")
        else:
            raise AssertionError("featureEvent without a user must fail")


def test_user_updates_demo_runs_as_a_script(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(EXAMPLES / "user_updates.py"),
            "--users",
            "3",
            "--db",
            str(tmp_path / "d.db"),
            "--sleep",
            "0.2",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "3 users updated" in result.stdout and "role-read-write" in result.stdout


def test_remote_deployment_serves_the_seed_handler_from_its_own_process() -> None:
    for mode in ([], ["--http1.1"]):
        done = subprocess.run(
            [sys.executable, str(EXAMPLES / "remote_deployment.py"), "--users", "3", *mode],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert "protocol v7" in done.stdout and "3 users updated on the remote deployment" in done.stdout
        assert done.stdout.count('state role="role-read"') == 3
