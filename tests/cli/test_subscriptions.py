"""`perdure kafka-clusters` and `perdure subscriptions` against a running admin API and a real broker.

The engine, its admin API (uvicorn) and the broker run on an event loop in a background thread,
so the commands run in-process with `CliRunner`, as a user's terminal would.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import msgspec
import pytest
from aiokafka import AIOKafkaProducer
from click.testing import CliRunner, Result

import perdure
from perdure import Context, ObjectContext, Service, VirtualObject
from perdure.admin import Admin
from perdure.cli import cli
from perdure.kafka import Broker
from perdure.runtime.http import Served, serve

T = TypeVar("T")
FAST = ["--option", "session.timeout.ms=2000", "--option", "heartbeat.interval.ms=200"]
_names = itertools.count()

users = VirtualObject("users")
jobs = Service("jobs")
gate: dict[str, asyncio.Event] = {}


@users.handler()
async def update(ctx: ObjectContext, n: int) -> None:
    ctx.set("last", n)


@jobs.handler()
async def held(ctx: Context, n: int) -> None:
    await gate["open"].wait()


APP = perdure.App([users, jobs])


class Running:
    """A broker, an engine and its admin API on their own event loop in a thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.broker = Broker()
        self.done: list[str] = []
        self.engine: perdure.Engine | None = None
        self.served: Served | None = None

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> Running:
        self.thread.start()
        self.call(self._start())
        return self

    async def _start(self) -> None:
        gate["open"] = asyncio.Event()
        await self.broker.start()
        self.engine = perdure.Engine(APP)
        await self.engine.start()
        self.engine.add_completion_listener(self.done.append)
        self.served = await serve(Admin(self.engine), "127.0.0.1", 0)

    def stop(self) -> None:
        try:
            self.call(self._stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)

    async def _stop(self) -> None:
        gate["open"].set()
        if self.served is not None:
            await self.served.stop()
        if self.engine is not None:
            await self.engine.stop()
        await self.broker.stop()

    @property
    def admin(self) -> str:
        assert self.served is not None
        return self.served.url

    def run(self, *args: str) -> Result:
        return CliRunner().invoke(cli, [*args, "--admin-url", self.admin], catch_exceptions=False)

    def topic(self, partitions: int = 1) -> str:
        name = f"cli{next(_names)}"
        self.call(self.broker.create_topic(name, partitions))
        return name

    def produce(self, topic: str, numbers: range, keyed: bool = True, partitions: int = 1) -> None:
        async def send() -> None:
            producer = AIOKafkaProducer(bootstrap_servers=self.broker.bootstrap_servers)
            await producer.start()
            try:
                for n in numbers:
                    key = f"k{n % 2}".encode() if keyed else None
                    await producer.send_and_wait(
                        topic, msgspec.json.encode(n), key=key, partition=n % partitions
                    )
            finally:
                await producer.stop()

        asyncio.run(send())  # on this thread's own loop: the producer is the client, not the server


def wait_until(condition: Callable[[], object], within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s")
        time.sleep(0.02)


def lines(result: Result) -> list[str]:
    return [line.rstrip() for line in result.output.splitlines() if line.strip()]


def one_error(result: Result, *says: str) -> str:
    """The command failed with one `error: …` line that says all of `says`."""
    assert result.exit_code == 1, result.output
    [line] = lines(result)
    assert line.startswith("error: "), line
    for part in says:
        assert part in line, line
    return line


@pytest.fixture(scope="module")
def running() -> Iterator[Running]:
    r = Running().start()
    try:
        yield r
    finally:
        r.stop()


def test_kafka_clusters_add_list_remove(running: Running) -> None:
    result = running.run("kafka-clusters", "list")
    assert lines(result) == ["no Kafka clusters; add one with `perdure kafka-clusters add NAME HOST:PORT`"]
    bootstrap = running.broker.bootstrap_servers

    result = running.run("kafka-clusters", "add", "spare", "127.0.0.1:1", "--property", "client.id=x")
    assert result.exit_code == 0
    assert lines(result) == ["added Kafka cluster spare (bootstrap.servers=127.0.0.1:1, client.id=x)"]
    again = running.run("kafka-clusters", "add", "spare", "127.0.0.1:1", "--property", "client.id=x")
    assert lines(again) == [
        "Kafka cluster spare (bootstrap.servers=127.0.0.1:1, client.id=x) was already there"
    ]
    other = running.run("kafka-clusters", "add", "spare", bootstrap)
    one_error(other, "exists with other properties", "(409 from POST /kafka-clusters)", "--replace")
    changed = running.run("kafka-clusters", "add", "spare", bootstrap, "--replace")
    assert lines(changed) == [f"changed Kafka cluster spare (bootstrap.servers={bootstrap})"]
    assert running.engine is not None and running.engine.kafka_clusters()["spare"] == {
        "bootstrap.servers": bootstrap
    }

    one_error(
        running.run("kafka-clusters", "add", "x", "h:1", "--property", "no.such=1"),
        "unsupported Kafka option(s) no.such",
        "docs/admin.md",
    )
    one_error(running.run("kafka-clusters", "add", "x", "h:1", "--property", "bootstrap.servers=h:2"), "once")
    bad = running.run("kafka-clusters", "add", "x", "h:1", "--property", "oops")
    assert bad.exit_code == 2 and "expected KEY=VALUE" in bad.output

    rows = lines(running.run("kafka-clusters", "list"))
    assert rows[0].split() == ["NAME", "BOOTSTRAP", "SERVERS", "PROPERTIES", "SUBSCRIPTIONS"]
    assert [r.split() for r in rows[1:]] == [["spare", bootstrap, "0"]]
    as_json = json.loads(running.run("kafka-clusters", "list", "--json").output)
    assert as_json == {"clusters": [{"name": "spare", "properties": {"bootstrap.servers": bootstrap}}]}

    assert lines(running.run("kafka-clusters", "remove", "spare")) == ["removed Kafka cluster spare"]
    one_error(
        running.run("kafka-clusters", "remove", "spare"), "(404 from DELETE", "perdure kafka-clusters list"
    )


def test_subscriptions_create_list_describe_delete(running: Running) -> None:
    assert running.run("kafka-clusters", "add", "local", running.broker.bootstrap_servers).exit_code == 0
    topic = running.topic(partitions=2)
    source, sink = f"kafka://local/{topic}", "service://users/update"
    assert lines(running.run("subscriptions", "list")) == [
        "no subscriptions; create one with `perdure subscriptions create SOURCE SINK`"
    ]

    created = running.run(
        "subscriptions", "create", source, sink, "--option", "auto.offset.reset=earliest", *FAST
    )
    assert created.exit_code == 0, created.output
    head, options = lines(created)
    assert head.startswith("created subscription sub_") and head.endswith(f"{source} → {sink}")
    sub_id = head.split()[2]
    assert options == (
        f"  options: auto.offset.reset=earliest, client.id=perdure, group.id={sub_id}, "
        "heartbeat.interval.ms=200, session.timeout.ms=2000"
    )
    again = running.run(
        "subscriptions", "create", source, sink, "--option", "auto.offset.reset=earliest", *FAST
    )
    assert lines(again)[0] == f"subscription {sub_id} {source} → {sink} was already there"
    one_error(
        running.run("subscriptions", "create", source, sink),
        "exists with other options",
        "(409 from POST /subscriptions)",
        "perdure subscriptions delete ID",
    )
    one_error(
        running.run("subscriptions", "create", f"kafka://nope/{topic}", sink),
        "unknown Kafka cluster 'nope'",
        "(known clusters: local)",
        "perdure kafka-clusters add NAME HOST:PORT",
    )
    one_error(
        running.run("subscriptions", "create", source, "service://users/gone"),
        "no handler users/gone is registered",
        "perdure services list",
    )
    one_error(running.run("subscriptions", "create", "local/topic", sink), "kafka://CLUSTER/TOPIC")
    one_error(
        running.run("subscriptions", "create", source, sink, "--option", "fetch.min.bytes=lots"),
        "fetch.min.bytes must be an integer",
    )

    running.produce(topic, range(6), partitions=2)
    wait_until(lambda: len(running.done) >= 6)

    def table() -> list[list[str]]:
        return [r.split() for r in lines(running.run("subscriptions", "list"))]

    settled = [
        [sub_id, source, "→", sink, "running", f"{topic}/0", "3", "3", "0", "0", "—", "no"],
        [f"{topic}/1", "3", "3", "0", "0", "—", "no"],
    ]
    wait_until(lambda: table()[1:] == settled)
    assert table()[0] == [
        "ID", "SOURCE", "→", "SINK", "STATE", "PARTITION", "OFFSET", "HIGH", "WATERMARK", "LAG",
        "IN", "FLIGHT", "OLDEST", "PENDING", "PAUSED",
    ]  # fmt: skip
    listed = json.loads(running.run("subscriptions", "list", "--json").output)["subscriptions"]
    assert [(s["id"], s["status"], s["records"]) for s in listed] == [(sub_id, "running", 6)]
    assert sum(p["consumed_offset"] for p in listed[0]["partitions"]) == 6

    described = lines(running.run("subscriptions", "describe", sub_id))
    assert described[0] == sub_id
    facts = {" ".join(r.split()[:2]) if r.startswith("option") else r.split()[0]: r for r in described[1:-3]}
    assert facts["source"].split() == ["source", source]
    assert facts["state"].split() == ["state", "running"]
    assert facts["records"].split()[:2] == ["records", "6"]
    assert facts["option group.id"].split() == ["option", "group.id", sub_id]
    assert described[-3].split()[:2] == ["PARTITION", "OFFSET"]
    assert described[-1].split() == [f"{topic}/1", "3", "3", "0", "0", "—", "no"]
    assert json.loads(running.run("subscriptions", "describe", sub_id, "--json").output)["id"] == sub_id

    one_error(running.run("kafka-clusters", "remove", "local"), sub_id, "perdure subscriptions delete ID")
    deleted = running.run("subscriptions", "delete", sub_id)
    assert lines(deleted) == [
        f"deleted subscription {sub_id} (invocations already accepted from it still run)"
    ]
    one_error(running.run("subscriptions", "describe", sub_id), "(404 from GET", "perdure subscriptions list")
    one_error(
        running.run("subscriptions", "delete", sub_id), "(404 from DELETE", "perdure subscriptions list"
    )


def test_list_shows_work_in_flight(running: Running) -> None:
    if running.run("kafka-clusters", "add", "local", running.broker.bootstrap_servers).exit_code != 0:
        raise AssertionError("could not add the cluster")
    topic = running.topic()
    created = running.run(
        "subscriptions", "create", f"kafka://local/{topic}", "service://jobs/held", "--option",
        "auto.offset.reset=earliest", *FAST, "--json",
    )  # fmt: skip
    sub_id = json.loads(created.output)["id"]
    running.produce(topic, range(3), keyed=False)

    def row() -> list[str]:
        found = [r.split() for r in lines(running.run("subscriptions", "list")) if r.startswith(sub_id)]
        return found[0] if found else []

    wait_until(lambda: row()[5:10] == [f"{topic}/0", "3", "3", "0", "3"])
    assert row()[10].endswith(("ms", "s")) and row()[11] == "no"  # oldest pending: an age
    running.loop.call_soon_threadsafe(gate["open"].set)
    wait_until(lambda: row()[5:12] == [f"{topic}/0", "3", "3", "0", "0", "—", "no"])
    assert running.run("subscriptions", "delete", sub_id).exit_code == 0
