"""Remote deployments: which endpoint serves which services, at which revision — the rules.

Pure functions of a catalog snapshot (`perdure.storage.api.CatalogSnapshot`): the runtime asks
for the change (or the reason to refuse it) and writes it by compare-and-set, then routes the
services anew (`load`). The next invocation of a service goes to its newest deployment, while
invocations that already started stay pinned to the deployment (and protocol version) of their
first attempt.

Rules, as restate-server applies them:
- a URI is registered once; registering it again needs `force` (it replaces that deployment);
- a service served in-process by the engine's own app cannot be taken over by a deployment;
- a service moving to a new deployment gets the next revision; changing its type or dropping
  handlers needs `force`;
- removing a deployment that still serves services needs `force` (its services go with it).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import msgspec

from perdure.defaults import ABORT_TIMEOUT_MS, INACTIVITY_TIMEOUT_MS, RETENTION_MS
from perdure.engine.catalog import Refusal
from perdure.engine.registry import HandlerInfo, Registry
from perdure.protocol import manifest as mf
from perdure.retry import DEFAULT, RetryPolicy
from perdure.storage.api import CatalogChange, CatalogSnapshot, Deployment, ServiceRevision


@dataclass(frozen=True)
class Registered:
    """A registration to write: the change, the deployment's id, and whether it replaced one."""

    change: CatalogChange
    deployment_id: str
    replaced: bool


def deployments(catalog: CatalogSnapshot) -> list[Deployment]:
    return sorted(catalog.deployments.values(), key=lambda d: (d.created_at, d.id))


def load(catalog: CatalogSnapshot, registry: Registry, in_process: Collection[str]) -> None:
    """Route every remotely served service to its deployment (and forget the ones no longer served)."""
    for name in [n for n in registry.services if n not in in_process]:
        if name not in catalog.revisions:
            registry.remove_service(name)
    for name, revision in catalog.revisions.items():
        deployment = catalog.deployments.get(revision.deployment_id)
        service = _service(deployment, name) if deployment is not None else None
        if deployment is not None and service is not None and name not in in_process:
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
        inactivity_timeout_ms=o.get("inactivity_timeout", INACTIVITY_TIMEOUT_MS),
        abort_timeout_ms=o.get("abort_timeout", ABORT_TIMEOUT_MS),
        idempotency_retention_ms=o.get("idempotency_retention", RETENTION_MS),
        journal_retention_ms=o.get("journal_retention", RETENTION_MS),
        workflow_retention_ms=o.get("workflow_completion_retention", RETENTION_MS),
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


def register(
    catalog: CatalogSnapshot, new: Deployment, *, force: bool, in_process: Collection[str]
) -> Registered | Refusal:
    manifest = mf.decode(new.manifest)
    existing = next((d for d in catalog.deployments.values() if d.uri == new.uri), None)
    if existing is not None:
        if not force:
            message = f"{new.uri} is already registered as {existing.id}: pass force to replace it"
            return Refusal(existing.id, message)
        new = msgspec.structs.replace(new, id=existing.id, created_at=existing.created_at)
    for service in manifest.services:
        problem = _conflict(catalog, service, force, in_process)
        if problem is not None:
            return Refusal(new.id, problem)
    change = CatalogChange(deployments={new.id: new})
    announced = set()
    for service in manifest.services:
        announced.add(service.name)
        previous = catalog.revisions.get(service.name)
        change.revisions[service.name] = ServiceRevision(
            new.id, previous.revision + 1 if previous is not None else 1
        )
    if existing is not None:  # services the replaced deployment served and the new one does not
        for name, revision in catalog.revisions.items():
            if revision.deployment_id == existing.id and name not in announced:
                change.revisions[name] = None
    return Registered(change, new.id, replaced=existing is not None)


def _conflict(
    catalog: CatalogSnapshot, service: mf.ServiceManifest, force: bool, in_process: Collection[str]
) -> str | None:
    if service.name in in_process:
        return f"service {service.name!r} is served in-process by this engine's app"
    revision = catalog.revisions.get(service.name)
    if revision is None or force:
        return None
    old_deployment = catalog.deployments.get(revision.deployment_id)
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


def remove(catalog: CatalogSnapshot, deployment_id: str, *, force: bool) -> CatalogChange | Refusal:
    if deployment_id not in catalog.deployments:
        return Refusal(deployment_id, "no such deployment", code=404)
    serving = sorted(n for n, r in catalog.revisions.items() if r.deployment_id == deployment_id)
    if serving and not force:
        return Refusal(
            deployment_id, f"it still serves {', '.join(serving)}: pass force to remove it with its services"
        )
    change = CatalogChange(deployments={deployment_id: None})
    change.revisions.update(dict.fromkeys(serving))
    return change
