"""The backend-neutral write-behind layer of perdure's database stores.

A transaction buffers its writes (`writes.Writes`) and reads them over the writes of transactions
still committing, over caches of durable data, over the database (`view.View`, whose docstring
argues why that is never stale). `store.Store` runs the commit pipeline and fail-stop. A backend
is a dialect: the point reads of its view (`view.Reads`) and a `store.Sink` that applies a batch
of writes on a writer thread — SQLite (`perdure.storage.sqlite`), PostgreSQL
(`perdure.storage.postgres`).
"""

from perdure.storage.layered.store import MAX_COMMITTING, Sink, Store, StoreFailed
from perdure.storage.layered.view import Reads, View
from perdure.storage.layered.writes import Writes

__all__ = ["MAX_COMMITTING", "Reads", "Sink", "Store", "StoreFailed", "View", "Writes"]
