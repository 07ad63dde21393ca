"""Kafka clusters and subscriptions over the admin API: a real engine, a real broker, real uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec
import pytest
from aiokafka import AIOKafkaProducer

import perdure
from perdure import Context, ObjectContext, Service, VirtualObject
from perdure.admin import Admin
from perdure.kafka import Broker
from perdure.runtime.http import Served

# tansu holds a group join for half the session timeout: keep it short where speed is not measured.
FAST = {"auto.offset.reset": "earliest", "session.timeout.ms": "2000", "heartbeat.interval.ms": "200"}
_SAMPLE = re.compile(r"^(perdure_[a-z_]+)(\{[a-z_]+=\"[^\"]*\"(,[a-z_]+=\"[^\"]*\")*\})? (-?[0-9.e+-]+)$")
_names = itertools.count()

users = VirtualObject("users")
jobs = Service("jobs")
gate: dict[str, asyncio.Event] = {}  # a fresh event per test (events bind to one loop)


@users.handler()
async def update(ctx: ObjectContext, event: dict[str, Any]) -> None:
    seen = await ctx.get("seen") or []
    seen.append(event["n"])
    ctx.set("seen", seen)


@jobs.handler()
async def held(ctx: Context, n: int) -> None:
    await gate["open"].wait()  # until the test opens the gate


APP = perdure.App([users, jobs])


@dataclass
class Env:
    engine: perdure.Engine
    client: httpx.AsyncClient
    broker: Broker
    producer: AIOKafkaProducer
    done: list[str] = field(default_factory=list)  # completed invocation ids, in order

    async def topic(self, partitions: int = 1) -> str:
        name = f"admin{next(_names)}"
        await self.broker.create_topic(name, partitions)
        return name

    async def cluster(self) -> None:
        properties = {"bootstrap.servers": self.broker.bootstrap_servers}
        response = await self.client.post("/kafka-clusters", json={"name": "local", "properties": properties})
        assert response.status_code == 201, response.text

    async def subscribe(self, topic: str, sink: str, options: dict[str, str] | None = None) -> str:
        options = FAST if options is None else options
        body = {"source": f"kafka://local/{topic}", "sink": sink, "options": options}
        response = await self.client.post("/subscriptions", json=body)
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    async def produce(self, topic: str, numbers: range, keys: int = 3) -> None:
        for n in numbers:
            value = msgspec.json.encode({"n": n} if keys else n)
            await self.producer.send(topic, value, key=f"k{n % keys}".encode() if keys else None)
        await self.producer.flush()

    def seen(self) -> list[int]:
        numbers = []
        for k in range(3):
            raw = self.engine.reader().get_all_state("users", f"k{k}").get(b"seen")
            numbers += msgspec.json.decode(raw) if raw else []
        return sorted(numbers)

    async def subscription(self, subscription_id: str) -> dict[str, Any]:
        response = await self.client.get(f"/subscriptions/{subscription_id}")
        assert response.status_code == 200, response.text
        return dict(response.json())


@pytest.fixture
async def kafka_admin(
    broker: Broker, http_server: Callable[[Any], Awaitable[Served]]
) -> AsyncIterator[Callable[[], Awaitable[Env]]]:
    """Factory: an engine (memory store, wall clock) with its admin API on a real port, and a producer."""
    gate["open"] = asyncio.Event()
    async with contextlib.AsyncExitStack() as stack:

        async def open_() -> Env:
            engine = await stack.enter_async_context(perdure.Engine(APP))
            served = await http_server(Admin(engine))
            client = await stack.enter_async_context(httpx.AsyncClient(base_url=served.url, timeout=10))
            producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers, linger_ms=2)
            await producer.start()
            stack.push_async_callback(producer.stop)
            env = Env(engine, client, broker, producer)
            engine.add_completion_listener(env.done.append)
            return env

        yield open_


async def wait_until(condition: Callable[[], Awaitable[object] | object], within: float = 15.0) -> None:
    """Poll every 20 ms (awaiting `condition()` if it is a coroutine); fail after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s")
        await asyncio.sleep(0.02)


async def test_kafka_clusters(kafka_admin: Callable[[], Awaitable[Env]]) -> None:
    env = await kafka_admin()
    c = env.client
    local = {"name": "local", "properties": {"bootstrap.servers": env.broker.bootstrap_servers}}
    response = await c.post("/kafka-clusters", json=local)
    assert (response.status_code, response.json()) == (201, local)
    assert response.headers["location"] == "kafka-clusters/local"
    again = await c.post("/v1/kafka-clusters", json=local)  # the same definition: idempotent
    assert (again.status_code, again.json()) == (200, local)
    other = {"name": "local", "properties": {"bootstrap.servers": "127.0.0.1:1"}}
    response = await c.post("/kafka-clusters", json=other)
    assert response.status_code == 409
    assert "PATCH /kafka-clusters/local" in response.json()["message"]
    assert (await c.get("/kafka-clusters")).json() == {"clusters": [local]}
    assert (await c.get("/v1/kafka-clusters/local")).json() == local

    for bad, says in (
        ({"name": "x", "properties": {}}, "needs properties"),
        ({"name": "a/b", "properties": local["properties"]}, "bad Kafka cluster name"),
        ({"properties": local["properties"]}, "'name' is required"),
        ({"name": "x", "properties": {"bootstrap.servers": "h:1", "no.such": "1"}}, "no.such"),
        ({"name": "x", "properties": {"bootstrap.servers": "h:1", "session.timeout.ms": "soon"}}, "integer"),
        ({"name": "x", "properties": {"bootstrap.servers": ["h:1"]}}, "string, number or boolean"),
        ([], "JSON object"),
    ):
        response = await c.post("/kafka-clusters", json=bad)
        assert response.status_code == 400, bad
        assert says in response.json()["message"], response.json()
    assert (await c.get("/kafka-clusters/nope")).status_code == 404
    assert (await c.delete("/kafka-clusters/nope")).status_code == 404
    assert (await c.patch("/kafka-clusters/nope", json=other)).status_code == 404

    patched = {"name": "local", "properties": {"bootstrap.servers": "127.0.0.1:1", "client.id": "mine"}}
    response = await c.patch("/kafka-clusters/local", json={"properties": patched["properties"]})
    assert (response.status_code, response.json()) == (200, patched)
    assert env.engine.kafka_clusters() == {"local": patched["properties"]}

    sub_id = await env.subscribe("t", "service://users/update")
    response = await c.delete("/kafka-clusters/local")
    assert response.status_code == 409
    assert sub_id in response.json()["message"]
    assert (await c.delete(f"/subscriptions/{sub_id}")).status_code == 202
    response = await c.delete("/kafka-clusters/local")
    assert (response.status_code, response.json()) == (200, {})
    assert (await c.get("/kafka-clusters")).json() == {"clusters": []}


async def test_records_flow_from_subscription_to_completed_invocations(
    kafka_admin: Callable[[], Awaitable[Env]],
) -> None:
    env = await kafka_admin()
    await env.cluster()
    topic = await env.topic(partitions=2)
    body = {
        "source": f"kafka://local/{topic}",
        "sink": "service://users/update",
        "options": {"auto.offset.reset": "earliest"},  # otherwise perdure's defaults: time the real thing
    }
    started = time.monotonic()
    response = await env.client.post("/subscriptions", json=body)
    assert response.status_code == 201, response.text
    await env.produce(topic, range(1))
    await wait_until(lambda: env.done, within=30)
    first = time.monotonic() - started
    print(f"POST /subscriptions to the first record's invocation completed: {first:.2f} s")
    # Recorded, not a timed assertion: ~5 s, tansu's group join wait at the default session timeout.
    assert first < 30

    sub = response.json()
    sub_id = sub["id"]
    assert sub == {
        "id": sub_id,
        "source": f"kafka://local/{topic}",
        "sink": "service://users/update",
        "options": {"auto.offset.reset": "earliest", "client.id": "perdure", "group.id": sub_id},
    }
    assert re.fullmatch(r"sub_[0-9A-Za-z]{22}", sub_id)
    assert response.headers["location"] == f"subscriptions/{sub_id}"

    await env.produce(topic, range(1, 60))
    await wait_until(lambda: len(env.done) == 60)
    assert env.seen() == list(range(60))  # every record exactly once

    def settled(view: dict[str, Any]) -> bool:
        parts = view["partitions"]
        return len(parts) == 2 and all(p["lag"] == 0 and p["in_flight"] == 0 for p in parts)

    await wait_until(lambda: _settled(env, sub_id, settled))
    view = await env.subscription(sub_id)
    assert (view["status"], view["error"], view["records"]) == ("running", None, 60)
    assert sum(p["consumed_offset"] for p in view["partitions"]) == 60
    assert sum(p["high_watermark"] for p in view["partitions"]) == 60
    parts = view["partitions"]
    assert [(p["topic"], p["partition"], p["paused"], p["oldest_pending_ms"]) for p in parts] == [
        (topic, 0, False, None),
        (topic, 1, False, None),
    ]
    listed = (await env.client.get("/subscriptions")).json()["subscriptions"]
    assert [s["id"] for s in listed] == [sub_id]
    assert listed[0]["partitions"] == view["partitions"]
    assert (await env.client.get("/v1/subscriptions", params={"sink": "service://users/update"})).json()[
        "subscriptions"
    ][0]["id"] == sub_id
    assert (await env.client.get("/subscriptions", params={"sink": "service://jobs/held"})).json() == {
        "subscriptions": []
    }
    assert (await env.client.get("/subscriptions", params={"topic": topic})).status_code == 400

    metrics = (await env.client.get("/metrics")).text
    for line in metrics.splitlines():
        assert line.startswith("# ") or _SAMPLE.match(line), line
    labels = f'subscription="{sub_id}",topic="{topic}",partition="1"'
    gauges = ("consumed_offset", "high_watermark", "lag", "in_flight", "oldest_pending_seconds", "paused")
    for gauge in gauges:
        assert f"# TYPE perdure_kafka_{gauge} gauge" in metrics
        assert re.search(f"^perdure_kafka_{gauge}{{{labels}}} [0-9.]+$", metrics, re.M), gauge
    assert f"perdure_kafka_lag{{{labels}}} 0\n" in metrics
    assert f'perdure_kafka_records_total{{subscription="{sub_id}"}} 60\n' in metrics
    assert f'perdure_kafka_subscription_up{{subscription="{sub_id}"}} 1\n' in metrics


async def _settled(env: Env, sub_id: str, check: Callable[[dict[str, Any]], bool]) -> bool:
    return check(await env.subscription(sub_id))


async def test_in_flight_and_oldest_pending_until_handlers_finish(
    kafka_admin: Callable[[], Awaitable[Env]],
) -> None:
    env = await kafka_admin()
    await env.cluster()
    topic = await env.topic()
    sub_id = await env.subscribe(topic, "service://jobs/held")
    await env.produce(topic, range(4), keys=0)

    async def holding() -> bool:
        [p] = (await env.subscription(sub_id))["partitions"] or [None]
        return p is not None and p["in_flight"] == 4 and p["lag"] == 0

    await wait_until(holding)
    await asyncio.sleep(0.05)
    [p] = (await env.subscription(sub_id))["partitions"]
    assert p["consumed_offset"] == 4 and p["oldest_pending_ms"] >= 50
    metrics = (await env.client.get("/metrics")).text
    assert f'perdure_kafka_in_flight{{subscription="{sub_id}",topic="{topic}",partition="0"}} 4\n' in metrics
    gate["open"].set()

    async def drained() -> bool:
        [p] = (await env.subscription(sub_id))["partitions"]
        return bool(p["in_flight"] == 0 and p["oldest_pending_ms"] is None)

    await wait_until(drained)
    assert len(env.done) == 4


async def test_create_is_idempotent_and_conflicts_on_other_options(
    kafka_admin: Callable[[], Awaitable[Env]],
) -> None:
    env = await kafka_admin()
    await env.cluster()
    orders, refunds = await env.topic(), await env.topic()
    # A short session: a consumer stopped in the middle of joining its group stops sooner.
    options = {"check.crcs": True, "session.timeout.ms": 2000, "heartbeat.interval.ms": "200"}
    body = {"source": f"kafka://local/{orders}", "sink": "service://users/update", "options": options}
    first = await env.client.post("/subscriptions", json=body)
    assert first.status_code == 201
    sub = first.json()
    assert sub["options"] == {
        "auto.offset.reset": "latest",  # Restate's (librdkafka's) default
        "check.crcs": "true",
        "client.id": "perdure",
        "group.id": sub["id"],
        "heartbeat.interval.ms": "200",
        "session.timeout.ms": "2000",
    }
    again = await env.client.post("/subscriptions", json=body)
    assert (again.status_code, again.json()) == (200, sub)
    assert again.headers["location"] == first.headers["location"]
    # Spelling the defaults out is the same definition: the answer of a create can be posted back.
    explicit = await env.client.post("/v1/subscriptions", json={**body, "options": sub["options"]})
    assert (explicit.status_code, explicit.json()) == (200, sub)

    earliest = {"auto.offset.reset": "earliest"}
    other = await env.client.post("/subscriptions", json={**body, "options": earliest})
    assert other.status_code == 409
    assert sub["id"] in other.json()["message"] and "delete it first" in other.json()["message"]
    # Another sink or topic is another subscription.
    second = await env.client.post("/subscriptions", json={**body, "source": f"kafka://local/{refunds}"})
    assert second.status_code == 201 and second.json()["id"] != sub["id"]
    assert [s.id for s in env.engine.subscriptions()] == sorted([sub["id"], second.json()["id"]])

    # Cluster properties come before perdure's defaults in what the consumer uses.
    props = {"bootstrap.servers": env.broker.bootstrap_servers, "client.id": "shop"}
    assert (await env.client.patch("/kafka-clusters/local", json={"properties": props})).status_code == 200
    assert (await env.subscription(sub["id"]))["options"]["client.id"] == "shop"


async def test_bad_subscriptions_are_400_and_unknown_ids_404(
    kafka_admin: Callable[[], Awaitable[Env]],
) -> None:
    env = await kafka_admin()
    await env.cluster()
    ok = {"source": "kafka://local/orders", "sink": "service://users/update"}
    for body, status, says in (
        (
            {**ok, "source": "kafka://nope/orders"},
            400,
            "unknown Kafka cluster 'nope' in kafka://nope/orders (known clusters: local)",
        ),
        ({**ok, "sink": "service://users/nothing"}, 400, "no handler users/nothing is registered"),
        ({**ok, "sink": "service://ghost/update"}, 400, "no handler ghost/update"),
        ({**ok, "source": "http://local/orders"}, 400, "kafka://CLUSTER/TOPIC"),
        ({**ok, "sink": "users/update"}, 400, "service://SERVICE/HANDLER"),
        ({**ok, "options": {"fetch.min.bytes": "lots"}}, 400, "fetch.min.bytes must be an integer"),
        ({**ok, "options": {"no.such.option": "1"}}, 400, "unsupported Kafka option(s) no.such.option"),
        ({**ok, "options": {"auto.offset.reset": "sometime"}}, 400, "auto.offset.reset must be one of"),
        ({**ok, "options": ["auto.offset.reset"]}, 400, "options must be a JSON object"),
        ({"sink": ok["sink"]}, 400, "'source' is required"),
    ):
        response = await env.client.post("/subscriptions", json=body)
        assert response.status_code == status, (body, response.text)
        assert says in response.json()["message"], (body, response.json())
    response = await env.client.post("/subscriptions", content=b"{not json")
    assert response.status_code == 400
    assert env.engine.subscriptions() == []

    assert (await env.client.get("/subscriptions/sub_nope")).status_code == 404
    response = await env.client.delete("/subscriptions/sub_nope")
    assert (response.status_code, response.json()["message"]) == (404, "no subscription 'sub_nope'")
    assert (await env.client.put("/subscriptions/sub_nope")).status_code == 405


async def test_delete_stops_consumption_and_keeps_what_was_accepted(
    kafka_admin: Callable[[], Awaitable[Env]],
) -> None:
    env = await kafka_admin()
    await env.cluster()
    topic, held_topic = await env.topic(), await env.topic()
    sub_id = await env.subscribe(topic, "service://users/update")
    held_id = await env.subscribe(held_topic, "service://jobs/held")
    await env.produce(topic, range(5))
    await env.produce(held_topic, range(2), keys=0)  # accepted, then held by the gate: still run after
    await wait_until(lambda: len(env.done) == 5)

    async def holding() -> bool:
        partitions = (await env.subscription(held_id))["partitions"]
        return bool(partitions and partitions[0]["in_flight"] == 2)

    await wait_until(holding)

    for deleted in (sub_id, held_id):
        response = await env.client.delete(f"/subscriptions/{deleted}")
        assert (response.status_code, response.json()) == (202, {})
        assert (await env.client.get(f"/subscriptions/{deleted}")).status_code == 404
    assert (await env.client.get("/subscriptions")).json() == {"subscriptions": []}
    await wait_until(lambda: env.engine.kafka is not None and not env.engine.kafka.stats())  # consumers gone
    offsets = env.engine.stored_offsets(sub_id)
    assert offsets == {(topic, 0): 5}

    await env.produce(topic, range(5, 8))
    await env.produce(held_topic, range(2, 4), keys=0)
    await asyncio.sleep(1.0)  # several fetch cycles: nothing consumes them
    assert env.engine.stored_offsets(sub_id) == offsets
    assert env.engine.stored_offsets(held_id) == {(held_topic, 0): 2}
    assert len(env.done) == 5
    assert env.seen() == list(range(5))
    gate["open"].set()  # what was accepted before the delete still completes
    await wait_until(lambda: len(env.done) == 7)

    # The id is derived from source and sink: re-creating it resumes from the stored offsets.
    assert await env.subscribe(topic, "service://users/update") == sub_id
    await wait_until(lambda: env.seen() == list(range(8)))


async def test_failed_records_are_listed_with_their_offsets(
    kafka_admin: Callable[[], Awaitable[Env]],
) -> None:
    env = await kafka_admin()
    await env.cluster()
    topic = await env.topic()
    sub_id = await env.subscribe(topic, "service://users/update")
    await env.produce(topic, range(2))
    await env.producer.send(topic, b'{"n": ', key=b"k1")  # a poison record: offset 2
    await env.produce(topic, range(3, 5))
    await wait_until(lambda: len(env.done) == 5, within=30)

    response = await env.client.get(f"/subscriptions/{sub_id}/failures")
    assert response.status_code == 200, response.text
    [failure] = response.json()["failures"]
    assert (failure["topic"], failure["partition"], failure["offset"], failure["key"]) == (topic, 0, 2, "k1")
    assert failure["failure"]["code"] == 400 and f"{topic}/0/2" in failure["failure"]["message"]
    assert failure["invocation"]["target"] == "users/k1/update"
    assert failure["invocation"]["status"] == "completed"
    assert (await env.client.get("/subscriptions/sub_nope/failures")).status_code == 404
    bad_limit = await env.client.get(f"/subscriptions/{sub_id}/failures", params={"limit": "0"})
    assert bad_limit.status_code == 400
