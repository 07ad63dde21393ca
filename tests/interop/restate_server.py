"""restate-server (the npm package `dev.py setup` installs into .cache/node) for interop tests.

    server = RestateServer(tmp_path, protocol_v7=True).start()   # free 127.0.0.1 ports, temp dir
    server.register("http://127.0.0.1:9080/")                     # POST /deployments
    httpx.post(f"{server.ingress}/Counter/a/add", json=5)
    server.stop()                                                 # by pid (its process group)

Every listener (ingress, admin, node/fabric) moves to a free loopback port; unix sockets are off
(`listen-mode = "tcp"`), telemetry is disabled, and the invoker's inactivity timeout is short so
bidirectional invocations waiting on something suspend quickly. The server still tries a GitHub
release check at start (unconditionally, in 1.7); without network it fails to connect, harmlessly.
Tests skip, saying why, when the binary is absent (no npm at setup).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from .processes import die_with_parent, free_port, with_group

ROOT = Path(__file__).resolve().parents[2]
NODE_DIR = ROOT / ".cache" / "node"
START_TIMEOUT_S = 60.0
VERSION = "1.7.12"  # as pinned in tests/interop/package.json


def binary() -> Path | None:
    """The restate-server executable (the platform package's, not the node wrapper), if installed."""
    override = os.environ.get("PERDURE_RESTATE_SERVER")
    if override:
        return Path(override)
    found = sorted((NODE_DIR / "node_modules" / "@restatedev").glob("restate-server-*/bin/restate-server"))
    return found[0] if found else None


def require_binary() -> Path:
    """The binary, or skip the calling test with the reason."""
    path = binary()
    if path is None or not path.exists():
        pytest.skip(
            f"restate-server {VERSION} is not installed in {NODE_DIR} "
            "(`python3 dev.py setup` installs it when npm is on PATH)"
        )
    return path


class RestateServer:
    """One restate-server process with its own base dir and ports."""

    def __init__(self, base_dir: Path, *, protocol_v7: bool = False, inactivity_timeout: str = "1s") -> None:
        self.base_dir = base_dir
        self.protocol_v7 = protocol_v7
        self.inactivity_timeout = inactivity_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.ports: dict[str, int] = {}
        self.log_path = base_dir / "restate-server.log"

    @property
    def ingress(self) -> str:
        return f"http://127.0.0.1:{self.ports['ingress']}"

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.ports['admin']}"

    def config(self) -> str:
        node, ingress, admin = self.ports["node"], self.ports["ingress"], self.ports["admin"]
        lines = [
            'node-name = "perdure-interop"',
            'cluster-name = "perdure-interop"',
            f'base-dir = "{self.base_dir / "data"}"',
            'listen-mode = "tcp"',
            f'bind-address = "127.0.0.1:{node}"',
            f'advertised-address = "http://127.0.0.1:{node}/"',
            "auto-provision = true",
            "default-num-partitions = 2",
            "default-replication = 1",
            "disable-telemetry = true",
            'shutdown-timeout = "5s"',
            'log-filter = "warn,restate=info"',
            "log-disable-ansi-codes = true",
        ]
        if self.protocol_v7:
            lines.append("experimental-enable-protocol-v7 = true")
        lines += [
            "",
            "[worker.invoker]",
            f'inactivity-timeout = "{self.inactivity_timeout}"',
            "",
            "[ingress]",
            f'bind-address = "127.0.0.1:{ingress}"',
            "",
            "[admin]",
            f'bind-address = "127.0.0.1:{admin}"',
            "disable-web-ui = true",
        ]
        return "\n".join(lines) + "\n"

    def start(self) -> RestateServer:
        exe = require_binary()
        self.base_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(3):  # a free port can be taken between picking and binding it
            self.ports = {"node": free_port(), "ingress": free_port(), "admin": free_port()}
            config = self.base_dir / "restate.toml"
            config.write_text(self.config())
            with self.log_path.open("ab") as log:
                self.proc = subprocess.Popen(
                    [str(exe), "--config-file", str(config), "--no-logo"],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    cwd=self.base_dir,
                    start_new_session=True,  # its own process group: stopped as one, by pid
                    preexec_fn=die_with_parent,
                )
            if self._wait_healthy():
                return self
            self.stop()
        raise AssertionError(f"restate-server did not start:\n{self.log_tail()}")

    def _wait_healthy(self) -> bool:
        assert self.proc is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                admin = httpx.get(f"{self.admin}/health", timeout=1)
                ingress = httpx.get(f"{self.ingress}/restate/health", timeout=1)
                if admin.status_code == 200 and ingress.status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        return False

    def log_tail(self, lines: int = 60) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def register(self, uri: str, *, use_http_11: bool = False, timeout: float = 30.0) -> dict[str, Any]:
        """Register a deployment (the server runs its discovery); returns the admin's answer."""
        body: dict[str, Any] = {"uri": uri, "force": True}
        if use_http_11:
            body["use_http_11"] = True
        response = httpx.post(f"{self.admin}/deployments", json=body, timeout=timeout)
        if response.status_code not in (200, 201):
            raise AssertionError(f"registering {uri}: {response.status_code} {response.text}")
        result: dict[str, Any] = response.json()
        self.wait_for_services([s["name"] for s in result.get("services", [])], timeout)
        return result

    def deployment(self, deployment_id: str) -> dict[str, Any]:
        """The admin's record of a deployment (protocol type, HTTP version, SDK version...)."""
        result: dict[str, Any] = httpx.get(f"{self.admin}/deployments/{deployment_id}", timeout=5).json()
        return result

    def wait_for_services(self, names: list[str], timeout: float = 30.0) -> None:
        """Until the ingress knows `names` (it learns of a registration a moment after the admin)."""
        deadline = time.monotonic() + timeout
        while True:
            health = httpx.get(f"{self.ingress}/restate/health", timeout=5).json()
            known = {s if isinstance(s, str) else s.get("name") for s in health.get("services", [])}
            if set(names) <= known:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"the ingress never learnt of {sorted(set(names) - known)}: {health}")
            time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM its process group (by the pid we started), SIGKILL if it lingers."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        with_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with_group(proc.pid, signal.SIGKILL)
            proc.wait(10)
