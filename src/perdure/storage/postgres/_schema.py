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


#: How invocation ids encode their partition key: 2 is restate-server's exact encoding (byte-swapped
#: integers over `0-9a-zA-Z`, `perdure.protocol.ids`); databases without the marker were written
#: with perdure's first encoding.
ID_FORMAT = 2


def _check_id_format(conn: psycopg.Connection[tuple[object, ...]], partitions: int) -> None:
    """Refuse a database whose invocations carry ids of the first encoding when it has several
    partitions: this perdure would read their partition keys differently and look for them in
    the wrong partition. With one partition, or no invocations yet, the marker is just added."""
    if conn.execute("SELECT 1 FROM meta WHERE name = 'id_format'").fetchone() is not None:
        return
    if partitions > 1 and conn.execute("SELECT 1 FROM invocations LIMIT 1").fetchone() is not None:
        raise SchemaError(
            "this database holds invocations whose ids use the encoding of perdure before Restate's"
            " exact id format; with several partitions this perdure would look for them in the wrong"
            " partition. Let its invocations finish with the perdure that wrote them, then start"
            " this one on a new database"
        )
    conn.execute("INSERT INTO meta (name, value) VALUES ('id_format', %s)", (ID_FORMAT,))


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
            conn.execute("INSERT INTO meta (name, value) VALUES ('id_format', %s)", (ID_FORMAT,))
            return count
        stored = int(str(row[0]))
        _check_id_format(conn, stored)
        if partitions is not None and partitions != stored:
            raise SchemaError(
                f"this database was created with {stored} partitions, not {partitions}: the count is fixed"
                f" when a database is created (every node of a cluster uses the stored one; drop"
                f" --partitions, or use a new database for {partitions})"
            )
        return stored
