"""Object keys are kept exactly, whatever they hold: NUL, control characters, Kafka's integer keys.

Regression for keys with U+0000 that SQLite's JSON functions cut short: `%00nul` and `%00other`
landed on one state row (key ''), and after a restart `%00nul` read 0 while `//get` (the empty key)
read the other key's value.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

import perdure
from perdure import ObjectContext, ObjectSharedContext, VirtualObject
from perdure.engine.commands import KafkaRecord
from perdure.errors import InvalidInputError
from perdure.ingress import Ingress
from perdure.runtime.http import Served

counter = VirtualObject("counter")


@counter.handler()
async def add(ctx: ObjectContext, n: int) -> int:
    total = (await ctx.get("total") or 0) + n
    ctx.set("total", total)
    return int(total)


@counter.handler(kind="shared")
async def get(ctx: ObjectSharedContext) -> int:
    return int(await ctx.get("total") or 0)


APP = perdure.App([counter])


async def test_keys_with_nul_keep_their_own_state_across_a_restart(
    tmp_path: Path, http_server: Callable[[Any], Awaitable[Served]]
) -> None:
    db = f"sqlite:///{tmp_path / 'perdure.db'}"
    adds = {"%00nul": 1, "%00other": 20, "": 300, "%00": 4000, "a%00b": 50000}
    async with perdure.Engine(APP, store=db) as engine:
        served = await http_server(Ingress(engine))
        async with httpx.AsyncClient(base_url=served.url) as client:
            for key, n in adds.items():
                response = await client.post(f"/counter/{key}/add", json=n)
                assert response.status_code == 200, response.text
        await served.stop()
    async with perdure.Engine(APP, store=db) as engine:
        served = await http_server(Ingress(engine))
        async with httpx.AsyncClient(base_url=served.url) as client:
            for key, n in adds.items():
                response = await client.post(f"/counter/{key}/get")
                assert (key, response.json()) == (key, n)
        state = engine.reader().get_all_state("counter", "\x00nul")
        assert state == {b"total": b"1"}


async def test_kafka_integer_keys_are_distinct_objects(tmp_path: Path) -> None:
    """Kafka's IntegerSerializer gives 4-byte big-endian keys: all valid UTF-8, most of them NULs."""
    db = f"sqlite:///{tmp_path / 'perdure.db'}"
    keys = [n.to_bytes(4, "big") for n in (0, 1, 2, 256)]
    async with perdure.Engine(APP, store=db) as engine:
        await engine.put_kafka_cluster("local", {"bootstrap.servers": "127.0.0.1:1"})
        sub = await engine.create_subscription("kafka://local/numbers", "service://counter/add")
        records = [KafkaRecord(offset, key, b"%d" % (offset + 1)) for offset, key in enumerate(keys)]
        ids = await engine.ingest(sub.id, "numbers", 0, records)
        assert len(ids) == 4
        for invocation_id in ids:
            await engine.attach(invocation_id)
    async with perdure.Engine(APP, store=db) as engine:
        for offset, key in enumerate(keys):
            got = await engine.object_call(get, key=key.decode())
            assert (key, got) == (key, offset + 1)


async def test_text_that_cannot_be_stored_is_refused(tmp_path: Path) -> None:
    """A lone surrogate has no UTF-8 form: refused with the reason, nothing stored."""
    async with perdure.Engine(APP, store=f"sqlite:///{tmp_path / 'perdure.db'}") as engine:
        for kwargs in (
            {"key": "a\ud800"},
            {"key": "a", "idempotency_key": "\udfff"},
            {"key": "a", "headers": {"x-name": "\ud83d"}},
        ):
            with pytest.raises(InvalidInputError, match="surrogate"):
                await engine.submit("counter", "add", b"1", **kwargs)  # type: ignore[arg-type]
        assert engine.reader().list_invocations() == []
