-- Initial schema. Applied once, inside a transaction, by perdure.storage.sqlite.Store.

-- `record` is the msgpack-encoded Invocation; the plain columns mirror it for queries.
CREATE TABLE invocations (
    id TEXT PRIMARY KEY,
    service TEXT NOT NULL,
    handler TEXT NOT NULL,
    key TEXT,
    status TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    modified_at INTEGER NOT NULL,
    record BLOB NOT NULL
) WITHOUT ROWID;
-- (status, created_at) serves status filters and their oldest-first ordering in one index.
CREATE INDEX invocations_by_status ON invocations (status, created_at);
CREATE INDEX invocations_by_service_key ON invocations (service, key);

CREATE TABLE journal (
    invocation_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    type INTEGER NOT NULL,
    payload BLOB NOT NULL,
    PRIMARY KEY (invocation_id, idx)
) WITHOUT ROWID;

CREATE TABLE state (
    service TEXT NOT NULL,
    key TEXT NOT NULL,
    name BLOB NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (service, key, name)
) WITHOUT ROWID;

CREATE TABLE locks (
    service TEXT NOT NULL,
    key TEXT NOT NULL,
    invocation_id TEXT NOT NULL,
    PRIMARY KEY (service, key)
) WITHOUT ROWID;

-- seq grows monotonically across the whole table, so ordering by it is FIFO per (service, key).
CREATE TABLE inbox (
    service TEXT NOT NULL,
    key TEXT NOT NULL,
    seq INTEGER NOT NULL,
    invocation_id TEXT NOT NULL,
    PRIMARY KEY (service, key, seq)
) WITHOUT ROWID;

CREATE TABLE timers (
    id TEXT PRIMARY KEY,
    fire_at INTEGER NOT NULL,
    kind TEXT NOT NULL,
    invocation_id TEXT NOT NULL,
    completion_id INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX timers_by_fire_at ON timers (fire_at);

-- Reserved for later use (e.g. node identity, partition metadata).
CREATE TABLE meta (
    name TEXT PRIMARY KEY,
    value BLOB
) WITHOUT ROWID;
