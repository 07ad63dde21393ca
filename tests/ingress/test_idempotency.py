"""`idempotency-key`: one invocation per (target, key), its first result for every repeat."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from perdure import App, Context, HandlerOptions, Service
from perdure.protocol import ids

from .conftest import Stack, StartStack
from .helpers import assert_error


async def test_a_repeat_returns_the_first_result_even_with_another_body(stack: Stack) -> None:
    first = await stack.client.post("/greeter/once", json="a", headers={"idempotency-key": "k"})
    again = await stack.client.post("/greeter/once", json="zzz", headers={"idempotency-key": "k"})
    assert first.json() == again.json() == "once a #1"
    assert first.headers["x-restate-id"] == again.headers["x-restate-id"]
    assert first.headers["x-restate-id"] == ids.idempotent_id("greeter", "once", None, "k")
    # one day after completion by default (the harness clock starts at 2026-01-01T00:00:00Z)
    assert (
        first.headers["idempotency-expires"]
        == again.headers["idempotency-expires"]
        == "2026-01-02T00:00:00.000Z"
    )
    other = await stack.client.post("/greeter/once", json="a", headers={"idempotency-key": "k2"})
    assert other.json() == "once a #2"
    assert stack.record.runs == {"once:a": 2}


async def test_fifty_concurrent_identical_requests_run_the_handler_once(stack: Stack) -> None:
    async def one() -> tuple[int, str, str]:
        r = await stack.client.post("/counter/c/add", json=1, headers={"idempotency-key": "same"})
        return r.status_code, r.text, r.headers["x-restate-id"]

    results = await asyncio.gather(*(one() for _ in range(50)))
    assert set(results) == {(200, "1", ids.idempotent_id("counter", "add", "c", "same"))}
    assert stack.record.runs == {"add:c": 1}
    assert stack.h.state("counter", "c") == {"total": 1}


async def test_a_repeated_send_is_previously_accepted(stack: Stack) -> None:
    headers = {"idempotency-key": "s1"}
    first = await stack.client.post("/counter/x/add/send?delay=10s", json=1, headers=headers)
    again = await stack.client.post("/counter/x/add/send?delay=99s", json=5, headers=headers)
    assert first.json()["status"] == "Accepted" and again.json()["status"] == "PreviouslyAccepted"
    assert first.json()["invocationId"] == again.json()["invocationId"]
    assert first.json()["executionTime"] == again.json()["executionTime"] == "2026-01-01T00:00:10.000Z"
    assert "idempotency-expires" not in again.headers  # not known before it completes
    await stack.h.advance(timedelta(seconds=10))
    done = await stack.client.post("/counter/x/add/send", json=5, headers=headers)
    assert done.json()["status"] == "PreviouslyAccepted" and "idempotency-expires" in done.headers
    call = await stack.client.post("/counter/x/add", json=5, headers=headers)  # a call joins it too
    assert (call.json(), call.headers["x-restate-id"]) == (1, first.json()["invocationId"])
    assert stack.record.runs == {"add:x": 1}


async def test_the_key_is_per_target(stack: Stack) -> None:
    headers = {"idempotency-key": "k"}
    a = await stack.client.post("/counter/a/add", json=1, headers=headers)
    b = await stack.client.post("/counter/b/add", json=1, headers=headers)
    assert a.headers["x-restate-id"] != b.headers["x-restate-id"]
    assert stack.record.runs == {"add:a": 1, "add:b": 1}


async def test_an_empty_key_is_refused(stack: Stack) -> None:
    assert_error(
        await stack.client.post("/greeter/greet", json="x", headers={"idempotency-key": ""}), 400, "ingress"
    )


async def test_retention_comes_from_the_handler_options(start_stack: StartStack) -> None:
    svc = Service("short", options=HandlerOptions(idempotency_retention=timedelta(hours=1)))

    @svc.handler()
    async def hi(ctx: Context) -> str:
        return "hi"

    stack = await start_stack(App([svc]))
    r = await stack.client.post("/short/hi", headers={"idempotency-key": "k"})
    assert r.headers["idempotency-expires"] == "2026-01-01T01:00:00.000Z"
