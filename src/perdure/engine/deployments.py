"""Remote deployments: which endpoint serves which services, at which revision.

Kept in the catalog (state of the system object `__perdure`) and written through the engine, so
a registration is as durable as an invocation. Applying one updates the registry in the same
step: the next invocation of a service goes to its newest deployment, while invocations that
already started stay pinned to the deployment (and protocol version) of their first attempt.

Rules, as restate-server applies them:
- a URI is registered once; registering it again needs `force` (it replaces that deployment);
- a service served in-process by the engine's own app cannot be taken over by a deployment;
- a service moving to a new deployment gets the next revision; changing its type or dropping
  handlers needs `force`;
- removing a deployment that still serves services needs `force` (its services go with it).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any, Protocol

import msgspec

from perdure.engine.actions import Accepted, Rejected
from perdure.engine.catalog import SYSTEM
from perdure.engine.commands import DeleteDeployment, PutDeployment
from perdure.engine.registry import DAY_MS, HandlerInfo, Registry
from perdure.engine.step import Step
from perdure.protocol import manifest as mf
from perdure.retry import DEFAULT, RetryPolicy
from perdure.storage.api import Deployment

_DEPLOYMENTS, _REVISIONS = "deployments", "service-revisions"
_encode = msgspec.msgpack.Encoder().encode
_deployment = msgspec.msgpack.Decoder(Deployment)


class ServiceRevision(msgspec.Struct, frozen=True):
    """Which deployment serves a service now, and how many registrations it has seen."""

    deployment_id: str
    revision: int


_revision = msgspec.msgpack.Decoder(ServiceRevision)


class StateSource(Protocol):
    def get_all_state(self, service: str, key: str) -> dict[bytes, bytes]: ...


def deployments(source: StateSource) -> list[Deployment]:
    found = source.get_all_state(SYSTEM, _DEPLOYMENTS).values()
    return sorted((_deployment.decode(v) for v in found), key=lambda d: (d.created_at, d.id))


def revisions(source: StateSource) -> dict[str, ServiceRevision]:
    return {k.decode(): _revision.decode(v) for k, v in source.get_all_state(SYSTEM, _REVISIONS).items()}


def load(source: StateSource, registry: Registry) -> None:
    """At start: make every remotely served service routable again."""
    by_id = {d.id: d for d in deployments(source)}
    for name, revision in revisions(source).items():
        deployment = by_id.get(revision.deployment_id)
        service = _service(deployment, name) if deployment is not None else None
        if deployment is not None and service is not None:
            registry.replace_service(name, handler_infos(deployment, service))


def _service(deployment: Deployment, name: str) -> mf.ServiceManifest | None:
    return next((s for s in mf.decode(deployment.manifest).services if s.name == name), None)


def handler_infos(deployment: Deployment, service: mf.ServiceManifest) -> list[HandlerInfo]:
    """The engine's view of a remote service's handlers, routed to `deployment`."""
    return [
        replace(
            handler_info(service, h),
            deployment_id=deployment.id,
            protocol_version=deployment.protocol_version,
        )
        for h in service.handlers
    ]


def handler_info(service: mf.ServiceManifest, handler: mf.HandlerManifest) -> HandlerInfo:
    """A handler as the manifest describes it (options: the handler's, else its service's)."""
    ty = service.handler_type(handler)
    o = _options(service, handler)
    return HandlerInfo(
        name=handler.name,
        keyed=service.ty != "SERVICE",
        exclusive=ty in ("EXCLUSIVE", "WORKFLOW"),
        workflow_run=ty == "WORKFLOW",
        workflow=service.ty == "WORKFLOW",
        retry_policy=_retry_policy(o),
        inactivity_timeout_ms=o.get("inactivity_timeout", 60_000),
        abort_timeout_ms=o.get("abort_timeout", 600_000),
        idempotency_retention_ms=o.get("idempotency_retention", DAY_MS),
        journal_retention_ms=o.get("journal_retention", DAY_MS),
        workflow_retention_ms=o.get("workflow_completion_retention", DAY_MS),
    )


def _options(service: mf.ServiceManifest, handler: mf.HandlerManifest) -> dict[str, Any]:
    """The options set on the handler, else on its service."""
    merged = {k: v for k, v in msgspec.structs.asdict(service).items() if v is not None}
    merged.update((k, v) for k, v in msgspec.structs.asdict(handler).items() if v is not None)
    return merged


def _retry_policy(o: dict[str, Any]) -> RetryPolicy:
    if not any(k.startswith("retry_policy_") for k in o):
        return DEFAULT
    initial = o.get("retry_policy_initial_interval")
    maximum = o.get("retry_policy_max_interval")
    return RetryPolicy(
        initial_interval=timedelta(milliseconds=initial) if initial is not None else DEFAULT.initial_interval,
        factor=float(o.get("retry_policy_exponentiation_factor", DEFAULT.factor)),
        max_interval=timedelta(milliseconds=maximum) if maximum is not None else DEFAULT.max_interval,
        max_attempts=o.get("retry_policy_max_attempts", DEFAULT.max_attempts),
        on_max_attempts="kill" if o.get("retry_policy_on_max_attempts") == "KILL" else "pause",
    )


def _get(step: Step, deployment_id: str) -> Deployment | None:
    raw = step.txn.get_state(SYSTEM, _DEPLOYMENTS, deployment_id.encode())
    return None if raw is None else _deployment.decode(raw)


def put(step: Step, cmd: PutDeployment) -> None:
    new = cmd.deployment
    manifest = mf.decode(new.manifest)
    existing = next((d for d in deployments(step.txn) if d.uri == new.uri), None)
    if existing is not None:
        if not cmd.force:
            message = f"{new.uri} is already registered as {existing.id}: pass force to replace it"
            step.actions.append(Rejected(existing.id, message))
            return
        new = msgspec.structs.replace(new, id=existing.id, created_at=existing.created_at)
    current = revisions(step.txn)
    for service in manifest.services:
        problem = _conflict(step, service, current.get(service.name), cmd.force)
        if problem is not None:
            step.actions.append(Rejected(new.id, problem))
            return
    step.txn.set_state(SYSTEM, _DEPLOYMENTS, new.id.encode(), _encode(new))
    announced = set()
    for service in manifest.services:
        announced.add(service.name)
        previous = current.get(service.name)
        revision = ServiceRevision(new.id, previous.revision + 1 if previous is not None else 1)
        step.txn.set_state(SYSTEM, _REVISIONS, service.name.encode(), _encode(revision))
        step.registry.replace_service(service.name, handler_infos(new, service))
    if existing is not None:  # services the replaced deployment served and the new one does not
        for name, revision in current.items():
            if revision.deployment_id == existing.id and name not in announced:
                _drop_service(step, name)
    step.actions.append(Accepted(new.id, previously=existing is not None))


def _conflict(
    step: Step, service: mf.ServiceManifest, revision: ServiceRevision | None, force: bool
) -> str | None:
    if service.name in step.registry.services and step.registry.deployment_of(service.name) is None:
        return f"service {service.name!r} is served in-process by this engine's app"
    if revision is None or force:
        return None
    old_deployment = _get(step, revision.deployment_id)
    old = _service(old_deployment, service.name) if old_deployment is not None else None
    if old is None:
        return None
    if old.ty != service.ty:
        return (
            f"service {service.name!r} changes type from {old.ty} to {service.ty}: "
            "pass force to register anyway"
        )
    dropped = sorted({h.name for h in old.handlers} - {h.name for h in service.handlers})
    if dropped:
        return (
            f"service {service.name!r} drops handlers {', '.join(dropped)} that "
            f"{revision.deployment_id} serves: pass force to register anyway"
        )
    return None


def _drop_service(step: Step, name: str) -> None:
    step.txn.clear_state(SYSTEM, _REVISIONS, name.encode())
    step.registry.remove_service(name)


def delete(step: Step, cmd: DeleteDeployment) -> None:
    if _get(step, cmd.deployment_id) is None:
        step.actions.append(Rejected(cmd.deployment_id, "no such deployment", code=404))
        return
    serving = sorted(n for n, r in revisions(step.txn).items() if r.deployment_id == cmd.deployment_id)
    if serving and not cmd.force:
        message = f"it still serves {', '.join(serving)}: pass force to remove it with its services"
        step.actions.append(Rejected(cmd.deployment_id, message))
        return
    for name in serving:
        _drop_service(step, name)
    step.txn.clear_state(SYSTEM, _DEPLOYMENTS, cmd.deployment_id.encode())
    step.actions.append(Accepted(cmd.deployment_id, previously=True))
