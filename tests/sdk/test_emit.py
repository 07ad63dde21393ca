"""`ctx.emit`: the record is journaled as a send to `perdure.kafka/emit` and enters the outbox with
it; a replay (retry, suspension) does not emit it again. In-process, no broker."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

import perdure
from perdure import ObjectContext, TerminalError, VirtualObject
from perdure.engine import egress as outbox
from perdure.protocol import egress as wire
from perdure.storage.api import Status
from perdure.testing import Harness

emitter = VirtualObject("emitter")
failures: dict[str, int] = {}


@emitter.handler()
async def emit(ctx: ObjectContext, n: int) -> str:
    handle = ctx.emit("out", {"n": n}, key=ctx.key(), headers={"source": "test"})
    ctx.emit("raw", b"\xff\x00", cluster="other")
    if failures.get(ctx.key(), 0) > 0:  # fail after emitting: the attempt is retried
        failures[ctx.key()] -= 1
        raise RuntimeError("crash after emit")
    await ctx.sleep(timedelta(seconds=10))  # suspends: the next attempt replays the emits
    return await handle.invocation_id()


@emitter.handler()
async def bad_topic(ctx: ObjectContext) -> None:
    ctx.emit("no/slash", b"x")


pytestmark = pytest.mark.usefixtures("backend")  # memory, and PostgreSQL with four partitions


def pending(h: Harness) -> list[outbox.Record]:
    """The outbox of every partition, each in its order."""
    out = []
    for p in h.partitions:
        rows = h.reader().get_all_state(wire.SERVICE, outbox.stream(p.number))
        out += [outbox.decode(rows[name]) for name in sorted(rows) if outbox.is_record(name)]
    return out


async def test_an_emit_is_journaled_and_stored_once_across_retries_and_suspension() -> None:
    failures["k"] = 2
    async with Harness(perdure.App([emitter])) as h:
        invocation_id = await h.object_send(emit, key="k", arg=7)
        await h.advance(timedelta(seconds=1))  # retry 1
        await h.advance(timedelta(seconds=2))  # retry 2 (backoff doubles)
        await h.advance(timedelta(seconds=20))  # the sleep fires: the last attempt replays
        assert h.status(invocation_id).status is Status.COMPLETED
        assert failures["k"] == 0
        records = pending(h)  # no cluster configured: the records wait in the outbox
        assert [(r.topic, r.cluster, r.key, r.value) for r in records] == [
            ("out", None, b"k", b'{"n":7}'),
            ("raw", "other", None, b"\xff\x00"),
        ]
        assert records[0].headers[0] == ("source", b"test")
        assert records[0].headers[-1] == (wire.RECORD_ID_HEADER, records[0].id.encode())
        out = h.status(invocation_id).outcome
        assert out is not None and out.value == f'"{records[0].id}"'.encode()  # the handle's id
        sends = [e for e in h.journal(invocation_id) if e.type == "OneWayCallCommand"]
        assert [(e.message.service_name, e.message.key) for e in sends] == [
            ("perdure.kafka", "out"),
            ("perdure.kafka", "other/raw"),
        ]
        assert h.egress is not None
        for _ in range(200):  # the producer runs in the background, on real time
            if h.egress.error is not None:
                break
            await asyncio.sleep(0.01)
        assert h.egress.error is not None and "none is configured" in h.egress.error


async def test_records_keep_emission_order_across_invocations() -> None:
    async with Harness(perdure.App([emitter])) as h:
        for i in range(5):  # one key: one partition, its invocations one after the other
            await h.object_send(emit, key="same", arg=i)
        for _ in range(5):
            await h.advance(timedelta(seconds=11))  # each sleeps 10 s, then the next runs
        assert [r.value for r in pending(h) if r.topic == "out"] == [b'{"n":%d}' % i for i in range(5)]
        assert len({r.id for r in pending(h)}) == 10


async def test_a_bad_topic_fails_the_invocation_terminally() -> None:
    async with Harness(perdure.App([emitter])) as h:
        with pytest.raises(TerminalError, match="not a Kafka topic name"):
            await h.object_call(bad_topic, key="k")
        assert pending(h) == []
