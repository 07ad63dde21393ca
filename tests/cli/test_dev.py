"""`perdure dev` and `perdure serve` as real processes on free loopback ports."""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from perdure.storage import open_store
from perdure.storage.api import Status

from .procs import DevServer, Server

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = str(ROOT / "examples" / "user_updates.py") + ":app"
SAMPLE = str(Path(__file__).with_name("sample_app.py")) + ":app"


def curl_to_httpx(line: str) -> httpx.Response:
    """Run the banner's curl line (curl -X POST URL -H 'name: value' -d BODY) with httpx."""
    args = shlex.split(line)
    assert args[:3] == ["curl", "-X", "POST"]
    url, headers, body = args[3], {}, None
    rest = iter(args[4:])
    for flag in rest:
        value = next(rest)
        if flag == "-H":
            name, _, header_value = value.partition(": ")
            headers[name] = header_value
        elif flag == "-d":
            body = value.encode()
    return httpx.post(url, headers=headers, content=body, timeout=10)


def test_dev_serves_the_example_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    db = tmp_path / "dev.db"
    server = DevServer(EXAMPLE, db, stderr=tmp_path / "err").start()
    try:
        assert server.healthy()
        banner = server.output
        assert f"perdure dev {EXAMPLE}" in banner and "userUpdates (object)" in banner
        assert "sqlite, synchronous=FULL" in banner and str(db) in banner
        curl = next(line.strip() for line in server.lines if line.strip().startswith("curl "))
        assert "/userUpdates/alice/updateUserEvent" in curl
        response = curl_to_httpx(curl)  # the banner's example, pasted
        assert response.status_code == 200, response.text
        assert response.json() == "role-example"
        code, seconds = server.stop(signal.SIGTERM)
    finally:
        server.kill()
    assert code == 0, server.stderr
    assert seconds < 5
    assert "SIGTERM: draining" in server.output and "stopped cleanly" in server.output
    assert "Traceback" not in server.stderr

    async def stored() -> None:
        store = open_store(f"sqlite:///{db}")
        try:
            (inv,) = store.reader().list_invocations(limit=10)
            assert (inv.service, inv.handler, inv.key, inv.status) == (
                "userUpdates",
                "updateUserEvent",
                "alice",
                Status.COMPLETED,
            )
            assert inv.outcome is not None and inv.outcome.value == b'"role-example"'
            state = store.reader().get_all_state("userUpdates", "alice")
            assert state == {b"role": b'"role-example"'}
        finally:
            await store.close()

    asyncio.run(stored())


def test_ctrl_c_drains_the_attempt_in_flight_and_a_second_one_exits_at_once(tmp_path: Path) -> None:
    server = DevServer(SAMPLE, tmp_path / "d.db", stderr=tmp_path / "err").start()
    answers: list[httpx.Response] = []
    try:
        call = threading.Thread(
            target=lambda: answers.append(httpx.post(server.ingress + "/jobs/work", json=0.6, timeout=10))
        )
        call.start()
        time.sleep(0.3)  # the ctx.run step is half done
        code, seconds = server.stop(signal.SIGINT)
        call.join(10)
    finally:
        server.kill()
    assert code == 0, server.stderr
    assert "stopped cleanly" in server.output
    assert [(a.status_code, a.json()) for a in answers] == [(200, "worked 0.6 s")]  # answered while draining
    assert 0.2 < seconds < 5

    again = DevServer(
        SAMPLE, tmp_path / "d.db", stderr=tmp_path / "err2", args=("--drain-timeout", "30")
    ).start()

    def long_call() -> None:
        with contextlib.suppress(httpx.TransportError):  # the server exits under it
            httpx.post(again.ingress + "/jobs/work", json=20, timeout=30)

    try:
        call = threading.Thread(target=long_call, daemon=True)
        call.start()
        time.sleep(0.3)
        assert again.proc is not None
        again.proc.send_signal(signal.SIGINT)
        time.sleep(0.3)
        code, seconds = again.stop(signal.SIGINT)  # the second Ctrl-C
    finally:
        again.kill()
    assert code == 130 and seconds < 2, again.output
    assert "exiting now" in again.output


def test_serve_reads_the_file_and_env_beats_it(tmp_path: Path) -> None:
    config = tmp_path / "perdure.toml"
    config.write_text(
        f'app = "{SAMPLE}"\ndb = "data/serve.db"\ningress_port = 1\nadmin_port = 0\nsynchronous = "NORMAL"\n'
    )
    server = Server(["serve", "--config", str(config)], stderr=tmp_path / "err")
    server.start(env={"PERDURE_INGRESS_PORT": "0"})  # port 1 in the file would fail
    try:
        assert "synchronous=NORMAL" in server.output and str(tmp_path / "data" / "serve.db") in server.output
        response = httpx.post(server.ingress + "/counter/a/add", json=5, timeout=10)
        assert (response.status_code, response.json()) == (200, 5)
        code, _ = server.stop()
    finally:
        server.kill()
    assert code == 0
    assert (tmp_path / "data" / "serve.db").exists()


def test_a_taken_port_is_one_line_with_the_fix(tmp_path: Path) -> None:
    first = DevServer(SAMPLE, tmp_path / "a.db", stderr=tmp_path / "err").start()
    try:
        port = first.ingress.rsplit(":", 1)[1]
        ports = ["--ingress-port", port, "--admin-port", "0"]
        result = subprocess.run(
            [sys.executable, "-m", "perdure.cli", "dev", SAMPLE, "--db", str(tmp_path / "b.db"), *ports],
            capture_output=True,
            text=True,
            timeout=30,
        )
    finally:
        first.stop()
        first.kill()
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: cannot listen on 127.0.0.1:{port} for the ingress: the port is in use. Stop the other "
        "process or pick another port with --ingress-port (0 picks a free one)"
    ]


def test_callers_of_unfinished_invocations_get_503_at_shutdown(tmp_path: Path) -> None:
    db = tmp_path / "d.db"
    server = DevServer(SAMPLE, db, stderr=tmp_path / "err").start()
    answers: list[httpx.Response] = []
    try:
        call = threading.Thread(
            target=lambda: answers.append(httpx.post(server.ingress + "/jobs/nap", json=600, timeout=10))
        )
        call.start()
        time.sleep(0.3)  # the nap is a durable 10-minute sleep: suspended, not running
        code, seconds = server.stop(signal.SIGTERM)
        call.join(10)
    finally:
        server.kill()
    assert code == 0 and seconds < 3, server.stderr
    assert [(a.status_code, a.json()["message"]) for a in answers] == [
        (503, "the engine stopped before the invocation completed")
    ]
    assert "Traceback" not in server.stderr

    async def still_sleeping() -> None:
        store = open_store(f"sqlite:///{db}")
        try:
            (inv,) = store.reader().list_invocations(limit=10)
            assert inv.handler == "nap" and inv.status is Status.SUSPENDED  # it resumes on the next start
        finally:
            await store.close()

    asyncio.run(still_sleeping())
