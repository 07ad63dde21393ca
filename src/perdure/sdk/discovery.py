"""The endpoint manifest of an `App` served as a deployment (`GET /discover`).

Services, handler types, input/output content types with JSON schemas derived from the handlers'
type hints, and the handlers' options as the manifest's timeout/retention/retry fields. Which
fields a manifest version may carry: documentation from v2, timeouts and retentions from v3,
the retry policy from v4. An app whose options need a newer version than the caller accepts is
refused (`ManifestVersionError`) rather than silently described without them.

    manifest(app, version=4, protocol_mode="REQUEST_RESPONSE")
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

from perdure.protocol.manifest import (
    MAX_PROTOCOL,
    MIN_PROTOCOL,
    EndpointManifest,
    HandlerManifest,
    HandlerType,
    InputPayload,
    OutputPayload,
    ServiceManifest,
    ServiceType,
)
from perdure.protocol.manifest import encode as mf_encode
from perdure.sdk.options import HandlerOptions
from perdure.sdk.service import App, Handler, HandlerKind, ServiceBase, ServiceKind

ProtocolMode = Literal["BIDI_STREAM", "REQUEST_RESPONSE"]

_SERVICE_TYPES: dict[ServiceKind, ServiceType] = {
    ServiceKind.SERVICE: "SERVICE",
    ServiceKind.OBJECT: "VIRTUAL_OBJECT",
    ServiceKind.WORKFLOW: "WORKFLOW",
}
_HANDLER_TYPES: dict[HandlerKind, HandlerType] = {
    HandlerKind.EXCLUSIVE: "EXCLUSIVE",
    HandlerKind.SHARED: "SHARED",
    HandlerKind.WORKFLOW: "WORKFLOW",
}

# Manifest fields and the version that introduced them.
_V3_FIELDS = (
    "inactivity_timeout",
    "abort_timeout",
    "journal_retention",
    "idempotency_retention",
    "workflow_completion_retention",
    "enable_lazy_state",
    "ingress_private",
)
_V4_FIELDS = (
    "retry_policy_initial_interval",
    "retry_policy_max_interval",
    "retry_policy_max_attempts",
    "retry_policy_exponentiation_factor",
    "retry_policy_on_max_attempts",
)


class ManifestVersionError(ValueError):
    """The app's options cannot be described in the manifest version the caller accepts."""


def _ms(value: timedelta | None) -> int | None:
    return None if value is None else int(value.total_seconds() * 1000)


def _option_fields(options: HandlerOptions, *, workflow_run: bool) -> dict[str, Any]:
    """Manifest fields (snake_case) for the options that are set."""
    fields: dict[str, Any] = {
        "documentation": options.documentation,
        "inactivity_timeout": _ms(options.inactivity_timeout),
        "journal_retention": _ms(options.journal_retention),
        "idempotency_retention": _ms(options.idempotency_retention),
    }
    if workflow_run:  # the manifest allows it only on a workflow's run handler
        fields["workflow_completion_retention"] = _ms(options.workflow_retention)
    policy = options.retry_policy
    if policy is not None:
        fields.update(
            retry_policy_initial_interval=_ms(policy.initial_interval),
            retry_policy_max_interval=_ms(policy.max_interval),
            retry_policy_max_attempts=policy.max_attempts,  # None (unlimited): the server's default
            retry_policy_exponentiation_factor=policy.factor,
            retry_policy_on_max_attempts=policy.on_max_attempts.upper(),
        )
    return {name: value for name, value in fields.items() if value is not None}


def _payloads(handler: Handler) -> tuple[InputPayload, OutputPayload]:
    inp, out = handler.input_serde, handler.output_serde
    if handler.takes_input and inp.content_type is not None:
        input_payload = InputPayload(
            required=False, content_type=inp.content_type, json_schema=inp.json_schema()
        )
    else:
        input_payload = InputPayload()  # no body expected
    if out.content_type is None:
        output_payload = OutputPayload()  # the handler returns nothing
    else:
        output_payload = OutputPayload(content_type=out.content_type, json_schema=out.json_schema())
    return input_payload, output_payload


def _handler(handler: Handler, service_fields: dict[str, Any]) -> HandlerManifest:
    input_payload, output_payload = _payloads(handler)
    own = _option_fields(handler.options, workflow_run=handler.workflow_run)
    # A handler's options are already merged over its service's: repeat only what differs.
    own = {name: value for name, value in own.items() if service_fields.get(name) != value}
    return HandlerManifest(
        name=handler.name,
        ty=_HANDLER_TYPES[handler.kind] if handler.kind is not None else None,
        input=input_payload,
        output=output_payload,
        **own,
    )


def _service(service: ServiceBase) -> ServiceManifest:
    fields = _option_fields(service.options, workflow_run=False)
    return ServiceManifest(
        name=service.name,
        ty=_SERVICE_TYPES[service.kind],
        handlers=[_handler(h, fields) for h in service.handlers.values()],
        **fields,
    )


def required_version(manifest: EndpointManifest) -> int:
    """The lowest manifest version able to carry every field that is set."""
    parts: list[Any] = [*manifest.services, *(h for s in manifest.services for h in s.handlers)]
    if any(getattr(p, name) is not None for p in parts for name in _V4_FIELDS):
        return 4
    if any(getattr(p, name) is not None for p in parts for name in _V3_FIELDS):
        return 3
    return 1


def manifest(app: App, *, version: int = 4, protocol_mode: ProtocolMode = "BIDI_STREAM") -> EndpointManifest:
    """The app's manifest in `version` (1–4); raises `ManifestVersionError` when it cannot fit."""
    result = EndpointManifest(
        protocol_mode=protocol_mode,
        min_protocol_version=MIN_PROTOCOL,
        max_protocol_version=MAX_PROTOCOL,
        services=[_service(s) for s in app.services],
    )
    needed = required_version(result)
    if needed > version:
        raise ManifestVersionError(
            f"this endpoint's handler options need endpoint manifest v{needed} or newer, "
            f"but the request accepts at most v{version}"
        )
    if version < 2:  # documentation arrived in v2: dropping it changes no behaviour
        for part in [*result.services, *(h for s in result.services for h in s.handlers)]:
            part.documentation = None
    return result


def encode(manifest: EndpointManifest) -> bytes:
    """JSON for the wire."""
    return mf_encode(manifest)
