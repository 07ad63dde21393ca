"""Dead letters in the deterministic core: a parked record releases its key, a re-drive queues in
order behind the key, a second re-drive or a discard of a re-driven record is refused."""

from __future__ import annotations

from typing import Any

from perdure.engine import catalog
from perdure.engine.actions import Accepted, Rejected, StartAttempt
from perdure.engine.commands import Discard, Ingest, KafkaRecord, Redrive
from perdure.engine.registry import HandlerInfo, Registry
from perdure.engine.state_machine import StateMachine
from perdure.engine.step import decode_entry
from perdure.storage.api import Failure, Status
from perdure.storage.memory import Store


class World:
    def __init__(self) -> None:
        registry = Registry()
        registry.add("obj", HandlerInfo("h", keyed=True, exclusive=True))
        self.store = Store()
        self.machine = StateMachine(registry, lambda: 1_000)
        self.sub = catalog.subscription_id("kafka://c/t", "service://obj/h")

    async def apply(self, command: Any) -> list[Any]:
        txn = self.store.begin()
        actions = self.machine.apply(txn, command)
        await self.store.commit(txn)
        return actions

    async def ingest(self, *records: tuple[int, bytes | None, bytes], **options: Any) -> list[str]:
        batch = [KafkaRecord(offset=o, key=k, value=v, headers=(("h", b"\xff"),)) for o, k, v in records]
        rejected = {o: Failure(400, "bad") for o, _, v in records if v == b"bad"}
        actions = await self.apply(Ingest(self.sub, "service://obj/h", "t", 0, batch, rejected, **options))
        return [a.invocation_id for a in actions if type(a) is Accepted and not a.previously]

    def get(self, invocation_id: str) -> Any:
        return self.store.reader().get_invocation(invocation_id)


async def test_a_parked_poison_record_keeps_its_record_and_frees_nothing_it_never_held() -> None:
    w = World()
    [poison, good] = await w.ingest((0, b"k", b"bad"), (1, b"k", b"1"), on_failure="park")
    parked = w.get(poison)
    assert parked.status is Status.PARKED and parked.retention_until is None
    letter = parked.dead_letter
    assert (letter.topic, letter.partition, letter.offset, letter.key, letter.value) == (
        "t",
        0,
        0,
        b"k",
        b"bad",
    )
    assert letter.headers == [("h", b"\xff")] and letter.attempts == 0 and letter.error == Failure(400, "bad")
    assert w.get(good).status is Status.RUNNING  # the key went on


async def test_redrive_queues_behind_the_key_once_and_discard_ends_a_parked_record() -> None:
    w = World()
    [a, b] = await w.ingest((0, b"k", b"bad"), (1, b"k", b"bad"), on_failure="park")
    [running] = await w.ingest((2, b"k", b"1"), on_failure="park")
    first = await w.apply(Redrive(a))
    assert not any(type(x) is StartAttempt for x in first)  # queued behind offset 2, which holds the key
    [new_a] = [x.invocation_id for x in first if type(x) is Accepted]
    assert w.get(new_a).status is Status.PENDING and w.get(a).dead_letter.state == "redriven"
    [refused] = [x for x in await w.apply(Redrive(a)) if type(x) is Rejected]
    assert "redriven" in refused.reason
    await w.apply(Discard(b))
    assert w.get(b).status is Status.COMPLETED and w.get(b).dead_letter.state == "discarded"
    assert w.get(running).status is Status.RUNNING
    entry = decode_entry(w.store.reader().read_journal(new_a)[0])  # the record's input, and where from
    assert entry.value.content == b"bad"
    assert dict((h.key, h.value) for h in entry.headers)["perdure.redrive.of"] == a


async def test_block_parks_nothing() -> None:
    w = World()
    [poison] = await w.ingest((0, None, b"1"))  # no key for a keyed sink
    assert w.get(poison).status is Status.COMPLETED and w.get(poison).dead_letter is None


async def test_key_missing_empty_takes_the_empty_key() -> None:
    w = World()
    [inv] = await w.ingest((0, None, b"1"), key_missing="empty")
    assert w.get(inv).key == "" and w.get(inv).status is Status.RUNNING
