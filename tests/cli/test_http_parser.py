"""The servers' HTTP/1.1 parser: httptools where installed, h11 otherwise, `PERDURE_HTTP` to choose.

The dev extras install httptools, so the in-process ingress and admin suites run on it; this test
runs the seed example through a real `perdure dev` on each parser, so h11 stays covered too."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from perdure.runtime import http

from .procs import DevServer

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = str(ROOT / "examples" / "user_updates.py") + ":app"

pytest.importorskip("httptools", reason="the dev extras install httptools (perdure[fast])")


@pytest.mark.parametrize("name", ["httptools", "h11"])
def test_dev_runs_the_seed_example_on_each_parser(tmp_path: Path, name: str) -> None:
    server = DevServer(EXAMPLE, tmp_path / "dev.db", stderr=tmp_path / "err").start({http.PARSER_ENV: name})
    try:
        assert f"loop, {name}" in server.lines[0]
        for key in ("alice", "bob"):
            response = httpx.post(
                f"{server.ingress}/userUpdates/{key}/updateUserEvent",
                json={"profile": {"name": key}, "permissions": ["read"], "resources": ["disk"]},
                timeout=10,
            )
            assert response.status_code == 200, response.text
            assert response.json() == "role-read"
        bad = httpx.post(f"{server.ingress}/userUpdates/alice/updateUserEvent", content=b"{", timeout=10)
        assert bad.status_code == 400 and bad.json()["source"] == "ingress", bad.text
        code, _ = server.stop(signal.SIGTERM)
    finally:
        server.kill()
    assert code == 0, server.stderr
    assert "Traceback" not in server.stderr


def test_the_default_is_httptools_when_installed_and_the_env_can_force_either() -> None:
    assert http.parser({}) == "httptools"
    assert http.parser({http.PARSER_ENV: "h11"}) == "h11"
    assert http.parser({http.PARSER_ENV: " HTTPTOOLS "}) == "httptools"
    with pytest.raises(http.ParserError, match="expected one of httptools, h11"):
        http.parser({http.PARSER_ENV: "hyper"})


def test_an_unusable_parser_is_one_line_before_anything_starts(tmp_path: Path) -> None:
    shadow = tmp_path / "shadow"  # httptools hidden from the child
    shadow.mkdir()
    (shadow / "httptools.py").write_text("raise ImportError('hidden by the test')\n")
    proc = subprocess.run(
        [sys.executable, "-m", "perdure.cli", "dev", EXAMPLE, "--db", str(tmp_path / "x.db")],
        env={"PYTHONPATH": str(shadow), http.PARSER_ENV: "httptools", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "httptools is not installed: pip install 'perdure[fast]'" in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr
