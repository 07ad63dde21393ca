"""The ingress's OpenAPI 3.1 document, built from the services it serves (`GET /openapi.json`).

Each handler gets its call path and its `/send` path (objects and workflows with a `{key}`
segment), with the input's JSON schema where its serde has one; then Restate's paths that do not
depend on a handler (attach/output by id, awakeables, workflow attach/output, health). A
handler's `TerminalError` answers with its own status code (500 by default); the statuses listed
are the ingress's own and that default.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from perdure.sdk import serde
from perdure.sdk.service import Handler, ServiceBase, ServiceKind

_ERROR = {
    "type": "object",
    "properties": {"code": {"type": "integer"}, "message": {"type": "string"}, "source": {"type": "string"}},
    "required": ["code", "message"],
}
_ACCEPTED = {
    "type": "object",
    "properties": {
        "invocationId": {"type": "string"},
        "status": {"type": "string", "enum": ["Accepted", "PreviouslyAccepted"]},
        "executionTime": {"type": "string"},
    },
    "required": ["invocationId", "status"],
}
_REASONS = {
    400: "bad path, input, content type, delay or idempotency key",
    404: "no such service, handler or invocation",
    409: "a workflow's run was already invoked, or the handler failed with 409 (e.g. cancelled or killed)",
    413: "the body is larger than the ingress accepts",
    470: "the invocation has not completed yet",
    500: "the handler failed with a TerminalError (its own status code when it set one)",
    503: "the engine is stopping or stopped",
}
_CALL_ERRORS = (400, 404, 409, 413, 500, 503)
_SEND_ERRORS = (400, 404, 409, 413, 503)


def document(services: Iterable[ServiceBase], version: str) -> dict[str, Any]:
    """The OpenAPI document of an ingress serving `services`."""
    schemas: dict[str, Any] = {}
    paths: dict[str, Any] = {}
    for service in sorted(services, key=lambda s: s.name):
        for handler in sorted(service.handlers.values(), key=lambda h: h.name):
            base = (
                f"/{service.name}/{{key}}/{handler.name}"
                if handler.keyed
                else f"/{service.name}/{handler.name}"
            )
            paths[base] = {"post": _call(handler, schemas, send=False)}
            paths[base + "/send"] = {"post": _call(handler, schemas, send=True)}
        if service.kind is ServiceKind.WORKFLOW:
            for verb in ("attach", "output"):
                paths[f"/restate/workflow/{service.name}/{{key}}/{verb}"] = {
                    "get": _result(f"The result of {service.name}'s run for this key", verb, [_path("key")])
                }
    for verb in ("attach", "output"):
        paths[f"/restate/invocation/{{id}}/{verb}"] = {
            "get": _result("An invocation's result", verb, [_path("id", "the invocation id (inv_1…)")])
        }
    for verb, body in (("resolve", "the value (JSON)"), ("reject", "the reason (text)")):
        paths[f"/restate/awakeables/{{id}}/{verb}"] = {
            "post": {
                "summary": f"{verb.capitalize()} an awakeable; the body is {body}",
                "parameters": [_path("id", "the awakeable id (sign_1…)")],
                "requestBody": {"content": {"*/*": {"schema": {}}}},
                "responses": {
                    "202": {"description": "accepted (also when already completed)"},
                    **_errors((400, 413, 503)),
                },
            }
        }
    paths["/restate/health"] = {"get": {"summary": "Liveness", "responses": {"200": {"description": "up"}}}}
    paths["/openapi.json"] = {
        "get": {
            "summary": "This document",
            "responses": {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {}}}},
        }
    }
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "perdure ingress", "version": version},
        "paths": paths,
    }
    if schemas:
        document["components"] = {"schemas": schemas}
    return document


def _call(handler: Handler, schemas: dict[str, Any], *, send: bool) -> dict[str, Any]:
    what = "Send to (202 once accepted)" if send else "Call (the answer is its output)"
    operation: dict[str, Any] = {
        "summary": f"{what} {handler.qualified_name}",
        "operationId": f"{handler.service.name}.{handler.name}" + (".send" if send else ""),
    }
    parameters = [_path("key", "the object or workflow key")] if handler.keyed else []
    if not handler.workflow_run:
        parameters.append(
            {"name": "idempotency-key", "in": "header", "schema": {"type": "string", "minLength": 1}}
        )
    if send:
        parameters.append(
            {"name": "delay", "in": "query", "schema": {"type": "string"}, "description": "10s, 5m, PT1H …"}
        )
    if parameters:
        operation["parameters"] = parameters
    body = _body(handler.input_serde, schemas) if handler.takes_input else None
    if body is not None:
        operation["requestBody"] = body
    if send:
        ok = {"202": {"description": "accepted", "content": {"application/json": {"schema": _ACCEPTED}}}}
        operation["responses"] = {**ok, **_errors(_SEND_ERRORS)}
    else:
        output = handler.output_serde
        # Raw (bytes) outputs may be empty, and an empty answer carries no content type.
        json_output = output.content_type == serde.JSON
        content = {serde.JSON: {"schema": _schema(output, schemas)}} if json_output else {}
        operation["responses"] = {
            "200": {"description": "the handler's output", "content": content},
            **_errors(_CALL_ERRORS),
        }
    return operation


def _result(summary: str, verb: str, parameters: list[dict[str, Any]]) -> dict[str, Any]:
    errors = (400, 404, 409, 470, 500, 503) if verb == "output" else (400, 404, 409, 500, 503)
    wait = "waits for it" if verb == "attach" else "470 until it has one"
    return {
        "summary": f"{summary} ({wait})",
        "parameters": parameters,
        "responses": {"200": {"description": "the output"}, **_errors(errors)},
    }


def _body(input_serde: serde.Serde, schemas: dict[str, Any]) -> dict[str, Any] | None:
    content_type = input_serde.content_type
    if content_type is None:
        return None
    return {"required": False, "content": {content_type: {"schema": _schema(input_serde, schemas)}}}


def _schema(s: serde.Serde, schemas: dict[str, Any]) -> Any:
    """The serde's JSON schema, its `$defs` moved to the document's components."""
    schema = s.json_schema()
    if schema is None:
        return {}
    schema = dict(schema)
    for name, definition in schema.pop("$defs", {}).items():
        schemas.setdefault(name, _rewrite(definition))
    return _rewrite(schema)


def _rewrite(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            k: (
                v.replace("#/$defs/", "#/components/schemas/")
                if k == "$ref" and isinstance(v, str)
                else _rewrite(v)
            )
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_rewrite(v) for v in node]
    return node


def _path(name: str, description: str = "") -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "string", "minLength": 1},
        "description": description or name,
    }


def _errors(statuses: Iterable[int]) -> dict[str, Any]:
    return {
        str(s): {"description": _REASONS[s], "content": {"application/json": {"schema": _ERROR}}}
        for s in statuses
    }
