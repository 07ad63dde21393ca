"""`perdure dev` without an app serves remote deployments only; `perdure deployments …` registers,
lists, describes and removes them, with the fix in every error."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from cli.procs import Server
from perdure.cli import cli

from .processes import Hypercorn

pytestmark = pytest.mark.slow


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    args = ["dev", "--db", str(tmp_path / "dev.db"), "--ingress-port", "0", "--admin-port", "0"]
    running = Server(args, stderr=tmp_path / "stderr.log").start()
    try:
        yield running
    finally:
        running.stop()


def perdure(*args: str, admin: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, [*args, "--admin-url", admin], catch_exceptions=False)
    return result.exit_code, result.output


def test_register_list_describe_call_and_remove(server: Server, tmp_path: Path) -> None:
    assert "none yet: add some with `perdure deployments register URI`" in server.output
    official = Hypercorn("tests.interop.official_services:app")
    official.start()
    try:
        code, out = perdure("deployments", "register", official.url, admin=server.admin)
        assert code == 0, out
        assert "registered" in out and "BidiStream" in out and "protocol v7" in out
        assert "Counter" in out and "Signup" in out

        code, out = perdure("deployments", "register", official.url, admin=server.admin)
        assert code == 1 and "already registered" in out and "--force" in out
        code, out = perdure("deployments", "register", official.url, "--force", admin=server.admin)
        assert code == 0 and "replaced" in out

        code, out = perdure("deployments", "list", "--json", admin=server.admin)
        listed = json.loads(out)["deployments"]
        assert len(listed) == 1 and listed[0]["uri"] == official.url
        assert {"name": "Counter", "revision": 2} in listed[0]["services"]
        deployment_id = listed[0]["id"]

        code, out = perdure("deployments", "describe", deployment_id, admin=server.admin)
        assert code == 0 and official.url in out and "HTTP/2.0" in out and "add, get" in out

        answer = httpx.post(server.ingress + "/Counter/cli/add", json=3, timeout=20)
        assert answer.status_code == 200 and answer.json() == 3
        code, out = perdure("services", "list", "--json", admin=server.admin)
        counter = next(s for s in json.loads(out)["services"] if s["name"] == "Counter")
        assert counter["deployment_id"] == deployment_id and counter["revision"] == 2

        code, out = perdure("deployments", "remove", deployment_id, admin=server.admin)
        assert code == 1 and "still serves" in out and "--force" in out
        code, out = perdure("deployments", "remove", deployment_id, "--force", admin=server.admin)
        assert code == 0 and "removed" in out
        assert httpx.post(server.ingress + "/Counter/cli/add", json=3, timeout=20).status_code == 404
        code, out = perdure("deployments", "describe", deployment_id, admin=server.admin)
        assert code == 1 and "perdure deployments list" in out
    finally:
        official.stop()


def test_registration_errors_say_what_to_do(server: Server, tmp_path: Path) -> None:
    code, out = perdure("deployments", "register", "http://127.0.0.1:1", admin=server.admin)
    assert code == 1 and "cannot reach http://127.0.0.1:1/discover" in out
    code, out = perdure("deployments", "register", "ftp://x", admin=server.admin)
    assert code == 1 and "invalid deployment URI" in out
    answer = httpx.post(server.admin + "/deployments", json={"uri": 5}, timeout=5)
    assert answer.status_code == 400 and "uri" in answer.json()["message"]
    code, out = perdure("deployments", "list", admin=server.admin)
    assert code == 0 and "no deployments" in out
