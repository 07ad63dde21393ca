"""Services written with the official Restate Python SDK, registered with perdure as a remote
deployment (hypercorn in a subprocess) and driven over perdure's ingress: the same results as
their perdure-SDK twins run in-process.

Both transports: bidirectional streaming over h2c, and request/response over HTTP/1.1.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer

import perdure
from perdure.ingress import Ingress
from perdure.kafka import Broker
from perdure.runtime.http import Served

from . import perdure_services as scenario
from .processes import Hypercorn

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def official() -> Iterator[Hypercorn]:
    served = Hypercorn("tests.interop.official_services:app")
    served.start()
    try:
        yield served
    finally:
        served.stop()


async def _eventually(read: Callable[[], Awaitable[Any]], want: Any, *, within: float = 10.0) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        got = await read()
        if got == want or loop.time() > deadline:
            return got
        await asyncio.sleep(0.05)


async def scenarios(client: httpx.AsyncClient, key: str) -> dict[str, Any]:
    """Every scenario of `perdure_services` over the ingress; keyed like its `EXPECTED`."""
    journey, postbox = await scenario.journey_scenario(client, key)
    return {
        "counter": await scenario.counter_scenario(client, key),
        "journey": journey,
        "journey_postbox": postbox,
        "awakeable": await scenario.awakeable_scenario(client, key),
        "workflow": await scenario.workflow_scenario(client, key),
    }


@pytest.fixture
async def ingress_for(
    http_server: Callable[[Any], Awaitable[Served]],
) -> AsyncIterator[Callable[[perdure.Engine], Awaitable[httpx.AsyncClient]]]:
    clients: list[httpx.AsyncClient] = []

    async def make(engine: perdure.Engine) -> httpx.AsyncClient:
        served = await http_server(Ingress(engine))
        client = httpx.AsyncClient(base_url=served.url, timeout=20)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


async def test_the_perdure_sdk_twins_in_process_give_the_expected_results(
    ingress_for: Any, tmp_path: Any
) -> None:
    async with perdure.Engine(scenario.app, store=f"sqlite:///{tmp_path}/twin.db") as engine:
        client = await ingress_for(engine)
        assert await scenarios(client, "in-process") == scenario.EXPECTED


async def test_the_perdure_sdk_as_a_remote_deployment_of_perdure(ingress_for: Any, tmp_path: Any) -> None:
    served = Hypercorn("tests.interop.perdure_services:app")
    served.start()
    try:
        async with perdure.Engine(perdure.App([]), store=f"sqlite:///{tmp_path}/self.db") as engine:
            deployment, _ = await engine.register_deployment(served.url)
            assert (deployment.protocol_mode, deployment.protocol_version) == ("BIDI_STREAM", 7)
            client = await ingress_for(engine)
            assert await scenarios(client, "self") == scenario.EXPECTED
    finally:
        served.stop()


@pytest.mark.parametrize("use_http_11", [False, True], ids=["bidi-h2c", "request-response-http1.1"])
async def test_official_sdk_services_on_perdure(
    official: Hypercorn, ingress_for: Any, tmp_path: Any, use_http_11: bool
) -> None:
    async with perdure.Engine(perdure.App([]), store=f"sqlite:///{tmp_path}/remote.db") as engine:
        deployment, replaced = await engine.register_deployment(official.url, use_http_11=use_http_11)
        assert not replaced
        assert deployment.protocol_mode == ("REQUEST_RESPONSE" if use_http_11 else "BIDI_STREAM")
        assert deployment.protocol_version == 7
        client = await ingress_for(engine)
        assert await scenarios(client, "remote") == scenario.EXPECTED
        # every invocation ran on the deployment, pinned at its first attempt
        rows = engine.reader().list_invocations(limit=1000)
        assert rows and all(inv.deployment_id == deployment.id for inv in rows)
        assert {inv.protocol_version for inv in rows} == {7}


async def test_official_sdk_on_protocol_v6(official: Hypercorn, ingress_for: Any, tmp_path: Any) -> None:
    async with perdure.Engine(perdure.App([]), store=f"sqlite:///{tmp_path}/v6.db") as engine:
        deployment, _ = await engine.register_deployment(official.url, max_protocol_version=6)
        assert deployment.protocol_version == 6
        client = await ingress_for(engine)
        assert await scenarios(client, "remote") == scenario.EXPECTED


async def test_official_sdk_handler_fed_from_a_kafka_subscription(
    official: Hypercorn, broker: Broker, producer: AIOKafkaProducer, tmp_path: Any
) -> None:
    """Records keyed by object key, each one `Counter/add` on the deployment: per-key sums."""
    topic = "remote-counter-adds"
    async with perdure.Engine(perdure.App([]), store=f"sqlite:///{tmp_path}/kafka.db") as engine:
        await engine.register_deployment(official.url)
        await engine.put_kafka_cluster("local", {"bootstrap.servers": broker.bootstrap_servers})
        await engine.create_subscription(
            f"kafka://local/{topic}",
            "service://Counter/add",
            {"auto.offset.reset": "earliest", "session.timeout.ms": "2000", "heartbeat.interval.ms": "200"},
        )
        for n in range(1, 31):
            await producer.send(topic, str(n).encode(), key=f"k{n % 3}".encode())
        await producer.flush()
        want = {f"k{k}": sum(n for n in range(1, 31) if n % 3 == k) for k in range(3)}

        async def totals() -> dict[str, int]:
            return {k: int(await engine.generic_call("Counter", "get", key=k)) for k in want}

        assert await _eventually(totals, want, within=30) == want


@pytest.mark.parametrize("use_http_11", [False, True], ids=["bidi-h2c", "request-response-http1.1"])
async def test_cancel_reaches_a_waiting_official_sdk_handler(
    official: Hypercorn, tmp_path: Any, use_http_11: bool
) -> None:
    async with perdure.Engine(perdure.App([]), store=f"sqlite:///{tmp_path}/cancel.db") as engine:
        await engine.register_deployment(official.url, use_http_11=use_http_11)
        invocation_id = await engine.generic_send("Approvals", "request", b'"a raise"', key="c")
        await _eventually(lambda: _state(engine, "Approvals", "c"), True)
        await engine.cancel(invocation_id)
        outcome = await asyncio.wait_for(engine.attach(invocation_id), 20)
        assert outcome.failure is not None and outcome.failure.code == 409


async def test_run_retries_count_across_attempts(official: Hypercorn, tmp_path: Any) -> None:
    """The SDK's ctx.run policy reads the retry counters perdure keeps in StartMessage."""
    async with perdure.Engine(perdure.App([]), store=f"sqlite:///{tmp_path}/give-up.db") as engine:
        await engine.register_deployment(official.url)
        answer = await asyncio.wait_for(engine.generic_call("Flaky", "give_up", b"3"), 30)
        assert answer.startswith(b'"gave up') and b"nope" in answer
        [inv] = engine.reader().list_invocations(service="Flaky")
        assert inv.failures == 2  # attempts 1 and 2 failed the step; the 3rd gave up in the SDK


async def _state(engine: perdure.Engine, service: str, key: str) -> bool:
    return bool(engine.reader().get_all_state(service, key))


async def test_an_official_sdk_handler_attaches_to_another_invocation(
    official: Hypercorn, tmp_path: Any
) -> None:
    async with perdure.Engine(perdure.App([]), store=f"sqlite:///{tmp_path}/attach.db") as engine:
        await engine.register_deployment(official.url)
        waiting = await engine.generic_send("Approvals", "request", b'"a raise"', key="att")
        attacher = await engine.generic_send("Flaky", "attach", f'"{waiting}"'.encode())
        await _eventually(lambda: _state(engine, "Approvals", "att"), True)
        raw = engine.reader().get_all_state("Approvals", "att")[b"awakeable"]
        await engine.complete_awakeable(raw.decode().strip('"'), b'"granted"')
        outcome = await asyncio.wait_for(engine.attach(attacher), 20)
        assert outcome.value == b'"a raise: granted"'
        done = await engine.generic_call("Flaky", "attach", f'"{waiting}"'.encode())  # already completed
        assert done == b'"a raise: granted"'


local = perdure.Service("Local")


@local.handler()
async def add_remotely(ctx: perdure.Context, key: str) -> int:
    """An in-process handler calling a handler of a remote deployment."""
    total = await ctx.generic_call("Counter", "add", arg=b"2", key=key)
    return int(total)


impostor = perdure.Service("Local")  # served elsewhere under the in-process service's name


@impostor.handler()
async def add_elsewhere(ctx: perdure.Context, key: str) -> int:
    return 0


async def test_in_process_and_remote_services_side_by_side(
    official: Hypercorn, http_server: Callable[[Any], Awaitable[Served]], tmp_path: Any
) -> None:
    async with perdure.Engine(perdure.App([local]), store=f"sqlite:///{tmp_path}/mixed.db") as engine:
        await engine.register_deployment(official.url)
        assert {s.name for s in engine.services()} >= {"Local", "Counter", "Journey"}
        assert await engine.service_call(add_remotely, arg="mixed") == 2
        assert await engine.service_call(add_remotely, arg="mixed") == 4
        elsewhere = await http_server(perdure.App([impostor]))  # uvicorn: HTTP/1.1
        with pytest.raises(perdure.errors.ConflictError, match="'Local' is served in-process"):
            await engine.register_deployment(elsewhere.url, use_http_11=True, force=True)


@pytest.mark.parametrize("use_http_11", [False, True], ids=["bidi-h2c", "request-response-http1.1"])
async def test_named_signals_between_official_sdk_handlers(
    official: Hypercorn, tmp_path: Any, use_http_11: bool
) -> None:
    async with perdure.Engine(perdure.App([]), store=f"sqlite:///{tmp_path}/signals.db") as engine:
        await engine.register_deployment(official.url, use_http_11=use_http_11)
        waiting = await engine.generic_send("Flaky", "wait_for_signal")
        await asyncio.sleep(0.2)  # let it start waiting (a signal sent earlier is kept too)
        await engine.generic_call("Flaky", "send_signal", f'"{waiting}"'.encode())
        outcome = await asyncio.wait_for(engine.attach(waiting), 20)
        assert outcome.value == b'"got green"'
