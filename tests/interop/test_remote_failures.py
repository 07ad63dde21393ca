"""A remote deployment that crashes, answers 500, cannot be reached or no longer matches its
journal: perdure retries per policy, reports the failure in `invocations describe`, and every
invocation completes exactly once when the deployment is fixed."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

import perdure
from perdure.admin import Admin
from perdure.protocol import manifest as mf
from perdure.runtime.http import Served
from perdure.storage.api import Invocation, Status

from .processes import Hypercorn

pytestmark = pytest.mark.slow


async def _until(check: Callable[[], Any], *, within: float = 20.0) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while loop.time() < deadline:
        got = check()
        if got:
            return got
        await asyncio.sleep(0.05)
    raise AssertionError(f"not true within {within} s: {check}")


def _invocation(engine: perdure.Engine, invocation_id: str) -> Invocation:
    inv = engine.reader().get_invocation(invocation_id)
    assert inv is not None
    return inv


async def test_a_deployment_killed_mid_invocation_resumes_and_completes_once(tmp_path: Path) -> None:
    steps = tmp_path / "steps.log"
    served = Hypercorn("tests.interop.official_services:app", env={"STEP_LOG": str(steps)})
    served.start()
    try:
        async with perdure.Engine(perdure.App([]), store=f"sqlite:///{tmp_path}/p.db") as engine:
            await engine.register_deployment(served.url)
            ids = [await engine.generic_send("Flaky", "slow_steps", b"10") for _ in range(3)]
            await _until(lambda: steps.exists() and len(steps.read_text().split()) >= 9)
            served.kill()  # mid-run: every invocation has steps left
            await asyncio.sleep(0.5)
            served.start()
            outcomes = [await asyncio.wait_for(engine.attach(i), 60) for i in ids]
            assert [o.value for o in outcomes] == [b"10"] * 3
            for invocation_id in ids:
                inv = _invocation(engine, invocation_id)
                assert inv.status is Status.COMPLETED and inv.attempt >= 2  # it did resume
            done = steps.read_text().split()
            # 3 × 10 steps; only a step whose result was lost in the kill may run twice
            assert sorted(set(done)) == [str(n) for n in range(10)]
            assert 30 <= len(done) <= 33
    finally:
        served.stop()


async def test_an_unreachable_deployment_is_retried_and_reported(
    tmp_path: Path, http_server: Callable[[Any], Awaitable[Served]]
) -> None:
    marker = tmp_path / "ready"
    served = Hypercorn("tests.interop.official_services:app")
    served.start()
    try:
        async with perdure.Engine(perdure.App([]), store=f"sqlite:///{tmp_path}/p.db") as engine:
            await engine.register_deployment(served.url)
            served.kill()
            invocation_id = await engine.generic_send("Flaky", "fail_until", f'"{marker}"'.encode())
            inv = await _until(lambda: _failed_twice(engine, invocation_id))
            assert inv.last_failure is not None and "cannot reach deployment" in inv.last_failure.message
            admin = await http_server(Admin(engine))
            described = await _describe(admin, invocation_id)
            assert "cannot reach deployment" in described["last_failure"]["message"]
            assert described["status"] in ("backing-off", "running")

            served.start()  # back, but the handler itself fails until the marker exists
            inv = await _until(lambda: _failed_with(engine, invocation_id, "is not there yet"))
            assert inv.last_failure is not None and inv.last_failure.code == 500
            marker.write_text("")
            outcome = await asyncio.wait_for(engine.attach(invocation_id), 30)
            assert outcome.value == b'"recovered"'
    finally:
        served.stop()


async def test_a_journal_mismatch_is_retried_and_reported(tmp_path: Path) -> None:
    served = Hypercorn("tests.interop.official_services:app")
    served.start()
    try:
        async with perdure.Engine(perdure.App([]), store=f"sqlite:///{tmp_path}/p.db") as engine:
            await engine.register_deployment(served.url)
            invocation_id = await engine.generic_send("Approvals", "request", b'"a raise"', key="m")
            await _until(lambda: engine.reader().get_all_state("Approvals", "m"))
            served.stop()  # redeploy code whose handler does something else first
            served.env["APPROVALS_VARIANT"] = "sleep-first"
            served.start()
            awakeable_id = engine.reader().get_all_state("Approvals", "m")[b"awakeable"].decode().strip('"')
            await engine.complete_awakeable(awakeable_id, b'"late"')
            inv = await _until(lambda: _failed_with(engine, invocation_id, "", code=570))
            assert inv.last_failure is not None and "mismatch" in inv.last_failure.message.lower()
            assert inv.status in (Status.BACKING_OFF, Status.RUNNING)
            # the fix: deploy the original code again; the next retry replays cleanly
            served.stop()
            served.env.pop("APPROVALS_VARIANT")
            served.start()
            outcome = await asyncio.wait_for(engine.attach(invocation_id), 30)
            assert outcome.value == b'"a raise: late"'
    finally:
        served.stop()


async def _bad_gateway(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An endpoint whose /discover is fine and whose /invoke always answers 500."""
    if scope["type"] != "http":
        return
    if scope["path"].endswith("/discover"):
        body = mf.encode(
            mf.EndpointManifest(
                protocol_mode="REQUEST_RESPONSE",
                min_protocol_version=5,
                max_protocol_version=7,
                services=[
                    mf.ServiceManifest(
                        name="Broken", ty="SERVICE", handlers=[mf.HandlerManifest(name="call")]
                    )
                ],
            )
        )
        headers = [(b"content-type", mf.CONTENT_TYPE.format(4).encode())]
        status = 200
    else:
        body, headers, status = b"boom: the gateway is down", [(b"content-type", b"text/plain")], 500
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def test_a_500_from_the_deployment_is_retried_per_policy_then_paused(
    tmp_path: Path, http_server: Callable[[Any], Awaitable[Served]]
) -> None:
    broken = await http_server(_bad_gateway)  # uvicorn: HTTP/1.1 only
    async with perdure.Engine(perdure.App([]), store=f"sqlite:///{tmp_path}/p.db") as engine:
        await engine.register_deployment(broken.url, use_http_11=True)
        invocation_id = await engine.generic_send("Broken", "call", b"")
        inv = await _until(lambda: _failed_twice(engine, invocation_id))
        assert inv.last_failure is not None and inv.last_failure.code == 500
        assert "boom: the gateway is down" in inv.last_failure.message
        assert inv.status in (Status.BACKING_OFF, Status.RUNNING)
        admin = await http_server(Admin(engine))
        described = await _describe(admin, invocation_id)
        assert described["last_failure"]["code"] == 500 and described["attempts"] >= 2


def _failed_twice(engine: perdure.Engine, invocation_id: str) -> Invocation | None:
    inv = engine.reader().get_invocation(invocation_id)
    return inv if inv is not None and inv.failures >= 2 else None


def _failed_with(
    engine: perdure.Engine, invocation_id: str, text: str, code: int | None = None
) -> Invocation | None:
    """The invocation once its last failure says `text` (and has `code`, if given)."""
    inv = engine.reader().get_invocation(invocation_id)
    failure = inv.last_failure if inv is not None else None
    if failure is None or text not in failure.message or code not in (None, failure.code):
        return None
    return inv


async def _describe(admin: Served, invocation_id: str) -> dict[str, Any]:
    import httpx

    async with httpx.AsyncClient(base_url=admin.url) as client:
        response = await client.get(f"/invocations/{invocation_id}")
        assert response.status_code == 200, response.text
        return dict(response.json())
