"""Kafka clusters, subscriptions and consumed offsets: the engine's catalog.

Kept as state of the reserved system object `__perdure` (in the store's state table) and written
through the engine like everything else, so an offset is stored in the same transaction as the
invocations made from the records before it. A subscription's id is derived from its source and
sink: declaring the same subscription twice (in code at every start, or twice over the admin API)
is one subscription.
"""

from __future__ import annotations

import hashlib
from typing import NamedTuple, Protocol

import msgspec

from perdure.engine.actions import Rejected, SubscriptionsChanged
from perdure.engine.commands import (
    DeleteKafkaCluster,
    DeleteSubscription,
    PutKafkaCluster,
    PutSubscription,
    ResetOffset,
)
from perdure.engine.step import Step
from perdure.protocol.ids import base62
from perdure.storage.api import KafkaCluster, Subscription

#: The system object whose state holds the catalog; user services may not use this name.
SYSTEM = "__perdure"
_SUBSCRIPTIONS, _CLUSTERS = "subscriptions", "kafka-clusters"
_OFFSETS = "offsets/"  # + subscription id; names are b"{partition}/{topic}"
_subscription = msgspec.msgpack.Decoder(Subscription)
_cluster = msgspec.msgpack.Decoder(KafkaCluster)
_encode = msgspec.msgpack.Encoder().encode


class StateSource(Protocol):
    def get_all_state(self, service: str, key: str) -> dict[bytes, bytes]: ...


def promises_key(workflow: str, key: str) -> str:
    """Where a workflow key's promises live (see `engine.promises`)."""
    return f"promises/{workflow}/{key}"


def subscription_id(source: str, sink: str) -> str:
    digest = hashlib.blake2b(f"{source}\0{sink}".encode(), digest_size=16).digest()
    return "sub_" + base62(int.from_bytes(digest, "big"), 22)


def subscriptions(source: StateSource) -> list[Subscription]:
    found = source.get_all_state(SYSTEM, _SUBSCRIPTIONS).values()
    return sorted((_subscription.decode(v) for v in found), key=lambda s: s.id)


def clusters(source: StateSource) -> list[KafkaCluster]:
    found = source.get_all_state(SYSTEM, _CLUSTERS).values()
    return sorted((_cluster.decode(v) for v in found), key=lambda c: c.name)


class Position(NamedTuple):
    """Where a subscription is in one partition: the next offset, and the partition's epoch.

    The epoch grows when the partition was reset (its log was recreated, e.g. a dev broker that
    restarted empty): invocation ids of records include it, so new records at old offsets are new.
    """

    next_offset: int
    epoch: int = 0


def _position(raw: bytes) -> Position:
    offset, _, epoch = raw.decode().partition(",")
    return Position(int(offset), int(epoch or 0))


def offsets(source: StateSource, subscription_id: str) -> dict[tuple[str, int], int]:
    """Next offset to consume per (topic, partition) of a subscription."""
    out = {}
    for name, raw in source.get_all_state(SYSTEM, _OFFSETS + subscription_id).items():
        partition, _, topic = name.decode().partition("/")
        out[(topic, int(partition))] = _position(raw).next_offset
    return out


def get_subscription(step: Step, subscription_id: str) -> Subscription | None:
    raw = step.txn.get_state(SYSTEM, _SUBSCRIPTIONS, subscription_id.encode())
    return None if raw is None else _subscription.decode(raw)


def get_position(step: Step, subscription_id: str, topic: str, partition: int) -> Position | None:
    raw = step.txn.get_state(SYSTEM, _OFFSETS + subscription_id, f"{partition}/{topic}".encode())
    return None if raw is None else _position(raw)


def set_position(step: Step, subscription_id: str, topic: str, partition: int, position: Position) -> None:
    value = f"{position.next_offset},{position.epoch}" if position.epoch else str(position.next_offset)
    step.txn.set_state(SYSTEM, _OFFSETS + subscription_id, f"{partition}/{topic}".encode(), value.encode())


def reset_position(step: Step, cmd: ResetOffset) -> None:
    """The partition's log restarted below the stored offset: continue from `next_offset`, new epoch."""
    current = get_position(step, cmd.subscription_id, cmd.topic, cmd.partition)
    epoch = current.epoch + 1 if current is not None else 0
    set_position(step, cmd.subscription_id, cmd.topic, cmd.partition, Position(cmd.next_offset, epoch))


def put_subscription(step: Step, cmd: PutSubscription) -> None:
    sub = cmd.subscription
    existing = get_subscription(step, sub.id)
    if existing is not None and existing.options != sub.options and not cmd.replace:
        message = "a subscription with this source and sink exists with other options: delete it first"
        step.actions.append(Rejected(sub.id, message))
        return
    cluster = sub.source.removeprefix("kafka://").partition("/")[0]
    if step.txn.get_state(SYSTEM, _CLUSTERS, cluster.encode()) is None:
        known = ", ".join(c.name for c in clusters(step.txn)) or "none"
        step.actions.append(Rejected(sub.id, f"unknown Kafka cluster {cluster!r} (known: {known})", code=400))
        return
    step.txn.set_state(SYSTEM, _SUBSCRIPTIONS, sub.id.encode(), _encode(sub))
    step.actions.append(SubscriptionsChanged())


def delete_subscription(step: Step, cmd: DeleteSubscription) -> None:
    if get_subscription(step, cmd.subscription_id) is None:
        step.actions.append(Rejected(cmd.subscription_id, "no such subscription", code=404))
        return
    step.txn.clear_state(SYSTEM, _SUBSCRIPTIONS, cmd.subscription_id.encode())
    step.actions.append(SubscriptionsChanged())


def put_cluster(step: Step, cmd: PutKafkaCluster) -> None:
    cluster = KafkaCluster(cmd.name, dict(cmd.properties))
    step.txn.set_state(SYSTEM, _CLUSTERS, cmd.name.encode(), _encode(cluster))
    step.actions.append(SubscriptionsChanged())


def delete_cluster(step: Step, cmd: DeleteKafkaCluster) -> None:
    if step.txn.get_state(SYSTEM, _CLUSTERS, cmd.name.encode()) is None:
        step.actions.append(Rejected(cmd.name, "no such Kafka cluster", code=404))
        return
    users = [s.id for s in subscriptions(step.txn) if s.source.startswith(f"kafka://{cmd.name}/")]
    if users:
        step.actions.append(Rejected(cmd.name, f"subscriptions still use this cluster: {', '.join(users)}"))
        return
    step.txn.clear_state(SYSTEM, _CLUSTERS, cmd.name.encode())
    step.actions.append(SubscriptionsChanged())
