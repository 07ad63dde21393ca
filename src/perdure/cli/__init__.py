"""The `perdure` command: run a server (`dev`, `serve`) and manage it over the admin API.

perdure dev examples/user_updates.py:app      # engine + SQLite + ingress :8080 + admin :9070
perdure serve --config perdure.toml           # the same, configured by file and PERDURE_* vars
perdure invocations list --status paused      # management over the admin API
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import click

from perdure import __version__
from perdure.config import ENV_PREFIX, ConfigError, Settings, load_settings
from perdure.sdk.service import App

from . import manage
from .awakeables import awakeables
from .loader import AppLoadError, load_app
from .output import CliError, Group, console

__all__ = ["cli", "main"]

DEV_DB = ".perdure/dev.db"
CONFIG_FILE = "perdure.toml"


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "-V", "--version", prog_name="perdure")
def cli() -> None:
    """perdure: durable handlers with a queue per key, served over HTTP.

    \b
    Run a server (engine + SQLite + HTTP ingress + admin API, one process):
      perdure dev examples/user_updates.py:app
      perdure serve --config perdure.toml
    \b
    Then call handlers over HTTP (Restate's ingress API):
      curl -X POST localhost:8080/userUpdates/alice/updateUserEvent \\
        -H 'content-type: application/json' -d '{"profile": {"name": "alice"}}'
    \b
    And manage it over the admin API (--admin-url, env PERDURE_ADMIN_URL):
      perdure services list
      perdure invocations list --status backing-off
      perdure state get userUpdates alice
      perdure sql "SELECT status, count(*) AS n FROM sys_invocation GROUP BY status"
    """


def server_options(fn: Any) -> Any:
    """The options `dev` and `serve` share; each defaults to 'not given' so env and file can fill it."""
    options = [
        click.option(
            "--db",
            metavar="PATH|URL",
            help=(
                "SQLite file, or postgresql://USER@HOST:PORT/DB for a cluster (every server on one "
                f"database is a node of it); 'memory:' keeps nothing. [env {ENV_PREFIX}DB]"
            ),
        ),
        click.option(
            "--partitions",
            type=int,
            metavar="N",
            help=(
                "PostgreSQL: partitions of a new database, fixed from then on "
                f"[default 24; env {ENV_PREFIX}PARTITIONS]."
            ),
        ),
        click.option(
            "--workers",
            type=int,
            metavar="N",
            help=(
                "PostgreSQL: run N member processes of the cluster on this machine, sharing the ports "
                f"[default 1; env {ENV_PREFIX}WORKERS]."
            ),
        ),
        click.option(
            "--synchronous",
            type=click.Choice(["FULL", "NORMAL", "OFF"], case_sensitive=False),
            help=f"SQLite fsync mode; FULL (default) survives power loss. [env {ENV_PREFIX}SYNCHRONOUS]",
        ),
        click.option(
            "--host",
            metavar="ADDR",
            help=f"Address both servers listen on [default 127.0.0.1; env {ENV_PREFIX}HOST].",
        ),
        click.option(
            "--ingress-port",
            type=int,
            metavar="PORT",
            help=f"Port of the HTTP ingress [default 8080; 0 = free port; env {ENV_PREFIX}INGRESS_PORT].",
        ),
        click.option(
            "--admin-port",
            type=int,
            metavar="PORT",
            help=f"Port of the admin API [default 9070; 0 = free port; env {ENV_PREFIX}ADMIN_PORT].",
        ),
        click.option(
            "--drain-timeout",
            type=float,
            metavar="SECONDS",
            help=(
                "On shutdown, wait this long for running attempts "
                f"[default 10; env {ENV_PREFIX}DRAIN_TIMEOUT]."
            ),
        ),
        click.option(
            "--kafka",
            multiple=True,
            metavar="NAME=BOOTSTRAP|embedded",
            help=(
                "Register a Kafka cluster at start (repeatable): NAME=HOST:PORT[,HOST:PORT...], or "
                "'embedded' to start a local dev broker (tansu) as cluster 'local'. "
                f"[env {ENV_PREFIX}KAFKA, entries separated by spaces]"
            ),
        ),
        click.option(
            "--kafka-port",
            type=int,
            metavar="PORT",
            help=f"Port of the embedded Kafka broker [default 0 = a free port; env {ENV_PREFIX}KAFKA_PORT].",
        ),
        click.option(
            "--console/--no-console",
            default=None,
            help=(
                "Serve the web console at the admin API's /ui/ "
                f"[default: on for dev, off for serve; env {ENV_PREFIX}CONSOLE=true|false]."
            ),
        ),
        click.option(
            "--log-level",
            type=click.Choice(["critical", "error", "warning", "info", "debug"], case_sensitive=False),
            help=f"Log verbosity on stderr [default warning; env {ENV_PREFIX}LOG_LEVEL].",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _configured(*, file: Path | None, flags: dict[str, Any], defaults: Settings) -> Settings:
    try:
        return load_settings(file=file, env=os.environ, flags=flags, defaults=defaults)
    except ConfigError as e:
        raise CliError(str(e)) from None


def _run_server(settings: Settings, title: str) -> None:
    from perdure.runtime import http
    from perdure.runtime import loop as event_loop

    from .server import StartupError, run  # uvicorn and the engine: only for the server commands

    try:
        app = load_app(settings.app) if settings.app is not None else App([])
    except AppLoadError as e:
        raise CliError(str(e)) from None
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        loop = event_loop.choice()  # PERDURE_LOOP, checked before anything starts (workers inherit it)
        http.parser()  # PERDURE_HTTP, likewise
        if settings.workers > 1:
            from .workers import run as run_workers

            code = run_workers(settings, console())
        else:
            code = event_loop.run(run(settings, app, title=title, console=console()), loop=loop)
    except (event_loop.LoopError, http.ParserError) as e:
        raise CliError(str(e)) from None
    except StartupError as e:
        raise CliError(str(e), exit_code=e.exit_code) from None
    sys.exit(code)


@cli.command(short_help="Run an app locally: engine + SQLite + ingress + admin API, one process.")
@click.argument("app", metavar="[MODULE:APP]", required=False)
@server_options
def dev(app: str | None, **flags: Any) -> None:
    """Run APP locally: engine, SQLite, ingress (:8080) and admin API (:9070) in one process.

    The web console is at http://127.0.0.1:9070/ui/ (--no-console turns it off).

    Without APP the engine serves only remote deployments: handlers written with perdure's SDK
    or the official Restate SDKs, served elsewhere and added with `perdure deployments register`.

    MODULE:APP names the perdure.App, like uvicorn: a module importable from the current
    directory (examples.user_updates:app) or a file (examples/user_updates.py:app). The journal
    lives in .perdure/dev.db unless --db says otherwise; restarting on the same file resumes
    everything unfinished. Options can also come from PERDURE_* environment variables.

    --kafka embedded also starts a local Kafka broker (tansu, records in memory) and registers it
    as cluster 'local'; --kafka NAME=HOST:PORT registers an existing cluster. Subscribe topics to
    handlers with POST /subscriptions on the admin API (or App(subscriptions=[...]) in code).

    Ctrl-C or SIGTERM stops accepting HTTP, lets running attempts finish (--drain-timeout),
    stops cleanly and exits 0; a second Ctrl-C exits at once (as safe as a crash).

    \b
      perdure dev examples/user_updates.py:app
      perdure dev myapp:app --db /tmp/try.db --ingress-port 8081 --admin-port 9071
      perdure dev examples/user_updates.py:app --kafka embedded
      perdure dev myapp:app --kafka local=127.0.0.1:9092
      perdure dev    # then: perdure deployments register http://127.0.0.1:9080
    """
    settings = _configured(file=None, flags={"app": app, **flags}, defaults=Settings(db=DEV_DB, console=True))
    _run_server(settings, f"perdure dev {app or ''}".rstrip())


@cli.command(short_help="Run a server configured by perdure.toml, PERDURE_* variables and flags.")
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar=f"{ENV_PREFIX}CONFIG",
    metavar="FILE",
    help=f"TOML settings file [default ./{CONFIG_FILE} if it exists; env {ENV_PREFIX}CONFIG].",
)
@click.option("--app", metavar="MODULE:APP", help=f"The perdure.App to serve [env {ENV_PREFIX}APP].")
@server_options
def serve(config_file: Path | None, **flags: Any) -> None:
    """Run a server configured by a TOML file, PERDURE_* variables and flags.

    Precedence: flag > environment variable > file > default. The file holds top-level keys:

    \b
      app = "myapp.handlers:app"       # PERDURE_APP
      db = "/var/lib/perdure/perdure.db" # PERDURE_DB (default .perdure/perdure.db)
      synchronous = "FULL"             # PERDURE_SYNCHRONOUS: FULL, NORMAL or OFF
      host = "127.0.0.1"               # PERDURE_HOST
      ingress_port = 8080              # PERDURE_INGRESS_PORT
      admin_port = 9070                # PERDURE_ADMIN_PORT
      drain_timeout = 10               # PERDURE_DRAIN_TIMEOUT (seconds)
      log_level = "warning"            # PERDURE_LOG_LEVEL
      kafka = ["embedded", "prod=10.0.0.5:9092"]   # PERDURE_KAFKA="embedded prod=10.0.0.5:9092"
      kafka_port = 9092                # PERDURE_KAFKA_PORT (the embedded broker's; 0 = free)
      console = true                   # PERDURE_CONSOLE: the web console at the admin port's /ui/

    Relative paths in the file are relative to the file. Shutdown works as in `perdure dev`.
    Without an app the engine serves only remote deployments (`perdure deployments register`).
    """
    if config_file is None and Path(CONFIG_FILE).is_file():
        config_file = Path(CONFIG_FILE)
    settings = _configured(file=config_file, flags=flags, defaults=Settings())
    _run_server(settings, f"perdure serve {settings.app or ''}".rstrip())


cli.add_command(manage.services)
cli.add_command(manage.invocations)
cli.add_command(awakeables)
cli.add_command(manage.state)
cli.add_command(manage.sql)
from .subscriptions import kafka_clusters, subscriptions  # noqa: E402  (kept next to its registration)

cli.add_command(kafka_clusters)
cli.add_command(subscriptions)
from .dlq import dlq  # noqa: E402

cli.add_command(dlq)
from .deployments import deployments  # noqa: E402

cli.add_command(deployments)
from .cluster import cluster  # noqa: E402

cli.add_command(cluster)


def main() -> None:
    """The console script's entry point."""
    cli(prog_name="perdure")
