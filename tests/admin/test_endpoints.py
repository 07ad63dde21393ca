"""Health, version, services, metrics and routing of the admin API."""

from __future__ import annotations

import re
from datetime import timedelta

import perdure

from .conftest import OpenAdmin
from .handlers import deposit, flaky, wait

_SAMPLE = re.compile(r"^(perdure_[a-z_]+)(\{[a-z_]+=\"[^\"]*\"(,[a-z_]+=\"[^\"]*\")*\})? (-?[0-9.e+-]+)$")


async def test_health_and_version(open_admin: OpenAdmin) -> None:
    env = await open_admin(ingress_url="http://127.0.0.1:8080/")
    response = await env.client.get("/health")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})
    version = (await env.client.get("/version")).json()
    # `version` is the restate-server release whose admin API perdure answers: Restate's CLI picks
    # its queries by it. perdure's own version is `perdure_version`.
    assert {k: v for k, v in version.items() if k != "features"} == {
        "version": "1.7.12",
        "perdure_version": perdure.__version__,
        "min_admin_api_version": 1,
        "max_admin_api_version": 4,
        "ingress_endpoint": "http://127.0.0.1:8080/",
    }
    assert version["features"] and not any(version["features"].values())
    for prefix in ("/v1", "/v2", "/v4"):
        assert (await env.client.get(f"{prefix}/version")).json()["perdure_version"] == perdure.__version__


async def test_health_reports_a_failed_processor(open_admin: OpenAdmin) -> None:
    env = await open_admin()
    env.engine.partitions[0].processor.failure = OSError("disk I/O error")
    try:
        response = await env.client.get("/health")
    finally:
        env.engine.partitions[0].processor.failure = None
    assert response.status_code == 503
    assert "disk I/O error" in response.json()["message"]
    assert response.json()["restate_code"] is None


async def test_unknown_paths_and_methods(open_admin: OpenAdmin) -> None:
    env = await open_admin()
    response = await env.client.get("/nope")
    assert response.status_code == 404
    assert response.json() == {"message": "no such endpoint: GET /nope", "restate_code": None}
    response = await env.client.post("/services")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET"
    assert (await env.client.get("/v5/services")).status_code == 404
    # /v2 … /v4: the same API in restate-server 1.7's shapes (what Restate's CLI calls)
    listed = (await env.client.get("/v4/services")).json()["services"]
    assert all(s["deployment_id"].startswith("dp_1") and s["public"] for s in listed)


async def test_services(open_admin: OpenAdmin) -> None:
    env = await open_admin()
    services = (await env.client.get("/services")).json()["services"]
    assert [s["name"] for s in services] == ["account", "greeter"]
    account = (await env.client.get("/v1/services/account")).json()
    assert account == services[0]
    assert {k: account[k] for k in ("ty", "deployment_id", "revision")} == {
        "ty": "VirtualObject",
        "deployment_id": "in-process",
        "revision": 1,
    }
    assert account["retry_policy"] == {
        "initial_interval": "500ms",
        "factor": 2.0,
        "max_interval": "1m",
        "max_attempts": 70,
        "on_max_attempts": "pause",
    }
    assert (account["idempotency_retention"], account["journal_retention"]) == ("1d", "1d")
    assert account["inactivity_timeout"] == "1m"
    handlers = {h["name"]: h for h in account["handlers"]}
    assert handlers["deposit"] == {
        "name": "deposit",
        "ty": "Exclusive",
        "input_content_type": "application/json",
        "output_content_type": "application/json",
        "input_json_schema": {"type": "integer"},
        "output_json_schema": {"type": "integer"},
        "documentation": "Add to the balance after a confirmation step and a short wait.",
    }
    assert handlers["balance"]["ty"] == "Shared"
    assert handlers["balance"]["input_content_type"] is None
    greeter = services[1]
    assert greeter["ty"] == "Service"
    greet = {h["name"]: h for h in greeter["handlers"]}
    assert greet["greet"]["ty"] is None
    assert greet["greet"]["documentation"] == "Says hello."
    assert greet["raw"]["output_content_type"] == "application/octet-stream"
    response = await env.client.get("/services/nobody")
    assert response.status_code == 404
    assert response.json() == {"message": "no service named 'nobody'", "restate_code": None}


async def test_metrics_are_prometheus_text(open_admin: OpenAdmin) -> None:
    env = await open_admin()
    h = env.engine
    await h.object_send(deposit, key="m", arg=1)
    await h.object_send(wait, key="m", arg=1)  # queued behind deposit, then sleeps an hour
    await h.object_send(flaky, key="other")
    await h.settle()
    response = await env.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    typed: set[str] = set()
    samples: dict[str, float] = {}
    for line in response.text.splitlines():
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            assert kind in ("counter", "gauge")
            typed.add(name)
        elif line.startswith("# HELP "):
            assert line.split()[2].startswith("perdure_")
        else:
            match = _SAMPLE.match(line)
            assert match is not None, line
            assert match.group(1) in typed, line
            samples[match.group(1) + (match.group(2) or "")] = float(match.group(4))
    assert samples['perdure_invocations{status="suspended"}'] == 1  # deposit's 5 s sleep
    assert samples['perdure_invocations{status="pending"}'] == 1
    assert samples['perdure_invocations{status="backing-off"}'] == 1
    assert samples["perdure_inbox_depth"] == 1
    assert samples["perdure_invocations_created_total"] == 3
    assert samples["perdure_attempts_failed_total"] == 1
    assert samples["perdure_timers_pending"] == 2  # deposit's sleep, flaky's retry
    assert samples["perdure_processor_commands_total"] > 0
    assert samples["perdure_processor_up"] == 1
    await h.advance(timedelta(seconds=5))
    text = (await env.client.get("/metrics")).text
    assert 'perdure_completions_total{result="ok"} 1' in text
