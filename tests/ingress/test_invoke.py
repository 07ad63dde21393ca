"""Calls and sends through the ingress: paths, bodies, content types, headers and errors."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import httpx
import pytest

from perdure.protocol import ids
from perdure.storage.api import Status

from .conftest import Stack, StartStack
from .helpers import JSON, assert_error


async def test_call_a_service_handler(stack: Stack) -> None:
    r = await stack.client.post("/greeter/greet", json="bob")
    assert r.status_code == 200
    assert r.json() == "hello bob"
    assert r.headers["content-type"] == "application/json"
    assert ids.is_valid(r.headers["x-restate-id"])
    assert stack.h.status(r.headers["x-restate-id"]).status is Status.COMPLETED


async def test_call_an_object_handler_with_a_url_decoded_key(stack: Stack) -> None:
    r = await stack.client.post("/counter/a%2Fb%20c/add", json=5)
    assert (r.status_code, r.json()) == (200, 5)
    assert stack.h.state("counter", "a/b c") == {"total": 5}
    r = await stack.client.get("/counter/a%2Fb%20c/get")  # GET works too (no body)
    assert (r.status_code, r.json()) == (200, 5)


async def test_the_1_7_call_and_send_paths(stack: Stack) -> None:
    r = await stack.client.post("/restate/call/greeter/greet", json="ann")
    assert r.json() == "hello ann"
    r = await stack.client.post("/restate/call/counter/k/add", json=2)
    assert r.json() == 2
    r = await stack.client.post("/restate/send/counter/k/add", json=3)
    assert r.status_code == 202 and r.json()["status"] == "Accepted"
    await stack.h.settle()
    assert stack.h.state("counter", "k") == {"total": 5}
    assert_error(await stack.client.post("/restate/call/greeter/greet/extra", json="x"), 400, "ingress")
    assert_error(await stack.client.post("/restate/call/counter/add", json=1), 400, "ingress")
    assert_error(await stack.client.post("/restate/call/nope/x", json=1), 404, "ingress", "service")


async def test_send_returns_202_with_the_invocation_id(stack: Stack) -> None:
    r = await stack.client.post("/counter/s/add/send", json=1)
    assert r.status_code == 202
    body = r.json()
    assert body["status"] == "Accepted" and "executionTime" not in body
    assert ids.is_valid(body["invocationId"]) and r.headers["x-restate-id"] == body["invocationId"]
    assert (await stack.h.attach(body["invocationId"])).value == b"1"


async def test_delayed_send_runs_when_its_time_comes(stack: Stack) -> None:
    now = stack.h.clock.now_ms()
    r = await stack.client.post("/counter/d/add/send?delay=PT1M30S", json=7)
    assert r.status_code == 202
    body = r.json()
    assert body["executionTime"] == "2026-01-01T00:01:30.000Z"
    assert stack.h.status(body["invocationId"]).execute_at == now + 90_000
    await stack.h.advance(timedelta(seconds=89))
    assert stack.h.status(body["invocationId"]).status is Status.SCHEDULED
    await stack.h.advance(timedelta(seconds=1))
    assert stack.h.status(body["invocationId"]).status is Status.COMPLETED
    assert stack.h.state("counter", "d") == {"total": 7}


@pytest.mark.parametrize(
    ("delay", "ms"),
    [
        ("10s", 10_000),
        ("500ms", 500),
        ("60%20sec", 60_000),
        ("1m30s", 90_000),
        ("P1D", 86_400_000),
        ("250", 250),
    ],
)
async def test_delay_formats(stack: Stack, delay: str, ms: int) -> None:
    now = stack.h.clock.now_ms()
    r = await stack.client.post(f"/greeter/greet/send?delay={delay}", json="x")
    assert r.status_code == 202, r.text
    assert stack.h.status(r.json()["invocationId"]).execute_at == now + ms


async def test_bad_delays(stack: Stack) -> None:
    for delay in ("soon", "10x", "-5s", "PT", "P1Y", "1.5.5s", ""):
        r = await stack.client.post(f"/greeter/greet/send?delay={delay}", json="x")
        assert_error(r, 400, "ingress", "delay")
    r = await stack.client.post("/greeter/greet?delay=10s", json="x")
    assert_error(r, 400, "ingress", "delay is supported only with sends")
    assert stack.h.reader().list_invocations() == []


async def test_unknown_service_and_unknown_handler_are_distinct_404s(stack: Stack) -> None:
    service = await stack.client.post("/nope/greet", json="x")
    handler = await stack.client.post("/greeter/nope", json="x")
    assert_error(service, 404, "ingress", "service 'nope' not found")
    assert_error(handler, 404, "ingress", "handler 'nope' not found")
    assert service.json()["message"] != handler.json()["message"]
    assert_error(await stack.client.post("/counter/k/nope/send", json=1), 404, "ingress", "handler")


async def test_workflow_and_awakeable_paths_check_their_targets(stack: Stack) -> None:
    """The cases that need no workflow; tests/ingress/test_workflows_awakeables.py has the rest."""
    workflow = await stack.client.get("/restate/workflow/signup/k/attach")
    assert_error(workflow, 404, "ingress", "service 'signup' not found")
    for path in ("/restate/awakeables/sign_1abc/resolve", "/restate/a/sign_1abc/reject"):
        assert_error(await stack.client.post(path), 400, "ingress", "bad awakeable")
    assert_error(await stack.client.get("/restate/nothing"), 404, "ingress")


@pytest.mark.parametrize(
    "path",
    [
        "/counter/add",  # keyed handler without a key
        "/greeter/bob/greet",  # a key on a service
        "/greeter/greet/send/more",
        "/counter/k/add/send/more",
        "/greeter/greet/",
        "/greeter",
        "/",
    ],
)
async def test_malformed_paths_are_400(stack: Stack, path: str) -> None:
    assert_error(await stack.client.post(path, json=1), 400, "ingress", "bad path")


async def test_other_methods_are_405(stack: Stack) -> None:
    for method in ("PUT", "DELETE", "PATCH", "OPTIONS"):
        r = await stack.client.request(method, "/greeter/greet", json="x")
        assert_error(r, 405, "ingress", "method not allowed")
    assert_error(await stack.client.post("/restate/health"), 405, "ingress")


async def test_health(stack: Stack) -> None:
    assert (await stack.client.get("/restate/health")).status_code == 200


async def test_content_types(stack: Stack) -> None:
    client = stack.client
    r = await client.post(
        "/greeter/greet", content=b'"a"', headers={"content-type": "application/json; charset=utf-8"}
    )
    assert r.json() == "hello a"
    r = await client.post("/greeter/greet", content=b'"a"', headers={"content-type": "text/plain"})
    assert_error(r, 400, "ingress", "content-type")
    r = await client.post("/greeter/greet", content=b'"a"', headers={"content-type": ""})
    assert_error(r, 400, "ingress", "Empty content-type")
    r = await client.post("/greeter/greet", content=b'"a"')
    assert_error(r, 400, "ingress", "Empty content-type")
    r = await client.post("/greeter/echo", content=b"\x00\xffraw", headers={"content-type": "image/png"})
    assert (r.content, r.headers["content-type"]) == (b"\x00\xffraw", "application/octet-stream")
    r = await client.post("/greeter/echo", content=b"no type at all")
    assert r.content == b"no type at all"
    assert stack.h.reader().count_invocations()[Status.COMPLETED] == 3


async def test_empty_bodies(stack: Stack) -> None:
    client = stack.client
    r = await client.post("/greeter/noinput")
    assert (r.status_code, r.json()) == (200, "ok")
    r = await client.get("/greeter/maybe")
    assert r.json() == "maybe None"
    r = await client.post("/greeter/maybe", headers=JSON)
    assert r.json() == "maybe None"
    r = await client.post("/greeter/nothing")
    assert (r.status_code, r.content) == (200, b"")
    assert "content-type" not in r.headers
    assert_error(await client.post("/greeter/greet"), 400, "ingress", "input validation error")
    assert_error(await client.post("/greeter/noinput", json={"a": 1}), 400, "ingress", "takes no input")


async def test_input_is_validated_before_any_invocation_exists(stack: Stack) -> None:
    client = stack.client
    assert_error(await client.post("/greeter/greet", json={"a": 1}), 400, "ingress", "does not match str")
    assert_error(await client.post("/greeter/point", json={"x": 1}), 400, "ingress", "y")
    assert_error(await client.post("/greeter/point/send", json={"x": "1", "y": 2}), 400, "ingress")
    assert_error(await client.post("/greeter/greet", content=b'"open', headers=JSON), 400, "ingress", "JSON")
    assert stack.h.reader().list_invocations() == []
    r = await client.post("/greeter/point", json={"x": 1, "y": 2})
    assert r.json() == 3


async def test_headers_are_forwarded_to_the_handler(stack: Stack) -> None:
    r = await stack.client.post(
        "/greeter/headers?x=1&y=%20",
        headers={"x-my-header": "mine", "idempotency-key": "k1", "authorization": "Bearer t"},
    )
    seen = r.json()
    assert seen["x-my-header"] == "mine" and seen["authorization"] == "Bearer t"
    assert seen["x-restate-ingress-path"] == "/greeter/headers?x=1&y=%20"
    for hop in ("host", "connection", "content-length", "transfer-encoding", "idempotency-key"):
        assert hop not in seen, hop


async def test_terminal_errors_keep_their_status(stack: Stack) -> None:
    r = await stack.client.post("/greeter/fail", json=418)
    assert_error(r, 418, "invocation", "nope z")
    assert r.json() == {"code": 418, "message": "nope z", "source": "invocation"}
    assert ids.is_valid(r.headers["x-restate-id"])
    r = await stack.client.post("/greeter/fail", json=200)  # not an error status: reported as 500
    assert r.status_code == 500 and r.json()["source"] == "invocation"


async def test_body_over_the_limit_is_413(start_stack: StartStack) -> None:
    stack = await start_stack(max_body_bytes=1024)
    r = await stack.client.post("/greeter/echo", content=b"x" * 1025)
    assert_error(r, 413, "ingress", "larger than the limit")

    async def chunks():  # no content-length: the body is cut off while it streams in
        for _ in range(10_000):
            yield b"y" * 100

    r = await stack.client.post("/greeter/echo", content=chunks())
    assert_error(r, 413, "ingress")
    r = await stack.client.post("/greeter/echo", content=b"x" * 1024)
    assert r.status_code == 200 and len(r.content) == 1024
    assert stack.h.reader().count_invocations()[Status.COMPLETED] == 1


async def test_an_internal_error_is_a_500_and_the_server_lives_on(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    with monkeypatch.context() as patch:
        patch.setattr(stack.h, "submit", broken)
        with caplog.at_level(logging.ERROR, logger="perdure.ingress"):
            r = await stack.client.post("/greeter/greet", json="x")
    assert_error(r, 500, "ingress", "internal error")
    assert "boom" in caplog.text
    assert (await stack.client.post("/greeter/greet", json="x")).json() == "hello x"


async def test_an_engine_that_is_not_running_is_503(stack: Stack) -> None:
    await stack.h.stop()
    assert_error(await stack.client.post("/greeter/greet", json="x"), 503, "ingress", "unavailable")
    await stack.h.start()
    assert (await stack.client.post("/greeter/greet", json="x")).json() == "hello x"


async def test_mounted_below_a_prefix_in_another_asgi_app(stack: Stack, http_server: Any) -> None:
    async def outer(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/api/"):
            await stack.ingress({**scope, "root_path": "/api"}, receive, send)  # Starlette's Mount
            return
        await send({"type": "http.response.start", "status": 418, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    served = await http_server(outer)
    async with httpx.AsyncClient(base_url=served.url) as client:
        r = await client.post("/api/greeter/headers?q=1")
        assert r.json()["x-restate-ingress-path"] == "/greeter/headers?q=1"
        assert (await client.post("/api/counter/k%2F1/add", json=1)).json() == 1
        assert (await client.get("/elsewhere")).status_code == 418


async def test_lifespan_events_are_acknowledged(stack: Stack) -> None:
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await stack.ingress({"type": "lifespan"}, receive, send)
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
