"""The catalog tables of a SQLite database: read on the reader connection, written by the writer.

A write is a compare-and-set on `meta.catalog_version`: it runs on the writer thread in a
transaction of its own, applies its rows only if the version is still the one the change was
computed from, and bumps it.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import msgspec

from perdure.storage.api import (
    CatalogChange,
    CatalogSnapshot,
    Deployment,
    KafkaCluster,
    ServiceRevision,
    Subscription,
)

# CatalogSnapshot field -> (table, key column, record type)
_TABLES: dict[str, tuple[str, str, type[Any]]] = {
    "deployments": ("deployments", "id", Deployment),
    "revisions": ("service_revisions", "service", ServiceRevision),
    "clusters": ("kafka_clusters", "name", KafkaCluster),
    "subscriptions": ("subscriptions", "id", Subscription),
}
_VERSION = "SELECT coalesce((SELECT value FROM meta WHERE name = 'catalog_version'), 0)"
_encode = msgspec.msgpack.Encoder().encode


def read(conn: sqlite3.Connection) -> CatalogSnapshot:
    """One consistent snapshot (a single read transaction)."""
    conn.execute("BEGIN")
    try:
        version = int(conn.execute(_VERSION).fetchone()[0])
        tables = {
            field: {
                name: msgspec.msgpack.decode(record, type=kind)
                for name, record in conn.execute(f"SELECT {column}, record FROM {table}").fetchall()
            }
            for field, (table, column, kind) in _TABLES.items()
        }
    finally:
        conn.execute("COMMIT")
    return CatalogSnapshot(version=version, **tables)


def write(conn: sqlite3.Connection, expected_version: int, change: CatalogChange) -> bool:
    """On the writer thread, inside its transaction: False (nothing written) if the version moved."""
    if int(conn.execute(_VERSION).fetchone()[0]) != expected_version:
        return False
    for field, (table, column, _) in _TABLES.items():
        for name, row in getattr(change, field).items():
            if row is None:
                conn.execute(f"DELETE FROM {table} WHERE {column} = ?", (name,))
            else:
                conn.execute(
                    f"INSERT OR REPLACE INTO {table} ({column}, record) VALUES (?, ?)", (name, _encode(row))
                )
    conn.execute(
        "INSERT OR REPLACE INTO meta (name, value) VALUES ('catalog_version', ?)", (expected_version + 1,)
    )
    return True
