"""Kafka clusters and subscriptions in the admin API, in Restate's shapes; their metrics.

    POST /kafka-clusters {"name": "local", "properties": {"bootstrap.servers": "127.0.0.1:9092"}}
    POST /subscriptions {"source": "kafka://local/user-updates",
                         "sink": "service://userUpdates/updateUserEvent",
                         "options": {"auto.offset.reset": "earliest"}}
      → 201, Location: subscriptions/sub_…, {"id", "source", "sink", "options"}

A subscription's id is derived from its source and sink, so repeating a definition is answered
with the same subscription (200), and the same source and sink with other options is a 409.
The answered `options` show what the consumer actually uses: the given options, then the
cluster's properties, then perdure's defaults (`group.id` = the id, `client.id` = `perdure`,
`auto.offset.reset` = `latest`). Listing adds the consumer's live status and, per partition,
the consumed offset, high watermark, lag, in-flight invocations and whether it is paused.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from perdure.admin.http import HTTPError, Request, Response
from perdure.engine.catalog import subscription_id
from perdure.errors import ConflictError, InvalidInputError, UnknownTargetError
from perdure.kafka.options import consumer_config, parse_sink, parse_source
from perdure.kafka.stats import SubscriptionStats
from perdure.storage.api import Subscription

if TYPE_CHECKING:
    from perdure.kafka import KafkaIntake
    from perdure.runtime.node import Engine

Endpoint = Callable[[Request], Awaitable[Response]]
Family = tuple[str, str, str, list[tuple[str, float]]]

#: Kafka cluster names become the host part of `kafka://NAME/TOPIC`: keep them plain.
_CLUSTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_LIST_FILTERS = ("source", "sink")


def defaults(subscription_id: str) -> dict[str, str]:
    """perdure's consumer defaults (`perdure.kafka.options.consumer_config`), as Restate names them."""
    return {"group.id": subscription_id, "client.id": "perdure", "auto.offset.reset": "latest"}


def effective_options(sub: Subscription, cluster_properties: Mapping[str, str] | None) -> dict[str, str]:
    """The subscription's options with every default filled in from the cluster or perdure."""
    out = dict(sub.options)
    for name, default in defaults(sub.id).items():
        if name not in out:
            out[name] = (cluster_properties or {}).get(name, default)
    return dict(sorted(out.items()))


def _strings(value: Any, what: str) -> dict[str, str]:
    """A JSON object of scalars as Kafka properties (`true` → `"true"`, `500` → `"500"`)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise HTTPError(400, f"{what} must be a JSON object of strings")
    out = {}
    for name, item in value.items():
        if isinstance(item, bool):
            out[name] = "true" if item else "false"
        elif isinstance(item, str | int | float):
            out[name] = str(item)
        else:
            raise HTTPError(400, f"{what}: {name!r} must be a string, number or boolean, not {item!r}")
    return out


def _object(request: Request, *required: str) -> dict[str, Any]:
    body = request.json()
    if not isinstance(body, dict):
        raise HTTPError(400, f"send a JSON object with {', '.join(required)}")
    for name in required:
        if not isinstance(body.get(name), str) or not body[name]:
            raise HTTPError(400, f"{name!r} is required and must be a non-empty string")
    return body


class Endpoints:
    """The `/kafka-clusters` and `/subscriptions` endpoints over one engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def routes(self) -> list[tuple[str, str, Endpoint]]:
        """(method, path pattern, endpoint) for the admin app's router."""
        return [
            ("GET", "/kafka-clusters", self.list_clusters),
            ("POST", "/kafka-clusters", self.create_cluster),
            ("GET", "/kafka-clusters/(?P<name>[^/]+)", self.get_cluster),
            ("PATCH", "/kafka-clusters/(?P<name>[^/]+)", self.patch_cluster),
            ("DELETE", "/kafka-clusters/(?P<name>[^/]+)", self.delete_cluster),
            ("GET", "/subscriptions", self.list_subscriptions),
            ("POST", "/subscriptions", self.create_subscription),
            ("GET", "/subscriptions/(?P<id>[^/]+)", self.get_subscription),
            ("DELETE", "/subscriptions/(?P<id>[^/]+)", self.delete_subscription),
        ]

    # ---- clusters

    async def list_clusters(self, request: Request) -> Response:
        clusters = self.engine.kafka_clusters()
        return Response(200, {"clusters": [{"name": n, "properties": p} for n, p in clusters.items()]})

    async def get_cluster(self, request: Request) -> Response:
        name = request.params["name"]
        return Response(200, {"name": name, "properties": self._cluster(name)})

    async def create_cluster(self, request: Request) -> Response:
        """201 when new; 200 when it exists with these properties; 409 with others (PATCH changes them)."""
        body = _object(request, "name")
        name, properties = body["name"], _strings(body.get("properties"), "properties")
        if not _CLUSTER_NAME.match(name):
            raise HTTPError(
                400, f"bad Kafka cluster name {name!r}: use letters, digits, '.', '_' and '-' (e.g. local)"
            )
        self._check_properties(name, properties)
        existing = self.engine.kafka_clusters().get(name)
        answer = {"name": name, "properties": properties}
        if existing == properties:
            return Response(200, answer, {"location": f"kafka-clusters/{name}"})
        if existing is not None:
            raise HTTPError(
                409,
                f"Kafka cluster {name!r} exists with other properties {existing}; "
                f"change them with PATCH /kafka-clusters/{name}",
            )
        await self._put_cluster(name, properties)
        return Response(201, answer, {"location": f"kafka-clusters/{name}"})

    async def patch_cluster(self, request: Request) -> Response:
        """Replace a cluster's properties; its subscriptions' consumers restart with them."""
        name = request.params["name"]
        self._cluster(name)
        body = request.json()
        if not isinstance(body, dict) or not isinstance(body.get("properties"), dict):
            raise HTTPError(400, 'send a JSON object {"properties": {"bootstrap.servers": "host:port", …}}')
        properties = _strings(body["properties"], "properties")
        self._check_properties(name, properties)
        await self._put_cluster(name, properties)
        return Response(200, {"name": name, "properties": properties})

    async def delete_cluster(self, request: Request) -> Response:
        """404 when unknown; 409 while subscriptions use it."""
        name = request.params["name"]
        try:
            await self.engine.delete_kafka_cluster(name)
        except UnknownTargetError:
            raise HTTPError(404, f"no Kafka cluster named {name!r}") from None
        except ConflictError as e:
            users = [s.id for s in self.engine.subscriptions() if s.source.startswith(f"kafka://{name}/")]
            used_by = ", ".join(users) or str(e)
            raise HTTPError(409, f"Kafka cluster {name!r} is used by {used_by}: delete those first") from None
        return Response(200, {})

    def _cluster(self, name: str) -> dict[str, str]:
        clusters = self.engine.kafka_clusters()
        if name not in clusters:
            raise HTTPError(404, f"no Kafka cluster named {name!r} (known: {', '.join(clusters) or 'none'})")
        return clusters[name]

    def _check_properties(self, name: str, properties: Mapping[str, str]) -> None:
        """Refuse what would leave every subscription of the cluster in the error state."""
        if not properties.get("bootstrap.servers"):
            raise HTTPError(
                400, f'Kafka cluster {name!r} needs properties {{"bootstrap.servers": "host:port"}}'
            )
        try:
            consumer_config(name, properties, {})
        except InvalidInputError as e:
            raise HTTPError(400, f"Kafka cluster {name!r}: {e}") from None

    async def _put_cluster(self, name: str, properties: Mapping[str, str]) -> None:
        try:
            await self.engine.put_kafka_cluster(name, properties)
        except InvalidInputError as e:
            raise HTTPError(400, str(e)) from None

    # ---- subscriptions

    async def list_subscriptions(self, request: Request) -> Response:
        """`?source=` and `?sink=` keep the subscriptions with exactly that source or sink (as Restate)."""
        unknown = sorted(set(request.query) - set(_LIST_FILTERS))
        if unknown:
            raise HTTPError(400, f"unknown query parameter(s) {', '.join(unknown)}; filters: source, sink")
        stats = self._stats()
        clusters = self.engine.kafka_clusters()
        subs = [
            s
            for s in self.engine.subscriptions()
            if all(request.query.get(f, getattr(s, f)) == getattr(s, f) for f in _LIST_FILTERS)
        ]
        return Response(200, {"subscriptions": [self._view(s, clusters, stats) for s in subs]})

    async def get_subscription(self, request: Request) -> Response:
        sub = self._subscription(request.params["id"])
        return Response(200, self._view(sub, self.engine.kafka_clusters(), self._stats()))

    async def create_subscription(self, request: Request) -> Response:
        """201 when new; 200 when the same definition exists; 400 bad input; 409 other options."""
        body = _object(request, "source", "sink")
        source, sink = body["source"], body["sink"]
        options = _strings(body.get("options"), "options")
        try:
            cluster, _ = parse_source(source)
            parse_sink(sink)
        except InvalidInputError as e:
            raise HTTPError(400, str(e)) from None
        clusters = self.engine.kafka_clusters()
        if cluster not in clusters:
            known = ", ".join(clusters) or "none"
            raise HTTPError(400, f"unknown Kafka cluster {cluster!r} in {source} (known clusters: {known})")
        sub_id = subscription_id(source, sink)
        try:
            consumer_config(sub_id, clusters[cluster], options)  # bad options: 400 before any 409
        except InvalidInputError as e:
            raise HTTPError(400, str(e)) from None
        existing = self.engine.subscription(sub_id)
        if existing is not None:
            wanted = effective_options(Subscription(existing.id, source, sink, options), clusters[cluster])
            have = effective_options(existing, clusters[cluster])
            if wanted != have:
                raise HTTPError(
                    409,
                    f"subscription {existing.id} from {source} to {sink} exists with other options "
                    f"{have}; delete it first (DELETE /subscriptions/{existing.id})",
                )
            return self._created(200, existing, clusters)
        try:
            sub = await self.engine.create_subscription(source, sink, options)
        except UnknownTargetError as e:  # the sink: bad input for this request, as in Restate
            raise HTTPError(400, f"{e} (GET /services lists the handlers)") from None
        except InvalidInputError as e:
            raise HTTPError(400, str(e)) from None
        except ConflictError as e:
            raise HTTPError(409, str(e)) from None
        return self._created(201, sub, clusters)

    async def delete_subscription(self, request: Request) -> Response:
        """202: its consumer stops; invocations already accepted from it run to completion."""
        subscription_id = request.params["id"]
        try:
            await self.engine.delete_subscription(subscription_id)
        except UnknownTargetError:
            raise HTTPError(404, f"no subscription {subscription_id!r}") from None
        return Response(202, {})

    def _subscription(self, subscription_id: str) -> Subscription:
        sub = self.engine.subscription(subscription_id)
        if sub is None:
            raise HTTPError(404, f"no subscription {subscription_id!r}")
        return sub

    def _created(self, status: int, sub: Subscription, clusters: Mapping[str, Mapping[str, str]]) -> Response:
        body = {
            "id": sub.id,
            "source": sub.source,
            "sink": sub.sink,
            "options": effective_options(sub, clusters.get(parse_source(sub.source)[0])),
        }
        return Response(status, body, {"location": f"subscriptions/{sub.id}"})

    def _stats(self) -> dict[str, SubscriptionStats]:
        intake = self.engine.kafka
        return {s.subscription_id: s for s in intake.stats()} if intake is not None else {}

    def _view(
        self,
        sub: Subscription,
        clusters: Mapping[str, Mapping[str, str]],
        stats: Mapping[str, SubscriptionStats],
    ) -> dict[str, Any]:
        try:
            cluster: Mapping[str, str] | None = clusters.get(parse_source(sub.source)[0])
        except InvalidInputError:
            cluster = None
        live = stats.get(sub.id)
        # No consumer yet: the intake starts it right after the subscription was stored.
        idle = "starting" if self.engine.kafka is not None else "stopped"
        state = live.state if live is not None else idle
        return {
            "id": sub.id,
            "source": sub.source,
            "sink": sub.sink,
            "options": effective_options(sub, cluster),
            "status": state,
            "error": live.error if live is not None else None,
            "records": live.records if live is not None else 0,
            "partitions": [
                {
                    "topic": p.topic,
                    "partition": p.partition,
                    "consumed_offset": p.consumed_offset,
                    "high_watermark": p.high_watermark,
                    "lag": p.lag,
                    "in_flight": p.in_flight,
                    "oldest_pending_ms": p.oldest_pending_ms,
                    "paused": p.paused,
                }
                for p in (live.partitions if live is not None else [])
            ],
        }


# ---- metrics


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


#: Per-partition gauges: metric name (after `perdure_kafka_`), help text.
_PARTITION_GAUGES = {
    "consumed_offset": "Next offset to consume (stored with the invocations).",
    "high_watermark": "The broker's next offset of the partition.",
    "lag": "Records in the partition not yet accepted (high watermark - consumed offset).",
    "in_flight": "Invocations accepted from the partition, not yet completed.",
    "oldest_pending_seconds": "Age of the oldest invocation in flight from the partition (0 when none).",
    "paused": "1 while backpressure pauses the partition.",
}


def metric_families(intake: KafkaIntake | None) -> list[Family]:
    """Gauges per subscription and partition for `GET /metrics`: (name, type, help, samples) each."""
    records: list[tuple[str, float]] = []
    up: list[tuple[str, float]] = []
    gauges: dict[str, list[tuple[str, float]]] = {name: [] for name in _PARTITION_GAUGES}
    for sub in intake.stats() if intake is not None else []:
        labels = f'{{subscription="{_label(sub.subscription_id)}"}}'
        records.append((labels, sub.records))
        up.append((labels, 1 if sub.state == "running" else 0))
        for p in sub.partitions:
            labels = (
                f'{{subscription="{_label(sub.subscription_id)}",topic="{_label(p.topic)}",'
                f'partition="{p.partition}"}}'
            )
            values: dict[str, float | None] = {
                "consumed_offset": p.consumed_offset,
                "high_watermark": p.high_watermark,
                "lag": p.lag,
                "in_flight": p.in_flight,
                "oldest_pending_seconds": (p.oldest_pending_ms or 0) / 1000,
                "paused": 1 if p.paused else 0,
            }
            for name, value in values.items():
                if value is not None:  # not known yet (before the first fetch): no sample
                    gauges[name].append((labels, value))
    return [
        ("kafka_records_total", "counter", "Kafka records accepted as invocations since start.", records),
        ("kafka_subscription_up", "gauge", "1 while the subscription's consumer runs, else 0.", up),
        *((f"kafka_{name}", "gauge", text, gauges[name]) for name, text in _PARTITION_GAUGES.items()),
    ]
