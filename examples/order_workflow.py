"""Food delivery as a workflow: one run per order, a driver's acceptance awaited durably, and a saga.

An order arrives on the Kafka topic `orders` (record key = order id) and starts the `order`
workflow's `run` for that id — once, however often the record is delivered:

    1. charge the card                        ctx.run: recorded once, never charged twice
    2. ask the restaurant to prepare it       a call to the `restaurant` service
    3. offer it to drivers and wait           ctx.awakeable(): its id goes to the driver app, which
                                              resolves it over HTTP when a driver accepts
                                              (POST /restate/awakeables/{id}/resolve '"ann"')
    4. delivery updates until delivered       one awakeable per update; each one stored in state
       GET the state any time                 POST /order/{id}/status (a shared handler)

Waiting suspends the run: nothing stays in memory, and a restart resumes it. Cancelling it
(`perdure invocations cancel ID`, or PATCH /invocations/{id}/cancel on the admin API) makes the
await in progress raise TerminalError(409); the saga then runs its compensations — refund the
payment, cancel the kitchen ticket — and re-raises, so the run ends "cancelled", refunded once.

Run the demo (a local Kafka broker, the engine and its ingress, two orders — one delivered, one
cancelled while it waits for a driver):  python examples/order_workflow.py
Served:  perdure dev examples/order_workflow.py:app --kafka embedded, then
         perdure subscriptions create kafka://local/orders service://order/run \\
             --option auto.offset.reset=earliest
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import perdure
from perdure import Context, Service, TerminalError, Workflow, WorkflowContext, WorkflowSharedContext


@dataclass
class Order:
    id: str
    customer: str
    restaurant: str
    items: list[str]
    total_cents: int


@dataclass
class DeliveryUpdate:
    status: str  # "picked up", "nearby", ..., "delivered"
    location: str = ""


@dataclass
class OrderStatus:
    status: str
    driver: str | None = None
    ready_in_minutes: int | None = None
    updates: list[DeliveryUpdate] = field(default_factory=list)


# --- the systems around the workflow (simulated in memory) --------------------------------------


class Payments:
    """A payment provider: charges and refunds, by payment id."""

    def __init__(self) -> None:
        self.charges: dict[str, tuple[str, int]] = {}  # payment id -> (order id, cents)
        self.refunds: list[str] = []

    def charge(self, order_id: str, cents: int) -> str:
        payment_id = f"pay-{len(self.charges) + 1}-{order_id}"
        self.charges[payment_id] = (order_id, cents)
        return payment_id

    def refund(self, payment_id: str) -> None:
        self.refunds.append(payment_id)


class Kitchen:
    """The restaurant's ticket system."""

    def __init__(self) -> None:
        self.tickets: dict[str, str] = {}  # order id -> "cooking" | "cancelled"

    def open_ticket(self, order_id: str, items: list[str]) -> int:
        self.tickets[order_id] = "cooking"
        return 5 + 3 * len(items)  # minutes until it is ready

    def cancel_ticket(self, order_id: str) -> None:
        self.tickets[order_id] = "cancelled"


class DriverApp:
    """The drivers' app: it receives awakeable ids and, later, completes them over HTTP.

    `offers[order]` is the id to resolve with the accepting driver's name; `update_requests[order]`
    the id to resolve with the next `DeliveryUpdate`.
    """

    def __init__(self) -> None:
        self.offers: dict[str, str] = {}
        self.update_requests: dict[str, str] = {}

    def offer(self, order_id: str, awakeable_id: str) -> None:
        self.offers[order_id] = awakeable_id

    def request_update(self, order_id: str, awakeable_id: str) -> None:
        self.update_requests[order_id] = awakeable_id


payments = Payments()
kitchen = Kitchen()
drivers = DriverApp()

# --- the handlers -------------------------------------------------------------------------------

restaurant = Service("restaurant")


@restaurant.handler()
async def prepare(ctx: Context, order: Order) -> int:
    """Open a kitchen ticket; returns the minutes until the food is ready."""
    minutes: int = await ctx.run("open kitchen ticket", kitchen.open_ticket, args=(order.id, order.items))
    return minutes


@restaurant.handler()
async def cancel_ticket(ctx: Context, order_id: str) -> None:
    await ctx.run("cancel kitchen ticket", kitchen.cancel_ticket, args=(order_id,))


order = Workflow("order")

#: A delivery sends at most this many updates; after that the order counts as delivered.
MAX_UPDATES = 50


@order.main()
async def run(ctx: WorkflowContext, o: Order) -> str:
    """Pay, cook, find a driver, follow the delivery; on any terminal failure, undo what was done."""
    compensations: list[Callable[[], Awaitable[None]]] = []
    progress = OrderStatus(status="paying")
    ctx.set("status", progress)
    try:
        payment_id = await ctx.run("charge", payments.charge, args=(o.id, o.total_cents))

        async def refund() -> None:
            await ctx.run("refund", payments.refund, args=(payment_id,))

        compensations.append(refund)

        progress.status = "preparing"
        ctx.set("status", progress)
        progress.ready_in_minutes = await ctx.service_call(prepare, arg=o)

        async def cancel_cooking() -> None:
            ctx.service_send(cancel_ticket, arg=o.id)  # journaled with this step; runs on its own

        compensations.append(cancel_cooking)

        progress.status = "waiting for a driver"
        ctx.set("status", progress)
        offer_id, accepted = ctx.awakeable(type_hint=str)
        await ctx.run("offer to drivers", drivers.offer, args=(o.id, offer_id))
        progress.driver = await accepted  # suspended until a driver accepts (or a cancellation)

        progress.status = "delivering"
        ctx.set("status", progress)
        for _ in range(MAX_UPDATES):
            update_id, next_update = ctx.awakeable(type_hint=DeliveryUpdate)
            await ctx.run("ask for the next update", drivers.request_update, args=(o.id, update_id))
            update: DeliveryUpdate = await next_update
            progress.updates.append(update)
            ctx.set("status", progress)
            if update.status == "delivered":
                break
        progress.status = "delivered"
        ctx.set("status", progress)
        return f"order {o.id} delivered by {progress.driver}"
    except TerminalError as e:
        # The saga: undo in reverse order. A cancellation arrives here as a 409 at the await in
        # progress; the awaits below still work, so each compensation is journaled (runs once).
        for undo in reversed(compensations):
            await undo()
        progress.status = "cancelled" if e.status_code == 409 else f"failed: {e.message}"
        ctx.set("status", progress)
        raise


@order.handler()
async def status(ctx: WorkflowSharedContext) -> OrderStatus | None:
    """Where the order is: readable while the run waits (shared handlers run concurrently)."""
    current: OrderStatus | None = await ctx.get("status", type_hint=OrderStatus)
    return current


#: Served over HTTP only (`perdure dev examples/order_workflow.py:app`; subscribe it with the CLI).
app = perdure.App([order, restaurant])

ORDERS_TOPIC = "orders"


def kafka_app(bootstrap_servers: str, options: Mapping[str, str] | None = None) -> perdure.App:
    """The same services, with the `orders` topic of cluster `local` feeding `order/run`."""
    return perdure.App(
        [order, restaurant],
        kafka_clusters={"local": {"bootstrap.servers": bootstrap_servers}},
        subscriptions=[
            perdure.KafkaSubscription(
                f"kafka://local/{ORDERS_TOPIC}", run, options or {"auto.offset.reset": "earliest"}
            )
        ],
    )


def order_record(o: Order) -> tuple[bytes, bytes]:
    """(key, value) of the Kafka record announcing `o`."""
    value = {
        "id": o.id,
        "customer": o.customer,
        "restaurant": o.restaurant,
        "items": o.items,
        "total_cents": o.total_cents,
    }
    return o.id.encode(), json.dumps(value).encode()


# --- the demo -----------------------------------------------------------------------------------


async def _appears(table: dict[str, str], key: str, within: float = 30.0) -> str:
    """The value `key` gets in `table` (the driver app's inbox), waiting at most `within` s."""
    deadline = time.monotonic() + within
    while key not in table:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{key} never reached the driver app")
        await asyncio.sleep(0.05)
    return table.pop(key)


async def demo(db: Path) -> None:
    import httpx
    from aiokafka import AIOKafkaProducer

    from perdure.ingress import Ingress
    from perdure.kafka import Broker
    from perdure.protocol.ids import workflow_id
    from perdure.runtime.http import serve

    db.parent.mkdir(parents=True, exist_ok=True)
    for stale in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        stale.unlink(missing_ok=True)
    fast = {"auto.offset.reset": "earliest", "session.timeout.ms": "2000", "heartbeat.interval.ms": "200"}
    async with Broker() as broker:
        await broker.create_topic(ORDERS_TOPIC)
        orders_app = kafka_app(broker.bootstrap_servers, fast)
        async with perdure.Engine(orders_app, store=f"sqlite:///{db}") as engine:
            served = await serve(Ingress(engine), "127.0.0.1", 0)
            http = httpx.AsyncClient(base_url=served.url, timeout=30)
            producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers)
            await producer.start()
            try:
                pizza = Order("o-1", "ada", "luigi's", ["margherita", "tiramisu"], 2350)
                curry = Order("o-2", "bob", "spice", ["korma"], 1400)
                for o in (pizza, curry, pizza):  # o-1 twice: its workflow still runs once
                    key, value = order_record(o)
                    await producer.send_and_wait(ORDERS_TOPIC, value, key=key)
                print(f"kafka {broker.bootstrap_servers}: produced o-1, o-2, o-1 again; ingress {served.url}")

                async def resolve(awakeable_id: str, value: object) -> None:
                    response = await http.post(f"/restate/awakeables/{awakeable_id}/resolve", json=value)
                    path = f"/restate/awakeables/sign_1…{awakeable_id[-8:]}/resolve"
                    print(f"  driver app: POST {path} {json.dumps(value)} → {response.status_code}")

                await resolve(await _appears(drivers.offers, "o-1"), "ann")
                for update in ({"status": "picked up", "location": "luigi's"}, {"status": "delivered"}):
                    await resolve(await _appears(drivers.update_requests, "o-1"), update)
                delivered = await http.get("/restate/workflow/order/o-1/attach")
                print(f"o-1: {delivered.json()}")
                print(f"     status {(await http.post('/order/o-1/status')).json()}")

                await _appears(drivers.offers, "o-2")
                print("o-2: no driver yet; the customer cancels")
                await engine.cancel(workflow_id("order", "o-2"))
                cancelled = await http.get("/restate/workflow/order/o-2/attach")
                print(f"o-2: {cancelled.status_code} {cancelled.json()}")
                print(f"     status {(await http.post('/order/o-2/status')).json()}")
                print(f"charges {payments.charges}\nrefunds {payments.refunds}\nkitchen {kitchen.tickets}")
            finally:
                await producer.stop()
                await http.aclose()
                await served.stop()


if __name__ == "__main__":
    asyncio.run(demo(Path(".perdure/order_workflow.db")))
