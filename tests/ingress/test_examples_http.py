"""The examples in examples/, driven over HTTP through the ingress."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from datetime import timedelta
from pathlib import Path
from types import ModuleType

from .conftest import StartStack
from .helpers import assert_error

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"examples_http_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


async def test_user_updates_over_http(start_stack: StartStack) -> None:
    ex = _load("user_updates")
    ex.systems.not_ready_times = 1
    stack = await start_stack(ex.app)
    update = {"profile": {"name": "ada"}, "permissions": ["read", "write"], "resources": ["disk"]}
    call = asyncio.create_task(stack.client.post("/userUpdates/ada/updateUserEvent", json=update))
    await asyncio.sleep(0.05)
    await stack.h.settle()
    await stack.h.advance(timedelta(seconds=5))  # the profile system was "not ready" once
    r = await call
    assert (r.status_code, r.json()) == (200, "role-read-write")
    assert stack.h.state("userUpdates", "ada") == {"role": "role-read-write"}
    r = await stack.client.post("/userUpdates/x/updateUserEvent", json={"profile": {}})
    assert_error(r, 400, "invocation", "a user update needs profile.name")
    r = await stack.client.post("/userUpdates/x/updateUserEvent", json={"profile": "nope"})
    assert_error(r, 400, "ingress", "input validation error")


async def test_profile_enricher_over_http(start_stack: StartStack) -> None:
    ex = _load("profile_enricher")
    ex.downstream.clear()
    stack = await start_stack(ex.app)
    user = {"id": "bob", "name": "Bob", "email": "bob@example.com"}
    r = await stack.client.post("/profile/bob/userEvent", json=user)
    assert (r.status_code, r.content) == (200, b"")
    r = await stack.client.post("/profile/bob/featureEvent", json="dark-mode")
    assert r.status_code == 200
    await stack.h.advance(timedelta(seconds=1))
    assert ex.downstream == [("bob", ex.UserProfile("bob", "Bob", "bob@example.com", ["dark-mode"]))]
    assert stack.h.state("profile", "bob") == {}
    r = await stack.client.post("/profile/nobody/featureEvent", json="x")
    assert_error(r, 404, "invocation", "User not found")
