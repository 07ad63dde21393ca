"""`/restate/invocation/…/attach|output`, and clients that go away while they wait."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
import pytest

from perdure.protocol import ids
from perdure.storage.api import Status

from .conftest import Stack
from .helpers import assert_error


async def _send_sleepy(stack: Stack, seconds: int, **headers: str) -> str:
    r = await stack.client.post("/greeter/sleepy/send", json=seconds, headers=headers)
    assert r.status_code == 202
    invocation_id: str = r.json()["invocationId"]
    await stack.h.settle()
    return invocation_id


async def test_output_is_470_until_completed_and_attach_waits(stack: Stack) -> None:
    invocation_id = await _send_sleepy(stack, 3600)
    r = await stack.client.get(f"/restate/invocation/{invocation_id}/output")
    assert_error(r, 470, "ingress", "the invocation exists but has not completed yet")
    attach = asyncio.create_task(stack.client.get(f"/restate/invocation/{invocation_id}/attach"))
    await asyncio.sleep(0.05)
    assert not attach.done()
    await stack.h.advance(timedelta(hours=1))
    r = await attach
    assert (r.status_code, r.json(), r.headers["x-restate-id"]) == (200, "woke", invocation_id)
    assert r.headers["content-type"] == "application/json"
    r = await stack.client.get(f"/restate/invocation/{invocation_id}/output")
    assert (r.status_code, r.json()) == (200, "woke")
    r = await stack.client.get(f"/restate/invocation/{invocation_id}/attach")  # completed: at once
    assert r.json() == "woke"


async def test_a_failed_invocation_answers_with_its_failure(stack: Stack) -> None:
    r = await stack.client.post("/greeter/fail/send", json=409)
    invocation_id = r.json()["invocationId"]
    await stack.h.settle()
    for verb in ("attach", "output"):
        r = await stack.client.get(f"/restate/invocation/{invocation_id}/{verb}")
        assert_error(r, 409, "invocation", "nope z")
        assert r.headers["x-restate-id"] == invocation_id


async def test_unknown_and_malformed_ids(stack: Stack) -> None:
    unknown = ids.random_id("greeter", None)
    for verb in ("attach", "output"):
        r = await stack.client.get(f"/restate/invocation/{unknown}/{verb}")
        assert_error(r, 404, "invocation")
        assert r.json() == {"code": 404, "message": "not found", "source": "invocation"}
        assert_error(
            await stack.client.get(f"/restate/invocation/inv_nope/{verb}"),
            400,
            "ingress",
            "bad invocation id",
        )
    assert_error(await stack.client.get(f"/restate/invocation/{unknown}/cancel"), 404, "ingress")
    assert_error(await stack.client.get(f"/restate/invocation/{unknown}"), 400, "ingress", "bad path")
    assert_error(await stack.client.post(f"/restate/invocation/{unknown}/attach"), 405, "ingress")


async def test_by_idempotency_key(stack: Stack) -> None:
    r = await stack.client.post("/greeter/once", json="i", headers={"idempotency-key": "ik"})
    assert r.status_code == 200
    r = await stack.client.get("/restate/invocation/greeter/once/ik/output")
    assert (r.status_code, r.json()) == (200, "once i #1")
    r = await stack.client.post("/counter/a%20b/add/send", json=4, headers={"idempotency-key": "o/k"})
    await stack.h.settle()
    r = await stack.client.get("/restate/invocation/counter/a%20b/add/o%2Fk/attach")
    assert (r.status_code, r.json()) == (200, 4)
    assert_error(
        await stack.client.get("/restate/invocation/counter/a%20b/add/other/output"), 404, "invocation"
    )
    assert_error(await stack.client.get("/restate/invocation/nope/h/k/output"), 404, "ingress", "service")
    assert_error(
        await stack.client.get("/restate/invocation/counter/add/k/output"), 400, "ingress", "bad path"
    )
    assert_error(await stack.client.get("/restate/invocation/greeter/once/k/x/output"), 400, "ingress")


@pytest.mark.parametrize("how", ["call", "attach"])
async def test_a_client_that_disconnects_leaves_no_waiter_and_the_invocation_goes_on(
    stack: Stack, how: str
) -> None:
    invocation_id = ids.idempotent_id("greeter", "sleepy", None, "gone")
    if how == "attach":
        await _send_sleepy(stack, 60, **{"idempotency-key": "gone"})
    impatient = httpx.AsyncClient(base_url=stack.url, timeout=0.3)
    with pytest.raises(httpx.ReadTimeout):
        if how == "call":
            await impatient.post("/greeter/sleepy", json=60, headers={"idempotency-key": "gone"})
        else:
            await impatient.get(f"/restate/invocation/{invocation_id}/attach")
    await impatient.aclose()
    for _ in range(200):  # the server notices the closed connection
        if invocation_id not in stack.h.router.waiting:
            break
        await asyncio.sleep(0.01)
    assert invocation_id not in stack.h.router.waiting
    await stack.h.advance(timedelta(seconds=60))
    assert stack.h.status(invocation_id).status is Status.COMPLETED
    r = await stack.client.get(f"/restate/invocation/{invocation_id}/output")
    assert r.json() == "woke"
