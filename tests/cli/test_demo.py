"""The README's first command: `python3 dev.py demo` runs examples/demo.py (here with --exit).

The default tour feeds the seed example from Kafka (`perdure dev … --kafka embedded`); `--http`
is the HTTP tour of the same example.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def demo(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    options = ["--exit", "--db", str(tmp_path / "demo.db"), "--ingress-port", "0", "--admin-port", "0"]
    return subprocess.run(
        [sys.executable, str(ROOT / "examples" / "demo.py"), *options, *extra],
        capture_output=True,
        text=True,
        timeout=90,
        env={**os.environ, "COLUMNS": "200"},  # rich's width when not on a terminal: no wrapped rows
    )


def test_demo_feeds_the_example_from_kafka_and_stops(tmp_path: Path) -> None:
    result = demo(tmp_path, "--kafka-port", "0")
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "perdure dev examples/user_updates.py:app" in out and "--kafka embedded" in out
    assert re.search(r"kafka\s+local = 127\.0\.0\.1:\d+ \(embedded tansu broker", out)  # the banner
    assert re.search(r'201 \{"id":"sub_\w+","source":"kafka://local/user-updates"', out)
    assert "producing to user-updates" in out and "2001/2001" in out
    assert re.search(r"45 other users .* 1800/1800", out) and re.search(r"5 new accounts .* 200/200", out)
    rows = dict(re.findall(r"^ (user\d\d) .*?(\d+/\d+) .*$", out, re.MULTILINE))
    assert rows and all(updates == "40/40" for updates in rows.values()), rows
    assert re.search(r"^ user07 .* ✓ .* new account: slept 5 s", out, re.MULTILINE)
    assert re.search(r"^ 38 more\s+38 × all\s+38 × ✓", out, re.MULTILINE)
    assert "2,001 records → 2,001 invocations: 2,000 updates handled and 1 poison record parked" in out
    assert "A slow key holds up its own queue, never its partition." in out
    # The new accounts slept 5 s; everyone else was done long before.
    slow = [float(s) for s in re.findall(r"^ user\d\d .* (\d+\.\d) s\s+new account", out, re.MULTILINE)]
    [fast] = [float(s) for s in re.findall(r"≤ (\d+\.\d) s", out)]
    assert len(slow) == 5 and min(slow) >= 5 and fast < min(slow) - 2, (slow, fast)
    assert "status running, 2,001 records accepted" in out
    partitions = re.findall(r"^user-updates/(\d)\s+\d+\s+(\d+)\s+(\d+)\s+0\s+0\s+no", out, re.MULTILINE)
    assert len(partitions) == 4 and sum(int(c) for _, c, _ in partitions) == 2001
    assert all(consumed == high for _, consumed, high in partitions)
    # The poison record parked, the fix, the re-drive (once), the record's effect in the state
    assert re.search(
        r"^inv_\w+\s+sub_\w+\s+user-updates/\d/\d+\s+user03\s+the permission service does not know auditor",
        out,
        re.MULTILINE,
    )
    assert '200 "the permission service knows auditor now"' in out
    assert len(re.findall(r"^re-driven inv_\w+ as inv_\w+$", out, re.MULTILINE)) == 1
    assert re.search(r"re-driven\s+\S+ as inv_\w+ \(completed\)", out)
    assert '"key":"user03","state":{"role":"role-auditor"}' in out
    assert '200 "role-admin-billing"' in out  # over HTTP
    # The state as the admin API answered it, under the curl line that asked
    assert re.search(
        r'curl http://127\.0\.0\.1:\d+/state/userUpdates/(user\d\d)\n200 \{"service":"userUpdates",'
        r'"key":"\1","state":\{"role":"role-admin-billing"\}\}',
        out,
    )
    assert "stopped cleanly" in out and "perdure dev exited with status 0" in out
    assert "Traceback" not in result.stderr


def test_demo_http_calls_the_example_over_http_and_stops(tmp_path: Path) -> None:
    result = demo(tmp_path, "--http")
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "perdure dev examples/user_updates.py:app" in out  # the server's banner
    assert "$ curl -X POST http://127.0.0.1:" in out
    assert '200 "role-read-write"' in out
    assert re.search(r'202 \{"invocationId":"inv_\w+","status":"Accepted"', out)
    ids = re.findall(r'200 "role-admin"  x-restate-id: (inv_\w+)', out)
    assert len(ids) == 2 and ids[0] == ids[1]  # the idempotent repeat answered by the same invocation
    assert '400 {"code":400,"message":"a user update needs profile.name"' in out
    assert '200 "role-read"' in out  # attach waited for the delayed send
    assert re.search(
        r'/state/userUpdates/alice\n200 \{"service":"userUpdates","key":"alice","state":'
        r'\{"role":"role-read-write"\}\}',
        out,
    )
    assert re.search(r"userUpdates/bob/updateUserEvent\s+completed", out)
    assert "stopped cleanly" in out and "perdure dev exited with status 0" in out
    assert "Traceback" not in result.stderr


def test_sigint_to_dev_py_stops_the_demo_and_the_server_it_started(tmp_path: Path) -> None:
    options = ["--http", "--db", str(tmp_path / "demo.db"), "--ingress-port", "0", "--admin-port", "0"]
    dev = subprocess.Popen(
        [sys.executable, str(ROOT / "dev.py"), "demo", *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        start_new_session=True,  # its own process group: cleanup reaches the demo under it
    )
    server_pid = None
    try:
        assert dev.stdout is not None
        for line in dev.stdout:  # until the demo says it keeps the server running
            found = re.search(r"perdure dev examples/user_updates\.py:app pid (\d+)", line)
            server_pid = int(found.group(1)) if found else server_pid
            if "keeps running" in line:
                break
        assert server_pid is not None
        dev.send_signal(signal.SIGINT)  # to dev.py alone, as `kill -INT` sends it
        rest = dev.communicate(timeout=60)[0]
        assert dev.returncode == 0, rest
        assert "stopped cleanly" in rest
        assert not Path(f"/proc/{server_pid}").exists(), "perdure dev outlived the demo"
    finally:  # a failed run leaves nothing behind: dev.py, the demo, and the server by its pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(dev.pid, signal.SIGKILL)
        dev.wait()
        if server_pid is not None and Path(f"/proc/{server_pid}").exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(server_pid, signal.SIGKILL)
