"""Schema migrations of a PostgreSQL database, and its fixed partition count.

Numbered SQL scripts in `migrations/`, the version in `meta.schema_version`; all pending ones run in
one transaction under an advisory lock, so nodes starting together migrate once. The partition
count is chosen when the database is created and stored in `meta.partitions`: asking for another
one later is refused (keys would hash to other partitions than their data).
"""

from __future__ import annotations

from importlib import resources

import psycopg

from perdure.storage.api import SchemaError

MIGRATIONS = ("0001_initial.sql",)
DEFAULT_PARTITIONS = 24
MAX_PARTITIONS = 1024
_LOCK = 0x70657264757265  # pg_advisory_xact_lock key: "perdure"


def migrate(conn: psycopg.Connection[tuple[object, ...]], partitions: int | None) -> int:
    """Bring the schema to the newest version; returns the database's partition count.

    `partitions` None takes the stored count (or the default for a new database).
    """
    if partitions is not None and not 1 <= partitions <= MAX_PARTITIONS:
        raise SchemaError(f"the partition count must be between 1 and {MAX_PARTITIONS}, not {partitions}")
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK,))
        version = 0
        if conn.execute("SELECT to_regclass('meta')").fetchone() != (None,):
            row = conn.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone()
            version = int(str(row[0])) if row else 0
        if version > len(MIGRATIONS):
            raise SchemaError(
                f"database schema version {version} is newer than this perdure knows ({len(MIGRATIONS)});"
                " upgrade perdure to open it"
            )
        folder = resources.files("perdure.storage.postgres") / "migrations"
        for name in MIGRATIONS[version:]:
            conn.execute((folder / name).read_text(encoding="utf-8").encode())
        conn.execute(
            "INSERT INTO meta (name, value) VALUES ('schema_version', %s)"
            " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (len(MIGRATIONS),),
        )
        row = conn.execute("SELECT value FROM meta WHERE name = 'partitions'").fetchone()
        if row is None:
            count: int = partitions or DEFAULT_PARTITIONS
            conn.execute("INSERT INTO meta (name, value) VALUES ('partitions', %s)", (count,))
            conn.execute(
                "INSERT INTO partition_leases (partition) SELECT generate_series(0, %s - 1)", (count,)
            )
            conn.execute("INSERT INTO meta (name, value) VALUES ('catalog_version', 0)")
            return count
        stored = int(str(row[0]))
        if partitions is not None and partitions != stored:
            raise SchemaError(
                f"this database was created with {stored} partitions, not {partitions}: the count is fixed"
                f" when a database is created (every node of a cluster uses the stored one; drop"
                f" --partitions, or use a new database for {partitions})"
            )
        return stored
