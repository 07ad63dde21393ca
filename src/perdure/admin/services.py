"""The `/services` resources: the in-process app's services and those of remote deployments, in
Restate's admin JSON shape."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

from perdure.admin.render import duration
from perdure.defaults import INACTIVITY_TIMEOUT, RETENTION
from perdure.retry import DEFAULT, RetryPolicy
from perdure.sdk.options import HandlerOptions
from perdure.sdk.service import Handler, HandlerKind, ServiceBase, ServiceKind

DEPLOYMENT_ID = "in-process"

_SERVICE_TY = {
    ServiceKind.SERVICE: "Service",
    ServiceKind.OBJECT: "VirtualObject",
    ServiceKind.WORKFLOW: "Workflow",
}
_HANDLER_TY = {
    HandlerKind.EXCLUSIVE: "Exclusive",
    HandlerKind.SHARED: "Shared",
    HandlerKind.WORKFLOW: "Workflow",
}


def retry_policy(policy: RetryPolicy | None) -> dict[str, Any]:
    p = policy or DEFAULT
    return {
        "initial_interval": duration(p.initial_interval),
        "factor": float(p.factor),
        "max_interval": duration(p.max_interval),
        "max_attempts": p.max_attempts,
        "on_max_attempts": p.on_max_attempts,
    }


def _documentation(handler: Handler) -> str | None:
    if handler.options.documentation or getattr(handler.service, "deployment_id", None):
        return handler.options.documentation
    return inspect.getdoc(handler.fn) or None


def handler_json(handler: Handler) -> dict[str, Any]:
    return {
        "name": handler.name,
        "ty": None if handler.kind is None else _HANDLER_TY[handler.kind],
        "input_content_type": handler.input_serde.content_type,
        "output_content_type": handler.output_serde.content_type,
        "input_json_schema": handler.input_serde.json_schema(),
        "output_json_schema": handler.output_serde.json_schema(),
        "documentation": _documentation(handler),
    }


def deployment_of(service: ServiceBase) -> str:
    """`in-process` for the engine's own app, else the id of the deployment serving it."""
    return str(getattr(service, "deployment_id", DEPLOYMENT_ID))


def service_json(service: ServiceBase) -> dict[str, Any]:
    options: HandlerOptions = service.options
    return {
        "name": service.name,
        "ty": _SERVICE_TY[service.kind],
        "deployment_id": deployment_of(service),
        "revision": getattr(service, "revision", 1),
        "handlers": [handler_json(h) for h in service.handlers.values()],
        "retry_policy": retry_policy(options.retry_policy),
        "idempotency_retention": duration(options.idempotency_retention or RETENTION),
        "journal_retention": duration(options.journal_retention or RETENTION),
        "inactivity_timeout": duration(options.inactivity_timeout or INACTIVITY_TIMEOUT),
    }


def list_services(services: Sequence[ServiceBase]) -> dict[str, Any]:
    return {"services": [service_json(s) for s in services]}


def service_type(service: ServiceBase | None) -> str | None:
    """Restate's SQL spelling of a service's type (`service`, `virtual_object`, `workflow`)."""
    if service is None:
        return None
    return {"Service": "service", "VirtualObject": "virtual_object", "Workflow": "workflow"}[
        _SERVICE_TY[service.kind]
    ]
