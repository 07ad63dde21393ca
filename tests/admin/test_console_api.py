"""The admin routes the web console reads: filtered listing, journal links, activity, keys."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from .conftest import Env, OpenAdmin
from .handlers import deposit, flaky, greet, refuse, relay, wait


async def get(env: Env, path: str, **params: str) -> Any:
    response = await env.client.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def ids(env: Env, **params: str) -> list[str]:
    return [s["id"] for s in (await get(env, "/invocations", **params))["invocations"]]


async def test_listing_filters_newest_first_and_pages(open_admin: OpenAdmin, store_kind: str) -> None:
    env = await open_admin(store_kind)
    h = env.engine
    made = []
    for n in range(5):
        made.append(await h.object_send(wait, key=f"k{n}", arg=1, idempotency_key=f"order-{n}"))
        h.manual_clock.advance(0.001)
    failed = await h.service_send(refuse, arg="bob")
    h.manual_clock.advance(0.001)
    retrying = await h.object_send(flaky, key="f")
    await h.settle()

    everything = [*made, failed, retrying]
    assert await ids(env) == everything
    assert await ids(env, order="desc") == everything[::-1]
    first = await get(env, "/invocations", order="desc", limit="4")
    assert [s["id"] for s in first["invocations"]] == everything[:2:-1]
    rest = await ids(env, order="desc", limit="4", cursor=first["next_cursor"])
    assert rest == everything[2::-1]

    assert await ids(env, q="order-3") == [made[3]]  # the idempotency key
    assert await ids(env, q=made[1][5:20]) == [made[1]]  # part of the id
    assert await ids(env, q="nothing-like-it") == []
    assert await ids(env, error="NOT GREETING") == [failed]  # the terminal failure, any case
    assert await ids(env, error="bank is closed") == [retrying]  # the last attempt's failure
    assert await ids(env, deployment="in-process", service="greeter") == [failed]
    assert await ids(env, deployment="dp_none") == []

    created = [s["created_at"] for s in (await get(env, "/invocations"))["invocations"]]
    assert await ids(env, created_after=created[5]) == [failed, retrying]
    assert await ids(env, created_before=created[1], order="desc") == [made[1], made[0]]
    for bad in ({"order": "up"}, {"created_after": "yesterday"}, {"created_before": "2026-01-01T00:00:00"}):
        response = await env.client.get("/invocations", params=bad)
        assert response.status_code == 400, (bad, response.text)


async def test_a_journal_links_calls_to_their_invocations(open_admin: OpenAdmin, store_kind: str) -> None:
    env = await open_admin(store_kind)
    h = env.engine
    parent = await h.service_send(relay, arg="ann")
    await h.settle()
    journal = (await get(env, f"/invocations/{parent}"))["journal"]
    calls = {e["type"]: e for e in journal if "target" in e}
    sent, called = calls["OneWayCallCommand"], calls["CallCommand"]
    assert (sent["target"], called["target"]) == ("account/ann/deposit", "greeter/greet")
    child = await get(env, f"/invocations/{called['invocation_id']}")
    assert (child["target"], child["outcome"]) == ("greeter/greet", {"value": "hello ann"})
    deposit_run = await get(env, f"/invocations/{sent['invocation_id']}")
    assert deposit_run["target"] == "account/ann/deposit"
    # A command and the notification completing it share a completion id.
    result = next(e for e in journal if e["type"] == "CallCompletionNotification")
    assert result["completion_id"] == called["completion_id"] and result["value"] == "hello ann"
    assert journal[0]["type"] == "InputCommand" and journal[0]["value"] == "ann"

    sleeping = (await get(env, f"/invocations/{sent['invocation_id']}"))["journal"]
    sleep = next(e for e in sleeping if e["type"] == "SleepCommand")
    assert sleep["wake_up_time"] == "2026-01-01T00:00:05.000Z"
    run = next(e for e in sleeping if e["type"] == "RunCommand")
    done = next(e for e in sleeping if e["type"] == "RunCompletionNotification")
    assert (run["name"], run["completion_id"], done["completion_id"]) == ("confirm", 1, 1)


async def test_activity_counts_by_status_and_minute(open_admin: OpenAdmin, store_kind: str) -> None:
    env = await open_admin(store_kind)
    h = env.engine
    h.manual_clock.advance(timedelta(minutes=2))  # 00:02:00
    await h.service_send(greet, arg="a")
    await h.service_send(refuse, arg="b")
    await h.object_send(wait, key="w", arg=1)
    await h.settle()
    h.manual_clock.advance(timedelta(minutes=1))  # 00:03:00
    await h.service_send(greet, arg="c")
    await h.settle()
    h.manual_clock.advance(timedelta(seconds=30))

    answer = await get(env, "/activity", minutes="15")
    assert answer["counts"]["completed"] == 3 and answer["counts"]["suspended"] == 1
    assert answer["bucket_seconds"] == 60
    buckets = answer["buckets"]
    assert len(buckets) == 15 and buckets[-1]["start"] == "2026-01-01T00:03:00.000Z"
    assert {k: buckets[-2][k] for k in ("created", "completed", "failed")} == {
        "created": 3,
        "completed": 2,
        "failed": 1,
    }
    assert {k: buckets[-1][k] for k in ("created", "completed", "failed")} == {
        "created": 1,
        "completed": 1,
        "failed": 0,
    }
    assert (await env.client.get("/activity", params={"minutes": "0"})).status_code == 400


async def test_keys_state_lock_and_inbox_in_order(open_admin: OpenAdmin, store_kind: str) -> None:
    env = await open_admin(store_kind)
    h = env.engine
    await h.object_send(deposit, key="alice", arg=2)
    await h.advance(timedelta(seconds=5))  # alice has state now
    holder = await h.object_send(wait, key="bob", arg=1)
    h.manual_clock.advance(0.001)
    queued = []
    for n in range(3):
        queued.append(await h.object_send(deposit, key="bob", arg=n))
        h.manual_clock.advance(0.001)  # the memory store's inbox is ordered by time (docs/admin.md)
    await h.settle()

    listed = await get(env, "/services/account/keys")
    assert listed["keys"] == [
        {"key": "alice", "state_entries": 2, "locked_by": None, "queued": 0},
        {"key": "bob", "state_entries": 0, "locked_by": holder, "queued": 3},
    ]
    assert [k["key"] for k in (await get(env, "/services/account/keys", prefix="al"))["keys"]] == ["alice"]

    bob = await get(env, "/services/account/keys/bob")
    assert bob["locked_by"]["id"] == holder and bob["locked_by"]["status"] == "suspended"
    assert [s["id"] for s in bob["inbox"]] == queued and bob["queued"] == 3
    assert {s["status"] for s in bob["inbox"]} == {"pending"}
    alice = await get(env, "/services/account/keys/alice")
    assert alice["state"] == {"balance": 20, "history": [2]}
    assert (alice["locked_by"], alice["inbox"]) == (None, [])

    assert (await env.client.get("/services/greeter/keys")).status_code == 400
    assert (await env.client.get("/services/nope/keys/x")).status_code == 404


async def test_searching_a_whole_id_finds_that_invocation(open_admin: OpenAdmin) -> None:
    env = await open_admin("sqlite")
    made = [await env.engine.service_send(greet, arg=str(n)) for n in range(3)]
    await env.engine.settle()
    assert await ids(env, q=made[1]) == [made[1]]
