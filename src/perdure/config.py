"""Settings of a perdure server (`perdure dev`, `perdure serve`): one frozen dataclass and its loader.

Every option comes from, highest precedence first: a command-line flag, a `PERDURE_*` environment
variable, the TOML file (`perdure.toml`), the default. The file holds top-level keys named like
the fields below:

    app = "examples.user_updates:app"   # MODULE:APP or path/to/file.py:APP
    db = ".perdure/perdure.db"           # SQLite file, postgresql://… (a cluster), "memory:" keeps nothing
    synchronous = "FULL"                 # SQLite fsync mode: FULL, NORMAL or OFF
    host = "127.0.0.1"
    ingress_port = 8080
    admin_port = 9070
    drain_timeout = 10.0                 # seconds to let running attempts finish on shutdown
    log_level = "warning"
    kafka = ["embedded", "prod=10.0.0.5:9092,10.0.0.6:9092"]   # Kafka clusters to register
    kafka_port = 0                       # port of the embedded broker (0 picks a free one)
    partitions = 24                      # PostgreSQL: partitions of a new database (then fixed)
    workers = 1                          # PostgreSQL: member processes of the cluster on this machine
    console = true                       # serve the web console at the admin port's /ui/

The matching variables are `PERDURE_APP`, `PERDURE_DB`, `PERDURE_INGRESS_PORT`, ... Relative
paths in a file (`db`, a file-path `app`) are relative to the file's directory. Bad keys and
values raise `ConfigError`, whose message names the key, where it came from, and the fix.

`kafka` entries are `NAME=BOOTSTRAP` (a cluster's `bootstrap.servers`, comma-separated hosts) or
`embedded` (start a local tansu broker and register it as cluster `local`). In
`PERDURE_KAFKA` and on the command line several entries are separated by spaces or commas:
`PERDURE_KAFKA="embedded prod=10.0.0.5:9092,10.0.0.6:9092"` (a `host:port` after a comma
belongs to the cluster before it).
"""

from __future__ import annotations

import difflib
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

__all__ = ["EMBEDDED_KAFKA", "ENV_PREFIX", "ConfigError", "Settings", "load_settings"]

ENV_PREFIX = "PERDURE_"
#: The `kafka` entry that starts a local dev broker, and the cluster name it is registered as.
EMBEDDED_KAFKA, EMBEDDED_CLUSTER = "embedded", "local"
SYNCHRONOUS_MODES = ("FULL", "NORMAL", "OFF")
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
_BOOLEANS = {"true": True, "1": True, "yes": True, "on": True}
_BOOLEANS |= {"false": False, "0": False, "no": False, "off": False}


class ConfigError(Exception):
    """A setting is unknown or has a bad value. The message says which, where from, and how to fix it."""


@dataclass(frozen=True)
class Settings:
    """Everything a perdure server process needs; built by `load_settings`."""

    app: str | None = None
    db: str = ".perdure/perdure.db"
    synchronous: str = "FULL"
    host: str = "127.0.0.1"
    ingress_port: int = 8080
    admin_port: int = 9070
    drain_timeout: float = 10.0
    log_level: str = "warning"
    kafka: tuple[str, ...] = ()
    kafka_port: int = 0
    partitions: int = 0  # 0: the database's own count (a new one gets 24)
    workers: int = 1
    console: bool = False  # the web console under the admin API's /ui/ (`perdure dev` turns it on)

    @property
    def kafka_embedded(self) -> bool:
        """Whether to start a local dev broker (registered as cluster `local`)."""
        return EMBEDDED_KAFKA in self.kafka

    @property
    def kafka_clusters(self) -> dict[str, str]:
        """The `NAME=BOOTSTRAP` entries of `kafka`: cluster name -> `bootstrap.servers`."""
        pairs = (entry.partition("=") for entry in self.kafka if entry != EMBEDDED_KAFKA)
        return {name: servers for name, _, servers in pairs}

    @property
    def cluster(self) -> bool:
        """Whether `db` is a PostgreSQL database, shared by a cluster of nodes."""
        return self.db.startswith(("postgresql://", "postgres://"))

    @property
    def store_url(self) -> str:
        """The `perdure.storage.open_store` URL for `db` and `synchronous`."""
        if self.db in ("memory:", "memory://"):
            return "memory:"
        if "://" in self.db:  # a URL: open_store knows the schemes (and refuses the others)
            if self.db.startswith("sqlite://") and "synchronous=" not in self.db:
                return f"{self.db}{'&' if '?' in self.db else '?'}synchronous={self.synchronous}"
            return self.db
        path = Path(self.db)
        # open_store reads 'sqlite:///' + path, so an absolute path gets its fourth slash here.
        return f"sqlite:///{path.as_posix()}?synchronous={self.synchronous}"


_FIELDS = {f.name: f for f in fields(Settings)}


def env_name(key: str) -> str:
    """`ingress_port` -> `PERDURE_INGRESS_PORT`."""
    return ENV_PREFIX + key.upper()


def flag_name(key: str) -> str:
    """`ingress_port` -> `--ingress-port`."""
    return "--" + key.replace("_", "-")


def _suggest(key: str) -> str:
    close = difflib.get_close_matches(key.replace("-", "_").lower(), list(_FIELDS), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"{hint}known keys: {', '.join(_FIELDS)}"


def _convert(key: str, value: Any, source: str, *, from_text: bool) -> Any:
    """Check (and, for environment strings, parse) one value; `source` names where it came from."""

    def bad(expected: str) -> ConfigError:
        return ConfigError(f"{source}: {key} must be {expected}, got {value!r}")

    if key == "kafka":
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise bad('a list of "NAME=HOST:PORT" or "embedded" strings')
        return _kafka_entries(value, source)
    if key in ("ingress_port", "admin_port", "kafka_port"):
        if from_text and isinstance(value, str):
            try:
                value = int(value.strip())
            except ValueError:
                raise bad("an integer port (0-65535; 0 picks a free port)") from None
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
            raise bad("an integer port (0-65535; 0 picks a free port)")
        return value
    if key in ("partitions", "workers"):
        low = 0 if key == "partitions" else 1
        expected = "an integer from 1 to 1024" if key == "partitions" else "a positive integer"
        if from_text and isinstance(value, str):
            try:
                value = int(value.strip())
            except ValueError:
                raise bad(expected) from None
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= 1024:
            raise bad(expected)
        return value
    if key == "console":
        if from_text and isinstance(value, str) and value.strip().lower() in _BOOLEANS:
            value = _BOOLEANS[value.strip().lower()]
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if key == "drain_timeout":
        if from_text and isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                raise bad("a number of seconds, like 10 or 2.5") from None
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise bad("a number of seconds, like 10 or 2.5")
        if value < 0:
            raise bad("zero or more seconds")
        return float(value)
    if not isinstance(value, str):
        raise bad("a string (quote it in TOML)")
    value = value.strip()
    if key == "synchronous":
        if value.upper() not in SYNCHRONOUS_MODES:
            raise bad("one of FULL (default, fsync every commit), NORMAL or OFF")
        return value.upper()
    if key == "log_level":
        if value.lower() not in LOG_LEVELS:
            raise bad(f"one of {', '.join(LOG_LEVELS)}")
        return value.lower()
    if not value:
        raise bad("a non-empty string")
    return value


_CLUSTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_SERVER = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[^\s:/\[\]]+):[0-9]{1,5}$")


def _kafka_entries(values: list[str] | tuple[str, ...], source: str) -> tuple[str, ...]:
    """Parse `kafka` values into `("embedded", "NAME=h1:9092,h2:9092", ...)`; raises `ConfigError`.

    Entries are separated by whitespace, `;` or `,`; a `host:port` token without `=` continues the
    bootstrap list of the cluster before it.
    """
    example = "e.g. --kafka local=127.0.0.1:9092 or --kafka embedded"
    clusters: dict[str, list[str]] = {}
    embedded = False
    last: str | None = None
    for token in (t for v in values for t in re.split(r"[\s,;]+", v) if t):
        if token == EMBEDDED_KAFKA:
            embedded, last = True, None
            continue
        name, eq, server = token.partition("=")
        if not eq:
            if last is None:
                raise ConfigError(f"{source}: {token!r} must be NAME=HOST:PORT or embedded ({example})")
            name, server = last, token
        elif not _CLUSTER_NAME.match(name):
            raise ConfigError(
                f"{source}: bad Kafka cluster name {name!r}: use letters, digits, '.', '_', '-' ({example})"
            )
        elif name in clusters:
            raise ConfigError(f"{source}: Kafka cluster {name!r} is given twice")
        if not _SERVER.match(server):
            raise ConfigError(f"{source}: Kafka cluster {name!r}: {server!r} is not HOST:PORT ({example})")
        clusters.setdefault(name, []).append(server)
        last = name
    if embedded and EMBEDDED_CLUSTER in clusters:
        raise ConfigError(
            f"{source}: kafka 'embedded' registers its broker as cluster {EMBEDDED_CLUSTER!r}; "
            f"give the other cluster another name"
        )
    entries = [EMBEDDED_KAFKA] if embedded else []
    return tuple(entries + [f"{name}={','.join(servers)}" for name, servers in clusters.items()])


def _rebase(key: str, value: str, base: Path) -> str:
    """Make a relative path from a config file relative to the file's directory."""
    if (
        key == "db"
        and value not in ("memory:", "memory://")
        and "://" not in value
        and not Path(value).is_absolute()
    ):
        return str(base / value)
    if key == "app":
        target, colon, attr = value.rpartition(":")
        path = target if colon else value
        if (path.endswith(".py") or "/" in path) and not Path(path).is_absolute():
            return f"{base / path}{colon}{attr}"
    return value


def read_file(path: Path) -> dict[str, Any]:
    """The settings a TOML file sets (checked, not yet merged)."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found: pass an existing file to --config") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} is not valid TOML: {e}") from None
    found: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in _FIELDS:
            raise ConfigError(f"{path}: unknown key {key!r}; {_suggest(key)}")
        value = _convert(key, value, str(path), from_text=False)
        found[key] = _rebase(key, value, path.parent) if isinstance(value, str) else value
    return found


def read_env(env: Mapping[str, str]) -> dict[str, Any]:
    """The settings `PERDURE_*` variables set. Other `PERDURE_*` names (e.g. PERDURE_ADMIN_URL,
    read by the management commands) are left alone."""
    found: dict[str, Any] = {}
    for key in _FIELDS:
        name = env_name(key)
        if name in env and env[name] != "":
            found[key] = _convert(key, env[name], f"environment variable {name}", from_text=True)
    return found


def read_flags(flags: Mapping[str, Any]) -> dict[str, Any]:
    """The settings given on the command line (None means 'not given')."""
    found: dict[str, Any] = {}
    for key, value in flags.items():
        if key not in _FIELDS:
            raise ConfigError(f"unknown setting {key!r}; {_suggest(key)}")
        if value is not None and value != ():  # a repeatable option given no times
            found[key] = _convert(key, value, f"option {flag_name(key)}", from_text=True)
    return found


def load_settings(
    *,
    file: Path | None = None,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
    defaults: Settings | None = None,
) -> Settings:
    """Merge defaults < file < environment < flags into `Settings`; raises `ConfigError`.

    load_settings(file=Path("perdure.toml"), env=os.environ, flags={"ingress_port": 8081})
    """
    merged: dict[str, Any] = {}
    if file is not None:
        merged.update(read_file(file))
    merged.update(read_env(env or {}))
    merged.update(read_flags(flags or {}))
    return replace(defaults or Settings(), **merged)
