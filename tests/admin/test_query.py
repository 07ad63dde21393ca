"""`POST /query`: the SQL views on both stores, and everything a read-only endpoint must refuse."""

from __future__ import annotations

import base64
import sqlite3
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from perdure.admin.query import Database
from perdure.storage import sqlite as sqlite_store
from perdure.storage.api import Entry, Invocation, Status
from perdure.storage.sqlite import _sql as sqlite_views

from .conftest import Env, OpenAdmin
from .handlers import deposit, flaky, greet, refuse, wait


async def rows(env: Env, query: str) -> list[dict[str, Any]]:
    response = await env.client.post("/query?dialect=sqlite", json={"query": query})
    assert response.status_code == 200, response.text
    result: list[dict[str, Any]] = response.json()["rows"]
    return result


async def refused(env: Env, query: str) -> str:
    response = await env.client.post("/query?dialect=sqlite", json={"query": query})
    assert response.status_code == 400, (query, response.text)
    assert response.json()["restate_code"] is None
    message: str = response.json()["message"]
    return message


async def test_views(open_admin: OpenAdmin, store_kind: str) -> None:
    env = await open_admin(store_kind)
    h = env.engine
    done = await h.object_send(deposit, key="alice", arg=3, idempotency_key="req-1")
    await h.settle()  # sleeping until 00:00:05.000
    h.manual_clock.advance(0.001)
    failed = await h.service_send(refuse, arg="bob")
    h.manual_clock.advance(0.001)
    retrying = await h.object_send(flaky, key="k")
    await h.settle()
    await h.advance(timedelta(seconds=5))

    invocations = await rows(env, "SELECT * FROM sys_invocation ORDER BY created_at_ms")
    assert [r["id"] for r in invocations] == [done, failed, retrying]
    first = invocations[0]
    assert {
        k: first[k] for k in ("target", "target_service_name", "target_service_key", "target_handler_name")
    } == {
        "target": "account/alice/deposit",
        "target_service_name": "account",
        "target_service_key": "alice",
        "target_handler_name": "deposit",
    }
    assert first["target_service_ty"] == "virtual_object"
    assert (first["status"], first["completion_result"], first["completion_value"]) == (
        "completed",
        "success",
        "30",
    )
    assert (first["created_at"], first["completed_at"]) == (
        "2026-01-01T00:00:00.000Z",
        "2026-01-01T00:00:05.002Z",
    )
    assert (first["idempotency_key"], first["attempt_count"], first["journal_size"]) == ("req-1", 2, 9)
    second = invocations[1]
    assert (second["target"], second["target_service_ty"], second["target_service_key"]) == (
        "greeter/refuse",
        "service",
        None,
    )
    assert (second["completion_result"], second["completion_failure"], second["completion_failure_code"]) == (
        "failure",
        "not greeting bob",
        403,
    )
    third = invocations[2]
    assert third["status"] == "backing-off"
    assert third["last_failure_message"].endswith("the bank is closed")
    assert third["retry_count"] >= 1 and third["next_retry_at"] is not None

    journal = await rows(
        env,
        f"""SELECT "index", entry_type, name, value, raw FROM sys_journal WHERE id = '{done}' ORDER BY 1""",
    )
    assert [(r["index"], r["entry_type"], r["name"], r["value"]) for r in journal[:3]] == [
        (0, "InputCommand", None, "3"),
        (1, "RunCommand", "confirm", None),
        (2, "RunCompletionNotification", None, "30"),
    ]
    assert base64.b64decode(journal[0]["raw"])  # blobs come back as base64
    sleep = await rows(
        env, f"SELECT sleep_wakeup_at FROM sys_journal WHERE id = '{done}' AND entry_type = 'SleepCommand'"
    )
    assert sleep == [{"sleep_wakeup_at": "2026-01-01T00:00:05.000Z"}]

    where = "service_name = 'account' AND service_key = 'alice'"
    state = await rows(env, f"SELECT key, value_utf8 FROM state WHERE {where} ORDER BY key")
    assert state == [{"key": "balance", "value_utf8": "30"}, {"key": "history", "value_utf8": "[3]"}]

    # What Restate's CLI sends before it kills or cancels an invocation.
    pending = await rows(
        env, f"SELECT id, target FROM sys_invocation_status WHERE id = '{retrying}' AND status != 'completed'"
    )
    assert pending == [{"id": retrying, "target": "account/k/flaky"}]
    counts = await rows(
        env, "SELECT status, count(*) AS n FROM sys_invocation GROUP BY status ORDER BY status"
    )
    assert counts == [{"status": "backing-off", "n": 1}, {"status": "completed", "n": 2}]
    joined = await rows(
        env,
        "WITH j AS (SELECT id, count(*) AS entries FROM sys_journal GROUP BY id)"
        " SELECT i.target, j.entries FROM sys_invocation i JOIN j USING (id) WHERE i.status = 'completed'"
        " ORDER BY j.entries",
    )
    assert [r["target"] for r in joined] == ["greeter/refuse", "account/alice/deposit"]


@pytest.mark.parametrize(
    "query",
    [
        "DELETE FROM sys_invocation",
        "delete from state",
        "  /* sneaky */ -- comment\n UPDATE state SET value = 1",
        "INSERT INTO state VALUES ('a', 'b', 'c', 'd', 'e')",
        "ATTACH DATABASE 'elsewhere.db' AS other",
        "PRAGMA writable_schema = ON",
        "PRAGMA query_only = OFF",
        "DROP VIEW sys_invocation",
        "CREATE TABLE t (x)",
        "VACUUM",
        "BEGIN",
        "",
    ],
)
async def test_non_select_statements_are_refused(open_admin: OpenAdmin, query: str) -> None:
    env = await open_admin()
    message = await refused(env, query)
    assert "only read-only SELECT queries are allowed" in message or "empty" in message


async def test_the_authorizer_stops_what_slips_past_the_keyword_check(
    open_admin: OpenAdmin, store_kind: str
) -> None:
    env = await open_admin(store_kind)
    await env.engine.service_send(greet, arg="x")
    await env.engine.settle()
    for query in (
        "WITH x AS (SELECT 1) DELETE FROM perdure_state",
        "WITH x AS (SELECT 1) UPDATE perdure_invocation SET status = 'paused'",
        "WITH x AS (SELECT 1) INSERT INTO perdure_state VALUES ('a', 'b', x'00', x'00')",
        "SELECT * FROM pragma_table_info('perdure_invocation')",
        "SELECT * FROM sqlite_master",
        "SELECT * FROM sqlite_temp_master",
        "SELECT load_extension('evil')",
        "SELECT 1; DELETE FROM perdure_state",
    ):
        await refused(env, query)
    if store_kind == "sqlite":
        for table in ("timers", "meta"):  # locks and inbox are read by sys_keyed_service_status, sys_inbox
            assert "prohibited" in await refused(env, f"SELECT * FROM {table}")
    assert (await rows(env, "SELECT count(*) AS n FROM sys_invocation")) == [{"n": 1}]


async def test_writes_never_reach_the_database_file(open_admin: OpenAdmin, tmp_path: Path) -> None:
    env = await open_admin("sqlite")
    invocation_id = await env.engine.object_send(deposit, key="z", arg=1)
    await env.engine.advance(timedelta(seconds=5))
    await refused(env, "WITH x AS (SELECT 1) DELETE FROM main.invocations")
    await refused(env, "WITH x AS (SELECT 1) UPDATE main.state SET value = x'00'")
    with sqlite3.connect(tmp_path / "db.sqlite") as db:
        assert db.execute("SELECT id FROM invocations").fetchall() == [(invocation_id,)]
        assert db.execute("SELECT count(*) FROM state").fetchone() == (2,)


async def test_sql_errors_and_bad_bodies(open_admin: OpenAdmin) -> None:
    env = await open_admin()
    assert await refused(env, "SELECT nope FROM sys_invocation") == "no such column: nope"
    assert "syntax error" in await refused(env, "SELECT FROM WHERE")
    assert await refused(env, "SELECT * FROM invoices") == "no such table: invoices"
    for body in (b"not json", b"[]", b'{"query": 1}', b"{}"):
        response = await env.client.post("/query?dialect=sqlite", content=body)
        assert response.status_code == 400, body


async def test_slow_queries_are_stopped(open_admin: OpenAdmin) -> None:
    env = await open_admin(query_timeout=0.3)
    started = time.monotonic()
    message = await refused(
        env, "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT max(x) FROM c"
    )
    assert message == "the query ran longer than 0.3 s and was stopped"
    assert time.monotonic() - started < 2
    assert (await env.client.get("/health")).status_code == 200  # the loop was never blocked


async def test_rows_are_capped(open_admin: OpenAdmin) -> None:
    env = await open_admin(max_rows=5)
    query = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 100) SELECT x FROM c"
    response = await env.client.post("/query?dialect=sqlite", json={"query": query})
    assert response.json() == {"rows": [{"x": i} for i in range(1, 6)], "truncated": True}
    response = await env.client.post("/query?dialect=sqlite", json={"query": "VALUES (1), (2)"})
    assert response.json() == {"rows": [{"column1": 1}, {"column1": 2}]}


async def test_state_endpoint(open_admin: OpenAdmin) -> None:
    env = await open_admin()
    h = env.engine
    await h.object_send(deposit, key="alice", arg=3)
    await h.object_send(wait, key="a/b", arg=1)
    await h.advance(timedelta(seconds=5))
    response = await env.client.get("/state/account/alice")
    assert response.json() == {"service": "account", "key": "alice", "state": {"balance": 30, "history": [3]}}
    assert (await env.client.get("/state/account/a%2Fb")).json() == {
        "service": "account",
        "key": "a/b",
        "state": {},
    }
    txn = env.store.begin()  # type: ignore[union-attr]
    txn.set_state("account", "raw", b"blob", b"\xff\x00")
    await env.store.commit(txn)  # type: ignore[union-attr]
    state = (await env.client.get("/v1/state/account/raw")).json()["state"]
    assert state == {"blob": {"base64": "/wA="}}
    response = await env.client.get("/state/nobody/alice")
    assert response.status_code == 404
    assert response.json() == {"message": "no service named 'nobody'", "restate_code": None}


def test_the_views_know_the_newest_sqlite_schema() -> None:
    # A new migration must add its base views to perdure.storage.sqlite._sql.VIEWS.
    assert len(sqlite_store.MIGRATIONS) in sqlite_views.VIEWS


async def test_sqlite_journals_by_id_seek_and_include_journals_without_an_invocation(tmp_path: Path) -> None:
    store = sqlite_store.Store(tmp_path / "direct.db")
    txn = store.begin()
    txn.put_invocation(Invocation(id="inv-a", service="s", handler="h", status=Status.COMPLETED))
    txn.append_entries("inv-a", 0, [Entry(0x0400, b""), Entry(0x0401, b"")])
    txn.append_entries("orphan", 0, [Entry(0x0400, b"")])  # a journal whose record does not exist
    await store.commit(txn)
    database = Database(store, lambda name: None)
    result = await database.query('SELECT id, "index", entry_type FROM sys_journal ORDER BY id, "index"')
    assert result.rows == [
        ("inv-a", 0, "InputCommand"),
        ("inv-a", 1, "OutputCommand"),
        ("orphan", 0, "InputCommand"),
    ]
    plan = await database.query("EXPLAIN QUERY PLAN SELECT * FROM sys_journal WHERE id = 'inv-a'")
    steps = [row[-1] for row in plan.rows]
    assert not [s for s in steps if s.startswith("SCAN")], steps  # index seeks only
    await store.close()


async def test_the_state_view_shows_the_engines_own_records_as_documented(open_admin: OpenAdmin) -> None:
    env = await open_admin("sqlite")
    await env.engine.put_kafka_cluster("local", {"bootstrap.servers": "127.0.0.1:9"})  # not state
    txn = env.engine.store.begin()  # a workflow promise, as the engine keeps one
    txn.set_state("__perdure", "promises/signup/alice", b"link", b"\x80")
    await env.engine.store.commit(txn)
    own = await rows(env, "SELECT service_key, key FROM state WHERE service_name = '__perdure'")
    assert own == [{"service_key": "promises/signup/alice", "key": "link"}]
    mine = await rows(env, "SELECT DISTINCT service_name FROM state WHERE service_name <> '__perdure'")
    assert mine == []
