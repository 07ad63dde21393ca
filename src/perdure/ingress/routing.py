"""Paths of the ingress, resolved against the app's services (Restate's ingress API).

    /{service}/{handler}[/send]           /restate/call|send/{service}[/{key}]/{handler}
    /{object}/{key}/{handler}[/send]      /restate/invocation/{id}/attach|output
    /{workflow}/{key}/{handler}[/send]    /restate/invocation/{service}[/{key}]/{handler}/{idem}/attach|output
    /restate/health                       /restate/workflow/{workflow}/{key}/attach|output
    /restate/awakeables/{id}/resolve|reject   (short form /restate/a/{id}/resolve|reject)

(`{idem}` is an idempotency key.)

Whether a key follows the service name depends on the service's kind, so routing needs the
services (the app's and those of remote deployments).
Every path segment is URL-decoded (keys may contain `/` as `%2F`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol
from urllib.parse import unquote_to_bytes

from perdure.ingress.responses import bad_request, method_not_allowed, not_found
from perdure.protocol import awakeables, ids
from perdure.sdk.service import Handler, ServiceBase, ServiceKind


class Services(Protocol):
    """Where routing looks services up (an `Engine`: its app's and its deployments' services)."""

    def service(self, name: str) -> ServiceBase | None: ...


BAD_SERVICE_PATH = "bad path, expected either /:service-name/:handler or /:object-name/:object-key/:handler"
BAD_INVOCATION_PATH = (
    "bad path, expected /restate/invocation/:id/attach|output or "
    "/restate/invocation/:service[/:key]/:handler/:idempotency-key/attach|output"
)
BAD_API_PATH = "bad path, expected /restate/call|send/:service[/:key]/:handler"
BAD_WORKFLOW_PATH = "bad path, expected /restate/workflow/:workflow-name/:workflow-key/attach|output"
BAD_AWAKEABLE_PATH = "bad path, expected /restate/awakeables/:id/resolve|reject"

Verb = Literal["attach", "output"]
AwakeableVerb = Literal["resolve", "reject"]


@dataclass(frozen=True)
class Invoke:
    """Call (wait for the result) or send (202 at once) one handler."""

    handler: Handler
    key: str | None
    send: bool


@dataclass(frozen=True)
class Invocation:
    """Attach to (wait for) or read the output of one invocation."""

    verb: Verb
    invocation_id: str


@dataclass(frozen=True)
class Awakeable:
    """Resolve (the body is the value) or reject (the body is the reason) one awakeable."""

    verb: AwakeableVerb
    awakeable_id: str


@dataclass(frozen=True)
class Health:
    pass


Route = Invoke | Invocation | Awakeable | Health


def route(method: str, raw_path: bytes, app: Services) -> Route:
    """The route of a request; raises `IngressError` (400 bad path, 404 unknown, 405 method)."""
    segments = _segments(raw_path)
    if segments[0] != "restate":
        found: Route = _service_path(segments, app)
    else:
        found = _restate_path(segments[1:], app)
    if isinstance(found, Invoke):
        allowed: tuple[str, ...] = ("GET", "POST")
    elif isinstance(found, Awakeable):
        allowed = ("POST",)
    else:
        allowed = ("GET",)
    if method not in allowed:
        raise method_not_allowed(", ".join(allowed))
    return found


def _segments(raw_path: bytes) -> list[str]:
    if not raw_path.startswith(b"/") or raw_path.count(b"/") < 2:
        raise bad_request(BAD_SERVICE_PATH)
    try:
        return [unquote_to_bytes(part).decode("utf-8") for part in raw_path.split(b"/")[1:]]
    except UnicodeDecodeError as e:
        raise bad_request(f"bad path, cannot decode it as UTF-8: {e}") from None


def _service(app: Services, name: str) -> ServiceBase:
    service = app.service(name)
    if service is None:
        raise not_found(f"service '{name}' not found")
    return service


def _handler(service: ServiceBase, name: str) -> Handler:
    handler = service.handlers.get(name)
    if handler is None:
        raise not_found(f"handler '{name}' not found in service '{service.name}'")
    return handler


def _target(app: Services, parts: list[str], bad_path: str) -> tuple[Handler, str | None, list[str]]:
    """(handler, key, the segments after the handler) of `service[/key]/handler…`."""
    service = _service(app, parts[0])
    rest = parts[1:]
    key: str | None = None
    if service.kind is not ServiceKind.SERVICE:
        if not rest:
            raise bad_request(bad_path)
        key, rest = rest[0], rest[1:]
    if not rest:
        raise bad_request(bad_path)
    return _handler(service, rest[0]), key, rest[1:]


def _service_path(segments: list[str], app: Services) -> Invoke:
    service = _service(app, segments[0])
    rest = segments[1:]
    expected = 1 if service.kind is ServiceKind.SERVICE else 2  # [key,] handler
    if len(rest) < expected or len(rest) > expected + 1:
        raise bad_request(BAD_SERVICE_PATH)
    if len(rest) == expected + 1 and rest[-1] != "send":
        raise bad_request(BAD_SERVICE_PATH)
    handler, key, after = _target(app, segments, BAD_SERVICE_PATH)
    return Invoke(handler, key, send=after == ["send"])


def _restate_path(parts: list[str], app: Services) -> Route:
    verb, rest = (parts[0], parts[1:]) if parts else ("", [])
    if verb == "health" and not rest:
        return Health()
    if verb in ("call", "send"):
        if not rest:
            raise bad_request(BAD_API_PATH)
        handler, key, after = _target(app, rest, BAD_API_PATH)
        if after:
            raise bad_request(BAD_API_PATH)
        return Invoke(handler, key, send=verb == "send")
    if verb == "invocation":
        return _invocation_path(rest, app)
    if verb == "workflow":
        return _workflow_path(rest, app)
    if verb in ("awakeables", "a"):
        return _awakeable_path(rest)
    raise not_found("not found")


def _workflow_path(parts: list[str], app: Services) -> Invocation:
    """`{workflow}/{key}/attach|output`: the workflow run's invocation (its id comes from the key)."""
    if len(parts) != 3:
        raise bad_request(BAD_WORKFLOW_PATH)
    name, key, verb = parts
    service = _service(app, name)
    if service.kind is not ServiceKind.WORKFLOW:
        raise bad_request(f"service '{name}' is not a workflow: attach to its invocations by id instead")
    if verb not in ("attach", "output"):
        raise not_found("not found")
    return Invocation(_verb(verb), ids.workflow_id(service.name, key))


def _awakeable_path(parts: list[str]) -> Awakeable:
    if len(parts) != 2:
        raise bad_request(BAD_AWAKEABLE_PATH)
    awakeable_id, verb = parts
    if verb not in ("resolve", "reject"):
        raise not_found("not found")
    try:
        awakeables.parse(awakeable_id)
    except ValueError as e:
        raise bad_request(f"bad awakeable id: {e}") from None
    return Awakeable("resolve" if verb == "resolve" else "reject", awakeable_id)


def _invocation_path(parts: list[str], app: Services) -> Invocation:
    if len(parts) < 2:
        raise bad_request(BAD_INVOCATION_PATH)
    if len(parts) == 2:
        invocation_id, verb = parts
        if verb not in ("attach", "output"):
            raise not_found("not found")
        try:
            ids.to_bytes(invocation_id)
        except ValueError as e:
            raise bad_request(f"bad invocation id '{invocation_id}': {e}") from None
        return Invocation(_verb(verb), invocation_id)
    service = _service(app, parts[0])
    expected = 4 if service.kind is ServiceKind.SERVICE else 5  # svc [key] handler idem verb
    if len(parts) != expected:
        raise bad_request(BAD_INVOCATION_PATH)
    if parts[-1] not in ("attach", "output"):
        raise not_found("not found")
    key = parts[1] if expected == 5 else None
    handler, idempotency_key = parts[-3], parts[-2]
    if not idempotency_key:
        raise bad_request("an idempotency key must not be empty")
    return Invocation(_verb(parts[-1]), ids.idempotent_id(service.name, handler, key, idempotency_key))


def _verb(text: str) -> Verb:
    return "attach" if text == "attach" else "output"
