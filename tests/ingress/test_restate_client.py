"""Restate's own Python ingress client (`restate-sdk`) against perdure's ingress.

The pinned SDK (and h2, which its client asks httpx for) is pip-installed once into
`.perdure/test-cache/` (gitignored) and appended to `sys.path`; the test skips only when PyPI is
unreachable.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from types import ModuleType

import pytest

from perdure.protocol import ids
from perdure.storage.api import Status

from .conftest import StartStack

PACKAGES = ["restate-sdk==1.2.0", "h2==4.3.0", "hpack==4.1.0", "hyperframe==6.1.0"]
CACHE = Path(__file__).resolve().parents[2] / ".perdure" / "test-cache" / "restate-sdk-1.2.0"
OFFLINE = (
    "NewConnectionError",
    "Network is unreachable",
    "Temporary failure in name resolution",
    "Max retries exceeded",
    "No matching distribution",
    "Could not find a version",
)


@pytest.fixture(scope="session")
def restate_sdk() -> ModuleType:
    """The `restate` package of restate-sdk 1.2.0, installed into the test cache on first use."""
    if not (CACHE / "restate" / "client.py").exists():
        staging = CACHE.with_name(f"{CACHE.name}.{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        result = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             "--retries", "1", "--timeout", "20", "--no-deps", "--target", str(staging), *PACKAGES],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        if result.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            if any(sign in result.stderr for sign in OFFLINE):
                pytest.skip(f"PyPI is unreachable, cannot install {PACKAGES[0]}: {result.stderr[-300:]}")
            pytest.fail(f"pip install {' '.join(PACKAGES)} failed:\n{result.stderr}")
        try:
            staging.rename(CACHE)
        except OSError:  # another test process installed it first
            shutil.rmtree(staging, ignore_errors=True)
    if str(CACHE) not in sys.path:
        sys.path.append(str(CACHE))  # after the venv: its httpx stays the one imported
    return importlib.import_module("restate")


async def test_restates_python_client_calls_and_sends_with_a_delay(
    start_stack: StartStack, restate_sdk: ModuleType
) -> None:
    from . import restate_stubs as stubs

    stack = await start_stack()
    async with restate_sdk.create_client(stack.url) as client:
        assert await client.service_call(stubs.greet, arg="restate") == "hello restate"
        assert await client.object_call(stubs.add, key="r", arg=2) == 2
        first = await client.object_call(stubs.add, key="r", arg=10, idempotency_key="once")
        again = await client.object_call(stubs.add, key="r", arg=99, idempotency_key="once")
        assert first == again == 12

        now = stack.h.clock.now_ms()
        handle = await client.object_send(stubs.add, key="r", arg=3, send_delay=timedelta(seconds=30))
        assert ids.is_valid(handle.invocation_id)  # it sent ?delay=30000: a bare integer of ms
        assert stack.h.status(handle.invocation_id).execute_at == now + 30_000
        await stack.h.advance(timedelta(seconds=29))
        assert stack.h.status(handle.invocation_id).status is Status.SCHEDULED
        await stack.h.advance(timedelta(seconds=1))
        assert stack.h.state("counter", "r") == {"total": 15}

        json = {"content-type": "application/json"}
        sent = await client.generic_send(
            "greeter", "greet", b'"g"', send_delay=timedelta(milliseconds=1500), headers=json
        )
        assert stack.h.status(sent.invocation_id).execute_at == stack.h.clock.now_ms() + 1500

        with pytest.raises(restate_sdk.HttpError) as failed:
            await client.generic_call("greeter", "fail", b"418", headers=json)
        assert failed.value.status_code == 418 and '"source":"invocation"' in (failed.value.body or "")
        with pytest.raises(restate_sdk.HttpError) as missing:
            await client.generic_call("nope", "x", b"")
        assert missing.value.status_code == 404


async def test_restates_python_client_submits_and_calls_a_workflow(
    start_stack: StartStack, restate_sdk: ModuleType
) -> None:
    from . import restate_stubs as stubs
    from .test_workflows_awakeables import Seen, build_app

    seen = Seen()
    stack = await start_stack(build_app(seen))
    async with restate_sdk.create_client(stack.url) as client:
        handle = await client.workflow_send(stubs.run, key="r", arg="r@x.io")
        assert handle.invocation_id == ids.workflow_id("signup", "r")
        again = await client.workflow_send(stubs.run, key="r", arg="r@x.io")
        assert again.invocation_id == handle.invocation_id
        await client.workflow_call(stubs.click, key="r", arg="k3y")
        with pytest.raises(restate_sdk.HttpError) as conflict:
            await client.workflow_call(stubs.run, key="r", arg="r@x.io")
        assert conflict.value.status_code == 409 and "already invoked" in (conflict.value.body or "")
    assert (await stack.h.attach(handle.invocation_id)).value == b'"r@x.io verified with k3y"'
    assert seen.runs == ["r"]
