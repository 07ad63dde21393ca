"""SQLite storage backend: write-behind transactions, pipelined group commit, fsync off the event loop.

A transaction buffers its writes in memory (`_writes.Writes`); its reads see that buffer over the
writes of transactions still committing, over caches of durable data, over the database read through
a read-only connection (`_view.View`, whose docstring says why that is never stale). `commit()` turns
the buffer into a few set-based statements and hands them to the writer thread (`_writer.Writer`),
which applies queued batches in order and COMMITs — fsync included — off the event loop; only then
does `commit()`'s result resolve. Meanwhile the next transaction may already run (the pipelining
contract of `perdure.storage.api.Store`). A failed commit makes the store refuse all further work
(`StoreFailed`). Readers use their own read-only connection, which in WAL mode sees only committed,
durable data.

Rows are keyed by a per-invocation `seq` that grows with each new invocation, so a batch's writes
land on a few pages at the end of each table (migration 0002 documents the schema).

Example::

    store = Store("data/perdure.db")
    txn = store.begin()
    txn.put_invocation(Invocation(id="inv-1", service="greeter", handler="greet"))
    await store.commit(txn)
    await store.close()
"""

from __future__ import annotations

from perdure.storage.api import SchemaError
from perdure.storage.sqlite._schema import MIGRATIONS
from perdure.storage.sqlite._store import MAX_COMMITTING, SYNCHRONOUS_MODES, Store, StoreFailed

__all__ = ["MAX_COMMITTING", "MIGRATIONS", "SYNCHRONOUS_MODES", "SchemaError", "Store", "StoreFailed"]
