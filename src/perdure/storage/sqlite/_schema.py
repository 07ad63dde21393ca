"""Schema migrations: numbered SQL scripts in `perdure/storage/migrations`, tracked by `user_version`."""

from __future__ import annotations

import sqlite3
from importlib import resources

from perdure.storage.api import SchemaError

# Ordered migration scripts; migration N (1-based) brings the schema to user_version N.
MIGRATIONS = (
    "0001_initial.sql",
    "0002_seq_keys.sql",
    "0003_completed_by_age.sql",
    "0004_catalog_tables.sql",
)


def migrate(conn: sqlite3.Connection) -> None:
    """Bring the schema to the newest version, all pending migrations in one transaction."""
    # BEGIN IMMEDIATE takes the write lock before reading the version, so two processes opening a new
    # database at once migrate it once: the second waits (busy_timeout), then finds it up to date.
    conn.execute("BEGIN IMMEDIATE")
    try:
        version: int = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise SchemaError(
                f"database schema version {version} is newer than this perdure knows ({len(MIGRATIONS)});"
                " upgrade perdure to open it"
            )
        folder = resources.files("perdure.storage.sqlite") / "migrations"
        for name in MIGRATIONS[version:]:
            for statement in statements((folder / name).read_text(encoding="utf-8")):
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def statements(script: str) -> list[str]:
    """Split a migration script into statements (executescript() would commit our transaction)."""
    found, buffer = [], ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            found.append(buffer)
            buffer = ""
    if buffer.strip() and not all(ln.lstrip().startswith("--") for ln in buffer.splitlines() if ln.strip()):
        raise ValueError(f"migration script ends with an incomplete statement: {buffer.strip()[:80]!r}")
    return found
