"""The SQLite store's base layer for read-only SQL (`perdure.storage.sql`): its file, and the TEMP views
mapping its physical tables onto the base tables — the only SQL outside `_batch`/`_reads` that
knows the physical schema."""

from __future__ import annotations

#: Per schema version: the TEMP views mapping the physical tables onto layer 1, and the physical
#: tables they read (the authorizer lets queries read those and nothing else of the file). The
#: engine migrates a database when it opens it, so only the newest version is needed here; a new
#: migration adds its entry (and the admin tests on the sqlite store show whether it fits).
VIEWS: dict[int, tuple[tuple[str, ...], frozenset[str]]] = {
    # 0002: invocations and journals keyed by `seq`; journals without an invocation row map their
    # id in `journal_ids`. UNION ALL (not a coalesce over outer joins) lets SQLite push a filter on
    # the id into each arm, so `WHERE id = ?` seeks by index instead of scanning every journal.
    # 0003 only adds an index: the views of 0002 hold.
    2: (
        (
            "CREATE TEMP VIEW perdure_invocation AS SELECT id, service, handler, key, status, created_at,"
            " modified_at, record FROM main.invocations",
            "CREATE TEMP VIEW perdure_journal AS"
            " SELECT i.id AS invocation_id, j.idx AS idx, j.type AS type, j.payload AS payload"
            " FROM main.invocations AS i JOIN main.journal AS j ON j.seq = i.seq"
            " UNION ALL"
            " SELECT o.id, j.idx, j.type, j.payload"
            " FROM main.journal_ids AS o JOIN main.journal AS j ON j.seq = o.seq"
            " WHERE NOT EXISTS (SELECT 1 FROM main.invocations AS x WHERE x.seq = o.seq)",
            "CREATE TEMP VIEW perdure_state AS SELECT service, key, name, value FROM main.state",
            "CREATE TEMP VIEW perdure_lock AS SELECT service, key, invocation_id FROM main.locks",
            "CREATE TEMP VIEW perdure_inbox AS SELECT service, key, seq, invocation_id FROM main.inbox",
        ),
        frozenset({"invocations", "journal", "journal_ids", "state", "locks", "inbox"}),
    ),
}
VIEWS[3] = VIEWS[4] = VIEWS[2]  # 0004 moved the catalog: these tables are unchanged
