"""`/query` in Restate's schema and dialect (DataFusion): the schema restate-server 1.7.12 lists, the
queries of Restate's introspection documentation run unchanged, Arrow answers, value formats,
filters pushed to the store, and the read-only guard and time limit."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import datafusion
import pyarrow as pa
import pytest

import perdure
from perdure.admin import restate_query, restate_schema, restate_tables
from perdure.testing import Harness

from .conftest import Env, OpenAdmin
from .handlers import deposit, flaky, refuse, relay

DATA = Path(__file__).parent / "data" / "restate-1.7.12-columns.json"


async def rows(env: Env, query: str) -> list[dict[str, Any]]:
    response = await env.client.post(
        "/v4/query", json={"query": query}, headers={"accept": "application/json"}
    )
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["rows"]
    return found


async def scenario(env: Env) -> dict[str, str]:
    h = env.engine
    done = await h.object_send(deposit, key="alice", arg=3, idempotency_key="req-1")
    await h.settle()
    h.manual_clock.advance(0.001)
    failed = await h.service_send(refuse, arg="bob")
    h.manual_clock.advance(0.001)
    retrying = await h.object_send(flaky, key="k")
    h.manual_clock.advance(0.001)
    relayed = await h.service_send(relay, arg="carol")
    await h.settle()
    await h.advance(timedelta(seconds=5))
    return {"done": done, "failed": failed, "retrying": retrying, "relay": relayed}


async def test_the_schema_is_restate_1_7s(open_admin: OpenAdmin) -> None:
    env = await open_admin()
    theirs = json.loads(DATA.read_text())
    ours = await rows(
        env,
        "SELECT table_name, column_name, data_type, is_nullable FROM information_schema.columns"
        " WHERE table_schema = 'public' ORDER BY table_name, ordinal_position",
    )
    ours = [r for r in ours if r["table_name"] not in restate_schema.PERDURE_SPEC]  # perdure's own
    assert [(r["table_name"], r["column_name"]) for r in ours] == [
        (r["table_name"], r["column_name"]) for r in theirs
    ]
    mismatched = [
        (o["table_name"], o["column_name"], o["data_type"], t["data_type"])
        for o, t in zip(ours, theirs, strict=True)
        if (o["data_type"], o["is_nullable"]) != (t["data_type"], t["is_nullable"])
    ]
    assert mismatched == []


@pytest.mark.parametrize("store", ["memory", "sqlite", "postgres"])
async def test_restate_documentation_queries_run_unchanged(open_admin: OpenAdmin, store: str) -> None:
    env = await open_admin(store)
    ids = await scenario(env)
    done = ids["done"]
    # The SQL of Restate's introspection guide (docs.restate.dev, "Introspection"), placeholders filled.
    documented = [
        "select * from sys_invocation;",
        f"select target_service_name, target_handler_name, status from sys_invocation where id = '{done}';",
        f"select * from sys_journal where id = '{done}';",
        "select id, target, retry_count, last_failure from sys_invocation where retry_count > 0;",
        "select * from sys_keyed_service_status;",
        "select invocation_id from sys_keyed_service_status"
        " where service_name = 'account' and service_key = 'k';",
        f"select modified_at from sys_invocation where id = '{done}';",
        "select * from sys_inbox where service_name = 'account' and service_key = 'k';",
        "select count(*) from sys_inbox where service_name = 'account' and service_key = 'k';",
        "select * from state where service_name = 'account' and service_key = 'alice';",
        "select key, value_utf8 from state where service_name = 'account' and service_key = 'alice';",
        "select * from sys_service;",
        "select * from sys_deployment;",
        "select ss.service_key, ss.invocation_id, inv.target_handler_name, inv.status"
        " from sys_keyed_service_status ss join sys_invocation inv on ss.invocation_id = inv.id;",
        "select * from sys_invocation where created_at > now() - interval '1 hour';",
        f"select id, index, entry_type, name from sys_journal where id = '{done}' order by index;",
        "select * from sys_promise;",
    ]
    for query in documented:
        await rows(env, query)

    (status,) = await rows(
        env,
        f"select target_service_name, target_handler_name, status from sys_invocation where id = '{done}';",
    )
    assert status == {
        "target_service_name": "account",
        "target_handler_name": "deposit",
        "status": "completed",
    }
    journal = await rows(
        env, f"select id, index, entry_type, name from sys_journal where id = '{done}' order by index"
    )
    assert [r["entry_type"] for r in journal][:3] == ["Command: Input", "Command: Run", "Notification: Run"]
    assert journal[1]["name"] == "confirm"
    state = await rows(
        env, "select key, value_utf8 from state where service_name = 'account' and service_key = 'alice';"
    )
    assert {r["key"]: r["value_utf8"] for r in state} == {"balance": "30", "history": "[3]"}
    (blocked,) = await rows(
        env,
        "select invocation_id from sys_keyed_service_status"
        " where service_name = 'account' and service_key = 'k';",
    )
    assert blocked == {"invocation_id": ids["retrying"]}


async def test_values_in_restate_formats(open_admin: OpenAdmin) -> None:
    env = await open_admin("sqlite")
    ids = await scenario(env)
    by_id = {r["id"]: r for r in await rows(env, "SELECT * FROM sys_invocation")}
    failed, retrying, done = by_id[ids["failed"]], by_id[ids["retrying"]], by_id[ids["done"]]
    assert failed["completion_result"] == "failure"
    assert failed["completion_failure"] == "[403] not greeting bob"
    assert failed["modified_at"] == failed["completed_at"]
    assert retrying["status"] == "backing-off"
    assert retrying["last_failure_error_code"] == "RT0007"
    assert retrying["last_failure"].startswith("[500] ") and "the bank is closed" in retrying["last_failure"]
    assert retrying["retry_count"] >= 1 and "next_retry_at" in retrying
    assert done["idempotency_key"] == "req-1" and done["invoked_by"] == "ingress"
    assert done["target_service_ty"] == "virtual_object"
    assert done["completion_retention"] == "PT86400S" and done["created_at"].endswith("Z")
    assert done["pinned_deployment_id"] == restate_tables.IN_PROCESS_DEPLOYMENT_ID
    relay = ids["relay"]
    called = await rows(env, f"SELECT invoked_id, invoked_target FROM sys_journal WHERE id = '{relay}'")
    invoked = {r["invoked_target"]: r["invoked_id"] for r in called if "invoked_id" in r}
    assert sorted(invoked) == ["account/carol/deposit", "greeter/greet"]
    assert by_id[invoked["greeter/greet"]]["invoked_by_id"] == relay  # a call: the caller is known
    assert by_id[invoked["account/carol/deposit"]]["target"] == "account/carol/deposit"  # a send
    children = [r for r in by_id.values() if r.get("invoked_by_id") == ids["relay"]]
    assert children and all(c["invoked_by"] == "service" for c in children)
    assert all(c["invoked_by_target"] == "greeter/relay" for c in children)
    (state,) = await rows(env, "SELECT * FROM state WHERE service_key = 'alice' AND key = 'balance'")
    assert state["value"] == b"30".hex() and state["partition_key"] > 0
    (entry,) = await rows(env, f"SELECT entry_json FROM sys_journal WHERE id = '{ids['done']}' AND index = 1")
    assert json.loads(entry["entry_json"])["name"] == "confirm"


async def test_arrow_by_default_json_on_request(open_admin: OpenAdmin) -> None:
    env = await open_admin()
    ids = await scenario(env)
    query = {"query": f"SELECT id, created_at, journal_size FROM sys_invocation WHERE id = '{ids['done']}'"}
    response = await env.client.post("/query", json=query)
    assert response.headers["content-type"] == restate_query.ARROW_STREAM
    table = pa.ipc.open_stream(response.content).read_all()
    assert table.column("id").to_pylist() == [ids["done"]]
    assert table.schema.field("created_at").type == pa.timestamp("ms", tz="+00:00")
    assert table.schema.field("journal_size").type == pa.uint32()
    answer = await env.client.post("/query", json=query, headers={"accept": "application/json"})
    assert answer.json()["rows"][0]["id"] == ids["done"]


@pytest.mark.parametrize(
    "query",
    [
        "DELETE FROM sys_invocation",
        "CREATE TABLE x (a INT)",
        "INSERT INTO sys_service VALUES ('a', 1, true, 'service', 'dp')",
        "SET datafusion.execution.batch_size = 1",
        "SELECT * FROM no_such_table",
        "SELECT nope FROM sys_invocation",
    ],
)
async def test_refused_and_failing_queries_are_400(open_admin: OpenAdmin, query: str) -> None:
    env = await open_admin()
    response = await env.client.post("/query", json={"query": query}, headers={"accept": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["message"]


async def test_the_time_limit_stops_slow_queries(open_admin: OpenAdmin) -> None:
    env = await open_admin(query_timeout=0.1)
    await scenario(env)
    slow = "SELECT count(*) FROM (SELECT * FROM unnest(range(1, 3000000)) AS t(x)) WHERE x % 7 = 3"
    response = await env.client.post("/query", json={"query": slow}, headers={"accept": "application/json"})
    assert response.status_code == 400 and "longer than 0.1 s" in response.json()["message"]


def _plan(sql: str) -> dict[str, list[dict[str, frozenset[str]]]]:
    ctx = restate_query._context()
    return restate_query.pushdown(ctx.sql(sql).optimized_logical_plan())


def test_equality_filters_are_pushed_to_the_store() -> None:
    assert _plan("SELECT * FROM sys_invocation WHERE id = 'inv_1a'") == {
        "sys_invocation": [{"id": frozenset({"inv_1a"})}]
    }
    assert _plan("SELECT * FROM sys_invocation WHERE id IN ('inv_1a', 'inv_1b') AND status = 'running'") == {
        "sys_invocation": [{"id": frozenset({"inv_1a", "inv_1b"}), "status": frozenset({"running"})}]
    }
    found = _plan(
        "SELECT * FROM sys_journal j JOIN sys_invocation i ON i.id = j.id"
        " WHERE i.id = 'inv_1a' AND j.id = 'inv_1a'"
    )
    assert found["sys_journal"] == [{"id": frozenset({"inv_1a"})}]
    assert found["sys_invocation"] == [{"id": frozenset({"inv_1a"})}]
    assert _plan("SELECT * FROM state WHERE service_name = 'a' AND service_key = 'k'") == {
        "state": [{"service_name": frozenset({"a"}), "service_key": frozenset({"k"})}]
    }
    assert _plan("SELECT id FROM sys_invocation WHERE status != 'completed' AND status != 'paused'") == {
        "sys_invocation": [{"status!": frozenset({"completed", "paused"})}]
    }
    # An OR across columns, or no filter at all: the table is read whole.
    assert _plan("SELECT * FROM sys_invocation WHERE id = 'a' OR status = 'x'") == {"sys_invocation": [{}]}
    assert _plan("SELECT count(*) FROM sys_invocation") == {"sys_invocation": [{}]}


async def test_a_one_invocation_query_reads_one_invocation(open_admin: OpenAdmin, monkeypatch: Any) -> None:
    env = await open_admin("sqlite")
    ids = await scenario(env)
    read: list[str] = []
    original = restate_tables.Reader.rows

    def counting(self: restate_tables.Reader, statement: str, params: Any = ()) -> list[tuple[Any, ...]]:
        found = original(self, statement, params)
        if "FROM perdure_invocation" in statement and "id IN (?" not in statement[:60]:
            read.extend(str(r) for r in found)
        return found

    monkeypatch.setattr(restate_tables.Reader, "rows", counting)
    (row,) = await rows(env, f"SELECT status FROM sys_invocation WHERE id = '{ids['failed']}'")
    assert row == {"status": "completed"} and len(read) == 1
    read.clear()
    assert len(await rows(env, "SELECT id FROM sys_invocation")) == len(read) >= 4


def test_datafusion_is_the_dialect() -> None:
    # Restate's dialect, not SQLite's: intervals and a column named `index`.
    ctx = restate_query._context()
    ctx.sql("SELECT id, index FROM sys_journal WHERE appended_at > now() - interval '1 hour'").collect()
    assert datafusion.__version__


async def test_base_columns_alone_need_no_record_and_agree_with_the_records(open_admin: OpenAdmin) -> None:
    env = await open_admin("sqlite")
    await scenario(env)
    cheap = "id, target, target_service_name, target_service_key, target_service_ty, status, created_at"
    fast = await rows(env, f"SELECT {cheap} FROM sys_invocation ORDER BY id")
    # `journal_size` is only in the record: the same rows, built by decoding every record
    full = await rows(env, f"SELECT {cheap}, journal_size FROM sys_invocation ORDER BY id")
    assert fast == [{k: v for k, v in r.items() if k != "journal_size"} for r in full]
    (count,) = await rows(env, "SELECT count(*) AS n FROM sys_invocation")
    assert count == {"n": len(full)}


signup = perdure.Workflow("signup")


@signup.main()
async def signup_run(ctx: perdure.WorkflowContext, email: str) -> str:
    ctx.set("status", "waiting")
    return str(await ctx.promise("link").value())


@signup.handler()
async def signup_click(ctx: perdure.WorkflowSharedContext, secret: str) -> None:
    await ctx.promise("link").resolve(secret)


async def test_workflow_promises_and_no_engine_records_in_state() -> None:
    async with Harness(perdure.App([signup])) as h:

        async def query(sql: str) -> list[dict[str, Any]]:
            base = h.store.sql_base(True)
            answer = await asyncio.to_thread(restate_query.run, sql, base, restate_tables.Catalog())
            return restate_query.json_rows(answer.table)

        await h.generic_send("signup", "signup_run", b'"ann@example.com"', key="ann")
        await h.settle()
        (waiting,) = await query("SELECT * FROM sys_promise")
        assert waiting == {
            "partition_key": waiting["partition_key"],
            "service_name": "signup",
            "service_key": "ann",
            "key": "link",
            "completed": False,
        }
        await h.generic_send("signup", "signup_click", b'"s3cret"', key="ann")
        await h.settle()
        (done,) = await query("SELECT key, completed, completion_success_value_utf8 FROM sys_promise")
        assert done == {"key": "link", "completed": True, "completion_success_value_utf8": '"s3cret"'}
        assert await query("SELECT service_name, key FROM state") == [
            {"service_name": "signup", "key": "status"}
        ]


async def test_subqueries_see_every_row(open_admin: OpenAdmin) -> None:
    env = await open_admin()
    ids = await scenario(env)
    # the outer scan is narrowed to one id; the scalar subquery must still count them all
    (row,) = await rows(
        env,
        "SELECT id, (SELECT count(*) FROM sys_invocation) AS n FROM sys_invocation"
        f" WHERE id = '{ids['done']}'",
    )
    everything = await rows(env, "SELECT id FROM sys_invocation")
    assert row == {"id": ids["done"], "n": len(everything)} and len(everything) > 1


async def test_a_parked_kafka_record_is_a_completed_failure_in_restates_tables() -> None:
    # Restate has no `parked`: a dead letter failed for good, which its tables call completed,
    # for filters pushed to the store as for the rest.
    from perdure.engine import catalog
    from perdure.engine.commands import Ingest, KafkaRecord
    from perdure.engine.registry import HandlerInfo, Registry
    from perdure.engine.state_machine import StateMachine
    from perdure.storage.api import Failure
    from perdure.storage.memory import Store

    registry = Registry()
    registry.add("obj", HandlerInfo("h", keyed=True, exclusive=True))
    store, machine = Store(), StateMachine(registry, lambda: 1_000)
    sub = catalog.subscription_id("kafka://c/t", "service://obj/h")
    txn = store.begin()
    batch = [KafkaRecord(offset=0, key=b"k", value=b"bad", headers=())]
    machine.apply(
        txn, Ingest(sub, "service://obj/h", "t", 0, batch, {0: Failure(400, "bad")}, on_failure="park")
    )
    await store.commit(txn)

    async def query(sql: str) -> list[dict[str, Any]]:
        answer = await asyncio.to_thread(
            restate_query.run, sql, store.sql_base(True), restate_tables.Catalog()
        )
        return restate_query.json_rows(answer.table)

    (row,) = await query("SELECT status, completion_result FROM sys_invocation")
    assert row == {"status": "completed", "completion_result": "failure"}
    assert await query("SELECT status FROM sys_invocation WHERE status = 'completed'") == [
        {"status": "completed"}
    ]
    assert await query("SELECT id FROM sys_invocation WHERE status != 'completed'") == []
    assert await query("SELECT count(*) AS n FROM sys_invocation_state") == [{"n": 0}]
    (cheap,) = await query("SELECT status FROM sys_invocation WHERE target_service_name = 'obj'")
    assert cheap == {"status": "completed"}
    (letter,) = await query('SELECT "offset", record_key, error_code, state FROM sys_dead_letter')
    assert letter == {"offset": 0, "record_key": "k", "error_code": 400, "state": "parked"}
