"""The official Python SDK (restate-sdk) under hypercorn in a subprocess, on a free loopback port."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

HERE = Path(__file__).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_hypercorn(
    *extra: str, scheme: str = "http", verify: ssl.SSLContext | bool = False
) -> tuple[subprocess.Popen[bytes], str]:
    """Serve sdk_app:app (HTTP/1.1 and h2c, or TLS with `--certfile`); wait until /discover answers."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "hypercorn", "-w", "0", "--bind", f"127.0.0.1:{port}", *extra, "sdk_app:app"],
        cwd=HERE,
        env={**os.environ, "PYTHONPATH": str(HERE)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"{scheme}://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            answer = httpx.get(
                f"{url}/discover",
                headers={"accept": "application/vnd.restate.endpointmanifest.v2+json"},
                verify=verify,
            )
            if answer.status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            raise RuntimeError(
                f"hypercorn did not start: {proc.stderr.read().decode() if proc.stderr else ''}"
            )
        time.sleep(0.05)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)  # the SDK takes over SIGTERM once it has served a request
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stderr:
        proc.stderr.close()


@pytest.fixture(scope="package")
def sdk_url() -> Iterator[str]:
    """Base URL of the SDK endpoint (plain http: HTTP/1.1 and h2c)."""
    proc, url = start_hypercorn()
    try:
        yield url
    finally:
        stop(proc)


@pytest.fixture(scope="package")
def tls_sdk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """The same endpoint over TLS with a throw-away self-signed certificate: (base URL, cert file)."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    trust = ssl.create_default_context(cafile=str(cert))
    proc, url = start_hypercorn("--certfile", str(cert), "--keyfile", str(key), scheme="https", verify=trust)
    try:
        yield url, cert
    finally:
        stop(proc)


@pytest.fixture
def closed_port() -> Callable[[], int]:
    """A loopback port nothing listens on (taken then released)."""
    return free_port
