"""`perdure dev` and `perdure serve` as real processes on free loopback ports."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from perdure.config import ConfigError, load_settings
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


def test_a_second_server_on_the_same_database_is_refused_naming_the_first(tmp_path: Path) -> None:
    """Two engines on one SQLite file would corrupt each other's work: the second one may not start,
    and the lock goes with the first one's process — a SIGKILL included."""
    db = tmp_path / "one.db"
    first = DevServer(SAMPLE, db, stderr=tmp_path / "err").start()
    second = [sys.executable, "-m", "perdure.cli", "serve", "--db", str(db)]
    try:
        refused = subprocess.run(
            [*second, "--ingress-port", "0", "--admin-port", "0"], capture_output=True, text=True, timeout=30
        )
    finally:
        first.kill()  # SIGKILL: the kernel releases the lock
    assert refused.returncode == 1
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: the database {db} is in use"), refused.stderr
    assert f"pid {first.pid} on " in lines[0] and "--db" in lines[0]
    after = DevServer(SAMPLE, db, stderr=tmp_path / "err2").start()
    try:
        assert after.healthy()
    finally:
        after.stop()
        after.kill()


@pytest.mark.parametrize(
    ("db", "message"),
    [
        ("postgresql://127.0.0.1:1/x", "cannot connect to PostgreSQL at 127.0.0.1:1/x"),
        ("mysql://127.0.0.1/x", "unknown scheme 'mysql'"),
    ],
)
def test_a_database_url_is_never_taken_as_a_path_and_an_unreachable_one_is_one_line(
    tmp_path: Path, db: str, message: str
) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "perdure.cli",
            "serve",
            "--db",
            db,
            "--ingress-port",
            "0",
            "--admin-port",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
    )
    assert result.returncode == (69 if db.startswith("postgresql") else 1)  # 69: EX_UNAVAILABLE
    assert message in result.stderr and "--db" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert list(tmp_path.iterdir()) == []  # no file made of the URL


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


# ---- --kafka: clusters registered at start; `embedded` runs a tansu broker as cluster `local`

KAFKA_APP = str(ROOT / "tests" / "kafka_examples" / "subscribed_app.py") + ":app"
_EMBEDDED = re.compile(r"kafka\s+local = (127\.0\.0\.1:(\d+)) \(embedded tansu broker, pid (\d+);")


def _embedded(server: Server) -> tuple[str, int, int]:
    """(bootstrap, port, pid) of the embedded broker, from the banner."""
    found = _EMBEDDED.search(server.output)
    assert found is not None, server.output
    return found.group(1), int(found.group(2)), int(found.group(3))


def _gone(pid: int, within: float = 5.0) -> bool:
    """True once `pid` has exited (a zombie waiting for a reaper counts as exited)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            return True
        except OSError:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
        else:
            if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                return True
        time.sleep(0.05)
    return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_dev_kafka_embedded_feeds_the_apps_subscription_and_stops_the_broker(tmp_path: Path) -> None:
    db = tmp_path / "k.db"
    args = ("--kafka", "embedded", "--kafka", "other=127.0.0.1:1")
    server = DevServer(KAFKA_APP, db, stderr=tmp_path / "err", args=args).start()
    try:
        bootstrap, _, pid = _embedded(server)
        assert "kafka     other = 127.0.0.1:1" in server.output

        async def produce() -> None:
            producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
            await producer.start()
            try:
                for n, key in enumerate((b"k1", b"k2", b"k1")):
                    await producer.send_and_wait("events", json.dumps({"n": n}).encode(), key=key)
            finally:
                await producer.stop()

        asyncio.run(produce())  # the app's subscription (declared in code) names cluster `local`
        deadline = time.monotonic() + 20
        state: dict[str, object] = {}
        while time.monotonic() < deadline and state.get("n") != 2:
            state = httpx.get(server.admin + "/state/events/k1", timeout=5).json()["state"]
            time.sleep(0.05)
        assert state.get("n") == 2, state
        last: Any = state["last"]
        assert last["n"] == 2 and last["offset"].isdigit()  # kafka.offset reaches the handler
        code, _ = server.stop(signal.SIGTERM)
    finally:
        server.kill()
    assert code == 0, server.stderr
    assert "stopped cleanly" in server.output and "Traceback" not in server.stderr
    assert _gone(pid), "the embedded broker outlived perdure dev"

    async def catalog() -> dict[str, dict[str, str]]:
        store = open_store(f"sqlite:///{db}")
        try:
            return {name: dict(c.properties) for name, c in store.read_catalog().clusters.items()}
        finally:
            await store.close()

    assert asyncio.run(catalog()) == {
        "local": {
            "bootstrap.servers": bootstrap,
            "session.timeout.ms": "2000",
            "heartbeat.interval.ms": "200",
        },
        "other": {"bootstrap.servers": "127.0.0.1:1"},
    }


def test_a_second_ctrl_c_kills_the_embedded_broker_too(tmp_path: Path) -> None:
    args = ("--kafka", "embedded", "--drain-timeout", "30")
    server = DevServer(SAMPLE, tmp_path / "d.db", stderr=tmp_path / "err", args=args).start()

    def long_call() -> None:
        with contextlib.suppress(httpx.TransportError):  # the server exits under it
            httpx.post(server.ingress + "/jobs/work", json=20, timeout=30)

    try:
        _, _, pid = _embedded(server)
        threading.Thread(target=long_call, daemon=True).start()
        time.sleep(0.3)
        assert server.proc is not None
        server.proc.send_signal(signal.SIGINT)
        time.sleep(0.3)
        code, _ = server.stop(signal.SIGINT)
    finally:
        server.kill()
    assert code == 130, server.output
    assert _gone(pid), "the embedded broker outlived a second Ctrl-C"


def test_serve_takes_kafka_from_env_over_the_file(tmp_path: Path) -> None:
    config = tmp_path / "perdure.toml"
    config.write_text(f'app = "{SAMPLE}"\nkafka = ["prod=10.0.0.5:9092"]\ningress_port = 0\nadmin_port = 0\n')
    port = _free_port()
    server = Server(["serve", "--config", str(config)], stderr=tmp_path / "err", cwd=tmp_path)
    server.start(env={"PERDURE_KAFKA": "embedded", "PERDURE_KAFKA_PORT": str(port)})
    try:
        assert _embedded(server)[1] == port
        assert "prod" not in server.output  # the variable replaces the file's list
        code, _ = server.stop()
    finally:
        server.kill()
    assert code == 0, server.stderr


def test_kafka_startup_errors_are_one_line_with_the_fix(tmp_path: Path) -> None:
    def dev(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "perdure.cli", "dev", *args, "--db", str(tmp_path / "e.db")]
        return subprocess.run(
            [*command, "--ingress-port", "0", "--admin-port", "0"], capture_output=True, text=True, timeout=60
        )

    no_cluster = dev(KAFKA_APP)  # the app subscribes to kafka://local/events, and nothing provides `local`
    assert no_cluster.returncode == 1
    [line] = no_cluster.stderr.strip().splitlines()
    assert "unknown Kafka cluster 'local'" in line and "pass --kafka NAME=HOST:PORT" in line, line

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = dev(SAMPLE, "--kafka", "embedded", "--kafka-port", str(port))
    assert busy.returncode == 1
    assert busy.stderr.strip().splitlines() == [
        f"error: cannot listen on 127.0.0.1:{port} for the embedded Kafka broker: the port is in use. "
        "Stop the other process or pick another port with --kafka-port (0 picks a free one)"
    ]

    bad = dev(SAMPLE, "--kafka", "127.0.0.1:9092")
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines() == [
        "error: option --kafka: '127.0.0.1:9092' must be NAME=HOST:PORT or embedded "
        "(e.g. --kafka local=127.0.0.1:9092 or --kafka embedded)"
    ]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({"env": {"PERDURE_KAFKA": "embedded"}}, ("embedded",)),
        # Spaces or commas separate entries; a host:port after a comma continues the cluster before it.
        (
            {"env": {"PERDURE_KAFKA": "a=h1:9092,h2:9092,b=[::1]:9093 embedded"}},
            ("embedded", "a=h1:9092,h2:9092", "b=[::1]:9093"),
        ),
        (
            {"flags": {"kafka": ("a=h:1", "embedded")}, "env": {"PERDURE_KAFKA": "b=h:2"}},
            ("embedded", "a=h:1"),
        ),
        ({"flags": {"kafka": ()}, "env": {"PERDURE_KAFKA": "b=h:2"}}, ("b=h:2",)),  # no flag given
        ({"file": 'kafka = "embedded"\nkafka_port = 9092'}, ("embedded",)),
        ({"file": 'kafka = ["a=h:1", "b=h:2"]'}, ("a=h:1", "b=h:2")),
    ],
)
def test_kafka_settings(tmp_path: Path, given: dict[str, Any], expected: tuple[str, ...]) -> None:
    file = None
    if "file" in given:
        file = tmp_path / "perdure.toml"
        file.write_text(given["file"])
    s = load_settings(file=file, env=given.get("env", {}), flags=given.get("flags", {}))
    assert s.kafka == expected
    assert s.kafka_embedded == ("embedded" in expected)
    assert s.kafka_clusters == dict(e.split("=", 1) for e in expected if e != "embedded")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "local=h:1 embedded",
            "kafka 'embedded' registers its broker as cluster 'local'; give the other cluster",
        ),
        ("a=h:1 a=h:2", "Kafka cluster 'a' is given twice"),
        ("a=h", "Kafka cluster 'a': 'h' is not HOST:PORT"),
        ("a/b=h:1", "bad Kafka cluster name 'a/b'"),
        ("h:9092", "'h:9092' must be NAME=HOST:PORT or embedded"),
    ],
)
def test_kafka_setting_errors(value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"environment variable PERDURE_KAFKA: {message}")):
        load_settings(env={"PERDURE_KAFKA": value})
    with pytest.raises(ConfigError, match="kafka_port must be an integer port"):
        load_settings(env={"PERDURE_KAFKA_PORT": "x"})
