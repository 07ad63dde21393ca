"""Restate's own CLI (`restate` 1.7.12, installed by `dev.py setup` into .cache/node) against a real
`perdure dev` serving the seed example, compared with what it prints against restate-server 1.7.12
for the same scenario: same columns, same rows, up to ids, times and the differences listed in
`KNOWN` (each one explained in docs/restate-cli.md).

Scenario, on both: alice's update succeeds, bob's fails terminally (no profile name), carol's is
sent with an idempotency key, dave's is sent with a one-hour delay. Then every command below runs
on both and the outputs are compared after `normalize`.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from cli.procs import Server

from .processes import Hypercorn
from .restate_server import NODE_DIR, RestateServer, require_binary

pytestmark = pytest.mark.slow

CLI_VERSION = "1.7.12"  # tests/interop/package.json pins @restatedev/restate to the server's release

_ALICE = {"profile": {"name": "alice"}, "permissions": ["read"], "resources": ["disk-1"]}


def cli_binary() -> Path:
    found = sorted((NODE_DIR / "node_modules" / "@restatedev").glob("restate-linux-*/bin/restate"))
    found += sorted((NODE_DIR / "node_modules" / "@restatedev").glob("restate-darwin-*/bin/restate"))
    if not found:
        pytest.skip(f"the restate CLI {CLI_VERSION} is not installed in {NODE_DIR} (`python3 dev.py setup`)")
    return found[0]


@dataclass
class Side:
    admin: str
    ingress: str
    ids: dict[str, str]  # alice, bob, carol, dave -> invocation id

    def restate(self, *args: str) -> tuple[int, str]:
        env = {
            **os.environ,
            "RESTATE_ADMIN_URL": self.admin,
            "NO_COLOR": "1",
            "TERM": "dumb",
            "COLUMNS": "200",
        }
        done = subprocess.run(
            [str(cli_binary()), *args], env=env, capture_output=True, text=True, timeout=60, check=False
        )
        return done.returncode, done.stdout + done.stderr

    def query(self, sql: str) -> list[dict[str, object]]:
        answer = httpx.post(
            f"{self.admin}/query", json={"query": sql}, headers={"accept": "application/json"}, timeout=30
        )
        assert answer.status_code == 200, answer.text
        rows: list[dict[str, object]] = answer.json()["rows"]
        return rows


def run_scenario(admin: str, ingress: str) -> Side:
    def post(path: str, body: object, **headers: str) -> httpx.Response:
        return httpx.post(f"{ingress}/userUpdates/{path}", json=body, headers=headers, timeout=30)

    assert post("alice/updateUserEvent", _ALICE).json() == "role-read"
    assert post("bob/updateUserEvent", {"profile": {}}).status_code == 400
    assert post("carol/updateUserEvent", {"profile": {"name": "carol"}}, **{"idempotency-key": "k1"}).json()
    dave = post("dave/updateUserEvent/send?delay=1h", {"profile": {"name": "dave"}})
    assert dave.status_code == 202, dave.text
    side = Side(admin, ingress, {})
    for row in side.query("SELECT id, target_service_key FROM sys_invocation"):
        side.ids[str(row["target_service_key"])] = str(row["id"])
    assert sorted(side.ids) == ["alice", "bob", "carol", "dave"]
    return side


@pytest.fixture(scope="module")
def restate_side(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Side]:
    require_binary()
    cli_binary()
    handlers = Hypercorn("examples.user_updates:app")
    handlers.start()
    server = RestateServer(tmp_path_factory.mktemp("restate"), inactivity_timeout="1m").start()
    try:
        server.register(handlers.url)
        yield run_scenario(server.admin, server.ingress)
    finally:
        server.stop()
        handlers.stop()


@pytest.fixture(scope="module")
def perdure_side(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Side]:
    cli_binary()
    base = tmp_path_factory.mktemp("perdure")
    args = ["dev", "examples/user_updates.py:app", "--db", str(base / "dev.db")]
    server = Server([*args, "--ingress-port", "0", "--admin-port", "0"], stderr=base / "stderr.log")
    server.start()
    try:
        yield run_scenario(server.admin, server.ingress)
    finally:
        server.stop()


_TIME = re.compile(
    r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(\.\d+)?( ?[+-]\d\d:\d\d|Z)?"
    r"|\w{3} \d\d \w{3} \d{4} \d\d:\d\d:\d\d [+-]\d\d:\d\d"
)


def normalize(text: str, side: Side) -> list[str]:
    """The output's lines with ids, times, URLs and timings replaced, trailing blanks dropped."""
    for name, invocation_id in side.ids.items():
        text = text.replace(invocation_id, f"<inv:{name}>")
    text = re.sub(r"dp_[0-9A-Za-z]+", "<dp>", text)
    text = re.sub(r"inv_[0-9A-Za-z]+", "<inv>", text)
    text = _TIME.sub("<time>", text)
    text = re.sub(r"\[<time>\] ", "", text)  # journal entries' append times (see KNOWN)
    text = re.sub(r"http://127\.0\.0\.1:\d+/?", "<url>", text)
    text = re.sub(r"Query took [0-9.]+\w+", "Query took <t>", text)
    text = re.sub(r"\(now ago\)|\([^)]*ago\)", "", text)
    lines = []
    for line in text.splitlines():
        line = re.sub(r"\s+", " ", line).strip()
        if line and not set(line) <= {"―", "─"}:
            lines.append(line)
    return lines


#: Lines that differ on purpose, by command, as regexes over normalized lines (docs/restate-cli.md):
#: restate-server 1.7.12 gives every plain ingress call a generated idempotency key, perdure
#: only the one the caller sent; perdure's in-process deployment names itself as its SDK;
#: Restate renders journal entries from its own `entry_json` encoding in more detail.
KNOWN = [
    r"^Idempotency key: [0-9A-Z]{26}$",
    r"^SDK Version perdure/",
    r"^├──── #7 Command: SetState",
]


def _filtered(lines: list[str]) -> list[str]:
    return [line for line in lines if not any(re.search(k, line) for k in KNOWN)]


_SERVICE_ITEM = re.compile(r"- \S+ \[\d+\]")


def _unordered(lines: list[str]) -> list[str]:
    """The lines in any order, and the `- service [revision]` items a deployment's line and the
    ones under it list in any order too (restate-server lists them in hash order)."""
    items = sorted(item for line in lines for item in _SERVICE_ITEM.findall(line))
    rest = sorted(s for s in (_SERVICE_ITEM.sub("", line).rstrip() for line in lines) if s)
    return rest + items


def compare(restate_side: Side, perdure_side: Side, *args: str, ordered: bool = True) -> str:
    """Run `restate ARGS` on both, assert the same normalized output (the same lines in any order
    unless `ordered`: restate-server lists some things in hash order); returns perdure's."""
    expanded = [restate_side.ids.get(a.strip("<>"), a) if a.startswith("<") else a for a in args]
    code_r, out_r = restate_side.restate(*expanded)
    expanded = [perdure_side.ids.get(a.strip("<>"), a) if a.startswith("<") else a for a in args]
    code_p, out_p = perdure_side.restate(*expanded)
    assert code_p == code_r == 0, f"restate-server:\n{out_r}\nperdure:\n{out_p}"
    want, got = _filtered(normalize(out_r, restate_side)), _filtered(normalize(out_p, perdure_side))
    if not ordered:
        want, got = _unordered(want), _unordered(got)
    assert got == want, "\n".join(["restate-server:", *want, "", "perdure:", *got])
    return out_p


def test_services_and_deployments(restate_side: Side, perdure_side: Side) -> None:
    out = compare(restate_side, perdure_side, "services", "list", ordered=False)  # hash order there
    assert "userUpdates" in out and "virtual object" in out
    out = compare(restate_side, perdure_side, "services", "describe", "userUpdates")
    assert "Bidirectional Stream" in out
    out = compare(restate_side, perdure_side, "deployments", "list", ordered=False)
    assert "userUpdates [1]" in out


def test_service_config_and_a_registration(restate_side: Side, perdure_side: Side) -> None:
    out = compare(restate_side, perdure_side, "services", "config", "view", "userUpdates")
    assert "Retry Policy" in out
    greeter = Hypercorn("tests.interop.official_services:app")
    greeter.start()
    try:
        out = compare(
            restate_side, perdure_side, "deployments", "register", "--yes", greeter.url, ordered=False
        )
        assert "Greeter" in out and "Deployment ID" in out
        for side in (restate_side, perdure_side):
            (row,) = side.query("SELECT deployment_id FROM sys_service WHERE name = 'Greeter'")
            code, out = side.restate("deployments", "remove", "--yes", "--force", str(row["deployment_id"]))
            assert code == 0, out
            assert side.query("SELECT name FROM sys_service WHERE name = 'Greeter'") == []
    finally:
        greeter.stop()


def test_invocations_list_and_describe(restate_side: Side, perdure_side: Side) -> None:
    out = compare(restate_side, perdure_side, "invocations", "list")
    assert "<inv:dave>" not in out and perdure_side.ids["dave"] in out
    compare(restate_side, perdure_side, "invocations", "list", "--all")
    for name in ("alice", "bob", "carol", "dave"):
        out = compare(restate_side, perdure_side, "invocations", "describe", f"<{name}>")
    bob = perdure_side.restate("invocations", "describe", perdure_side.ids["bob"])[1]
    assert "[400] a user update needs profile.name" in bob


def test_state_and_sql(restate_side: Side, perdure_side: Side) -> None:
    out = compare(restate_side, perdure_side, "state", "get", "userUpdates", "alice")
    assert '"role-read"' in out
    sql = "SELECT target, status, completion_result, completion_failure FROM sys_invocation ORDER BY target"
    out = compare(restate_side, perdure_side, "sql", sql)
    assert "[400] a user update needs profile.name" in out


def test_kill_and_purge(restate_side: Side, perdure_side: Side) -> None:
    out = compare(restate_side, perdure_side, "invocations", "kill", "--yes", "<dave>")
    assert "Killed 1 invocations" in out
    for side in (restate_side, perdure_side):
        # restate-server drops a killed invocation that never ran; perdure keeps it, completed
        # with Restate's "[409] killed" (docs/restate-cli.md): either way it is no longer listed.
        left = side.query("SELECT id FROM sys_invocation WHERE status != 'completed'")
        assert left == [], left
    (row,) = perdure_side.query(
        f"SELECT status, completion_failure FROM sys_invocation WHERE id = '{perdure_side.ids['dave']}'"
    )
    assert row == {"status": "completed", "completion_failure": "[409] killed"}, row
    out = compare(restate_side, perdure_side, "invocations", "purge", "--yes", "<alice>")
    assert "Purged 1 invocations" in out or "Purged" in out
    for side in (restate_side, perdure_side):
        assert side.query(f"SELECT id FROM sys_invocation WHERE id = '{side.ids['alice']}'") == []
