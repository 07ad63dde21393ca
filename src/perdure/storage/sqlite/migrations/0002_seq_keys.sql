-- Schema version 2: invocation rows and journals keyed by a per-invocation sequence number.
-- Applied once, inside a transaction, by perdure.storage.sqlite.Store; existing rows are copied.
--
-- Why: invocation ids begin with a hash, so rows keyed by id land on random B-tree pages and a batch
-- of a thousand commands dirtied thousands of pages (megabytes of WAL per commit). `seq` grows with
-- each new invocation, so a batch's inserts and its updates of recent invocations share a few pages
-- at the end of each table. Only the `id` index still takes random inserts (small entries, one per
-- new invocation).
--
-- The resulting schema (the one to build read-only SQL views on):
--
--   invocations (seq INTEGER PRIMARY KEY,       -- assigned by the store on first write, never reused
--                id TEXT NOT NULL,              -- UNIQUE (index invocations_by_id)
--                service TEXT NOT NULL, handler TEXT NOT NULL, key TEXT,
--                status TEXT NOT NULL,          -- perdure.storage.api.Status values; index invocations_by_status
--                created_at INTEGER NOT NULL, modified_at INTEGER NOT NULL,   -- ms since epoch
--                record BLOB NOT NULL)          -- msgpack-encoded perdure.storage.api.Invocation
--   journal     (seq INTEGER, idx INTEGER, type INTEGER, payload BLOB, PRIMARY KEY (seq, idx)) WITHOUT ROWID
--   journal_ids (id TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID
--                -- the seq of a journal whose invocation row does not exist (only ever written through
--                -- the storage API directly; the engine stores both): usually empty
--   state       (service TEXT, key TEXT, name BLOB, value BLOB, PRIMARY KEY (service, key, name)) WITHOUT ROWID
--   locks       (service TEXT, key TEXT, invocation_id TEXT, PRIMARY KEY (service, key)) WITHOUT ROWID
--   inbox       (service TEXT, key TEXT, seq INTEGER, invocation_id TEXT, PRIMARY KEY (service, key, seq))
--                WITHOUT ROWID  -- inbox.seq is its own counter (FIFO order), unrelated to invocations.seq
--   timers      (id TEXT PRIMARY KEY, fire_at INTEGER, kind TEXT, invocation_id TEXT, completion_id INTEGER)
--                WITHOUT ROWID; index timers_by_fire_at (fire_at)
--   meta        (name TEXT PRIMARY KEY, value BLOB) WITHOUT ROWID
--
-- A journal by invocation id, e.g. for a view with the shape of schema 1's journal table:
--
--   SELECT coalesce(i.id, o.id) AS invocation_id, j.idx, j.type, j.payload
--   FROM journal AS j
--   LEFT JOIN invocations AS i ON i.seq = j.seq
--   LEFT JOIN journal_ids AS o ON o.seq = j.seq
--
-- (both joins are primary-key or unique-index lookups; for one invocation, filter on
-- `j.seq = (SELECT seq FROM invocations WHERE id = ?)` to seek instead of scanning).

CREATE TABLE invocations_v2 (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL,
    service TEXT NOT NULL,
    handler TEXT NOT NULL,
    key TEXT,
    status TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    modified_at INTEGER NOT NULL,
    record BLOB NOT NULL
);
-- Existing rows get seq 1, 2, … oldest first.
INSERT INTO invocations_v2 (id, service, handler, key, status, created_at, modified_at, record)
    SELECT id, service, handler, key, status, created_at, modified_at, record
    FROM invocations ORDER BY created_at, id;
CREATE UNIQUE INDEX invocations_by_id ON invocations_v2 (id);

CREATE TABLE journal_ids (
    id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL
) WITHOUT ROWID;
-- Journals without an invocation row get seqs after every invocation's.
INSERT INTO journal_ids (id, seq)
    SELECT invocation_id,
           (SELECT coalesce(max(seq), 0) FROM invocations_v2) + row_number() OVER (ORDER BY invocation_id)
    FROM (SELECT DISTINCT invocation_id FROM journal
          WHERE invocation_id NOT IN (SELECT id FROM invocations_v2));

CREATE TABLE journal_v2 (
    seq INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    type INTEGER NOT NULL,
    payload BLOB NOT NULL,
    PRIMARY KEY (seq, idx)
) WITHOUT ROWID;
INSERT INTO journal_v2 (seq, idx, type, payload)
    SELECT coalesce(i.seq, o.seq), j.idx, j.type, j.payload
    FROM journal AS j
    LEFT JOIN invocations_v2 AS i ON i.id = j.invocation_id
    LEFT JOIN journal_ids AS o ON o.id = j.invocation_id
    ORDER BY 1, 2;

DROP TABLE journal;
ALTER TABLE journal_v2 RENAME TO journal;
-- Dropping the old table drops its indexes, among them (service, key), which no query used.
DROP TABLE invocations;
ALTER TABLE invocations_v2 RENAME TO invocations;
-- (status, created_at) serves status filters and their oldest-first ordering in one index; with
-- created_at increasing, a batch's status changes touch the tail of each status's range.
CREATE INDEX invocations_by_status ON invocations (status, created_at);
