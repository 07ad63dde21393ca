"""What the engine is told when an attempt fails in the transport (reference §1.9), in each mode:
bidirectional over h2c, request/response over HTTP/1.1 and over h2c."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from perdure.engine.actions import StartAttempt
from perdure.engine.commands import AttemptOutput
from perdure.protocol import messages as pm
from perdure.runtime.clock import SystemClock
from perdure.runtime.remote import RemoteInvoker, RemoteOptions
from perdure.runtime.remote.failures import retry_after_ms

from .driver import Driver, deployment

MODES = {"bidi-h2c": (True, "2"), "rr-http1.1": (False, "1.1"), "rr-h2c": (False, "2")}


@pytest.fixture(params=list(MODES))
async def attempt(request: pytest.FixtureRequest) -> AsyncIterator[Callable[..., Any]]:
    """`error = await attempt(uri, version=6)`: run a Greeter handler once; how did it end?"""
    bidi, http = MODES[request.param]
    drivers: list[Driver] = []

    async def run(uri: str, *, version: int = 6, handler: str = "greet", **options: float) -> Any:
        d = Driver(deployment(uri, bidi=bidi, http=http, version=version), options=RemoteOptions(**options))  # type: ignore[arg-type]
        drivers.append(d)
        inv = d.call("Greeter", handler, "ada")
        end = await d.ended(inv)
        assert d.invoker.active == 0
        assert [m for m in d.messages(inv) if isinstance(m, pm.EndMessage | pm.SuspensionMessage)] == []
        return end

    yield run
    for d in drivers:
        await d.invoker.stop()


async def test_http_500_reports_status_and_body(attempt: Any, sdk_url: str) -> None:
    uri = f"{sdk_url}/fail500"
    error = await attempt(uri)
    assert isinstance(error, pm.ErrorMessage)
    assert error.code == 500
    assert error.message == f"deployment {uri} answered HTTP 500: boom: the handler host is broken"
    assert not error.HasField("next_retry_delay")


async def test_503_honours_retry_after(attempt: Any, sdk_url: str) -> None:
    error = await attempt(f"{sdk_url}/busy")
    assert error.code == 503
    assert error.next_retry_delay == 7000
    assert "busy, come back later" in error.message


async def test_415_names_the_protocol_version(attempt: Any, sdk_url: str) -> None:
    error = await attempt(f"{sdk_url}/strict", version=4)
    assert error.code == 415
    assert f"protocol version v4 not supported by the deployment {sdk_url}/strict" in error.message


async def test_unreachable_deployment(attempt: Any, closed_port: Callable[[], int]) -> None:
    uri = f"http://127.0.0.1:{closed_port()}"
    error = await attempt(uri)
    assert error.code == 503
    assert error.message.startswith(f"cannot reach deployment {uri}: ")


async def test_response_closed_without_end(attempt: Any, sdk_url: str) -> None:
    uri = f"{sdk_url}/noend"
    error = await attempt(uri)
    assert error.code == 502
    assert error.message == f"deployment {uri}: the response ended without End, Suspension or Error"


async def test_frame_that_does_not_decode(attempt: Any, sdk_url: str) -> None:
    error = await attempt(f"{sdk_url}/garbage")
    assert error.code == pm.PROTOCOL_VIOLATION
    assert "unknown message type 0x0300" in error.message


async def test_wrong_content_type(attempt: Any, sdk_url: str) -> None:
    uri = f"{sdk_url}/wrongtype"
    error = await attempt(uri)
    assert error.code == pm.PROTOCOL_VIOLATION
    expected = "application/vnd.restate.invocation.v6"
    assert error.message == f"deployment {uri} answered with content-type text/html, expected {expected}"


async def test_unknown_handler_is_the_sdks_404(attempt: Any, sdk_url: str) -> None:
    error = await attempt(sdk_url, handler="nope")
    assert error.code == 404
    assert error.message == f"deployment {sdk_url} answered HTTP 404"


async def test_bidi_to_an_http1_only_server(http_server: Any) -> None:
    """h2c prior knowledge to a server that only speaks HTTP/1.1 (uvicorn) cannot connect."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("never reached")

    served = await http_server(app)
    d = Driver(deployment(served.url, bidi=True, http="2"))
    try:
        inv = d.call("Greeter", "greet", "ada")
        error = await d.ended(inv)
    finally:
        await d.invoker.stop()
    assert error.code == 503
    assert error.message.startswith(f"cannot reach deployment {served.url}: not an HTTP/2 (h2c) server")


def test_retry_after_as_seconds_or_http_date() -> None:
    now = 1_767_225_600_000  # 2026-01-01T00:00:00Z
    assert retry_after_ms("7", now) == 7000
    assert retry_after_ms("Thu, 01 Jan 2026 00:00:30 GMT", now) == 30_000
    assert retry_after_ms("Wed, 31 Dec 2025 00:00:00 GMT", now) == 0  # past: retry now
    assert retry_after_ms("soon", now) is None
    assert retry_after_ms(None, now) is None


@pytest.mark.parametrize(("bidi", "http"), MODES.values(), ids=list(MODES))
async def test_unreadable_ca_file_fails_the_attempt(bidi: bool, http: str, tmp_path: Any) -> None:
    options = RemoteOptions(ca_file=str(tmp_path / "missing.pem"))
    d = Driver(deployment("https://127.0.0.1:1", bidi=bidi, http=http), options=options)
    try:
        error = await d.ended(d.call("Greeter", "greet", "x"))
    finally:
        await d.invoker.stop()
    assert error.code == 503
    assert error.message.startswith("cannot reach deployment https://127.0.0.1:1: ")
    assert "missing.pem" in error.message


async def test_unregistered_deployment_fails_the_attempt() -> None:
    outputs: list[AttemptOutput] = []
    invoker = RemoteInvoker(outputs.append, SystemClock(), lambda _: None)
    start = pm.StartMessage(id=b"x" * 24, debug_id="inv_x", known_entries=0)
    invoker.start(StartAttempt("inv_x", 1, "Greeter", "greet", start, [], deployment_id="dp_gone"))
    [output] = outputs
    assert output.messages == [
        pm.ErrorMessage(code=404, message="Greeter/greet: deployment dp_gone is not registered")
    ]
    assert invoker.active == 0
    await invoker.stop()
