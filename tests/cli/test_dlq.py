"""`perdure dlq list|show|redrive|discard` against a running admin API, engine and real broker."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import msgspec
import pytest

import perdure
from perdure import ObjectContext, TerminalError, VirtualObject
from perdure.admin import Admin
from perdure.runtime.http import serve

from .test_subscriptions import FAST, Running, gate, lines, wait_until

ledger = VirtualObject("ledger")
broken: set[int] = set()


@ledger.handler()
async def post(ctx: ObjectContext, n: int) -> None:
    if n in broken:
        raise TerminalError(f"entry {n} does not balance")
    seen = await ctx.get("seen") or []
    ctx.set("seen", [*seen, n])


class DlqRunning(Running):
    async def _start(self) -> None:
        gate["open"] = asyncio.Event()
        await self.broker.start()
        self.engine = perdure.Engine(perdure.App([ledger]))
        await self.engine.start()
        self.served = await serve(Admin(self.engine), "127.0.0.1", 0)

    def seen(self, key: str) -> list[int]:
        assert self.engine is not None
        raw = self.engine.reader().get_all_state("ledger", key).get(b"seen")
        return msgspec.json.decode(raw) if raw else []


@pytest.fixture(scope="module")
def running() -> Iterator[DlqRunning]:
    r = DlqRunning()
    r.start()
    try:
        yield r
    finally:
        r.stop()


def as_json(running: Running, *args: str) -> Any:
    result = running.run(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_dlq_list_show_redrive_discard(running: DlqRunning) -> None:
    topic = running.topic()
    assert running.run("kafka-clusters", "add", "local", running.broker.bootstrap_servers).exit_code == 0
    result = running.run(
        "subscriptions", "create", f"kafka://local/{topic}", "service://ledger/post",
        "--option", "auto.offset.reset=earliest", "--option", "on.failure=park", *FAST,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    sub = as_json(running, "subscriptions", "list")["subscriptions"][0]["id"]
    broken.update({2, 4, 5})
    running.produce(topic, range(8))  # keys k0 (even numbers) and k1 (odd)
    wait_until(lambda: running.seen("k0") == [0, 6] and running.seen("k1") == [1, 3, 7])
    wait_until(lambda: len(as_json(running, "dlq", "list")["dead_letters"]) == 3)

    table = lines(running.run("dlq", "list"))
    assert table[0].split()[:3] == ["ID", "SUBSCRIPTION", "RECORD"]
    assert [line.split()[2] for line in table[1:]] == [f"{topic}/0/2", f"{topic}/0/4", f"{topic}/0/5"]
    assert all("does not balance" in line for line in table[1:])
    parked = as_json(running, "dlq", "list", "--subscription", sub)["dead_letters"]
    shown = lines(running.run("dlq", "show", parked[0]["id"]))
    assert any("entry 2 does not balance" in line for line in shown)
    assert any(line.split()[:2] == ["key", "k0"] for line in shown)

    broken.clear()  # fixed
    result = running.run("dlq", "redrive", "--key", "k0")
    assert result.exit_code == 0, result.output
    assert [line.split()[:2] for line in lines(result)] == [
        ["re-driven", parked[0]["id"]],
        ["re-driven", parked[1]["id"]],
    ]
    wait_until(lambda: running.seen("k0") == [0, 6, 2, 4])  # the key's original order
    left = as_json(running, "dlq", "list")["dead_letters"]
    assert [d["id"] for d in left] == [parked[2]["id"]]
    done = as_json(running, "dlq", "list", "--state", "redriven")["dead_letters"]
    wait_until(
        lambda: all(
            r["status"] == "completed"
            for d in as_json(running, "dlq", "list", "--state", "redriven")["dead_letters"]
            for r in d["redrives"]
        )
    )
    assert [d["id"] for d in done] == [parked[0]["id"], parked[1]["id"]]

    again = running.run("dlq", "redrive", parked[0]["id"])
    assert again.exit_code == 1 and "redriven" in again.output
    assert running.run("dlq", "discard", parked[2]["id"]).exit_code == 0
    assert lines(running.run("dlq", "list")) == ["no parked records"]
    assert running.seen("k1") == [1, 3, 7]
    metrics = httpx.get(f"{running.admin}/metrics").text
    assert f'perdure_dead_letters{{subscription="{sub}"}} 0' in metrics
    rows = httpx.post(
        f"{running.admin}/query",
        json={"query": 'SELECT "offset", state FROM sys_dead_letter ORDER BY "offset"'},
        headers={"accept": "application/json"},
    ).json()
    assert [(r["offset"], r["state"]) for r in rows["rows"]] == [
        (2, "redriven"),
        (4, "redriven"),
        (5, "discarded"),
    ]
