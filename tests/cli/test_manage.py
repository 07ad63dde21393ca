"""Management commands against a running `perdure dev` (the commands run in-process via CliRunner)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result

from perdure.cli import cli

from .procs import DevServer, Server

SAMPLE = str(Path(__file__).with_name("sample_app.py")) + ":app"


class Dev:
    """The running server and the invocations the tests work on."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.ids: dict[str, str] = {}

    def send(self, name: str, path: str, body: object) -> None:
        response = httpx.post(self.server.ingress + path + "/send", json=body, timeout=10)
        assert response.status_code == 202, response.text
        self.ids[name] = response.json()["invocationId"]

    def run(self, *args: str, env: dict[str, str] | None = None) -> Result:
        return CliRunner().invoke(
            cli, [*args, "--admin-url", self.server.admin], env=env, catch_exceptions=False
        )

    def wait_for(self, name: str, status: str, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            answer = httpx.get(f"{self.server.admin}/invocations/{self.ids[name]}", timeout=5).json()
            if answer["status"] == status:
                return
            time.sleep(0.02)
        raise AssertionError(f"{name} is {answer['status']}, not {status}")


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dev]:
    tmp = tmp_path_factory.mktemp("manage")
    server = DevServer(SAMPLE, tmp / "dev.db", stderr=tmp / "err").start()
    try:
        d = Dev(server)
        for n in (5, 2):
            assert httpx.post(server.ingress + "/counter/a/add", json=n, timeout=10).json() in (5, 7)
        d.ids["add"] = httpx.post(server.ingress + "/counter/b/add", json=1, timeout=10).headers[
            "x-restate-id"
        ]
        d.send("nap-kill", "/jobs/nap", 600)
        d.send("nap-pause", "/jobs/nap", 600)
        d.send("flaky", "/jobs/flaky", None)
        d.wait_for("nap-kill", "suspended")
        d.wait_for("nap-pause", "suspended")
        d.wait_for("flaky", "backing-off")
        yield d
        code, _ = server.stop()
        assert code == 0
    finally:
        server.kill()


def lines(result: Result) -> list[str]:
    return [line.rstrip() for line in result.output.splitlines() if line.strip()]


def test_services_list_and_describe(dev: Dev) -> None:
    result = dev.run("services", "list")
    assert result.exit_code == 0
    rows = lines(result)
    assert rows[0].split() == ["NAME", "TYPE", "HANDLERS"]
    assert rows[1].split() == ["counter", "VirtualObject", "add,", "get"]
    assert rows[2].split() == ["jobs", "Service", "work,", "nap,", "flaky"]

    result = dev.run("services", "describe", "counter")
    assert result.exit_code == 0
    rows = lines(result)
    assert rows[0].split() == ["counter", "VirtualObject"]
    assert ["add", "Exclusive", "integer", "integer"] in [r.split() for r in rows]
    assert ["get", "Shared", "null", "integer"] in [r.split() for r in rows]

    missing = dev.run("services", "describe", "nope")
    assert missing.exit_code == 1
    assert lines(missing) == [
        "error: no service named 'nope' (404 from GET /services/nope) — "
        "list them with `perdure services list`"
    ]


def test_invocations_list_filters_and_json(dev: Dev) -> None:
    result = dev.run("invocations", "list", "--service", "counter", "--key", "a")
    assert result.exit_code == 0
    rows = lines(result)
    assert rows[0].split()[:4] == ["ID", "TARGET", "STATUS", "ATTEMPTS"]
    assert [r.split()[1:4] for r in rows[1:]] == [["counter/a/add", "completed", "1"]] * 2

    backing_off = lines(dev.run("invocations", "list", "--status", "backing-off"))
    assert len(backing_off) == 2 and dev.ids["flaky"] in backing_off[1]
    assert (
        "jobs/flaky" in backing_off[1]
        and "[500] RuntimeError: the downstream system is down" in backing_off[1]
    )

    page = lines(dev.run("invocations", "list", "--limit", "1"))
    assert len(page) == 3 and "more with --cursor" in page[2]

    answer = json.loads(dev.run("invocations", "list", "--handler", "nap", "--json").output)
    assert {inv["id"] for inv in answer["invocations"]} >= {dev.ids["nap-pause"]}

    failing = lines(dev.run("invocations", "list", "--error", "DOWNSTREAM", "--newest"))
    assert len(failing) == 2 and dev.ids["flaky"] in failing[1]
    found = lines(dev.run("invocations", "list", "--search", dev.ids["flaky"][5:20]))
    assert len(found) == 2 and dev.ids["flaky"] in found[1]

    bad = dev.run("invocations", "list", "--status", "sleeping")
    assert bad.exit_code == 1 and len(lines(bad)) == 1 and lines(bad)[0].startswith("error: ")


def test_invocations_describe_shows_the_journal(dev: Dev) -> None:
    result = dev.run("invocations", "describe", dev.ids["add"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert dev.ids["add"] in out and "counter/b/add" in out
    assert "completed" in out and "outcome" in out
    assert "journal" in out and "InputCommand" in out and "OutputCommand" in out


def test_kill_purge_pause_resume_cancel(dev: Dev) -> None:
    nap = dev.ids["nap-kill"]
    assert lines(dev.run("invocations", "kill", nap)) == [f"killed {nap}"]
    again = dev.run("invocations", "kill", nap)
    assert again.exit_code == 1 and len(lines(again)) == 1
    assert "(409 from PATCH" in again.output and "only unfinished invocations can be killed" in again.output
    assert lines(dev.run("invocations", "purge", nap)) == [f"purged {nap}"]
    gone = dev.run("invocations", "describe", nap)
    assert gone.exit_code == 1 and len(lines(gone)) == 1
    assert "404 from GET" in gone.output and "list them with `perdure invocations list`" in gone.output

    paused = dev.ids["nap-pause"]
    assert lines(dev.run("invocations", "pause", paused)) == [f"paused {paused}"]
    assert paused in dev.run("invocations", "list", "--status", "paused").output
    assert lines(dev.run("invocations", "resume", paused)) == [f"resumed {paused}"]

    cancel = dev.run("invocations", "cancel", paused)
    assert cancel.exit_code == 0, cancel.output
    assert lines(cancel) == [
        f"cancelling {paused}: it fails with 409 'cancelled' at its next await "
        "(see `perdure invocations describe`)"
    ]
    dev.wait_for("nap-pause", "completed")
    assert "failure [409] cancelled" in dev.run("invocations", "describe", paused).output
    again = dev.run("invocations", "cancel", paused)
    assert again.exit_code == 1 and len(lines(again)) == 1
    assert "(409 from PATCH" in again.output
    assert "only unfinished invocations can be cancelled" in again.output


def test_awakeables_resolve_and_reject_errors(dev: Dev) -> None:
    """The happy paths run against a restarted server in tests/crash/test_awakeable_restart.py."""

    def run(*args: str) -> Result:
        return CliRunner().invoke(cli, ["awakeables", *args], catch_exceptions=False)

    ingress = ["--ingress-url", dev.server.ingress]
    bad = run("resolve", "sign_1nope", '"ok"', *ingress)
    assert bad.exit_code == 1 and len(lines(bad)) == 1
    assert (
        "bad awakeable id" in bad.output
        and "(400 from POST /restate/awakeables/sign_1nope/resolve)" in bad.output
    )
    not_json = run("resolve", "sign_1nope", "{ok", *ingress)
    assert not_json.exit_code == 1 and "VALUE is not JSON" in not_json.output
    missing = CliRunner().invoke(
        cli, ["awakeables", "reject", "sign_1nope", "no"], env={"PERDURE_INGRESS_URL": "http://127.0.0.1:1"}
    )
    assert missing.exit_code == 1
    assert lines(missing) == [
        "error: cannot reach the ingress at http://127.0.0.1:1 — is `perdure dev` running? "
        "set --ingress-url or PERDURE_INGRESS_URL"
    ]
    admin = run("resolve", "sign_1nope", "--ingress-url", dev.server.admin)
    assert admin.exit_code == 1 and "not the admin API" in admin.output


def test_state_get(dev: Dev) -> None:
    result = dev.run("state", "get", "counter", "a")
    assert result.exit_code == 0
    assert [r.split() for r in lines(result)] == [["NAME", "VALUE"], ["total", "7"]]
    assert lines(dev.run("state", "get", "counter", "nobody")) == ["counter/nobody has no state"]
    assert json.loads(dev.run("state", "get", "counter", "a", "--json").output)["state"] == {"total": 7}
    missing = dev.run("state", "get", "nope", "a")
    assert missing.exit_code == 1 and "no service named 'nope'" in missing.output


def test_sql(dev: Dev) -> None:
    result = dev.run(
        "sql",
        "SELECT target, status FROM sys_invocation WHERE target_service_name = 'counter' ORDER BY target",
    )
    assert result.exit_code == 0, result.output
    assert [r.split() for r in lines(result)] == [
        ["target", "status"],
        ["counter/a/add", "completed"],
        ["counter/a/add", "completed"],
        ["counter/b/add", "completed"],
        ["3", "rows"],
    ]
    bad = dev.run("sql", "DELETE FROM sys_invocation")
    assert bad.exit_code == 1 and len(lines(bad)) == 1 and "(400 from POST /query)" in bad.output


def test_unreachable_admin_is_one_line_with_the_fix() -> None:
    result = CliRunner().invoke(cli, ["services", "list"], env={"PERDURE_ADMIN_URL": "http://127.0.0.1:1"})
    assert result.exit_code == 1
    assert result.output.strip() == (
        "error: cannot reach the admin API at http://127.0.0.1:1 — is `perdure dev` running? "
        "set --admin-url or PERDURE_ADMIN_URL"
    )
    bad = CliRunner().invoke(cli, ["invocations", "list", "--admin-url", "localhost:9070"])
    assert bad.exit_code == 1 and "must start with http://" in bad.output


def test_pointing_at_the_ingress_says_so(dev: Dev) -> None:
    result = CliRunner().invoke(cli, ["services", "list", "--admin-url", dev.server.ingress])
    assert result.exit_code == 1 and len(lines(result)) == 1
