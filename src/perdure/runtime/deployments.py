"""Remote deployments: discovery, and the services a deployment serves as the engine sees them.

    deployment, _ = await engine.register_deployment("http://127.0.0.1:9080")
    await engine.generic_call("Counter", "add", b"5", key="a")     # runs on that deployment

Discovery asks the endpoint's
`GET /discover` over the HTTP version invocations will use — HTTP/2 without TLS (h2c, prior
knowledge) unless `use_http_11` — then the engine validates the manifest and records the
deployment in the catalog (`perdure.runtime.catalog`); its services are routable from then on.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import msgspec

from perdure.engine import deployments as catalog
from perdure.errors import InvalidInputError, PerdureError, SerdeError
from perdure.protocol import manifest as mf
from perdure.protocol.ids import resource_id
from perdure.retry import DEFAULT
from perdure.sdk import serde
from perdure.sdk.options import HandlerOptions
from perdure.sdk.service import Handler, HandlerKind, ServiceBase, ServiceKind
from perdure.storage.api import Deployment

_SERVICE_KIND = {
    "SERVICE": ServiceKind.SERVICE,
    "VIRTUAL_OBJECT": ServiceKind.OBJECT,
    "WORKFLOW": ServiceKind.WORKFLOW,
}
_HANDLER_KIND = {
    "EXCLUSIVE": HandlerKind.EXCLUSIVE,
    "SHARED": HandlerKind.SHARED,
    "WORKFLOW": HandlerKind.WORKFLOW,
}


class DiscoveryError(PerdureError):
    """The deployment could not be reached, or answered something that is not a usable manifest."""


@dataclass(frozen=True)
class RemoteSerde:
    """A remote handler's payload as its manifest describes it: bytes passed through, checked
    only for what the manifest promises (a required body, well-formed JSON)."""

    content_type: str | None
    schema: Any = None
    required: bool = False

    def encode(self, value: Any) -> bytes:
        if isinstance(value, bytes | bytearray | memoryview):
            return bytes(value)
        if value is None:
            return b""
        return msgspec.json.encode(value)

    def decode(self, data: bytes) -> bytes:
        if not data:
            if self.required:
                raise SerdeError("this handler requires a body")
            return data
        if self.content_type is not None and self.content_type.split(";")[0].strip().endswith("json"):
            try:
                msgspec.json.decode(data)
            except msgspec.DecodeError as e:
                raise SerdeError(f"input is not valid JSON: {e}") from e
        return data

    def json_schema(self) -> dict[str, Any] | None:
        return self.schema if isinstance(self.schema, dict) else None


async def _not_in_process(*args: Any) -> None:
    raise PerdureError("this handler runs on a remote deployment, not in this process")


class RemoteService(ServiceBase):
    """A service announced by a remote deployment (the engine routes to it; no code here)."""

    def __init__(self, deployment: Deployment, service: mf.ServiceManifest, revision: int) -> None:
        super().__init__(service.name, options=HandlerOptions(documentation=service.documentation))
        self.kind = _SERVICE_KIND[service.ty]
        self.deployment_id = deployment.id
        self.revision = revision
        for h in service.handlers:
            ty = service.handler_type(h)
            inp, out = h.input, h.output
            self.handlers[h.name] = Handler(
                service=self,
                name=h.name,
                fn=_not_in_process,
                kind=_HANDLER_KIND[ty] if ty is not None else None,
                takes_input=True,
                input_serde=RemoteSerde(
                    inp.content_type if inp is not None else "*/*",
                    inp.json_schema if inp is not None else None,
                    inp.required if inp is not None else False,
                ),
                output_serde=RemoteSerde(
                    out.content_type if out is not None else serde.JSON,
                    out.json_schema if out is not None else None,
                ),
                options=_handler_options(service, h),
            )


def _handler_options(service: mf.ServiceManifest, handler: mf.HandlerManifest) -> HandlerOptions:
    info = catalog.handler_info(service, handler)
    return HandlerOptions(
        retry_policy=None if info.retry_policy is DEFAULT else info.retry_policy,
        inactivity_timeout=timedelta(milliseconds=info.inactivity_timeout_ms),
        idempotency_retention=timedelta(milliseconds=info.idempotency_retention_ms),
        journal_retention=timedelta(milliseconds=info.journal_retention_ms),
        workflow_retention=timedelta(milliseconds=info.workflow_retention_ms),
        documentation=handler.documentation,
    )


def deployment_id() -> str:
    """A new `dp_…` id, a ULID (48-bit creation time in ms, 80 random bits) in Restate's form."""
    ulid = (time.time_ns() // 1_000_000).to_bytes(6, "big") + secrets.token_bytes(10)
    return resource_id("dp", ulid)


async def discover(
    uri: str, *, use_http_11: bool = False, headers: Mapping[str, str] | None = None, wait: float = 10.0
) -> tuple[bytes, mf.EndpointManifest, str]:
    """GET `{uri}/discover`: (the manifest as received, decoded and validated, HTTP version used)."""
    if not uri.startswith(("http://", "https://")):
        raise InvalidInputError(f"invalid deployment URI {uri!r}: use http://HOST:PORT[/PATH]")
    http_version = "1.1" if use_http_11 else "2"
    url = uri.rstrip("/") + "/discover"
    request_headers = {**(headers or {}), "accept": mf.ACCEPT}
    try:
        async with httpx.AsyncClient(http1=use_http_11, http2=not use_http_11, timeout=wait) as client:
            response = await client.get(url, headers=request_headers)
    except httpx.HTTPError as e:
        hint = (
            ""
            if use_http_11
            else " (discovery uses HTTP/2 without TLS; for an HTTP/1.1-only server register with use_http_11)"
        )
        raise DiscoveryError(f"cannot reach {url}: {type(e).__name__}: {e}{hint}") from e
    if response.status_code != 200:
        raise DiscoveryError(f"{url} answered {response.status_code}: {response.text[:300]}")
    content_type = response.headers.get("content-type", "")
    if "endpointmanifest" not in content_type and "json" not in content_type:
        raise DiscoveryError(f"{url} answered content-type {content_type!r}, not an endpoint manifest")
    try:
        manifest = mf.decode(response.content)
    except mf.ManifestError as e:
        raise DiscoveryError(f"{url}: {e}") from e
    if manifest.protocol_mode == "BIDI_STREAM" and http_version == "1.1":
        raise DiscoveryError(f"{url} wants BIDI_STREAM, which needs HTTP/2: register it without use_http_11")
    return response.content, manifest, http_version
