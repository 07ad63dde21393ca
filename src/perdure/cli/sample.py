"""Ready-to-paste `curl` lines for an app's handlers, with a sample body built from the input schema.

    curl_example(app, "http://127.0.0.1:8080")
    # curl -X POST http://127.0.0.1:8080/userUpdates/alice/updateUserEvent \
    #   -H 'content-type: application/json' -d '{"profile": {"name": "alice"}, ...}'
"""

from __future__ import annotations

import json
import re
import shlex
from typing import Any

from perdure.sdk.serde import BytesSerde, NoneSerde
from perdure.sdk.service import App, Handler

SAMPLE_KEY = "alice"
_NAMEISH = re.compile(r"name|user|key|id$|who|customer|account", re.IGNORECASE)
_MAX_DEPTH = 6


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        node: Any = root
        for part in ref[2:].split("/"):
            node = node.get(part, {}) if isinstance(node, dict) else {}
        return node if isinstance(node, dict) else {}
    return schema


def sample_from_schema(
    schema: dict[str, Any], root: dict[str, Any] | None = None, depth: int = 0, name: str = ""
) -> Any:
    """A plausible JSON value for a JSON schema (msgspec's or pydantic's): enough to try a handler.

    `name` is the property the value is for: strings named like a name or key get `"alice"`."""
    root = root if root is not None else schema
    schema = _resolve(schema, root)
    if depth > _MAX_DEPTH:
        return None
    if "examples" in schema and isinstance(schema["examples"], list) and schema["examples"]:
        return schema["examples"][0]
    if "default" in schema and schema["default"] not in (None, [], {}):
        return schema["default"]
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for combinator in ("anyOf", "oneOf", "allOf"):
        options = schema.get(combinator)
        if isinstance(options, list) and options:
            usable = [o for o in options if isinstance(o, dict) and _resolve(o, root).get("type") != "null"]
            return sample_from_schema((usable or options)[0], root, depth + 1, name)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), None)
    if kind == "object" or "properties" in schema:
        props = schema.get("properties") or {}
        if props:
            return {prop: sample_from_schema(sub, root, depth + 1, prop) for prop, sub in props.items()}
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            return {"name": sample_from_schema(extra, root, depth + 1, "name")}
        return {}
    if kind == "array":
        items = schema.get("items") or {}
        if isinstance(items, dict) and items:
            return [sample_from_schema(items, root, depth + 1, name)]
        prefix = schema.get("prefixItems")
        if isinstance(prefix, list):
            return [sample_from_schema(p, root, depth + 1, name) for p in prefix]
        return []
    if kind == "string":
        fmt = schema.get("format")
        by_format = {"date-time": "2025-01-01T00:00:00Z", "date": "2025-01-01", "uuid": _UUID}
        if fmt in by_format:
            return by_format[fmt]
        if "mail" in name.lower():
            return f"{SAMPLE_KEY}@example.com"
        return SAMPLE_KEY if not name or _NAMEISH.search(name) else "example"
    if kind == "integer":
        return max(1, int(schema.get("minimum", 1)))
    if kind == "number":
        return 1.5
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return SAMPLE_KEY  # unannotated input: any JSON will do


_UUID = "00000000-0000-4000-8000-000000000000"


def sample_body(handler: Handler) -> tuple[bytes | None, str | None]:
    """(body, content type) to try `handler` with; (None, None) when it takes no input."""
    serde = handler.input_serde
    if isinstance(serde, NoneSerde) or not handler.takes_input:
        return None, None
    if isinstance(serde, BytesSerde):
        return b"hello", "application/octet-stream"
    schema = serde.json_schema() or {}
    return json.dumps(sample_from_schema(schema)).encode(), "application/json"


def path_of(handler: Handler, key: str = SAMPLE_KEY) -> str:
    """The ingress path that invokes `handler` (keyed handlers get `key`)."""
    if handler.keyed:
        return f"/{handler.service.name}/{key}/{handler.name}"
    return f"/{handler.service.name}/{handler.name}"


def curl_line(
    url: str,
    *,
    method: str = "POST",
    body: bytes | None = None,
    content_type: str | None = None,
    headers: dict[str, str] | None = None,
) -> str:
    """A shell-quoted curl command line."""
    parts = ["curl"]
    if method != "GET":
        parts += ["-X", method]
    parts.append(url)
    for name, value in (headers or {}).items():
        parts += ["-H", f"{name}: {value}"]
    if content_type is not None:
        parts += ["-H", f"content-type: {content_type}"]
    if body is not None:
        parts += ["-d", body.decode("utf-8", "replace")]
    return shlex.join(parts)


def example_handler(app: App) -> Handler | None:
    """The handler to show in the banner: the first one taking input, else the first one."""
    handlers = [h for service in app.services for h in service.handlers.values()]
    return next((h for h in handlers if h.takes_input), handlers[0] if handlers else None)


def curl_example(app: App, ingress_url: str) -> str | None:
    """A curl line calling the app's example handler through the ingress."""
    handler = example_handler(app)
    if handler is None:
        return None
    body, content_type = sample_body(handler)
    return curl_line(ingress_url + path_of(handler), body=body, content_type=content_type)
