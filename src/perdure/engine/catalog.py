"""Kafka clusters and subscriptions: the rules of the catalog, as pure functions of a snapshot.

The catalog has tables of its own (`perdure.storage.api.CatalogStore`); the runtime reads a
snapshot, asks these functions for the change (or the reason to refuse it), and writes it by
compare-and-set. A subscription's id is derived from its source and sink: declaring the same
subscription twice (in code at every start, or twice over the admin API) is one subscription.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from perdure.protocol.ids import base62
from perdure.storage.api import CatalogChange, CatalogSnapshot, KafkaCluster, Subscription


@dataclass(frozen=True)
class Refusal:
    """A catalog change that may not be made: `code` 404 (no such thing), 400 (bad input) or 409."""

    name: str
    reason: str
    code: int = 409


def subscription_id(source: str, sink: str) -> str:
    digest = hashlib.blake2b(f"{source}\0{sink}".encode(), digest_size=16).digest()
    return "sub_" + base62(int.from_bytes(digest, "big"), 22)


def subscriptions(catalog: CatalogSnapshot) -> list[Subscription]:
    return sorted(catalog.subscriptions.values(), key=lambda s: s.id)


def clusters(catalog: CatalogSnapshot) -> list[KafkaCluster]:
    return sorted(catalog.clusters.values(), key=lambda c: c.name)


def put_subscription(catalog: CatalogSnapshot, sub: Subscription, replace: bool) -> CatalogChange | Refusal:
    existing = catalog.subscriptions.get(sub.id)
    if existing is not None and existing.options != sub.options and not replace:
        message = "a subscription with this source and sink exists with other options: delete it first"
        return Refusal(sub.id, message)
    cluster = sub.source.removeprefix("kafka://").partition("/")[0]
    if cluster not in catalog.clusters:
        known = ", ".join(c.name for c in clusters(catalog)) or "none"
        return Refusal(sub.id, f"unknown Kafka cluster {cluster!r} (known: {known})", code=400)
    return CatalogChange(subscriptions={sub.id: sub})


def delete_subscription(catalog: CatalogSnapshot, subscription_id: str) -> CatalogChange | Refusal:
    if subscription_id not in catalog.subscriptions:
        return Refusal(subscription_id, "no such subscription", code=404)
    return CatalogChange(subscriptions={subscription_id: None})


def put_cluster(catalog: CatalogSnapshot, cluster: KafkaCluster) -> CatalogChange | Refusal:
    return CatalogChange(clusters={cluster.name: cluster})


def delete_cluster(catalog: CatalogSnapshot, name: str) -> CatalogChange | Refusal:
    if name not in catalog.clusters:
        return Refusal(name, "no such Kafka cluster", code=404)
    users = [s.id for s in subscriptions(catalog) if s.source.startswith(f"kafka://{name}/")]
    if users:
        return Refusal(name, f"subscriptions still use this cluster: {', '.join(users)}")
    return CatalogChange(clusters={name: None})
