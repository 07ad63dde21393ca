"""Storage backends behind the ports of `perdure.storage.api`."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from perdure.storage import memory, sqlite
from perdure.storage.api import ClusterDatabase, Database

__all__ = ["open_store"]

_ACCEPTED = (
    "accepted store URLs: 'memory:', 'sqlite:///relative/path.db', 'sqlite:////absolute/path.db'"
    " (optionally with '?synchronous=FULL|NORMAL|OFF'), 'postgresql://USER@HOST:PORT/DATABASE'"
)


def open_store(url: str, *, partitions: int | None = None) -> Database | ClusterDatabase:
    """Open the store a URL names, creating a sqlite file's parent directories.

    A PostgreSQL database is shared by a cluster: `partitions` is its partition count when it is
    created (24 by default), checked against the stored one afterwards.

    Example: ``open_store("sqlite:///data/perdure.db?synchronous=NORMAL")``.
    """
    if url in ("memory:", "memory://"):
        return memory.Store()
    parts = urlsplit(url)
    if parts.scheme in ("postgresql", "postgres"):
        from perdure.storage import postgres  # psycopg loads only for PostgreSQL

        return postgres.Database(url, partitions=partitions)
    if "://" in url and parts.scheme != "sqlite":
        raise ValueError(f"bad store URL {url!r}: unknown scheme {parts.scheme!r}; {_ACCEPTED}")
    if parts.scheme != "sqlite" or not url.startswith("sqlite:///") or parts.fragment:
        raise ValueError(f"bad store URL {url!r}; {_ACCEPTED}")
    # As in SQLAlchemy: what follows 'sqlite:///' is the path, so a fourth slash makes it absolute.
    path = parts.path[1:]
    if not path or path.endswith("/"):
        raise ValueError(f"bad store URL {url!r}: no database file; {_ACCEPTED}")
    options: dict[str, str] = {}
    for name, values in parse_qs(parts.query, keep_blank_values=True, strict_parsing=False).items():
        if name != "synchronous" or len(values) != 1:
            raise ValueError(f"bad store URL {url!r}: unknown or repeated option {name!r}; {_ACCEPTED}")
        options[name] = values[0]
    synchronous = options.get("synchronous", "FULL")
    if synchronous.upper() not in sqlite.SYNCHRONOUS_MODES:
        raise ValueError(f"bad store URL {url!r}: synchronous={synchronous!r}; {_ACCEPTED}")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return sqlite.Store(path, synchronous=synchronous)
