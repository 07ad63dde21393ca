"""The catalog tables of a PostgreSQL database: read on the read connection, written by the writer
with compare-and-set on `meta.catalog_version` (nodes of a cluster change the catalog concurrently)."""

from __future__ import annotations

from typing import Any

import msgspec
import psycopg

from perdure.storage.api import (
    CatalogChange,
    CatalogSnapshot,
    Deployment,
    KafkaCluster,
    ServiceRevision,
    Subscription,
)

# CatalogSnapshot field -> (table, key column, record type, key to column, column to key)
_TABLES: dict[str, tuple[str, str, type[Any], bool]] = {
    "deployments": ("deployments", "id", Deployment, False),
    "revisions": ("service_revisions", "service", ServiceRevision, True),  # service names: bytea
    "clusters": ("kafka_clusters", "name", KafkaCluster, False),
    "subscriptions": ("subscriptions", "id", Subscription, False),
}
_encode = msgspec.msgpack.Encoder().encode
_VERSION = "SELECT value FROM meta WHERE name = 'catalog_version'"


def read(conn: psycopg.Connection[Any]) -> CatalogSnapshot:
    """One consistent snapshot (a REPEATABLE READ transaction)."""
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        version = int(conn.execute(_VERSION).fetchone()[0])  # type: ignore[index]
        tables = {}
        for field, (table, column, kind, binary) in _TABLES.items():
            rows = conn.execute(f"SELECT {column}, record FROM {table}").fetchall()
            tables[field] = {
                (bytes(name).decode() if binary else name): msgspec.msgpack.decode(bytes(record), type=kind)
                for name, record in rows
            }
    return CatalogSnapshot(version=version, **tables)


def write(conn: psycopg.Connection[Any], expected_version: int, change: CatalogChange) -> bool:
    """Inside the writer's transaction: False (nothing written) if the version moved."""
    row = conn.execute(
        "UPDATE meta SET value = value + 1 WHERE name = 'catalog_version' AND value = %s RETURNING value",
        (expected_version,),
    ).fetchone()
    if row is None:
        return False
    for field, (table, column, _, binary) in _TABLES.items():
        for name, value in getattr(change, field).items():
            key = name.encode() if binary else name
            if value is None:
                conn.execute(f"DELETE FROM {table} WHERE {column} = %s", (key,))
            else:
                conn.execute(
                    f"INSERT INTO {table} ({column}, record) VALUES (%s, %s)"
                    f" ON CONFLICT ({column}) DO UPDATE SET record = excluded.record",
                    (key, _encode(value)),
                )
    conn.execute("NOTIFY perdure_catalog")
    return True
