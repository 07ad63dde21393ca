"""An in-memory engine with exactly the interface the Kafka intake uses (`IngestEngine`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from perdure.engine.commands import KafkaRecord
from perdure.storage.api import Subscription


class FakeEngine:
    """Ingests like the engine: skips offsets below the stored next offset, returns created ids.

    Invocations complete only when a test calls `complete` (or at once with `auto_complete`).
    """

    def __init__(self, *, auto_complete: bool = False, sinks: set[tuple[str, str]] | None = None) -> None:
        self.subs: dict[str, Subscription] = {}
        self.clusters: dict[str, dict[str, str]] = {}
        self.offsets: dict[str, dict[tuple[str, int], int]] = {}
        self.created: dict[str, KafkaRecord] = {}
        self.pending: list[str] = []
        self.auto_complete = auto_complete
        self.sinks = sinks
        self.ingest_calls = 0
        self.skipped = 0  # records handed over again below the stored offset
        self.fail_next: Exception | None = None
        self._listeners: list[Callable[[str], None]] = []

    async def ingest(
        self, subscription_id: str, topic: str, partition: int, records: Sequence[KafkaRecord]
    ) -> list[str]:
        self.ingest_calls += 1
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            raise error
        stored = self.offsets.setdefault(subscription_id, {})
        ids = []
        for record in records:
            next_offset = stored.get((topic, partition))
            if next_offset is not None and record.offset < next_offset:
                self.skipped += 1
                continue
            invocation_id = f"{subscription_id}/{topic}/{partition}/{record.offset}"
            self.created[invocation_id] = record
            ids.append(invocation_id)
            stored[(topic, partition)] = record.offset + 1
        await asyncio.sleep(0.001)  # durable later
        if self.auto_complete:
            for invocation_id in ids:
                self.complete(invocation_id)
        else:
            self.pending += ids
        return ids

    def complete(self, invocation_id: str) -> None:
        for fn in self._listeners:
            fn(invocation_id)

    def complete_all(self) -> None:
        pending, self.pending = self.pending, []
        for invocation_id in pending:
            self.complete(invocation_id)

    def stored_offsets(self, subscription_id: str) -> dict[tuple[str, int], int]:
        return dict(self.offsets.get(subscription_id, {}))

    def subscriptions(self) -> list[Subscription]:
        return list(self.subs.values())

    def kafka_clusters(self) -> dict[str, dict[str, str]]:
        return {k: dict(v) for k, v in self.clusters.items()}

    def add_completion_listener(self, fn: Callable[[str], None]) -> None:
        self._listeners.append(fn)

    def sink_exists(self, service: str, handler: str) -> bool:
        return self.sinks is None or (service, handler) in self.sinks
