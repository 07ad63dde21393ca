"""The endpoint manifest a deployment answers at `GET /discover` (versions v1–v4).

One set of structs serves both sides: perdure's SDK encodes its services with them, and the
engine decodes and validates what a remote deployment announces before registering it.
Field names follow Restate's JSON schema (camelCase); durations are integers in milliseconds.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import msgspec

CONTENT_TYPE = "application/vnd.restate.endpointmanifest.v{}+json"
ACCEPT = ", ".join(CONTENT_TYPE.format(v) for v in (1, 2, 3, 4))
MIN_PROTOCOL = 5  # the service protocol versions this engine and SDK speak
MAX_PROTOCOL = 7

ServiceType = Literal["SERVICE", "VIRTUAL_OBJECT", "WORKFLOW"]
HandlerType = Literal["EXCLUSIVE", "SHARED", "WORKFLOW"]
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-.]*$")


class ManifestError(ValueError):
    """The deployment's manifest is malformed or incompatible (registration is refused)."""


class InputPayload(msgspec.Struct, omit_defaults=True, rename="camel"):
    required: bool = False
    content_type: str | None = None  # may hold wildcards like an Accept header; None: no body
    json_schema: Any = None


class OutputPayload(msgspec.Struct, omit_defaults=True, rename="camel"):
    content_type: str | None = None
    set_content_type_if_empty: bool = False
    json_schema: Any = None


class _Options(msgspec.Struct, omit_defaults=True, rename="camel"):
    """Per service / per handler options (v3: timeouts and retentions, v4: retry policy)."""

    documentation: str | None = None
    metadata: dict[str, str] | None = None
    inactivity_timeout: int | None = None
    abort_timeout: int | None = None
    journal_retention: int | None = None
    idempotency_retention: int | None = None
    workflow_completion_retention: int | None = None
    enable_lazy_state: bool | None = None
    ingress_private: bool | None = None
    retry_policy_initial_interval: int | None = None
    retry_policy_max_interval: int | None = None
    retry_policy_max_attempts: int | None = None
    retry_policy_exponentiation_factor: float | None = None
    retry_policy_on_max_attempts: Literal["PAUSE", "KILL"] | None = None


class HandlerManifest(_Options, omit_defaults=True, rename="camel"):
    name: str = ""
    ty: HandlerType | None = None  # absent for plain services
    input: InputPayload | None = None
    output: OutputPayload | None = None


class ServiceManifest(_Options, omit_defaults=True, rename="camel", kw_only=True):
    name: str
    ty: ServiceType  # required (Restate's schema), so always encoded
    handlers: list[HandlerManifest] = msgspec.field(default_factory=list)

    def handler_type(self, handler: HandlerManifest) -> HandlerType | None:
        """The handler's type with the defaults applied (objects: EXCLUSIVE, workflows: WORKFLOW)."""
        if handler.ty is not None:
            return handler.ty
        return {"SERVICE": None, "VIRTUAL_OBJECT": "EXCLUSIVE", "WORKFLOW": "WORKFLOW"}[self.ty]


class EndpointManifest(msgspec.Struct, omit_defaults=True, rename="camel"):
    protocol_mode: Literal["BIDI_STREAM", "REQUEST_RESPONSE"] | None = None
    min_protocol_version: int = 0
    max_protocol_version: int = 0
    services: list[ServiceManifest] = msgspec.field(default_factory=list)
    lambda_compression: str | None = None


def encode(manifest: EndpointManifest) -> bytes:
    return msgspec.json.encode(manifest)


def accepted_version(accept: str | None) -> int | None:
    """The highest manifest version named in an `accept` header (None when none is known).

    A missing header means v2, as Restate's Python SDK does.
    """
    if not accept:
        return 2
    for version in (4, 3, 2, 1):
        if f"endpointmanifest.v{version}+json" in accept:
            return version
    return None


def decode(body: bytes) -> EndpointManifest:
    """Parse and validate a manifest; raises `ManifestError` saying what is wrong."""
    try:
        manifest = msgspec.json.decode(body, type=EndpointManifest)
    except msgspec.ValidationError as e:
        raise ManifestError(f"invalid endpoint manifest: {e}") from None
    except msgspec.DecodeError as e:
        raise ManifestError(f"the endpoint manifest is not JSON: {e}") from None
    validate(manifest)
    return manifest


def validate(manifest: EndpointManifest) -> None:
    if manifest.protocol_mode is None:
        raise ManifestError("the manifest has no protocolMode")
    low, high = manifest.min_protocol_version, manifest.max_protocol_version
    if low <= 0 or high < low:
        raise ManifestError(f"invalid protocol versions: min {low}, max {high}")
    if high < MIN_PROTOCOL or low > MAX_PROTOCOL:
        raise ManifestError(
            f"unsupported service protocol versions {low}–{high}: perdure speaks "
            f"{MIN_PROTOCOL}–{MAX_PROTOCOL} (upgrade the SDK)"
        )
    if not manifest.services:
        raise ManifestError("the deployment announces no services")
    seen: set[str] = set()
    for service in manifest.services:
        if not _NAME.match(service.name):
            raise ManifestError(f"invalid service name {service.name!r}")
        if service.name in seen:
            raise ManifestError(f"service {service.name!r} is announced twice")
        seen.add(service.name)
        if not service.handlers:
            raise ManifestError(f"service {service.name!r} has no handlers")
        names: set[str] = set()
        runs = 0
        for handler in service.handlers:
            if not _NAME.match(handler.name):
                raise ManifestError(f"invalid handler name {service.name}/{handler.name!r}")
            if handler.name in names:
                raise ManifestError(f"handler {service.name}/{handler.name} is announced twice")
            names.add(handler.name)
            ty = service.handler_type(handler)
            if service.ty == "SERVICE" and ty is not None:
                raise ManifestError(f"{service.name}/{handler.name}: a service's handlers have no type")
            if service.ty == "VIRTUAL_OBJECT" and ty == "WORKFLOW":
                raise ManifestError(f"{service.name}/{handler.name}: objects have no WORKFLOW handlers")
            runs += ty == "WORKFLOW"
        if service.ty == "WORKFLOW" and runs != 1:
            raise ManifestError(f"workflow {service.name!r} must have exactly one WORKFLOW handler")


def negotiate(manifest: EndpointManifest, cap: int = MAX_PROTOCOL) -> int:
    """The protocol version new invocations use: the highest both sides speak."""
    return min(manifest.max_protocol_version, cap, MAX_PROTOCOL)
