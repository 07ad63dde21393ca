"""The use-case examples end to end: order_workflow and digital_twin fed from a real tansu broker
through a real engine and its HTTP ingress and admin API; task_scheduler over HTTP on a manual clock.
"""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer

import perdure
from perdure.admin import Admin
from perdure.ingress import Ingress
from perdure.kafka import Broker
from perdure.protocol import ids
from perdure.runtime.http import Served
from perdure.storage.api import Status
from perdure.testing import Harness

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
# tansu holds a consumer group's first join for half the session timeout: keep it short here.
FAST = {"auto.offset.reset": "earliest", "session.timeout.ms": "2000", "heartbeat.interval.ms": "200"}
JSON = {"content-type": "application/json"}
_loads = itertools.count()

HttpServer = Callable[[Any], Awaitable[Served]]


def load(name: str) -> ModuleType:
    """examples/NAME.py as a fresh module: its simulated systems start empty."""
    spec = importlib.util.spec_from_file_location(f"usecase_{name}_{next(_loads)}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


async def eventually(condition: Callable[[], object], within: float = 20.0, what: str = "") -> None:
    """Poll `condition` every 20 ms; fail after `within` seconds."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what or condition}")
        await asyncio.sleep(0.02)


# --- order_workflow -----------------------------------------------------------------------------


async def test_order_workflow_from_kafka_with_a_driver_over_http_and_a_cancelled_order(
    broker: Broker, producer: AIOKafkaProducer, http_server: HttpServer, tmp_path: Path
) -> None:
    ex = load("order_workflow")
    await broker.create_topic(ex.ORDERS_TOPIC)
    app = ex.kafka_app(broker.bootstrap_servers, FAST)
    async with perdure.Engine(app, store=f"sqlite:///{tmp_path}/orders.db") as engine:
        ingress = httpx.AsyncClient(base_url=(await http_server(Ingress(engine))).url, timeout=15)
        admin = httpx.AsyncClient(base_url=(await http_server(Admin(engine))).url, timeout=15)
        try:
            pizza = ex.Order("o-1", "ada", "luigi's", ["margherita", "tiramisu"], 2350)
            curry = ex.Order("o-2", "bob", "spice", ["korma"], 1400)
            for o in (pizza, curry, pizza):  # o-1's record twice: its workflow still runs once
                key, value = ex.order_record(o)
                await producer.send(ex.ORDERS_TOPIC, value, key=key)
            await producer.flush()

            # o-1: paid, cooking, waiting for a driver; its state is readable meanwhile.
            await eventually(lambda: "o-1" in ex.drivers.offers, what="o-1 offered to drivers")
            status = (await ingress.post("/order/o-1/status")).json()
            assert (status["status"], status["ready_in_minutes"], status["driver"]) == (
                "waiting for a driver",
                11,
                None,
            )
            output = await ingress.get("/restate/workflow/order/o-1/output")
            assert output.status_code == 470
            offer = ex.drivers.offers.pop("o-1")
            accepted = await ingress.post(f"/restate/awakeables/{offer}/resolve", json="ann")
            assert (accepted.status_code, accepted.content) == (202, b"")
            for update in ({"status": "picked up", "location": "luigi's"}, {"status": "delivered"}):
                await eventually(lambda: "o-1" in ex.drivers.update_requests, what="an update request")
                request = ex.drivers.update_requests.pop("o-1")
                assert (await ingress.post(f"/restate/a/{request}/resolve", json=update)).status_code == 202
            delivered = await ingress.get("/restate/workflow/order/o-1/attach")
            assert (delivered.status_code, delivered.json()) == (200, "order o-1 delivered by ann")
            assert delivered.headers["x-restate-id"] == ids.workflow_id("order", "o-1")
            status = (await ingress.post("/order/o-1/status")).json()
            assert status["status"] == "delivered" and status["driver"] == "ann"
            assert [u["status"] for u in status["updates"]] == ["picked up", "delivered"]

            # o-2: cancelled over the admin API while it waits for a driver; the saga compensates.
            await eventually(lambda: "o-2" in ex.drivers.offers, what="o-2 offered to drivers")
            run_id = ids.workflow_id("order", "o-2")
            cancelled = await admin.patch(f"/invocations/{run_id}/cancel")
            assert cancelled.status_code == 202
            failed = await ingress.get("/restate/workflow/order/o-2/attach")
            assert failed.status_code == 409
            assert failed.json() == {"code": 409, "message": "cancelled", "source": "invocation"}
            [(o2_payment, _)] = [(p, c) for p, c in ex.payments.charges.items() if c[0] == "o-2"]
            assert ex.payments.refunds == [o2_payment]
            await eventually(lambda: ex.kitchen.tickets.get("o-2") == "cancelled", what="o-2 uncooked")
            assert (await ingress.post("/order/o-2/status")).json()["status"] == "cancelled"
            # The driver app accepts too late: 202, and nothing changes.
            late = await ingress.post(f"/restate/awakeables/{ex.drivers.offers['o-2']}/resolve", json="cy")
            assert late.status_code == 202
            await asyncio.sleep(0.2)
            assert ex.payments.refunds == [o2_payment]
            assert (await ingress.post("/order/o-2/status")).json()["driver"] is None

            # Charged once per order, whatever Kafka delivered; one run invocation per order.
            assert sorted(order for order, _ in ex.payments.charges.values()) == ["o-1", "o-2"]
            runs = [i for i in engine.reader().list_invocations(service="order") if i.handler == "run"]
            assert sorted(i.id for i in runs) == sorted(ids.workflow_id("order", k) for k in ("o-1", "o-2"))
            assert ex.kitchen.tickets["o-1"] == "cooking"
        finally:
            await ingress.aclose()
            await admin.aclose()


# --- digital_twin -------------------------------------------------------------------------------


async def test_digital_twin_follows_each_delivery_in_order_from_kafka(
    broker: Broker, producer: AIOKafkaProducer, http_server: HttpServer
) -> None:
    ex = load("digital_twin")
    topic = f"{ex.LOCATIONS_TOPIC}-twin"
    await broker.create_topic(topic, partitions=2)
    options = {**FAST}
    app = ex.kafka_app(broker.bootstrap_servers, options)
    app.subscriptions[0] = perdure.KafkaSubscription(f"kafka://local/{topic}", ex.update_location, options)
    customers = {"d-1": (52.52, 13.405), "d-2": (52.50, 13.35), "d-3": (52.54, 13.43)}
    steps = {"d-1": 10, "d-2": 10, "d-3": 25}
    t0 = 1_767_225_600.0
    async with perdure.Engine(app) as engine:
        ingress = httpx.AsyncClient(base_url=(await http_server(Ingress(engine))).url, timeout=15)
        try:
            for d, (lat, lon) in customers.items():
                body = {"destination_lat": lat, "destination_lon": lon}
                assert (await ingress.post(f"/delivery/{d}/assign", json=body)).status_code == 200
            routes = {d: ex.route((52.51, 13.39), end, steps[d], t0) for d, end in customers.items()}
            sent = 0
            for d, path in routes.items():
                for loc in [*path, path[2]]:  # the phone resends an old position last
                    key, value = ex.location_record(d, loc)
                    await producer.send(topic, value, key=key)
                    sent += 1
            await producer.flush()

            async def twins() -> dict[str, dict[str, Any]]:
                return {d: (await ingress.post(f"/delivery/{d}/get")).json() for d in customers}

            seen: dict[str, dict[str, Any]] = {}

            async def all_applied() -> bool:
                seen.update(await twins())
                return sum(t["updates"] + t["stale"] for t in seen.values()) == sent

            deadline = time.monotonic() + 30
            while not await all_applied():
                assert time.monotonic() < deadline, f"not every event applied: {seen}"
                await asyncio.sleep(0.05)
            for d, twin in seen.items():
                path = routes[d]
                assert (twin["updates"], twin["stale"]) == (steps[d], 1), d
                assert twin["location"]["at"] == path[-1].at  # the resent old position did not win
                kept = path[-ex.HISTORY :]
                assert [h["at"] for h in twin["history"]] == [p.at for p in kept]  # offset order, bounded
                end = customers[d]
                km = ex.km_between(path[-1].lat, path[-1].lon, *end)
                assert twin["km_to_go"] == pytest.approx(km, abs=0.001)
                assert twin["eta_minutes"] == pytest.approx(km / 24.0 * 60, abs=0.1)
            assert len(seen["d-3"]["history"]) == ex.HISTORY < steps["d-3"]
        finally:
            await ingress.aclose()


# --- task_scheduler -----------------------------------------------------------------------------


async def test_task_scheduler_runs_delayed_tasks_and_cancels_pending_ones(http_server: HttpServer) -> None:
    ex = load("task_scheduler")
    async with Harness(ex.app) as h:
        client = httpx.AsyncClient(base_url=(await http_server(Ingress(h))).url, timeout=15)
        try:
            scheduled = {}
            for customer in ("ada", "bob"):
                response = await client.post(f"/scheduler/{customer}/on_event", json={"kind": "signed_up"})
                assert response.status_code == 200, response.text
                scheduled[customer] = response.json()
            names = ["send welcome email", "check activation", "send feedback survey"]
            assert list(scheduled["ada"]) == names
            assert {h.status(i).status for c in scheduled.values() for i in c.values()} == {Status.SCHEDULED}

            await h.advance(timedelta(minutes=1))
            assert sorted(ex.outbox.done) == [("ada", names[0]), ("bob", names[0])]
            assert list((await client.post("/scheduler/ada/pending_tasks")).json()) == names[1:]

            response = await client.post("/scheduler/bob/cancel")
            assert (response.status_code, response.json()) == (200, sorted(names[1:]))
            await h.settle()
            for name in names[1:]:
                outcome = h.status(scheduled["bob"][name]).outcome
                assert outcome is not None and outcome.failure is not None
                assert (outcome.failure.code, outcome.failure.message) == (409, "cancelled")
            assert (await client.post("/scheduler/bob/pending_tasks")).json() == {}

            await h.advance(timedelta(days=8))
            assert sorted(ex.outbox.done) == sorted([("ada", n) for n in names] + [("bob", names[0])])
            assert (await client.post("/scheduler/ada/pending_tasks")).json() == {}
            # Cancelling with nothing pending is fine; an event of an unknown kind fails its call.
            assert (await client.post("/scheduler/ada/cancel")).json() == []
            bad = await client.post("/scheduler/ada/on_event", json={"kind": "exploded"})
            assert bad.status_code == 400 and bad.json()["source"] == "invocation"
        finally:
            await client.aclose()


# --- the demos, as scripts ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("order_workflow", ["o-1: order o-1 delivered by ann", "o-2: 409", "refunds ['pay-2-o-2']"]),
        ("digital_twin", ["33 location events for 3 deliveries", "d-3: at", "10 updates, 1 stale"]),
        ("task_scheduler", ["bob closes his account: cancelled ['send feedback survey']"]),
    ],
)
def test_the_demo_runs_as_a_script(name: str, expected: list[str], tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / f"{name}.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for line in expected:
        assert line in done.stdout, done.stdout
