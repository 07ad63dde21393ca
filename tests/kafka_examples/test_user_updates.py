"""The seed example (examples/user_updates.py) fed from a real Kafka broker through a real engine."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer

import perdure
from perdure.admin import Admin
from perdure.ingress import Ingress
from perdure.kafka import Broker
from perdure.runtime.http import Served
from perdure.storage.api import Status

from .helpers import completions, load_example, subscribe, wait_until

Topic = Callable[..., Awaitable[str]]
SINK = "service://userUpdates/updateUserEvent"
PERMISSIONS = (["read"], ["read", "write"], ["admin"])


def update(name: str, n: int, **profile: str) -> bytes:
    """The n-th update of a user, as a record value: permissions and resources say which one it was."""
    event = {
        "profile": {"name": name, **profile},
        "permissions": PERMISSIONS[n % 3],
        "resources": [f"disk-{n}"],
    }
    return json.dumps(event).encode()


def role(engine: perdure.Engine, key: str) -> Any:
    raw = engine.reader().get_all_state("userUpdates", key).get(b"role")
    return None if raw is None else json.loads(raw)


def invocations(engine: perdure.Engine, key: str) -> list[Any]:
    """The key's invocations, oldest first."""
    every = engine.reader().list_invocations(service="userUpdates", limit=10_000)
    return [inv for inv in every if inv.key == key]


async def test_every_update_is_handled_once_in_order_per_user(
    broker: Broker, topic: Topic, producer: AIOKafkaProducer
) -> None:
    ex = load_example("user_updates")
    name = await topic("user-updates", partitions=4)
    users, per_user = [f"u{i}" for i in range(10)], 20
    async with perdure.Engine(ex.app) as engine:
        done = completions(engine)
        await subscribe(engine, broker, name, SINK)
        for n in range(per_user):
            for user in users:
                await producer.send(name, update(user, n), key=user.encode())
        await producer.flush()
        await wait_until(lambda: len(done) == len(users) * per_user, what="every update handled")
        for user in users:
            # Each update provisioned its resource exactly once, in the order produced.
            assert ex.systems.provisioned[f"user-{user}"] == [f"disk-{n}" for n in range(per_user)]
            assert role(engine, user) == ex.Systems().set_permissions("x", PERMISSIONS[(per_user - 1) % 3])
            assert all(inv.status is Status.COMPLETED for inv in invocations(engine, user))
        assert sum(ex.systems.asked.values()) == len(users) * per_user  # no profile update repeated
        assert engine.kafka is not None
        [stats] = engine.kafka.stats()
        assert stats.records == len(users) * per_user


async def test_a_sleeping_user_holds_up_only_its_own_updates(
    broker: Broker, topic: Topic, producer: AIOKafkaProducer
) -> None:
    """Queue per key: one partition, one new account whose first update sleeps 5 s (real time)."""
    ex = load_example("user_updates")
    name = await topic("user-updates")  # one partition: every key shares it
    async with perdure.Engine(ex.app) as engine:
        done = completions(engine)
        await subscribe(engine, broker, name, SINK)
        await producer.send(name, update("slow", 0, account="new"), key=b"slow")  # not ready: sleeps
        for n in range(3):
            for user in ("a", "b", "c"):
                await producer.send(name, update(user, n), key=user.encode())
            if n < 2:
                await producer.send(name, update("slow", n + 1), key=b"slow")  # queued behind the sleep
        await producer.flush()
        started = time.monotonic()
        others = {"a", "b", "c"}

        def others_done() -> bool:
            finished = [engine.reader().get_invocation(i) for i in done]
            return sum(1 for inv in finished if inv is not None and inv.key in others) == 9

        await wait_until(others_done, within=4.5, what="the other users, while 'slow' sleeps")
        statuses = sorted(inv.status.value for inv in invocations(engine, "slow"))
        # The first update in its durable 5 s sleep (nothing in memory), the other two waiting their turn.
        assert statuses == sorted([Status.SUSPENDED.value, Status.PENDING.value, Status.PENDING.value])
        assert [ex.systems.provisioned[f"user-{u}"] for u in sorted(others)] == [
            ["disk-0", "disk-1", "disk-2"]
        ] * 3

        await wait_until(lambda: len(done) == 12, within=10, what="'slow' after its sleep")
        assert time.monotonic() - started >= 4.5  # the first update really slept
        assert ex.systems.provisioned["user-slow"] == ["disk-0", "disk-1", "disk-2"]  # in offset order
        assert ex.systems.asked["slow"] == 4  # twice for the first update (not ready, then ready)
        assert role(engine, "slow") == "role-admin"


async def test_a_poison_record_and_odd_keys_fail_or_pass_alone(
    broker: Broker,
    topic: Topic,
    producer: AIOKafkaProducer,
    http_server: Callable[[Any], Awaitable[Served]],
) -> None:
    ex = load_example("user_updates")
    name = await topic("user-updates")
    async with perdure.Engine(ex.app) as engine:
        admin = await http_server(Admin(engine))
        done = completions(engine)
        await subscribe(engine, broker, name, SINK)
        await producer.send_and_wait(name, b'{"profile": {"name": ', key=b"p1")  # offset 0: not JSON
        await producer.send_and_wait(name, update("binary", 0), key=b"\xff\xfe")  # offset 1: not UTF-8
        await producer.send_and_wait(name, update("no-key", 0))  # offset 2: no key, object sink
        await producer.send_and_wait(name, update("p1", 1), key=b"p1")  # offset 3: p1 goes on
        await wait_until(lambda: len(done) == 4, what="four invocations")

        async with httpx.AsyncClient(base_url=admin.url, timeout=10) as http:
            listed = (await http.get("/invocations", params={"key": "p1"})).json()["invocations"]
            assert [i["status"] for i in listed] == ["completed", "completed"]
            outcomes = [(await http.get(f"/invocations/{i['id']}")).json()["outcome"] for i in listed]
            [failure] = [o["failure"] for o in outcomes if "failure" in o]
            assert failure["code"] == 400
            assert failure["message"].startswith(f"record {name}/0/0 rejected by userUpdates/updateUserEvent")
            assert "JSON" in failure["message"]
        assert role(engine, "p1") == "role-read-write"  # the poison record held nothing back

        b64 = base64.urlsafe_b64encode(b"\xff\xfe").decode()
        assert b64 == "__4=" and role(engine, b64) == "role-read"  # a non-UTF-8 key, URL-safe base64
        keyless = [engine.reader().get_invocation(i) for i in done]
        [missing] = [i for i in keyless if i is not None and i.key is None]
        assert missing.outcome is not None and missing.outcome.failure is not None
        assert missing.outcome.failure.code == 400
        assert f"record {name}/0/2 has no key" in missing.outcome.failure.message


async def test_the_same_handler_over_kafka_and_over_http(
    broker: Broker,
    topic: Topic,
    producer: AIOKafkaProducer,
    http_server: Callable[[Any], Awaitable[Served]],
) -> None:
    """The seed's "combine Kafka and RPC": one handler, one queue and one state per user."""
    ex = load_example("user_updates")
    name = await topic("user-updates")
    async with perdure.Engine(ex.app) as engine:
        ingress = await http_server(Ingress(engine))
        done = completions(engine)
        await subscribe(engine, broker, name, SINK)
        await producer.send_and_wait(name, update("alice", 0), key=b"alice")
        await wait_until(lambda: len(done) == 1, what="the Kafka record")
        assert role(engine, "alice") == "role-read"
        async with httpx.AsyncClient(timeout=10) as http:
            answer = await http.post(
                f"{ingress.url}/userUpdates/alice/updateUserEvent",
                content=update("alice", 1),
                headers={"content-type": "application/json"},
            )
        assert (answer.status_code, answer.json()) == (200, "role-read-write")
        assert role(engine, "alice") == "role-read-write"
        assert ex.systems.provisioned["user-alice"] == ["disk-0", "disk-1"]
        assert len(invocations(engine, "alice")) == 2
