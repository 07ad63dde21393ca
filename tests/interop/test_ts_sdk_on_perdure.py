"""Services written with the official TypeScript SDK (`@restatedev/restate-sdk`, pinned in
tests/interop/package.json) registered with perdure as a remote deployment and driven over its
ingress: the scenarios of `perdure_services`, with the same results as their perdure-SDK twins.

`ts/services.mjs` runs under node in a subprocess, in each of the SDK's two Node flavours:
`listen` (HTTP/2 without TLS only → BIDI_STREAM, registered over h2c) and `http1`
(`http1Handler()` on node:http → REQUEST_RESPONSE, registered with `use_http_11`).
Skipped, saying why, without node or without the npm package (`python3 dev.py setup`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

import perdure
from perdure.ingress import Ingress
from perdure.protocol import manifest as mf
from perdure.runtime.http import Served

from . import perdure_services as scenario
from .processes import die_with_parent, free_port, with_group
from .test_official_sdk_on_perdure import scenarios

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
SERVICES = HERE / "ts" / "services.mjs"
SDK = ROOT / ".cache" / "node" / "node_modules" / "@restatedev" / "restate-sdk"
PINNED = json.loads((HERE / "package.json").read_text())["dependencies"]["@restatedev/restate-sdk"]
START_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class Flavour:
    """How `services.mjs MODE` serves, and what perdure should record when registering it."""

    mode: str
    use_http_11: bool
    protocol_mode: str
    http_version: str


FLAVOURS = {
    "listen": Flavour("listen", use_http_11=False, protocol_mode="BIDI_STREAM", http_version="2"),
    "http1": Flavour("http1", use_http_11=True, protocol_mode="REQUEST_RESPONSE", http_version="1.1"),
}


class NodeServices:
    """`node ts/services.mjs MODE PORT` on a free loopback port, in its own process group."""

    def __init__(self, flavour: Flavour, log: Path, env: Mapping[str, str] | None = None) -> None:
        self.flavour = flavour
        self.log = log
        self.env = dict(env or {})
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, node: str) -> NodeServices:
        for _ in range(3):  # a free port can be taken between picking and binding it: node exits
            self.port = free_port()
            with self.log.open("ab") as out:
                self.proc = subprocess.Popen(
                    [node, str(SERVICES), self.flavour.mode, str(self.port)],
                    cwd=ROOT,
                    env={**os.environ, **self.env},
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,  # its own process group: stopped as one, by pid
                    preexec_fn=die_with_parent,
                )
            if self._wait_discoverable():
                return self
        raise AssertionError(f"node {SERVICES.name} {self.flavour.mode} exited:\n{self.log_tail()}")

    def _wait_discoverable(self) -> bool:
        """Until GET /discover answers over the mode's HTTP version (`listen` is h2c only);
        False if node exited first. The SDK wants a manifest version in `accept` (else 415)."""
        assert self.proc is not None
        h2 = not self.flavour.use_http_11
        deadline = time.monotonic() + START_TIMEOUT_S
        with httpx.Client(http1=not h2, http2=h2, headers={"accept": mf.ACCEPT}, timeout=1) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    return False
                try:
                    if client.get(f"{self.url}/discover").status_code == 200:
                        return True
                except httpx.HTTPError:
                    pass
                time.sleep(0.05)
        self.stop()
        raise AssertionError(f"{self.url}/discover did not answer in {START_TIMEOUT_S} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else "(no output)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM its process group (by the pid we started), SIGKILL if it lingers."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        with_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            with_group(proc.pid, signal.SIGKILL)
            proc.wait(5)


def require_node() -> str:
    """The node executable, or skip the calling test with the reason."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not on PATH: the TypeScript SDK tests need it")
    installed = SDK / "package.json"
    version = json.loads(installed.read_text()).get("version") if installed.exists() else None
    if version != PINNED:
        pytest.skip(
            f"@restatedev/restate-sdk {PINNED} is not installed in {SDK.parents[1]} "
            f"(found {version or 'nothing'}; `python3 dev.py setup` installs it when npm is on PATH)"
        )
    return node


@pytest.fixture(scope="module", params=list(FLAVOURS))
def ts_services(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The TS services in one flavour, shared by the module's tests (each uses keys of its own)."""
    node = require_node()
    log = tmp_path_factory.mktemp(f"ts-{request.param}") / "node.log"
    served = NodeServices(FLAVOURS[request.param], log).start(node)
    try:
        yield served
    finally:
        served.stop()


@pytest.fixture
async def ingress_for(
    http_server: Callable[[Any], Awaitable[Served]],
) -> AsyncIterator[Callable[[perdure.Engine], Awaitable[httpx.AsyncClient]]]:
    """Factory: an engine's ingress served on a free loopback port, and a client for it."""
    async with contextlib.AsyncExitStack() as stack:

        async def make(engine: perdure.Engine) -> httpx.AsyncClient:
            served = await http_server(Ingress(engine))
            return await stack.enter_async_context(httpx.AsyncClient(base_url=served.url, timeout=20))

        yield make


def diagnosis(engine: perdure.Engine, served: NodeServices) -> str:
    """What to look at when a scenario goes wrong: invocations that failed or did not complete,
    with the engine's last failure, and what node printed."""
    lines = [
        f"{inv.id} {inv.service}/{inv.handler} {inv.status.name} attempts={inv.attempt} "
        f"last_failure={inv.last_failure}"
        for inv in engine.reader().list_invocations(limit=1000)
        if inv.last_failure is not None or inv.outcome is None
    ]
    return "\n".join([*lines, "--- node:", served.log_tail()])


async def test_ts_sdk_services_on_perdure(
    ts_services: NodeServices, ingress_for: Any, tmp_path: Path
) -> None:
    flavour = ts_services.flavour
    async with perdure.Engine(perdure.App([]), store=f"sqlite:///{tmp_path}/x.db") as engine:
        deployment, replaced = await engine.register_deployment(
            ts_services.url, use_http_11=flavour.use_http_11
        )
        assert not replaced
        assert (deployment.protocol_mode, deployment.protocol_version) == (flavour.protocol_mode, 7)
        assert deployment.http_version == flavour.http_version
        client = await ingress_for(engine)
        got = await scenarios(client, f"ts-{flavour.mode}")
        assert got == scenario.EXPECTED, diagnosis(engine, ts_services)

        rows = engine.reader().list_invocations(limit=1000)
        # every invocation ran on the deployment, pinned at its first attempt, and none failed
        assert rows and all(inv.deployment_id == deployment.id for inv in rows)
        assert {inv.protocol_version for inv in rows} == {7}
        assert all(inv.last_failure is None for inv in rows), diagnosis(engine, ts_services)
        # the mode really was the one intended: a request/response attempt ends (suspends) on
        # whatever the runtime has not sent yet — the journey's sleep, its call — a bidi one waits
        attempts = {f"{inv.service}/{inv.handler}": inv.attempt for inv in rows}
        if flavour.protocol_mode == "BIDI_STREAM":
            assert set(attempts.values()) == {1}, attempts
        else:
            assert attempts["Journey/travel"] > 2, attempts


async def test_ts_sdk_on_protocol_v6(ts_services: NodeServices, ingress_for: Any, tmp_path: Path) -> None:
    flavour = ts_services.flavour
    async with perdure.Engine(perdure.App([]), store=f"sqlite:///{tmp_path}/v6.db") as engine:
        deployment, _ = await engine.register_deployment(
            ts_services.url, use_http_11=flavour.use_http_11, max_protocol_version=6
        )
        assert (deployment.protocol_mode, deployment.protocol_version) == (flavour.protocol_mode, 6)
        client = await ingress_for(engine)
        got = await scenarios(client, f"ts-{flavour.mode}-v6")
        assert got == scenario.EXPECTED, diagnosis(engine, ts_services)
        assert {inv.protocol_version for inv in engine.reader().list_invocations(limit=1000)} == {6}


INACTIVITY_MS = 300  # in the manifest: how long perdure keeps an idle bidi attempt open
SETTLE = 0.8  # how long the awakeable and workflow scenarios leave their handler waiting


@pytest.mark.parametrize("version", [7, 6])
async def test_ts_sdk_bidi_attempts_suspend_and_resume(
    ingress_for: Any, tmp_path: Path, version: int
) -> None:
    """Past the handler's inactivity timeout perdure closes the request body; the SDK suspends
    (V7: a future tree; V6: flat lists) and a later attempt, with the completion, resumes it."""
    node = require_node()
    served = NodeServices(
        FLAVOURS["listen"], tmp_path / "node.log", {"INACTIVITY_TIMEOUT_MS": str(INACTIVITY_MS)}
    )
    served.start(node)
    try:
        async with perdure.Engine(perdure.App([]), store=f"sqlite:///{tmp_path}/idle.db") as engine:
            deployment, _ = await engine.register_deployment(served.url, max_protocol_version=version)
            assert (deployment.protocol_mode, deployment.protocol_version) == ("BIDI_STREAM", version)
            client = await ingress_for(engine)
            got = {
                "awakeable": await scenario.awakeable_scenario(client, "idle", settle=SETTLE),
                "workflow": await scenario.workflow_scenario(client, "idle", settle=SETTLE),
            }
            want = {name: scenario.EXPECTED[name] for name in got}
            assert got == want, diagnosis(engine, served)
            rows = {
                f"{inv.service}/{inv.handler}": inv for inv in engine.reader().list_invocations(limit=100)
            }
            for waited in ("Approvals/request", "Signup/run"):
                inv = rows[waited]
                assert inv.attempt == 2 and inv.failures == 0, diagnosis(engine, served)
    finally:
        served.stop()
