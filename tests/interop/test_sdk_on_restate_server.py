"""perdure's SDK on restate-server: a perdure `App` served by hypercorn (h2c and HTTP/1.1) or
uvicorn (HTTP/1.1), registered with a real restate-server 1.7 and driven through its ingress.

Each combination runs the scenarios of `perdure_services` (counter, run/sleep/state/delayed
send/call, awakeable, workflow promise) and checks, from the deployment's wiretap, that the
protocol really was the one intended: V6 by default, V7 with the server's experimental flag;
bidirectional streaming over h2c (one request per attempt, notifications mid-stream, a suspension
when the runtime's inactivity timeout closes the stream) and request/response over HTTP/1.1
(a suspension whenever the handler needs something the runtime has not sent).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from . import perdure_services as scenarios
from .processes import die_with_parent, with_group
from .restate_server import RestateServer, require_binary

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

TESTS = Path(__file__).resolve().parents[1]
INACTIVITY = 0.5  # the server's invoker inactivity timeout (s): bidi attempts idle this long suspend
SETTLE = 1.2  # how long the awakeable and workflow scenarios leave their handler waiting in bidi


class Deployment:
    """`interop.wiretap:app` served in a subprocess on a pre-bound free loopback port."""

    def __init__(self, server: str, log: Path) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        sock.set_inheritable(True)
        self.port = sock.getsockname()[1]
        fd = sock.fileno()
        if server == "hypercorn":
            args = ["-m", "hypercorn", "--bind", f"fd://{fd}", "interop.wiretap:app"]
        else:
            args = ["-m", "uvicorn", "--fd", str(fd), "--log-level", "warning", "interop.wiretap:app"]
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, *args],
                env={**os.environ, "PYTHONPATH": str(TESTS)},
                pass_fds=[fd],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        sock.close()
        self.log = log
        deadline = time.monotonic() + 30
        while not self._healthy():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"{server} did not start:\n{log.read_text()}")
            time.sleep(0.05)

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wiretap(self, prefix: str) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = httpx.get(f"{self.url}/wiretap", timeout=5).json()
        return [r for r in records if r["path"].startswith(prefix)]

    def stop(self) -> None:
        if self.proc.poll() is None:
            with_group(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                with_group(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


@pytest.fixture(scope="module")
def hypercorn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    require_binary()  # no point serving when there is no server to register with
    deployment = Deployment("hypercorn", tmp_path_factory.mktemp("hypercorn") / "hypercorn.log")
    yield deployment
    deployment.stop()


@pytest.fixture(scope="module")
def uvicorn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    require_binary()
    deployment = Deployment("uvicorn", tmp_path_factory.mktemp("uvicorn") / "uvicorn.log")
    yield deployment
    deployment.stop()


@pytest.fixture(scope="module", params=[6, 7], ids=["v6-default", "v7-flag"])
def restate(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RestateServer]:
    server = RestateServer(
        tmp_path_factory.mktemp(f"restate-v{request.param}"),
        protocol_v7=request.param == 7,
        inactivity_timeout=f"{int(INACTIVITY * 1000)}ms",
    )
    server.start()
    yield server
    server.stop()


async def _register(server: RestateServer, uri: str, *, use_http_11: bool = False) -> dict[str, Any]:
    """Register (off the event loop: the helper is synchronous); the admin's deployment record."""
    registered = await asyncio.to_thread(server.register, uri, use_http_11=use_http_11)
    return await asyncio.to_thread(server.deployment, registered["id"])


def _version(server: RestateServer) -> int:
    return 7 if server.protocol_v7 else 6


def _attempts(records: list[dict[str, Any]], target: str) -> list[dict[str, Any]]:
    return [r for r in records if r["target"] == target]


async def _run_all(server: RestateServer, settle: float) -> dict[str, Any]:
    key = uuid.uuid4().hex[:10]
    async with httpx.AsyncClient(base_url=server.ingress, timeout=30) as client:
        journey, postbox = await scenarios.journey_scenario(client, key)
        return {
            "counter": await scenarios.counter_scenario(client, key),
            "journey": journey,
            "journey_postbox": postbox,
            "awakeable": await scenarios.awakeable_scenario(client, key, settle),
            "workflow": await scenarios.workflow_scenario(client, key, settle),
        }


def _check_wire(records: list[dict[str, Any]], version: int, http_version: str) -> None:
    assert records, "restate-server never invoked the deployment"
    for record in records:
        assert record["content_type"] == f"application/vnd.restate.invocation.v{version}", record
        assert record["http_version"] == http_version, record
        assert record["status"] == 200, record
        assert record["out"][-1] in ("End", "Suspension"), record  # never an Error


async def test_bidi_over_h2c(restate: RestateServer, hypercorn: Deployment) -> None:
    prefix = f"/h2c-v{_version(restate)}"
    info = await _register(restate, f"{hypercorn.url}{prefix}/")
    assert (info["protocol_type"], info["http_version"]) == ("BidiStream", "HTTP/2.0")
    assert info["sdk_version"].startswith("perdure/")

    assert await _run_all(restate, SETTLE) == scenarios.EXPECTED

    records = hypercorn.wiretap(prefix)
    _check_wire(records, _version(restate), "2")
    # One streamed attempt: the run result, the sleep, the call came back on the same request.
    (travel,) = _attempts(records, "Journey/travel")
    assert travel["out"][-1] == "End"
    if _version(restate) >= 7:
        assert "ProposeRunCompletion+ack" in travel["out"]
        assert "ProposeRunCompletionAck" in travel["in"]
    else:
        assert "ProposeRunCompletion" in travel["out"]
        assert "RunCompletionNotification" in travel["in"]
    assert {"SleepCompletionNotification", "CallCompletionNotification"} <= set(travel["in"])
    # Waiting past the inactivity timeout: the runtime closed the stream, the attempt suspended,
    # and the completion started a second one.
    for target in ("Approvals/request", "Signup/run"):
        attempts = _attempts(records, target)
        assert [a["out"][-1] for a in attempts] == ["Suspension", "End"], attempts


async def test_request_response_over_http11(restate: RestateServer, hypercorn: Deployment) -> None:
    prefix = f"/h11-v{_version(restate)}"
    info = await _register(restate, f"{hypercorn.url}{prefix}/", use_http_11=True)
    assert (info["protocol_type"], info["http_version"]) == ("RequestResponse", "HTTP/1.1")

    assert await _run_all(restate, 0.0) == scenarios.EXPECTED

    records = hypercorn.wiretap(prefix)
    _check_wire(records, _version(restate), "1.1")
    # Every await the runtime had to answer (run, sleep, call) ended an attempt.
    travel = _attempts(records, "Journey/travel")
    assert len(travel) >= 4, travel
    assert [a["out"][-1] for a in travel] == ["Suspension"] * (len(travel) - 1) + ["End"]
    proposals = [m for a in travel for m in a["out"] if m.startswith("ProposeRunCompletion")]
    assert proposals == ["ProposeRunCompletion+ack" if _version(restate) >= 7 else "ProposeRunCompletion"]
    known = [int(a["in"][0].split("=")[1].rstrip(")")) for a in travel]
    assert known == sorted(known) and known[0] == 1, known  # each attempt replays a longer journal


async def test_uvicorn_http11(restate: RestateServer, uvicorn: Deployment) -> None:
    if restate.protocol_v7:
        pytest.skip("one protocol version is enough for the uvicorn variant")
    prefix = "/uvicorn"
    await _register(restate, f"{uvicorn.url}{prefix}/", use_http_11=True)
    assert await _run_all(restate, 0.0) == scenarios.EXPECTED
    _check_wire(uvicorn.wiretap(prefix), _version(restate), "1.1")


def test_schemas_reach_restate(restate: RestateServer, hypercorn: Deployment) -> None:
    """The JSON schemas derived from type hints are what restate-server shows for the handlers."""
    restate.register(f"{hypercorn.url}/schemas/")
    journey = httpx.get(f"{restate.admin}/services/Journey", timeout=5).json()
    (travel,) = [h for h in journey["handlers"] if h["name"] == "travel"]
    schema = travel["input_json_schema"]
    trip = schema["$defs"]["Trip"]
    assert trip["required"] == ["traveller"]
    assert trip["properties"]["stops"] == {"type": "integer", "default": 1}
    assert travel["output_json_schema"] == {"type": "string"}
    counter = httpx.get(f"{restate.admin}/services/Counter", timeout=5).json()
    assert {h["name"]: h["ty"] for h in counter["handlers"]} == {"add": "Exclusive", "get": "Shared"}
