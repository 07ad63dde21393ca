"""PostgreSQL storage backend: the database a cluster of perdure nodes shares (DESIGN.md §7).

The write-behind layering is `perdure.storage.layered`'s, one view per partition a node holds; this
package is the dialect: point reads (`_reads`), group commits of many partitions in one transaction
with a binary COPY per table and a lease check first (`_batch`, `_writer`), the catalog with
compare-and-set (`_catalog`), migrations and the fixed partition count (`_schema`).

Example::

    database = Database("postgresql://postgres@127.0.0.1:5432/perdure")
    store = database.take_partition(0)           # a node alone; a cluster leases partitions
    txn = store.begin()
    txn.put_invocation(Invocation(id="inv-1", service="greeter", handler="greet"))
    await store.commit(txn)
    await store.close()
    await database.close()
"""

from __future__ import annotations

from perdure.storage.api import SchemaError
from perdure.storage.postgres._database import Database, PartitionStore, node_name
from perdure.storage.postgres._schema import DEFAULT_PARTITIONS, MIGRATIONS

__all__ = ["DEFAULT_PARTITIONS", "MIGRATIONS", "Database", "PartitionStore", "SchemaError", "node_name"]
