"""The admin API's OpenAPI 3.1 document, served at `GET /openapi.json` (as Restate's admin does).

One row per route of `perdure.admin.app.Admin`: its success status, the error statuses it can
answer (every error body is `{"message", "restate_code"}`), its query parameters and its JSON
body. `tests/admin/test_openapi.py` checks that every route is here and fuzzes them all.
"""

from __future__ import annotations

from typing import Any

from perdure.admin import activity, keys, poison
from perdure.admin.invocations import MAX_LIMIT
from perdure.storage.api import Status

ARROW_STREAM = "application/vnd.apache.arrow.stream"

_ERROR = {
    "type": "object",
    "properties": {"message": {"type": "string"}, "restate_code": {"type": ["string", "null"]}},
    "required": ["message"],
}
_STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}
_CLUSTER = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "properties": _STRINGS},
    "required": ["name", "properties"],
}
_SUBSCRIPTION = {
    "type": "object",
    "properties": {"source": {"type": "string"}, "sink": {"type": "string"}, "options": _STRINGS},
    "required": ["source", "sink"],
}
_DEPLOYMENT = {
    "type": "object",
    "properties": {
        "uri": {"type": "string"},
        "additional_headers": _STRINGS,
        "use_http_11": {"type": "boolean"},
        "force": {"type": "boolean"},
        "dry_run": {"type": "boolean"},
    },
    "required": ["uri"],
}
_QUERY = {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}
_LIST_INVOCATIONS = [
    ("status", {"type": "string", "enum": [s.value for s in Status]}),
    ("service", {"type": "string"}),
    ("handler", {"type": "string"}),
    ("key", {"type": "string"}),
    ("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}),
    ("cursor", {"type": "string"}),
    ("order", {"type": "string", "enum": ["asc", "desc"]}),
    ("deployment", {"type": "string"}),
    ("q", {"type": "string"}),
    ("error", {"type": "string"}),
    ("created_after", {"type": "string"}),
    ("created_before", {"type": "string"}),
]
_ID = "the invocation id (inv_1…)"

# (method, path, summary, success statuses, error statuses, query parameters, body schema)
Route = tuple[str, str, str, tuple[int, ...], tuple[int, ...], list[tuple[str, Any]], Any]
ROUTES: list[Route] = [
    ("GET", "/openapi.json", "This document", (200,), (), [], None),
    ("GET", "/health", "Whether the engine runs", (200,), (503,), [], None),
    ("GET", "/version", "Server and admin API versions", (200,), (), [], None),
    ("GET", "/cluster", "Nodes, partition leases and owners, backlog", (200,), (503,), [], None),
    (
        "GET",
        "/activity",
        "Invocations per status and per time bucket",
        (200,),
        (400, 503),
        [("minutes", {"type": "integer", "minimum": 1, "maximum": activity.MAX_MINUTES})],
        None,
    ),
    ("GET", "/metrics", "Prometheus metrics (text)", (200,), (503,), [], None),
    ("GET", "/services", "Every service and its handlers", (200,), (503,), [], None),
    ("GET", "/services/{name}", "One service", (200,), (404, 503), [], None),
    (
        "GET",
        "/services/{name}/keys",
        "The keys of a virtual object",
        (200,),
        (400, 404, 503),
        [
            ("prefix", {"type": "string"}),
            ("limit", {"type": "integer", "minimum": 1, "maximum": keys.MAX_KEYS}),
        ],
        None,
    ),
    ("GET", "/services/{name}/keys/{key}", "One key: state, holder, queue", (200,), (404, 503), [], None),
    ("GET", "/invocations", "Invocations, oldest first", (200,), (400, 503), _LIST_INVOCATIONS, None),
    ("GET", "/invocations/{id}", "An invocation with its journal", (200,), (400, 404, 503), [], None),
    (
        "DELETE",
        "/invocations/{id}",
        "Cancel, kill or purge (Restate's older form)",
        (202,),
        (400, 404, 409, 503),
        [("mode", {"type": "string", "enum": ["cancel", "kill", "purge"]})],
        None,
    ),
    *(
        (
            "PATCH",
            f"/invocations/{{id}}/{verb}",
            f"{verb.capitalize()} an invocation",
            (status,),
            (400, 404, 409, 503),
            [],
            None,
        )
        for verb, status in (("cancel", 202), ("kill", 200), ("purge", 200), ("pause", 200), ("resume", 200))
    ),
    ("GET", "/state/{service}/{key}", "An object's state", (200,), (404, 503), [], None),
    (
        "POST",
        "/query",
        "Read-only SQL in Restate's schema and dialect (Arrow IPC, or JSON when accepted);"
        " dialect=sqlite: perdure's SQLite views",
        (200,),
        (400, 503),
        [("dialect", {"type": "string", "enum": ["restate", "sqlite"]})],
        _QUERY,
    ),
    ("GET", "/kafka-clusters", "Registered Kafka clusters", (200,), (503,), [], None),
    ("POST", "/kafka-clusters", "Register a Kafka cluster", (200, 201), (400, 409, 503), [], _CLUSTER),
    ("GET", "/kafka-clusters/{name}", "One Kafka cluster", (200,), (404, 503), [], None),
    (
        "PATCH",
        "/kafka-clusters/{name}",
        "Replace a cluster's properties",
        (200,),
        (400, 404, 503),
        [],
        {"type": "object", "properties": {"properties": _STRINGS}, "required": ["properties"]},
    ),
    ("DELETE", "/kafka-clusters/{name}", "Remove an unused cluster", (200,), (404, 409, 503), [], None),
    ("GET", "/subscriptions", "Subscriptions with per-partition figures", (200,), (503,), [], None),
    (
        "POST",
        "/subscriptions",
        "Subscribe a handler to a topic",
        (200, 201),
        (400, 409, 503),
        [],
        _SUBSCRIPTION,
    ),
    ("GET", "/subscriptions/{id}", "One subscription", (200,), (404, 503), [], None),
    (
        "GET",
        "/subscriptions/{id}/failures",
        "A subscription's failed records",
        (200,),
        (400, 404, 503),
        [("limit", {"type": "integer", "minimum": 1, "maximum": poison.MAX_LIMIT})],
        None,
    ),
    ("DELETE", "/subscriptions/{id}", "Stop a subscription", (202,), (404, 503), [], None),
    (
        "GET",
        "/dead-letters",
        "Parked Kafka records (on.failure=park|topic:NAME), in their original order",
        (200,),
        (400, 404, 503),
        [
            ("subscription", {"type": "string"}),
            ("key", {"type": "string"}),
            ("state", {"type": "string", "enum": ["parked", "redriven", "all"]}),
            ("limit", {"type": "integer", "minimum": 1, "maximum": 10_000}),
        ],
        None,
    ),
    (
        "POST",
        "/dead-letters/redrive",
        "Re-drive the parked records of a subscription and/or key, in their original order",
        (200,),
        (400, 404, 409, 503),
        [],
        {"type": "object", "properties": {"subscription": {"type": "string"}, "key": {"type": "string"}}},
    ),
    ("GET", "/dead-letters/{id}", "One parked record and what re-drive did", (200,), (404, 503), [], None),
    ("POST", "/dead-letters/{id}/redrive", "Re-drive one parked record", (200,), (404, 409, 503), [], None),
    ("POST", "/dead-letters/{id}/discard", "Give a parked record up", (200,), (404, 409, 503), [], None),
    ("GET", "/deployments", "Registered deployments", (200,), (503,), [], None),
    (
        "POST",
        "/deployments",
        "Discover and register a deployment",
        (200, 201),
        (400, 409, 503),
        [],
        _DEPLOYMENT,
    ),
    ("GET", "/deployments/{id}", "One deployment with its services", (200,), (404, 503), [], None),
    (
        "DELETE",
        "/deployments/{id}",
        "Remove a deployment",
        (202,),
        (400, 404, 409, 503),
        [("force", {"type": "boolean"})],
        None,
    ),
]

_PARAMETER_DOCS = {"id": _ID, "name": "a name", "service": "a service", "key": "an object key"}


def document(version: str) -> dict[str, Any]:
    """The OpenAPI document of the admin API."""
    paths: dict[str, dict[str, Any]] = {}
    for method, path, summary, ok, errors, query, body in ROUTES:
        media = "text/plain" if path == "/metrics" else "application/json"
        operation: dict[str, Any] = {"summary": summary, "responses": _responses(ok, errors, media)}
        if path == "/query":  # Arrow IPC unless the client accepts JSON, as restate-server answers
            for status in ok:
                operation["responses"][str(status)]["content"][ARROW_STREAM] = {}
        parameters = [
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": {"type": "string", "minLength": 1},
                "description": _PARAMETER_DOCS.get(name, name),
            }
            for name in _path_parameters(path)
        ]
        parameters += [{"name": name, "in": "query", "schema": schema} for name, schema in query]
        if parameters:
            operation["parameters"] = parameters
        if body is not None:
            operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
        paths.setdefault(path, {})[method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "perdure admin API", "version": version},
        "paths": paths,
    }


def _responses(ok: tuple[int, ...], errors: tuple[int, ...], media: str) -> dict[str, Any]:
    answers: dict[str, Any] = {str(s): {"description": "done", "content": {media: {}}} for s in ok}
    for status in (*errors, 405):  # 405: a method the path does not take
        answers[str(status)] = {
            "description": "refused (the message says why)",
            "content": {"application/json": {"schema": _ERROR}},
        }
    return answers


def _path_parameters(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{")]
