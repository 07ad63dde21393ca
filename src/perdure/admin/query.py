"""Read-only SQL over the engine's data: `POST /query`, and the page queries of the admin API.

The store gives its data as the base layer (`perdure.storage.sql`: its SQLite file, or rows it
copies out); the views of `views.py` and the functions of `functions.py` go on top, and each query
runs locked down (only those views and the base tables, a time limit, a row cap) in a worker
thread, so the event loop keeps running.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from perdure.admin import functions, views
from perdure.storage import sql
from perdure.storage.api import SqlStore
from perdure.storage.sql import QueryError, Result

__all__ = ["Database", "QueryError", "Result"]

# The names through which a statement can reach journals or state (views.py: only these two views
# read `perdure_journal` and `perdure_state`); a store that copies rows out copies those only then.
_NEEDS_EVERYTHING = re.compile(r"\b(?:sys_journal|state|perdure_journal|perdure_state)\b", re.IGNORECASE)


class Database:
    """Runs read-only SQL over a store's data, the admin API's views on top."""

    def __init__(
        self,
        store: object,
        service_type: Callable[[str], str | None],
        *,
        timeout: float = 2.0,
        max_rows: int = 10_000,
    ) -> None:
        self._store = store
        self._layer = sql.Layer(
            views=views.PUBLIC,
            functions=functions.functions(service_type),
            readable=views.READABLE,
            describe=", ".join(sorted(views.PUBLIC_VIEWS)),
        )
        self.timeout = timeout
        self.max_rows = max_rows

    async def query(self, statement: str) -> Result:
        """Run a user's read-only statement; `QueryError` when refused, failed or too slow."""
        sql.check_read_only(statement, self._layer)
        return await self.run(statement, (), everything=bool(_NEEDS_EVERYTHING.search(statement)))

    async def run(
        self, statement: str, params: Sequence[Any] | Mapping[str, Any], *, everything: bool = False
    ) -> Result:
        """Run trusted SQL, still locked down; a store that copies rows out copies journals and state
        only with `everything`."""
        store = self._store
        if not isinstance(store, SqlStore):
            raise QueryError("this store offers no SQL")
        base = store.sql_base(everything)  # on the event loop: reads the store's connections
        return await asyncio.to_thread(
            sql.run, base, self._layer, statement, params, timeout=self.timeout, max_rows=self.max_rows
        )
