"""`/invocations`: summaries and journals, paging, and the operator controls."""

from __future__ import annotations

import base64
from datetime import timedelta

from perdure.storage.api import Status

from .conftest import OpenAdmin
from .handlers import deposit, flaky, greet, raw, refuse, wait

UNKNOWN = "inv_1" + "0" * 33


async def test_an_invocation_with_its_decoded_journal(open_admin: OpenAdmin) -> None:
    env = await open_admin()
    h = env.engine
    invocation_id = await h.object_send(deposit, key="alice", arg=3, idempotency_key="req-1")
    await h.settle()
    running = (await env.client.get(f"/invocations/{invocation_id}")).json()
    assert (running["status"], running["outcome"], running["completed_at"]) == ("suspended", None, None)
    await h.advance(timedelta(seconds=5))
    body = (await env.client.get(f"/v1/invocations/{invocation_id}")).json()
    assert {k: body[k] for k in ("id", "target", "service", "handler", "key", "status")} == {
        "id": invocation_id,
        "target": "account/alice/deposit",
        "service": "account",
        "handler": "deposit",
        "key": "alice",
        "status": "completed",
    }
    assert body["created_at"] == "2026-01-01T00:00:00.000Z"
    assert body["completed_at"] == body["modified_at"] == "2026-01-01T00:00:05.000Z"
    assert (body["attempts"], body["last_failure"], body["idempotency_key"]) == (2, None, "req-1")
    assert body["outcome"] == {"value": 30}
    journal = body["journal"]
    assert [e["index"] for e in journal] == list(range(len(journal)))
    assert [(e["type"], e["name"], e["value"]) for e in journal] == [
        ("InputCommand", None, 3),
        ("RunCommand", "confirm", None),
        ("RunCompletionNotification", None, 30),
        ("SleepCommand", None, None),
        ("SleepCompletionNotification", None, None),
        ("GetEagerStateCommand", None, None),
        ("SetStateCommand", None, 30),
        ("SetStateCommand", None, [3]),
        ("OutputCommand", None, 30),
    ]
    assert journal[2]["summary"] == "RunCompletionNotification(completion_id=1, value=30)"
    assert journal[3]["summary"] == "SleepCommand(wake_up_time=2026-01-01T00:00:05.000Z)"
    assert journal[6]["summary"] == "SetStateCommand(key=balance, value=30)"


async def test_failures_and_binary_values(open_admin: OpenAdmin) -> None:
    env = await open_admin()
    h = env.engine
    refused = await h.service_send(refuse, arg="bob")
    binary = await h.service_send(raw)
    stuck = await h.object_send(flaky, key="k")
    await h.settle()
    body = (await env.client.get(f"/invocations/{refused}")).json()
    assert body["target"] == "greeter/refuse"
    assert body["key"] is None
    assert body["outcome"] == {"failure": {"code": 403, "message": "not greeting bob"}}
    assert body["journal"][-1]["failure"] == {"code": 403, "message": "not greeting bob"}
    body = (await env.client.get(f"/invocations/{binary}")).json()
    assert body["outcome"] == {"value_base64": base64.b64encode(b"\xff\x00binary").decode()}
    assert body["journal"][-1]["value_base64"] == body["outcome"]["value_base64"]
    body = (await env.client.get(f"/invocations/{stuck}")).json()
    assert body["status"] == "backing-off"
    assert body["last_failure"]["message"].endswith("the bank is closed")
    assert body["next_retry_at"] == "2026-01-01T00:01:00.000Z"  # 10 min, capped at max_interval


async def test_unknown_and_malformed_ids(open_admin: OpenAdmin) -> None:
    env = await open_admin()
    response = await env.client.get(f"/invocations/{UNKNOWN}")
    assert response.status_code == 404
    assert response.json() == {"message": f"no invocation {UNKNOWN}", "restate_code": None}
    for path in ("/invocations/nope", "/invocations/inv_1%21%21"):
        response = await env.client.get(path)
        assert response.status_code == 400
        assert "malformed invocation id" in response.json()["message"]
    assert (await env.client.patch("/invocations/nope/kill")).status_code == 400


async def test_list_filters_and_bad_values(open_admin: OpenAdmin, store_kind: str) -> None:
    env = await open_admin(store_kind)
    h = env.engine
    done = await h.service_send(greet, arg="x")
    h.manual_clock.advance(0.001)  # distinct created_at: oldest first is creation order
    sleeping = await h.object_send(wait, key="a", arg=1)
    h.manual_clock.advance(0.001)
    queued = await h.object_send(wait, key="a", arg=1)
    h.manual_clock.advance(0.001)
    other = await h.object_send(wait, key="b", arg=1)
    await h.settle()

    async def ids(**query: str) -> list[str]:
        response = await env.client.get("/invocations", params=query)
        assert response.status_code == 200, response.text
        return [s["id"] for s in response.json()["invocations"]]

    assert await ids() == [done, sleeping, queued, other]
    assert await ids(status="pending") == [queued]
    assert await ids(status="suspended") == [sleeping, other]
    assert await ids(service="account", key="a") == [sleeping, queued]
    assert await ids(service="greeter", handler="greet") == [done]
    assert await ids(handler="wait", key="b") == [other]
    summary = (await env.client.get("/invocations", params={"key": "b"})).json()["invocations"][0]
    assert summary == {
        "id": other,
        "target": "account/b/wait",
        "service": "account",
        "handler": "wait",
        "key": "b",
        "status": "suspended",
        "created_at": "2026-01-01T00:00:00.003Z",
        "modified_at": "2026-01-01T00:00:00.003Z",
        "scheduled_at": None,
        "attempts": 1,
        "last_failure": None,
        "next_retry_at": None,
        "completed_at": None,
        "idempotency_key": None,
        "deployment_id": None,
        "completion_failure": None,
    }
    for query in ({"status": "sleeping"}, {"limit": "0"}, {"limit": "x"}, {"limit": "10001"},
                  {"cursor": "!!"}, {"cursor": "WzFd"}, {"colour": "red"}):  # fmt: skip
        response = await env.client.get("/invocations", params=query)
        assert response.status_code == 400, query
        assert response.json()["restate_code"] is None


async def test_paging_is_stable(open_admin: OpenAdmin, store_kind: str) -> None:
    env = await open_admin(store_kind)
    h = env.engine
    created = []
    for i in range(7):
        created.append(await h.service_send(greet, arg=str(i)))
        h.manual_clock.advance(0.001 * (i % 2))  # some share a created_at: ties broken by id
    await h.settle()
    expected = sorted(created, key=lambda i: (h.status(i).created_at, i))
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": "3", **({"cursor": cursor} if cursor else {})}
        page = (await env.client.get("/invocations", params=params)).json()
        seen += [s["id"] for s in page["invocations"]]
        pages += 1
        if pages == 1:  # created after the first page: lands at the end, nothing shifts
            h.manual_clock.advance(1)
            created.append(await h.service_send(greet, arg="late"))
            expected.append(created[-1])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == expected
    assert pages == 3


async def test_kill_pause_resume_purge(open_admin: OpenAdmin) -> None:
    env = await open_admin()
    h, client = env.engine, env.client
    holder = await h.object_send(wait, key="k", arg=1)
    queued = await h.object_send(wait, key="k", arg=1)
    await h.settle()
    response = await client.patch(f"/invocations/{holder}/pause")
    assert (response.status_code, response.json()) == (200, {})
    assert h.status(holder).status is Status.PAUSED
    assert (await client.patch(f"/v1/invocations/{holder}/resume")).status_code == 200
    await h.settle()
    assert h.status(holder).status is Status.SUSPENDED
    response = await client.patch(f"/invocations/{holder}/purge")
    assert response.status_code == 409
    assert "cannot purge" in response.json()["message"]
    assert (await client.patch(f"/invocations/{holder}/kill")).status_code == 200
    await h.settle()
    outcome = (await client.get(f"/invocations/{holder}")).json()["outcome"]
    assert outcome == {"failure": {"code": 409, "message": "killed"}}
    assert (await client.patch(f"/invocations/{holder}/kill")).status_code == 409
    assert (await client.patch(f"/invocations/{holder}/pause")).status_code == 409
    assert (await client.patch(f"/invocations/{holder}/purge")).status_code == 200
    assert (await client.get(f"/invocations/{holder}")).status_code == 404
    for action in ("kill", "purge", "pause", "resume"):
        response = await client.patch(f"/invocations/{UNKNOWN}/{action}")
        assert response.status_code == 404, action
    assert (await client.patch(f"/invocations/{queued}/restart")).status_code == 404
    assert (await client.get(f"/invocations/{queued}/kill")).status_code == 405


async def test_cancel(open_admin: OpenAdmin) -> None:
    """202: the CANCEL signal is appended; the handler fails with 409 "cancelled" at its next await."""
    env = await open_admin()
    h, client = env.engine, env.client
    sleeping = await h.object_send(wait, key="c", arg=1)
    queued = await h.object_send(wait, key="c", arg=1)
    legacy = await h.object_send(wait, key="d", arg=1)
    await h.settle()
    response = await client.patch(f"/invocations/{sleeping}/cancel")
    assert (response.status_code, response.json()) == (202, {})
    response = await client.delete(f"/invocations/{legacy}")  # the legacy form; mode=cancel by default
    assert (response.status_code, response.json()) == (202, {})
    assert (await client.delete(f"/v1/invocations/{queued}", params={"mode": "cancel"})).status_code == 202
    await h.settle()
    for invocation_id in (sleeping, queued, legacy):
        outcome = (await client.get(f"/invocations/{invocation_id}")).json()["outcome"]
        assert outcome == {"failure": {"code": 409, "message": "cancelled"}}, invocation_id
    again = await client.patch(f"/invocations/{sleeping}/cancel")
    assert again.status_code == 409
    assert "cannot cancel an invocation that is completed" in again.json()["message"]
    assert (await client.patch(f"/invocations/{UNKNOWN}/cancel")).status_code == 404
    assert (await client.patch("/invocations/nope/cancel")).status_code == 400


async def test_legacy_delete(open_admin: OpenAdmin) -> None:
    env = await open_admin()
    h = env.engine
    invocation_id = await h.object_send(wait, key="d", arg=1)
    await h.settle()
    path = f"/invocations/{invocation_id}"
    assert (await env.client.delete(path, params={"mode": "purge"})).status_code == 409
    response = await env.client.delete(path, params={"mode": "kill"})
    assert (response.status_code, response.json()) == (202, {})
    await h.settle()
    assert (await env.client.delete(path, params={"mode": "purge"})).status_code == 202
    assert h.reader().get_invocation(invocation_id) is None
    assert (await env.client.delete(path, params={"mode": "explode"})).status_code == 400
    response = await env.client.delete(f"/invocations/{UNKNOWN}", params={"mode": "kill"})
    assert response.status_code == 404
