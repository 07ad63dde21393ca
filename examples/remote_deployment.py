"""Handlers as a normal service: the seed's `updateUserEvent`, deployed apart from the engine.

The handler code (examples/user_updates.py) runs in its own process, served by hypercorn like
any ASGI app — a `perdure.App` speaks Restate's service protocol. The engine, here in this
process with no handlers of its own, discovers the deployment and pushes invocations to it over
HTTP/2; journaling, the queue per key and durable sleeps stay in the engine.

    python examples/remote_deployment.py [--users 5] [--http1.1]

The same thing from a shell: `hypercorn examples.user_updates:app --bind 127.0.0.1:9080`,
`perdure dev`, then `perdure deployments register http://127.0.0.1:9080`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

import perdure

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_handlers(port: int) -> subprocess.Popen[bytes]:
    """`hypercorn examples.user_updates:app` on 127.0.0.1:PORT; returns once it answers."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hypercorn",
            "examples.user_updates:app",
            "--bind",
            f"127.0.0.1:{port}",
            "--log-level",
            "WARNING",
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        start_new_session=True,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
            return process
        except httpx.HTTPError:
            time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    raise SystemExit("the handler service did not start")


async def demo(users: int, use_http_11: bool) -> None:
    port = free_port()
    handlers = serve_handlers(port)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            async with perdure.Engine(perdure.App([]), store=f"sqlite:///{tmp}/engine.db") as engine:
                deployment, _ = await engine.register_deployment(
                    f"http://127.0.0.1:{port}", use_http_11=use_http_11
                )
                services = ", ".join(s.name for s in engine.services())
                print(
                    f"registered {deployment.uri} as {deployment.id}: {services} "
                    f"({deployment.protocol_mode}, HTTP/{deployment.http_version}, "
                    f"protocol v{deployment.protocol_version})"
                )
                started = time.perf_counter()
                names = [f"user{i:02d}" for i in range(users)]
                roles = await asyncio.gather(
                    *(
                        engine.generic_call(
                            "userUpdates",
                            "updateUserEvent",
                            json.dumps({"profile": {"name": n}, "permissions": ["read"]}).encode(),
                            key=n,
                        )
                        for n in names
                    )
                )
                elapsed = time.perf_counter() - started
                for name, role in zip(names, roles, strict=True):
                    state = engine.reader().get_all_state("userUpdates", name)
                    print(f"{name:<10} {json.loads(role):<12} state role={state[b'role'].decode()}")
                print(f"{users} users updated on the remote deployment in {elapsed:.2f} s")
    finally:
        os.killpg(handlers.pid, signal.SIGINT)  # the SDK process; SIGINT, like Ctrl-C
        handlers.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=5)
    parser.add_argument(
        "--http1.1", dest="http11", action="store_true", help="request/response mode over HTTP/1.1"
    )
    args = parser.parse_args()
    asyncio.run(demo(args.users, args.http11))


if __name__ == "__main__":
    main()
