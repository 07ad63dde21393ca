"""The README's first command: `python3 dev.py demo` runs examples/demo.py (here with --exit)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_demo_calls_the_example_over_http_and_stops(tmp_path: Path) -> None:
    options = ["--exit", "--db", str(tmp_path / "demo.db"), "--ingress-port", "0", "--admin-port", "0"]
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "demo.py"), *options],
        capture_output=True,
        text=True,
        timeout=60,
    )
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
    assert re.search(r'alice\s+\{"role": "role-read-write"\}', out)
    assert re.search(r"userUpdates/bob/updateUserEvent\s+completed", out)
    assert "stopped cleanly" in out and "perdure dev exited with status 0" in out
    assert "Traceback" not in result.stderr
