"""Deployment registration in the engine: revisions, conflicts, force, removal, and the pin of an
invocation to the deployment and protocol version of its first attempt."""

from __future__ import annotations

import json
from typing import Any

from perdure.engine import deployments
from perdure.engine.actions import Accepted, Rejected, StartAttempt
from perdure.engine.commands import DeleteDeployment, Invoke, PutDeployment
from perdure.engine.registry import HandlerInfo, Registry
from perdure.engine.state_machine import StateMachine
from perdure.protocol import ids
from perdure.storage.api import Deployment
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


class World:
    def __init__(self) -> None:
        self.registry = Registry()
        self.registry.add("local", HandlerInfo("h", keyed=False, exclusive=False))  # in-process
        self.store = Store()
        self.machine = StateMachine(self.registry, lambda: 1_000)

    async def apply(self, command: Any) -> list[Any]:
        txn = self.store.begin()
        actions = self.machine.apply(txn, command)
        await self.store.commit(txn)
        return actions

    def revisions(self) -> dict[str, tuple[str, int]]:
        return {
            n: (r.deployment_id, r.revision) for n, r in deployments.revisions(self.store.reader()).items()
        }


async def test_a_new_deployment_serves_its_services_and_later_ones_get_the_next_revision() -> None:
    w = World()
    first = deployment("dp_1", "http://127.0.0.1:1", manifest(obj("Counter", "add", "get")))
    assert [type(a) for a in await w.apply(PutDeployment(first))] == [Accepted]
    assert w.revisions() == {"Counter": ("dp_1", 1)}
    info = w.registry.get("Counter", "add")
    assert info is not None and info.deployment_id == "dp_1" and info.keyed and info.exclusive

    second = deployment("dp_2", "http://127.0.0.1:2", manifest(obj("Counter", "add", "get", "reset")), 6)
    assert [type(a) for a in await w.apply(PutDeployment(second))] == [Accepted]
    assert w.revisions() == {"Counter": ("dp_2", 2)}
    assert [d.id for d in deployments.deployments(w.store.reader())] == ["dp_1", "dp_2"]

    # a fresh registry loaded from the store routes the same way (engine restart)
    reloaded = Registry()
    deployments.load(w.store.reader(), reloaded)
    again = reloaded.get("Counter", "reset")
    assert again is not None and again.deployment_id == "dp_2" and again.protocol_version == 6


async def test_invocations_stay_pinned_to_the_deployment_of_their_first_attempt() -> None:
    w = World()
    await w.apply(PutDeployment(deployment("dp_1", "http://127.0.0.1:1", manifest(obj("Counter", "add")))))
    first, second = ids.random_id("Counter", "k"), ids.random_id("Counter", "other")
    actions = await w.apply(Invoke(first, "Counter", "add", "k", b"1"))
    start = next(a for a in actions if type(a) is StartAttempt)
    assert (start.deployment_id, start.protocol_version) == ("dp_1", 7)
    moved = deployment("dp_2", "http://127.0.0.1:2", manifest(obj("Counter", "add")), 6)
    await w.apply(PutDeployment(moved))
    inv = w.store.reader().get_invocation(first)
    assert inv is not None and (inv.deployment_id, inv.protocol_version) == ("dp_1", 7)
    queued = await w.apply(Invoke(second, "Counter", "add", "other", b"1"))
    start = next(a for a in queued if type(a) is StartAttempt)
    assert (start.deployment_id, start.protocol_version) == ("dp_2", 6)


async def test_conflicts_are_refused_unless_forced() -> None:
    w = World()
    body = manifest(obj("Counter", "add", "get"))
    await w.apply(PutDeployment(deployment("dp_1", "http://127.0.0.1:1", body)))

    same_uri = await w.apply(PutDeployment(deployment("dp_x", "http://127.0.0.1:1", body)))
    assert [type(a) for a in same_uri] == [Rejected] and "force" in same_uri[0].reason
    forced = await w.apply(PutDeployment(deployment("dp_x", "http://127.0.0.1:1", body), force=True))
    assert forced == [Accepted("dp_1", previously=True)]  # replaced in place: same id
    assert w.revisions() == {"Counter": ("dp_1", 2)}

    dropped = manifest(obj("Counter", "add"))
    refused = await w.apply(PutDeployment(deployment("dp_2", "http://127.0.0.1:2", dropped)))
    assert [type(a) for a in refused] == [Rejected] and "drops handlers get" in refused[0].reason
    retyped = manifest(obj("Counter", "add", "get", ty="SERVICE"))
    refused = await w.apply(PutDeployment(deployment("dp_2", "http://127.0.0.1:2", retyped)))
    assert [type(a) for a in refused] == [Rejected] and "changes type" in refused[0].reason

    local = manifest({"name": "local", "ty": "SERVICE", "handlers": [{"name": "h"}]})
    refused = await w.apply(PutDeployment(deployment("dp_3", "http://127.0.0.1:3", local), force=True))
    assert [type(a) for a in refused] == [Rejected] and "in-process" in refused[0].reason
    assert w.revisions() == {"Counter": ("dp_1", 2)}


async def test_removing_a_deployment_that_serves_services_needs_force() -> None:
    w = World()
    await w.apply(PutDeployment(deployment("dp_1", "http://127.0.0.1:1", manifest(obj("Counter", "add")))))
    await w.apply(PutDeployment(deployment("dp_2", "http://127.0.0.1:2", manifest(obj("Counter", "add")))))
    assert await w.apply(DeleteDeployment("dp_1")) == [Accepted("dp_1", previously=True)]  # superseded
    refused = await w.apply(DeleteDeployment("dp_2"))
    assert [type(a) for a in refused] == [Rejected] and "still serves Counter" in refused[0].reason
    assert await w.apply(DeleteDeployment("dp_2", force=True)) == [Accepted("dp_2", previously=True)]
    assert w.registry.get("Counter", "add") is None and w.revisions() == {}
    missing = await w.apply(DeleteDeployment("dp_2"))
    assert [(type(a), a.code) for a in missing] == [(Rejected, 404)]


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
    await w.apply(PutDeployment(deployment("dp_1", "http://127.0.0.1:1", manifest(service))))
    info = w.registry.get("Slow", "h")
    assert info is not None and info.inactivity_timeout_ms == 5_000 and not info.keyed
    assert info.retry_policy.max_attempts == 3 and info.retry_policy.on_max_attempts == "kill"
    assert info.retry_policy.delay_ms(1) == 10
