"""A digital twin: one virtual object per delivery, kept up to date by location events from Kafka.

Couriers' phones publish location events on the topic `locations`, keyed by delivery id. Each
record becomes a call of the exclusive handler `delivery/{id}/update_location`, so one delivery's
events are applied one at a time, in offset order, while thousands of deliveries update in
parallel. The twin's state: the last location, a bounded history, and an ETA to the destination.
`delivery/{id}/get` (shared) reads it at any time without waiting behind updates; `assign` sets
the destination (over HTTP, say, from the dispatch system).

Phones resend after losing the network, so an event older than the last one applied is counted
as stale and ignored: the twin never moves backwards.

Run the demo (a local Kafka broker, three deliveries driving towards their customers):
    python examples/digital_twin.py
Served:  perdure dev examples/digital_twin.py:app --kafka embedded, then
         perdure subscriptions create kafka://local/locations service://delivery/update_location
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import perdure
from perdure import ObjectContext, ObjectSharedContext, VirtualObject


@dataclass
class Location:
    lat: float
    lon: float
    at: float  # when the phone measured it, seconds since the epoch
    speed_kmh: float = 0.0


@dataclass
class Assignment:
    destination_lat: float
    destination_lon: float


@dataclass
class Twin:
    """What the twin knows about one delivery."""

    location: Location | None = None
    history: list[Location] = field(default_factory=list)
    destination: Assignment | None = None
    eta_minutes: float | None = None
    km_to_go: float | None = None
    updates: int = 0
    stale: int = 0


#: The history keeps the last this many locations: the state stays small however long the trip.
HISTORY = 20
#: Assumed speed when the phone reports none (or stands still): city traffic.
DEFAULT_SPEED_KMH = 20.0


def km_between(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance (haversine), in kilometres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6371.0 * math.asin(math.sqrt(a))


def refresh_eta(twin: Twin) -> None:
    """Recompute distance and ETA from the last location (pure: it runs again on replay, same result)."""
    if twin.location is None or twin.destination is None:
        twin.km_to_go = twin.eta_minutes = None
        return
    here, there = twin.location, twin.destination
    twin.km_to_go = round(km_between(here.lat, here.lon, there.destination_lat, there.destination_lon), 3)
    speed = here.speed_kmh if here.speed_kmh > 1 else DEFAULT_SPEED_KMH
    twin.eta_minutes = round(twin.km_to_go / speed * 60, 1)


delivery = VirtualObject("delivery")


@delivery.handler()
async def update_location(ctx: ObjectContext, event: Location) -> Twin:
    """Apply one location event (exclusive: one at a time per delivery, in offset order)."""
    twin: Twin = await ctx.get("twin", type_hint=Twin) or Twin()
    if twin.location is not None and event.at <= twin.location.at:
        twin.stale += 1  # a resent, older event: keep the newer position
    else:
        twin.location = event
        twin.history = [*twin.history, event][-HISTORY:]
        twin.updates += 1
        refresh_eta(twin)
    ctx.set("twin", twin)
    return twin


@delivery.handler()
async def assign(ctx: ObjectContext, assignment: Assignment) -> Twin:
    """Set the destination (the customer's address)."""
    twin: Twin = await ctx.get("twin", type_hint=Twin) or Twin()
    twin.destination = assignment
    refresh_eta(twin)
    ctx.set("twin", twin)
    return twin


@delivery.handler(kind="shared")
async def get(ctx: ObjectSharedContext) -> Twin:
    """The twin now (shared: concurrent with updates, never queued behind them)."""
    twin: Twin = await ctx.get("twin", type_hint=Twin) or Twin()
    return twin


#: Served over HTTP only; subscribe the topic with the CLI or the admin API.
app = perdure.App([delivery])

LOCATIONS_TOPIC = "locations"


def kafka_app(bootstrap_servers: str, options: Mapping[str, str] | None = None) -> perdure.App:
    """The twin fed by the `locations` topic of cluster `local`."""
    return perdure.App(
        [delivery],
        kafka_clusters={"local": {"bootstrap.servers": bootstrap_servers}},
        subscriptions=[
            perdure.KafkaSubscription(
                f"kafka://local/{LOCATIONS_TOPIC}",
                update_location,
                options or {"auto.offset.reset": "earliest"},
            )
        ],
    )


def location_record(delivery_id: str, loc: Location) -> tuple[bytes, bytes]:
    """(key, value) of the Kafka record a courier's phone publishes."""
    value = {"lat": loc.lat, "lon": loc.lon, "at": loc.at, "speed_kmh": loc.speed_kmh}
    return delivery_id.encode(), json.dumps(value).encode()


def route(start: tuple[float, float], end: tuple[float, float], steps: int, t0: float) -> list[Location]:
    """`steps` positions on the straight line from `start` towards `end`, one every 30 s, at 24 km/h."""
    return [
        Location(
            lat=start[0] + (end[0] - start[0]) * i / steps,
            lon=start[1] + (end[1] - start[1]) * i / steps,
            at=t0 + 30 * i,
            speed_kmh=24.0,
        )
        for i in range(steps)
    ]


# --- the demo -----------------------------------------------------------------------------------


async def demo(db: Path) -> None:
    from aiokafka import AIOKafkaProducer

    from perdure.kafka import Broker

    db.parent.mkdir(parents=True, exist_ok=True)
    for stale in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        stale.unlink(missing_ok=True)
    customers = {"d-1": (52.5200, 13.4050), "d-2": (52.5000, 13.3500), "d-3": (52.5400, 13.4300)}
    restaurant = (52.5100, 13.3900)
    fast = {"auto.offset.reset": "earliest", "session.timeout.ms": "2000", "heartbeat.interval.ms": "200"}
    async with Broker() as broker:
        await broker.create_topic(LOCATIONS_TOPIC, partitions=2)
        twin_app = kafka_app(broker.bootstrap_servers, fast)
        async with perdure.Engine(twin_app, store=f"sqlite:///{db}") as engine:
            for delivery_id, (lat, lon) in customers.items():
                await engine.object_call(assign, key=delivery_id, arg=Assignment(lat, lon))
            producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers)
            await producer.start()
            sent = 0
            try:
                t0 = time.time()
                for delivery_id, end in customers.items():
                    path = route(restaurant, end, 10, t0)
                    for loc in [*path, path[3]]:  # the phone resends an old position at the end
                        key, value = location_record(delivery_id, loc)
                        await producer.send(LOCATIONS_TOPIC, value, key=key)
                        sent += 1
                await producer.flush()
            finally:
                await producer.stop()
            print(f"kafka {broker.bootstrap_servers}: {sent} location events for {len(customers)} deliveries")
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                twins = [await engine.object_call(get, key=d) for d in customers]
                if sum(t.updates + t.stale for t in twins) == sent:
                    break
                await asyncio.sleep(0.1)
            for delivery_id in customers:
                twin = await engine.object_call(get, key=delivery_id)
                here = twin.location
                where = f"({here.lat:.4f}, {here.lon:.4f})" if here else "unknown"
                print(
                    f"{delivery_id}: at {where}, {twin.km_to_go} km to go, ETA {twin.eta_minutes} min; "
                    f"{twin.updates} updates, {twin.stale} stale, history of {len(twin.history)}"
                )


if __name__ == "__main__":
    asyncio.run(demo(Path(".perdure/digital_twin.db")))
