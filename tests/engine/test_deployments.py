"""Deployment registration rules: revisions, conflicts, force, removal, routing of the registry, and
the pin of an invocation to the deployment and protocol version of its first attempt."""

from __future__ import annotations

import json
from typing import Any

from perdure.engine import deployments
from perdure.engine.actions import StartAttempt
from perdure.engine.catalog import Refusal
from perdure.engine.commands import Invoke
from perdure.engine.registry import HandlerInfo, Registry
from perdure.engine.state_machine import StateMachine
from perdure.protocol import ids
from perdure.storage.api import CatalogSnapshot, Deployment
from perdure.storage.memory import Store


def manifest(*services: dict[str, Any], high: int = 7) -> bytes:
    return json.dumps(
        {
            "protocolMode": "BIDI_STREAM",
            "minProtocolVersion": 5,
            "maxProtocolVersion": high,
            "services": list(services),
        }
    ).encode()


def obj(name: str, *handlers: str, ty: str = "VIRTUAL_OBJECT", **options: Any) -> dict[str, Any]:
    return {"name": name, "ty": ty, "handlers": [{"name": h} for h in handlers], **options}


def deployment(ident: str, uri: str, body: bytes, version: int = 7) -> Deployment:
    return Deployment(
        id=ident,
        uri=uri,
        protocol_mode="BIDI_STREAM",
        http_version="2",
        min_protocol_version=5,
        max_protocol_version=7,
        protocol_version=version,
        manifest=body,
    )


IN_PROCESS = frozenset({"local"})


class World:
    """A catalog snapshot changed by the rules, and the registry routed from it (as the runtime's
    `Catalog` does), next to a state machine using that registry."""

    def __init__(self) -> None:
        self.registry = Registry()
        self.registry.add("local", HandlerInfo("h", keyed=False, exclusive=False))  # in-process
        self.catalog = CatalogSnapshot()
        self.store = Store()
        self.machine = StateMachine(self.registry, lambda: 1_000)

    async def apply(self, command: Any) -> list[Any]:
        txn = self.store.begin()
        actions = self.machine.apply(txn, command)
        await self.store.commit(txn)
        return actions

    def register(self, new: Deployment, force: bool = False) -> deployments.Registered | Refusal:
        result = deployments.register(self.catalog, new, force=force, in_process=IN_PROCESS)
        if not isinstance(result, Refusal):
            self._use(result.change.applied_to(self.catalog))
        return result

    def remove(self, deployment_id: str, force: bool = False) -> Refusal | None:
        result = deployments.remove(self.catalog, deployment_id, force=force)
        if isinstance(result, Refusal):
            return result
        self._use(result.applied_to(self.catalog))
        return None

    def _use(self, catalog: CatalogSnapshot) -> None:
        self.catalog = catalog
        deployments.load(catalog, self.registry, IN_PROCESS)

    def revisions(self) -> dict[str, tuple[str, int]]:
        return {n: (r.deployment_id, r.revision) for n, r in self.catalog.revisions.items()}


def refused(result: object) -> str:
    assert isinstance(result, Refusal), result
    return result.reason


def registered(result: object) -> tuple[str, bool]:
    assert isinstance(result, deployments.Registered), result
    return result.deployment_id, result.replaced


async def test_a_new_deployment_serves_its_services_and_later_ones_get_the_next_revision() -> None:
    w = World()
    first = deployment("dp_1", "http://127.0.0.1:1", manifest(obj("Counter", "add", "get")))
    assert registered(w.register(first)) == ("dp_1", False)
    assert w.revisions() == {"Counter": ("dp_1", 1)}
    info = w.registry.get("Counter", "add")
    assert info is not None and info.deployment_id == "dp_1" and info.keyed and info.exclusive

    second = deployment("dp_2", "http://127.0.0.1:2", manifest(obj("Counter", "add", "get", "reset")), 6)
    assert registered(w.register(second)) == ("dp_2", False)
    assert w.revisions() == {"Counter": ("dp_2", 2)}
    assert [d.id for d in deployments.deployments(w.catalog)] == ["dp_1", "dp_2"]

    # a fresh registry loaded from the catalog routes the same way (engine restart)
    reloaded = Registry()
    deployments.load(w.catalog, reloaded, IN_PROCESS)
    again = reloaded.get("Counter", "reset")
    assert again is not None and again.deployment_id == "dp_2" and again.protocol_version == 6


async def test_invocations_stay_pinned_to_the_deployment_of_their_first_attempt() -> None:
    w = World()
    w.register(deployment("dp_1", "http://127.0.0.1:1", manifest(obj("Counter", "add"))))
    first, second = ids.random_id("Counter", "k"), ids.random_id("Counter", "other")
    actions = await w.apply(Invoke(first, "Counter", "add", "k", b"1"))
    start = next(a for a in actions if type(a) is StartAttempt)
    assert (start.deployment_id, start.protocol_version) == ("dp_1", 7)
    moved = deployment("dp_2", "http://127.0.0.1:2", manifest(obj("Counter", "add")), 6)
    w.register(moved)
    inv = w.store.reader().get_invocation(first)
    assert inv is not None and (inv.deployment_id, inv.protocol_version) == ("dp_1", 7)
    queued = await w.apply(Invoke(second, "Counter", "add", "other", b"1"))
    start = next(a for a in queued if type(a) is StartAttempt)
    assert (start.deployment_id, start.protocol_version) == ("dp_2", 6)


async def test_conflicts_are_refused_unless_forced() -> None:
    w = World()
    body = manifest(obj("Counter", "add", "get"))
    w.register(deployment("dp_1", "http://127.0.0.1:1", body))

    assert "force" in refused(w.register(deployment("dp_x", "http://127.0.0.1:1", body)))
    forced = w.register(deployment("dp_x", "http://127.0.0.1:1", body), force=True)
    assert registered(forced) == ("dp_1", True)  # replaced in place: same id
    assert w.revisions() == {"Counter": ("dp_1", 2)}

    dropped = manifest(obj("Counter", "add"))
    assert "drops handlers get" in refused(w.register(deployment("dp_2", "http://127.0.0.1:2", dropped)))
    retyped = manifest(obj("Counter", "add", "get", ty="SERVICE"))
    assert "changes type" in refused(w.register(deployment("dp_2", "http://127.0.0.1:2", retyped)))

    local = manifest({"name": "local", "ty": "SERVICE", "handlers": [{"name": "h"}]})
    assert "in-process" in refused(w.register(deployment("dp_3", "http://127.0.0.1:3", local), force=True))
    assert w.revisions() == {"Counter": ("dp_1", 2)}


async def test_removing_a_deployment_that_serves_services_needs_force() -> None:
    w = World()
    w.register(deployment("dp_1", "http://127.0.0.1:1", manifest(obj("Counter", "add"))))
    w.register(deployment("dp_2", "http://127.0.0.1:2", manifest(obj("Counter", "add"))))
    assert w.remove("dp_1") is None  # superseded: serves nothing
    assert "still serves Counter" in refused(w.remove("dp_2"))
    assert w.remove("dp_2", force=True) is None
    assert w.registry.get("Counter", "add") is None and w.revisions() == {}
    missing = w.remove("dp_2")
    assert isinstance(missing, Refusal) and missing.code == 404


async def test_manifest_options_become_the_handlers_policies() -> None:
    w = World()
    service = obj(
        "Slow",
        "h",
        ty="SERVICE",
        inactivityTimeout=5_000,
        retryPolicyMaxAttempts=3,
        retryPolicyInitialInterval=10,
        retryPolicyOnMaxAttempts="KILL",
    )
    w.register(deployment("dp_1", "http://127.0.0.1:1", manifest(service)))
    info = w.registry.get("Slow", "h")
    assert info is not None and info.inactivity_timeout_ms == 5_000 and not info.keyed
    assert info.retry_policy.max_attempts == 3 and info.retry_policy.on_max_attempts == "kill"
    assert info.retry_policy.delay_ms(1) == 10
