"""Deployments in the admin API, in Restate's shapes.

    POST /deployments {"uri": "http://127.0.0.1:9080", "force": false, "use_http_11": false,
                       "additional_headers": {}, "dry_run": false}
      → 201 {"id": "dp_…", "services": [...]}     (200 when `force` replaced a registration)
    GET /deployments, GET /deployments/{id}
    DELETE /deployments/{id}?force=true            → 202

Discovery happens before the answer: an unreachable endpoint or a bad manifest is a 400 naming
what went wrong, a clash with registered services a 409 saying how to override it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from perdure.admin.http import HTTPError, Request, Response
from perdure.admin.services import service_json
from perdure.errors import ConflictError, InvalidInputError, UnknownTargetError
from perdure.protocol import manifest as mf
from perdure.runtime.deployments import DiscoveryError, RemoteService, discover
from perdure.storage.api import Deployment

if TYPE_CHECKING:
    from perdure.runtime.node import Engine

Endpoint = Callable[[Request], Awaitable[Response]]
_PROTOCOL_TYPE = {"BIDI_STREAM": "BidiStream", "REQUEST_RESPONSE": "RequestResponse"}
_HTTP_VERSION = {"1.1": "HTTP/1.1", "2": "HTTP/2.0"}


def deployment_json(deployment: Deployment, engine: Engine, *, full: bool = False) -> dict[str, Any]:
    served = [s for s in engine.remote_services().values() if s.deployment_id == deployment.id]
    services: list[dict[str, Any]]
    if full:
        services = [service_json(s) for s in served]
    else:
        services = [{"name": s.name, "revision": s.revision} for s in served]
    return {
        "id": deployment.id,
        "uri": deployment.uri,
        "protocol_type": _PROTOCOL_TYPE.get(deployment.protocol_mode, deployment.protocol_mode),
        "http_version": _HTTP_VERSION.get(deployment.http_version, deployment.http_version),
        "min_protocol_version": deployment.min_protocol_version,
        "max_protocol_version": deployment.max_protocol_version,
        "protocol_version": deployment.protocol_version,
        "additional_headers": deployment.additional_headers,
        "created_at": deployment.created_at,
        "services": services,
    }


def _flag(value: Any, name: str) -> bool:
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise HTTPError(400, f"{name!r} must be true or false")


class Endpoints:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def routes(self) -> list[tuple[str, str, Endpoint]]:
        """(method, path pattern, endpoint) for the admin app's router."""
        return [
            ("GET", "/deployments", self.list_deployments),
            ("POST", "/deployments", self.register),
            ("GET", "/deployments/(?P<id>[^/]+)", self.get_deployment),
            ("DELETE", "/deployments/(?P<id>[^/]+)", self.delete_deployment),
        ]

    async def list_deployments(self, request: Request) -> Response:
        found = [deployment_json(d, self.engine) for d in self.engine.deployments()]
        return Response(200, {"deployments": found})

    async def get_deployment(self, request: Request) -> Response:
        deployment = self.engine.deployment(request.params["id"])
        if deployment is None:
            raise HTTPError(404, f"no deployment {request.params['id']!r}")
        return Response(200, deployment_json(deployment, self.engine, full=True))

    async def register(self, request: Request) -> Response:
        body = request.json()
        if not isinstance(body, dict) or not isinstance(body.get("uri"), str) or not body["uri"]:
            raise HTTPError(400, 'send a JSON object {"uri": "http://HOST:PORT"}')
        headers = body.get("additional_headers") or {}
        if not isinstance(headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
        ):
            raise HTTPError(400, "'additional_headers' must be a JSON object of strings")
        use_http_11 = _flag(body.get("use_http_11"), "use_http_11")
        force = _flag(body.get("force"), "force")
        try:
            if _flag(body.get("dry_run"), "dry_run"):
                _, manifest, http_version = await discover(
                    body["uri"], use_http_11=use_http_11, headers=headers
                )
                return Response(200, _dry_run(body["uri"], manifest, http_version))
            deployment, replaced = await self.engine.register_deployment(
                body["uri"], force=force, use_http_11=use_http_11, additional_headers=headers
            )
        except (DiscoveryError, InvalidInputError) as e:
            raise HTTPError(400, str(e)) from None
        except ConflictError as e:
            raise HTTPError(409, str(e)) from None
        answer = deployment_json(deployment, self.engine, full=True)
        return Response(200 if replaced else 201, answer, {"location": f"/deployments/{deployment.id}"})

    async def delete_deployment(self, request: Request) -> Response:
        force = _flag(request.query.get("force"), "force")
        try:
            await self.engine.remove_deployment(request.params["id"], force=force)
        except UnknownTargetError as e:
            raise HTTPError(404, str(e)) from None
        except ConflictError as e:
            raise HTTPError(409, str(e)) from None
        return Response(202, {})


def _dry_run(uri: str, manifest: mf.EndpointManifest, http_version: str) -> dict[str, Any]:
    """What a registration would announce, without registering."""
    placeholder = Deployment(
        id="dp_dry_run",
        uri=uri,
        protocol_mode=manifest.protocol_mode or "",
        http_version=http_version,
        min_protocol_version=manifest.min_protocol_version,
        max_protocol_version=manifest.max_protocol_version,
        protocol_version=mf.negotiate(manifest),
    )
    services = [service_json(RemoteService(placeholder, s, 0)) for s in manifest.services]
    return {
        "id": None,
        "uri": uri,
        "protocol_type": _PROTOCOL_TYPE.get(placeholder.protocol_mode),
        "http_version": _HTTP_VERSION.get(http_version),
        "min_protocol_version": placeholder.min_protocol_version,
        "max_protocol_version": placeholder.max_protocol_version,
        "protocol_version": placeholder.protocol_version,
        "services": services,
    }
