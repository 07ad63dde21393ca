"""The engine's Kafka side: clusters, subscriptions, and turning records into invocations.

Part of `Engine` (a mixin, to keep node.py about composition). Everything here goes through the
partition processor, so a subscription, a cluster and a consumed offset are as durable as an
invocation — and an offset is stored in the same transaction as the invocations created from
the records before it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from perdure.engine import catalog
from perdure.engine.actions import Accepted, Action, Rejected
from perdure.engine.commands import (
    Command,
    DeleteKafkaCluster,
    DeleteSubscription,
    Ingest,
    KafkaRecord,
    PutKafkaCluster,
    PutSubscription,
    ResetOffset,
)
from perdure.engine.intake import sink_target
from perdure.errors import ConflictError, InvalidInputError, SerdeError, UnknownTargetError
from perdure.storage.api import Failure, Subscription

if TYPE_CHECKING:
    from perdure.runtime.processor import Processor
    from perdure.sdk.service import App, Handler
    from perdure.storage.api import Reader


class Subscriptions:
    """Kafka clusters and subscriptions of an `Engine`, and `ingest` for the Kafka intake."""

    # Provided by Engine.
    app: App
    handler: Callable[[str, str], Handler | None]
    _completion_listeners: list[Callable[[str], None]]

    @property
    def processor(self) -> Processor:
        raise NotImplementedError

    def reader(self) -> Reader:
        raise NotImplementedError

    async def _submit_checked(self, command: Command, name: str) -> list[Action]:
        """Apply `command`; a refusal raises (404 → UnknownTargetError, 400 → InvalidInputError,
        else ConflictError) with `name` and the engine's reason. Shared by every part of Engine."""
        actions = await self.processor.submit_and_wait(command)
        for action in actions:
            if type(action) is Rejected:
                error = {404: UnknownTargetError, 400: InvalidInputError}.get(action.code, ConflictError)
                raise error(f"{name}: {action.reason}")
        return actions

    def kafka_clusters(self) -> dict[str, dict[str, str]]:
        """Kafka clusters by name, with their client properties."""
        return {c.name: dict(c.properties) for c in catalog.clusters(self.reader())}

    async def put_kafka_cluster(self, name: str, properties: Mapping[str, str]) -> None:
        """Add or change a Kafka cluster (`{"bootstrap.servers": "127.0.0.1:9092"}`)."""
        if not name or "/" in name:
            raise InvalidInputError(f"invalid Kafka cluster name {name!r}")
        if not properties.get("bootstrap.servers"):
            raise InvalidInputError(f"Kafka cluster {name!r} needs the bootstrap.servers property")
        await self._submit_checked(PutKafkaCluster(name, {k: str(v) for k, v in properties.items()}), name)

    async def delete_kafka_cluster(self, name: str) -> None:
        await self._submit_checked(DeleteKafkaCluster(name), name)

    def subscriptions(self) -> list[Subscription]:
        return catalog.subscriptions(self.reader())

    def subscription(self, subscription_id: str) -> Subscription | None:
        return next((s for s in self.subscriptions() if s.id == subscription_id), None)

    async def create_subscription(
        self,
        source: str,
        sink: str,
        options: Mapping[str, str] | None = None,
        *,
        replace: bool = False,
    ) -> Subscription:
        """Subscribe `kafka://CLUSTER/TOPIC` to `service://SERVICE/HANDLER`; idempotent per (source, sink).

        Raises `InvalidInputError` (bad source, sink or options; unknown cluster),
        `UnknownTargetError` (no such handler) or `ConflictError` (exists with other options).
        """
        from perdure.kafka.options import consumer_config, parse_sink, parse_source

        cluster, _ = parse_source(source)
        service, handler = parse_sink(sink)
        if self.handler(service, handler) is None:
            raise UnknownTargetError(
                f"subscription sink {sink}: no handler {service}/{handler} is registered"
            )
        opts = {k: str(v) for k, v in (options or {}).items()}
        sub = Subscription(catalog.subscription_id(source, sink), source, sink, opts)
        properties = self.kafka_clusters().get(cluster)
        if properties is not None:
            consumer_config(sub.id, properties, opts)  # raises OptionError for bad options
        await self._submit_checked(PutSubscription(sub, replace), sub.id)
        return sub

    async def delete_subscription(self, subscription_id: str) -> None:
        """Stop consuming; invocations already accepted go on."""
        await self._submit_checked(DeleteSubscription(subscription_id), subscription_id)

    def stored_offsets(self, subscription_id: str) -> dict[tuple[str, int], int]:
        """The next offset to consume per (topic, partition), as committed."""
        return catalog.offsets(self.reader(), subscription_id)

    async def reset_offset(self, subscription_id: str, topic: str, partition: int, next_offset: int) -> None:
        """The partition's log restarted below the stored offset (a recreated topic, a dev broker
        that restarted empty): continue at `next_offset`; records at reused offsets count as new."""
        await self._submit_checked(
            ResetOffset(subscription_id, topic, partition, next_offset), subscription_id
        )

    def add_completion_listener(self, fn: Callable[[str], None]) -> None:
        """Call `fn(invocation_id)` whenever an invocation completes."""
        self._completion_listeners.append(fn)

    async def ingest(
        self, subscription_id: str, topic: str, partition: int, records: Sequence[KafkaRecord]
    ) -> list[str]:
        """Turn records into invocations, exactly once; returns the ids created once durable.

        Records below the stored next offset are skipped. A value the sink's serde rejects becomes
        an invocation that is already failed (400, naming topic/partition/offset), so a bad record
        never blocks its partition.
        """
        sub = self.subscription(subscription_id)
        rejected: dict[int, Failure] = {}
        h = self.handler(*sink_target(sub)) if sub is not None else None
        if h is not None:
            for record in records:
                try:
                    h.input_serde.decode(record.value or b"")
                except SerdeError as e:
                    where = f"{topic}/{partition}/{record.offset}"
                    rejected[record.offset] = Failure(
                        400, f"record {where} rejected by {h.qualified_name}: {e}"
                    )
        command = Ingest(subscription_id, topic, partition, records, rejected)
        created = []
        for action in await self.processor.submit_and_wait(command):
            if type(action) is Accepted and not action.previously:
                created.append(action.invocation_id)
            elif type(action) is Rejected:
                raise UnknownTargetError(f"{subscription_id}: {action.reason}")
        return created
