"""The router's side of invocations that run on other nodes: answering callers from announcements."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import perdure
from perdure.runtime.catalog import Catalog
from perdure.runtime.clock import ManualClock
from perdure.runtime.router import Router
from perdure.storage import memory
from perdure.storage.api import Invocation, Outcome, Status


class QueriesCounted:
    """A reader that counts the queries of many invocations made through it."""

    def __init__(self, reader: Any) -> None:
        self.reader = reader
        self.batches: list[list[str]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.reader, name)

    def get_invocations(self, invocation_ids: Sequence[str]) -> dict[str, Invocation]:
        self.batches.append(sorted(invocation_ids))
        return self.reader.get_invocations(invocation_ids)  # type: ignore[no-any-return]


async def test_an_announcement_of_many_completions_answers_their_waiters_from_one_query() -> None:
    store = memory.Store()
    clock = ManualClock()
    reader = QueriesCounted(store.reader())
    announced: list[str] = []
    router = Router(
        Catalog(perdure.App(), store, clock),
        clock,
        lambda invocation_id: None,  # every partition runs on another node
        lambda: reader,
        completion_listeners=[announced.append],
    )
    ids = ["done", "parked", "running", "unawaited"]
    txn = store.begin()
    for invocation_id in ids:
        txn.put_invocation(Invocation(id=invocation_id, service="svc", handler="h", status=Status.RUNNING))
    await store.commit(txn)
    waiters = {i: router.outcome_waiter(i) for i in ids[:3]}

    txn = store.begin()  # the owner completes two of them, then announces all four
    for invocation_id, status in (("done", Status.COMPLETED), ("parked", Status.PARKED)):
        outcome = Outcome(value=invocation_id.encode())
        txn.put_invocation(
            Invocation(
                id=invocation_id, service="svc", handler="h", status=status, outcome=outcome, completed_at=1
            )
        )
    await store.commit(txn)
    router.completed_elsewhere(ids)

    assert reader.batches == [["done", "parked", "running"]]  # the awaited ones, in one query
    assert waiters["done"].result() == Outcome(value=b"done")
    assert waiters["parked"].result() == Outcome(value=b"parked")
    assert not waiters["running"].done() and router.waiting == {"running"}
    assert announced == ["done", "parked", "unawaited"]  # the listeners hear of what completed
