"""The catalog of an engine: remote deployments, Kafka clusters and subscriptions, and the services
the engine routes to — the app's own, then the deployments'.

    deployment, replaced = await catalog.register_deployment("http://127.0.0.1:9080")
    sub = await catalog.create_subscription("kafka://local/t", "service://users/update")

The committed catalog is kept in memory as a snapshot and read from there. A change is computed
by the pure rules of `perdure.engine.catalog` / `perdure.engine.deployments` over the snapshot and
written by compare-and-set on its version (`perdure.storage.api.CatalogStore`); when another engine
on the same database changed it first, the snapshot is read again and the rules run again. After
every change (this engine's, or another's picked up by `refresh`) the registry — the engine's view
of every handler, shared with the state machines — is routed anew and the listeners are told.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import NoReturn, TypeVar

from perdure.defaults import ABORT_TIMEOUT_MS, INACTIVITY_TIMEOUT_MS, RETENTION_MS
from perdure.engine import catalog as rules
from perdure.engine import deployments as deployment_rules
from perdure.engine.catalog import Refusal
from perdure.engine.registry import HandlerInfo, Registry
from perdure.errors import ConflictError, InvalidInputError, PerdureError, UnknownTargetError
from perdure.protocol import manifest as mf
from perdure.retry import DEFAULT
from perdure.runtime.clock import Clock
from perdure.runtime.deployments import RemoteService, deployment_id, discover
from perdure.sdk.service import App, Handler, ServiceBase, ServiceKind
from perdure.storage.api import (
    CatalogChange,
    CatalogSnapshot,
    CatalogStore,
    Deployment,
    KafkaCluster,
    Subscription,
)

log = logging.getLogger("perdure.catalog")

R = TypeVar("R")

#: Compare-and-set rounds before a catalog change gives up (each one lost to another engine's change).
MAX_ROUNDS = 20


def _ms(value: timedelta | None, default: int) -> int:
    return default if value is None else int(value.total_seconds() * 1000)


def registry_of(app: App) -> Registry:
    """The engine's view of an app's (in-process) services."""
    registry = Registry()
    for service in app.services:
        for handler in service.handlers.values():
            opts = handler.options
            registry.add(
                service.name,
                HandlerInfo(
                    name=handler.name,
                    keyed=handler.keyed,
                    exclusive=handler.exclusive,
                    workflow_run=handler.workflow_run,
                    workflow=service.kind is ServiceKind.WORKFLOW,
                    retry_policy=opts.retry_policy or DEFAULT,
                    inactivity_timeout_ms=_ms(opts.inactivity_timeout, INACTIVITY_TIMEOUT_MS),
                    idempotency_retention_ms=_ms(opts.idempotency_retention, RETENTION_MS),
                    journal_retention_ms=_ms(opts.journal_retention, RETENTION_MS),
                    workflow_retention_ms=_ms(opts.workflow_retention, RETENTION_MS),
                ),
            )
    return registry


def _raise(refusal: Refusal) -> NoReturn:
    error = {404: UnknownTargetError, 400: InvalidInputError}.get(refusal.code, ConflictError)
    raise error(f"{refusal.name}: {refusal.reason}")


class Catalog:
    """Deployments, Kafka clusters and subscriptions of one engine (see the module docstring)."""

    def __init__(self, app: App, store: CatalogStore, clock: Clock) -> None:
        self.app = app
        self.clock = clock
        self._store = store
        self.registry = registry_of(app)  # shared with the state machines: routed in place
        self._in_process = frozenset(s.name for s in app.services)
        self._snapshot = CatalogSnapshot()
        self._remote: dict[str, RemoteService] | None = None  # built when first needed
        self._listeners: list[Callable[[], None]] = []

    def load(self) -> None:
        """Read the committed catalog and route its services (at start)."""
        self._use(self._store.read_catalog())

    def refresh(self) -> bool:
        """Pick up a change another engine made; True when there was one."""
        snapshot = self._store.read_catalog()
        if snapshot.version == self._snapshot.version:
            return False
        self._use(snapshot)
        return True

    def add_listener(self, fn: Callable[[], None]) -> None:
        """Call `fn()` after every change of the catalog (to start or stop Kafka consumers)."""
        self._listeners.append(fn)

    @property
    def version(self) -> int:
        return self._snapshot.version

    def _use(self, snapshot: CatalogSnapshot) -> None:
        self._snapshot = snapshot
        deployment_rules.load(snapshot, self.registry, self._in_process)
        self._remote = None
        for listener in self._listeners:
            try:
                listener()
            except Exception:
                log.exception("a catalog listener failed")

    async def _change(
        self, rule: Callable[[CatalogSnapshot], R | Refusal], change_of: Callable[[R], CatalogChange]
    ) -> R:
        """Apply `rule` to the newest snapshot and write its change; again if another engine won."""
        for _ in range(MAX_ROUNDS):
            snapshot = self._snapshot
            result = rule(snapshot)
            if isinstance(result, Refusal):
                _raise(result)
            change = change_of(result)
            if await self._store.write_catalog(snapshot.version, change):
                self._use(change.applied_to(snapshot))
                return result
            self._use(self._store.read_catalog())
        raise PerdureError(f"the catalog kept changing under {MAX_ROUNDS} attempts to change it; try again")

    # ---- services: the app's own, then the deployments'

    def service(self, name: str) -> ServiceBase | None:
        """A service by name: the app's own, or one a registered deployment serves."""
        found = self.app.service(name)
        return found if found is not None else self.remote_services().get(name)

    def handler(self, service: str, handler: str) -> Handler | None:
        found = self.service(service)
        return None if found is None else found.handlers.get(handler)

    def services(self) -> list[ServiceBase]:
        return [*self.app.services, *self.remote_services().values()]

    def remote_services(self) -> dict[str, RemoteService]:
        if self._remote is None:
            snapshot, remote = self._snapshot, {}
            for name, revision in sorted(snapshot.revisions.items()):
                deployment = snapshot.deployments.get(revision.deployment_id)
                if deployment is None or name in self._in_process:
                    continue
                found = next((s for s in mf.decode(deployment.manifest).services if s.name == name), None)
                if found is not None:
                    remote[name] = RemoteService(deployment, found, revision.revision)
            self._remote = remote
        return self._remote

    def timeouts_of(self, service: str, handler: str) -> tuple[int, int]:
        """(inactivity, abort) timeouts in ms of a remote handler."""
        info = self.registry.get(service, handler)
        if info is None:
            return INACTIVITY_TIMEOUT_MS, ABORT_TIMEOUT_MS
        return info.inactivity_timeout_ms, info.abort_timeout_ms

    # ---- deployments

    def deployments(self) -> list[Deployment]:
        return deployment_rules.deployments(self._snapshot)

    def deployment(self, deployment_id: str) -> Deployment | None:
        """A registered deployment (None once it was removed); also the remote invoker's lookup."""
        return self._snapshot.deployments.get(deployment_id)

    async def register_deployment(
        self,
        uri: str,
        *,
        force: bool = False,
        use_http_11: bool = False,
        additional_headers: Mapping[str, str] | None = None,
        max_protocol_version: int = mf.MAX_PROTOCOL,
    ) -> tuple[Deployment, bool]:
        """Discover `uri` and register it; returns (the deployment, True when it replaced one).

        Raises `DiscoveryError` (unreachable, bad manifest), `ConflictError` (already registered
        without `force`, or a service clash).
        """
        headers = dict(additional_headers or {})
        raw, manifest, http_version = await discover(uri, use_http_11=use_http_11, headers=headers)
        assert manifest.protocol_mode is not None
        new = Deployment(
            id=deployment_id(),
            uri=uri.rstrip("/"),
            protocol_mode=manifest.protocol_mode,
            http_version=http_version,
            min_protocol_version=manifest.min_protocol_version,
            max_protocol_version=manifest.max_protocol_version,
            protocol_version=mf.negotiate(manifest, max_protocol_version),
            additional_headers=headers,
            manifest=raw,
            created_at=self.clock.now_ms(),
        )
        registered = await self._change(
            lambda snapshot: deployment_rules.register(
                snapshot, new, force=force, in_process=self._in_process
            ),
            lambda r: r.change,
        )
        deployment = self.deployment(registered.deployment_id)
        assert deployment is not None
        return deployment, registered.replaced

    async def remove_deployment(self, deployment_id: str, *, force: bool = False) -> None:
        await self._change(lambda s: deployment_rules.remove(s, deployment_id, force=force), lambda c: c)

    # ---- Kafka clusters and subscriptions

    def kafka_clusters(self) -> dict[str, dict[str, str]]:
        """Kafka clusters by name, with their client properties."""
        return {c.name: dict(c.properties) for c in rules.clusters(self._snapshot)}

    async def put_kafka_cluster(self, name: str, properties: Mapping[str, str]) -> None:
        """Add or change a Kafka cluster (`{"bootstrap.servers": "127.0.0.1:9092"}`)."""
        if not name or "/" in name:
            raise InvalidInputError(f"invalid Kafka cluster name {name!r}")
        if not properties.get("bootstrap.servers"):
            raise InvalidInputError(f"Kafka cluster {name!r} needs the bootstrap.servers property")
        cluster = KafkaCluster(name, {k: str(v) for k, v in properties.items()})
        await self._change(lambda s: rules.put_cluster(s, cluster), lambda c: c)

    async def delete_kafka_cluster(self, name: str) -> None:
        await self._change(lambda s: rules.delete_cluster(s, name), lambda c: c)

    def subscriptions(self) -> list[Subscription]:
        return rules.subscriptions(self._snapshot)

    def subscription(self, subscription_id: str) -> Subscription | None:
        return self._snapshot.subscriptions.get(subscription_id)

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
        sub = Subscription(rules.subscription_id(source, sink), source, sink, opts)
        properties = self.kafka_clusters().get(cluster)
        if properties is not None:
            consumer_config(sub.id, properties, opts)  # raises OptionError for bad options
        await self._change(lambda s: rules.put_subscription(s, sub, replace), lambda c: c)
        return sub

    async def delete_subscription(self, subscription_id: str) -> None:
        """Stop consuming; invocations already accepted go on."""
        await self._change(lambda s: rules.delete_subscription(s, subscription_id), lambda c: c)
