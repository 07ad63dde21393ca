"""GET /discover: the manifest's content, version negotiation and protocol mode."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from perdure.protocol import manifest as pmanifest
from perdure.sdk.endpoint import Endpoint

from .apps import options_app, protocol_app, typed_app
from .asgi import Exchange

V = "application/vnd.restate.endpointmanifest.v{}+json"
ALL = ", ".join(V.format(v) for v in (1, 2, 3, 4))  # what restate-server 1.7 sends


async def discover(app: Any, accept: str | None = ALL, http_version: str = "1.1") -> Exchange:
    headers = {} if accept is None else {"accept": accept}
    exchange = Exchange(app, "/discover", method="GET", http_version=http_version, headers=headers).begin()
    exchange.close()
    await exchange.done()
    return exchange


def handlers(manifest: dict[str, Any], service: str) -> dict[str, dict[str, Any]]:
    (found,) = [s for s in manifest["services"] if s["name"] == service]
    return {h["name"]: h for h in found["handlers"]}


async def test_manifest_describes_services_and_handler_types() -> None:
    exchange = await discover(protocol_app)
    assert exchange.status == 200
    assert exchange.headers["content-type"] == V.format(4)
    assert exchange.headers["x-restate-server"].startswith("perdure/")
    manifest = json.loads(exchange.body)
    assert manifest["minProtocolVersion"] == 5 and manifest["maxProtocolVersion"] == 7
    assert {s["name"]: s["ty"] for s in manifest["services"]} == {
        "counter": "VIRTUAL_OBJECT",
        "steps": "SERVICE",
    }
    counter = handlers(manifest, "counter")
    assert counter["add"]["ty"] == "EXCLUSIVE" and counter["get"]["ty"] == "SHARED"
    assert all("ty" not in h for h in handlers(manifest, "steps").values())  # plain services: no type
    assert pmanifest.decode(exchange.body).services  # and it passes perdure's own registration checks


async def test_json_schemas_come_from_type_hints() -> None:
    shapes = handlers(json.loads((await discover(typed_app)).body), "shapes")
    json_in = {"contentType": "application/json"}

    move = shapes["move"]  # dataclass in and out
    assert move["input"] | json_in == move["input"]
    point = move["input"]["jsonSchema"]["$defs"]["Point"]
    assert point["properties"] == {"x": {"type": "integer"}, "y": {"type": "integer", "default": 0}}
    assert point["required"] == ["x"]
    assert move["output"]["jsonSchema"] == move["input"]["jsonSchema"]

    paint = shapes["paint"]  # msgspec Struct in, TypedDict out
    assert paint["input"]["jsonSchema"]["$defs"]["Colour"]["required"] == ["name", "rgb"]
    assert paint["output"]["jsonSchema"]["$defs"]["Label"]["properties"] == {"text": {"type": "string"}}

    person = shapes["greet"]["input"]["jsonSchema"]  # pydantic
    assert person["title"] == "Person" and person["required"] == ["name", "age"]
    assert shapes["greet"]["output"] == {"contentType": "application/json", "jsonSchema": {"type": "string"}}

    # bytes: raw, no schema; no input / None output: no body; unannotated: any JSON
    assert shapes["raw"]["input"] == {"contentType": "application/octet-stream"}
    assert shapes["raw"]["output"] == {"contentType": "application/octet-stream"}
    assert shapes["nothing"]["input"] == {} and shapes["nothing"]["output"] == {}
    assert shapes["untyped"]["input"] == {"contentType": "application/json", "jsonSchema": {}}
    assert shapes["maybe"]["input"]["jsonSchema"] == {"type": "array", "items": {"type": "string"}}
    assert shapes["maybe"]["output"]["jsonSchema"] == {"anyOf": [{"type": "integer"}, {"type": "null"}]}
    assert all(not h["input"].get("required", False) for h in shapes.values())  # as Restate's Python SDK


async def test_options_become_manifest_fields() -> None:
    manifest = json.loads((await discover(options_app)).body)
    (shapes,) = [s for s in manifest["services"] if s["name"] == "shapes"]
    assert (shapes["inactivityTimeout"], shapes["idempotencyRetention"]) == (30_000, 3_600_000)
    assert shapes["documentation"] == "Geometry"
    by_name = handlers(manifest, "shapes")
    assert by_name["paint"]["journalRetention"] == 300_000
    assert "inactivityTimeout" not in by_name["paint"]  # inherited from the service, not repeated

    (signup,) = [s for s in manifest["services"] if s["name"] == "signup"]
    assert {k: v for k, v in signup.items() if k.startswith("retryPolicy")} == {
        "retryPolicyInitialInterval": 500,
        "retryPolicyMaxInterval": 60_000,
        "retryPolicyMaxAttempts": 70,
        "retryPolicyExponentiationFactor": 2.0,
        "retryPolicyOnMaxAttempts": "PAUSE",
    }
    assert "workflowCompletionRetention" not in signup  # only allowed on the run handler
    run, click = handlers(manifest, "signup")["run"], handlers(manifest, "signup")["click"]
    assert run["ty"] == "WORKFLOW" and click["ty"] == "SHARED"
    assert run["workflowCompletionRetention"] == 2 * 24 * 3600 * 1000
    assert (run["retryPolicyInitialInterval"], run["retryPolicyMaxAttempts"]) == (100, 5)
    assert (run["retryPolicyExponentiationFactor"], run["retryPolicyOnMaxAttempts"]) == (3.0, "KILL")
    assert "workflowCompletionRetention" not in click


@pytest.mark.parametrize(
    ("accept", "version"),
    [
        (ALL, 4),
        (f"{V.format(2)}, {V.format(3)}", 3),
        (V.format(1), 1),
        (None, 2),  # no accept header: v2, as Restate's Python SDK
    ],
)
async def test_the_highest_accepted_version_is_served(accept: str | None, version: int) -> None:
    exchange = await discover(protocol_app, accept)
    assert exchange.status == 200
    assert exchange.headers["content-type"] == V.format(version)


async def test_unknown_manifest_versions_get_415() -> None:
    exchange = await discover(protocol_app, "application/json")
    assert exchange.status == 415
    text = exchange.body.decode()
    assert "application/json" in text and V.format(4) in text


async def test_options_newer_than_the_accepted_version_get_415() -> None:
    exchange = await discover(options_app, V.format(3))  # the retry policy needs v4
    assert exchange.status == 415
    assert "v4" in exchange.body.decode()
    exchange = await discover(typed_app, V.format(2))  # timeouts and retentions need v3
    assert exchange.status == 415 and "v3" in exchange.body.decode()
    assert (await discover(typed_app, V.format(3))).status == 200


async def test_v1_drops_documentation() -> None:
    manifest = json.loads((await discover(protocol_app, V.format(1))).body)
    assert all("documentation" not in s for s in manifest["services"])


@pytest.mark.parametrize(
    ("http_version", "pinned", "mode"),
    [
        ("1.1", None, "REQUEST_RESPONSE"),
        ("2", None, "BIDI_STREAM"),
        ("1.1", "bidi", "BIDI_STREAM"),
        ("2", "request_response", "REQUEST_RESPONSE"),
    ],
)
async def test_protocol_mode_follows_the_http_version_unless_pinned(
    http_version: str, pinned: Any, mode: str
) -> None:
    app = protocol_app if pinned is None else Endpoint(protocol_app, protocol_mode=pinned)
    exchange = await discover(app, http_version=http_version)
    assert json.loads(exchange.body)["protocolMode"] == mode


async def test_health_and_unknown_routes() -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=protocol_app), base_url="http://t"
    ) as client:
        assert (await client.get("/health")).status_code == 200
        assert (await client.get("/some/prefix/health")).status_code == 200
        assert (await client.get("/elsewhere")).status_code == 404
        # any prefix before /discover works, as with Restate's SDKs
        assert (await client.get("/some/prefix/discover", headers={"accept": ALL})).status_code == 200
