"""Schemathesis against a real `perdure dev`: every fuzzed request to the ingress and the admin
API gets a documented status — never a 5xx, never a hang — with the content type documented.

Generated from each API's own `GET /openapi.json`. Routes whose input is a network address
(`POST /deployments` discovers a URI; a Kafka cluster's bootstrap servers are dialled once a
subscription uses it) are not fuzzed: fuzzed addresses must never leave this machine.

CI sends 10 valid and 10 invalid requests per operation, the same ones every run;
`PERDURE_FUZZ_EXAMPLES=200 pytest tests/fuzz/test_http.py` sends more, new ones each run.
"""

from __future__ import annotations

import os
import re

import httpx
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import content_type_conformance, not_a_server_error, status_code_conformance

import perdure
from perdure.admin.app import Admin
from perdure.admin.openapi import ROUTES

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance]
FUZZ = settings(
    max_examples=int(os.environ.get("PERDURE_FUZZ_EXAMPLES", "10")),  # per operation and mode
    deadline=None,
    derandomize="PERDURE_FUZZ_EXAMPLES" not in os.environ,  # CI: the same requests every run
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


def fuzz(schema: schemathesis.BaseSchema) -> int:
    """Every operation of the schema, `max_examples` valid and as many invalid requests each;
    returns how many operations ran. (Driven directly: schemathesis's pytest plugin does not run
    on pytest 9.)"""
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        has_input = any(len(p.items) for p in (operation.path_parameters, operation.query, operation.headers))
        negative = (GenerationMode.NEGATIVE,) if has_input or len(operation.body.items) else ()
        for mode in (GenerationMode.POSITIVE, *negative):

            @given(case=operation.as_strategy(generation_mode=mode))
            @FUZZ
            def check(case: schemathesis.Case) -> None:
                case.call_and_validate(checks=CHECKS, timeout=10)

            try:
                check()
            except Unsatisfiable:
                if mode is GenerationMode.POSITIVE:
                    raise  # (some inputs have no invalid form, e.g. a path segment of any string)
        operations += 1
    return operations


def test_ingress(server) -> None:  # type: ignore[no-untyped-def]
    assert fuzz(schemathesis.openapi.from_url(server.ingress + "/openapi.json")) >= 20


def test_admin(server) -> None:  # type: ignore[no-untyped-def]
    schema = schemathesis.openapi.from_url(server.admin + "/openapi.json")
    schema = schema.exclude(method="POST", path="/deployments").exclude(path_regex="^/kafka-clusters")
    assert fuzz(schema) >= 20


def test_the_admin_document_names_every_route(server) -> None:  # type: ignore[no-untyped-def]
    paths = httpx.get(server.admin + "/openapi.json", timeout=10).json()["paths"]
    documented = {(m.upper(), p) for p, ops in paths.items() for m in ops}
    assert documented == {(method, path) for method, path, *_ in ROUTES}
    routed = set()
    for method, pattern, _ in Admin(perdure.Engine(perdure.App([])))._routes:
        path = re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", pattern.pattern.strip("^$"))
        verbs = ("cancel", "kill", "purge", "pause", "resume") if "{action}" in path else ("",)
        routed |= {(method, path.replace("{action}", verb)) for verb in verbs}
    assert routed == documented


def test_the_ingress_document_follows_the_app(server) -> None:  # type: ignore[no-untyped-def]
    document = httpx.get(server.ingress + "/openapi.json", timeout=10).json()
    paths = document["paths"]
    assert {
        "/greeter/greet",
        "/counter/{key}/add/send",
        "/signup/{key}/run",
        "/restate/workflow/signup/{key}/attach",
    } <= set(paths)
    order_schema = paths["/greeter/order"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert order_schema == {"$ref": "#/components/schemas/Order"}
    assert document["components"]["schemas"]["Order"]["required"] == ["item", "quantity"]
    assert "requestBody" not in paths["/greeter/ping"]["post"]
