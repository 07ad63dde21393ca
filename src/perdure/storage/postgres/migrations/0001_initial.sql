-- PostgreSQL schema version 1. Applied once, in one transaction, under an advisory lock (nodes that
-- start together migrate once), by perdure.storage.postgres.
--
-- User text (service and handler names, object keys, state names) is stored as UTF-8 in bytea:
-- PostgreSQL's text cannot hold U+0000, which Kafka's integer keys are made of. Keys of state,
-- locks and inboxes are found by `skey`, a 16-byte hash of (service, key) (a btree entry is limited
-- to ~2.7 KB; keys may be longer), and checked against the stored service and key on read.

CREATE TABLE meta (name text PRIMARY KEY, value bigint NOT NULL);

CREATE TABLE invocations (
    seq bigint PRIMARY KEY,           -- allocated by the owning partition: seq % partitions = partition
    id text NOT NULL,
    partition integer NOT NULL,
    service bytea NOT NULL,
    handler bytea NOT NULL,
    key bytea,
    status text NOT NULL,
    created_at bigint NOT NULL,
    modified_at bigint NOT NULL,
    record bytea NOT NULL             -- msgpack perdure.storage.api.Invocation
);
CREATE UNIQUE INDEX invocations_by_id ON invocations (id);
CREATE INDEX invocations_by_status ON invocations (status, created_at);
CREATE INDEX invocations_by_modified ON invocations (status, modified_at);

CREATE TABLE journal (
    seq bigint NOT NULL,
    idx integer NOT NULL,
    type integer NOT NULL,
    payload bytea NOT NULL,
    PRIMARY KEY (seq, idx)
);
-- The seq of a journal whose invocation row does not exist (written through the storage API only).
CREATE TABLE journal_ids (id text PRIMARY KEY, seq bigint NOT NULL);

CREATE TABLE state (
    skey bytea NOT NULL,
    nkey bytea NOT NULL,              -- the name itself (0x00 + name) or, past 64 bytes, 0x01 + its hash
    service bytea NOT NULL,
    key bytea NOT NULL,
    name bytea NOT NULL,
    value bytea NOT NULL,
    PRIMARY KEY (skey, nkey)
);

CREATE TABLE locks (
    skey bytea PRIMARY KEY,
    service bytea NOT NULL,
    key bytea NOT NULL,
    invocation_id text NOT NULL
);

CREATE TABLE inbox (
    skey bytea NOT NULL,
    seq bigint NOT NULL,              -- FIFO per key
    service bytea NOT NULL,
    key bytea NOT NULL,
    invocation_id text NOT NULL,
    PRIMARY KEY (skey, seq)
);

CREATE TABLE timers (
    id text PRIMARY KEY,
    partition integer NOT NULL,
    fire_at bigint NOT NULL,
    kind text NOT NULL,
    invocation_id text NOT NULL,
    completion_id integer NOT NULL
);
CREATE INDEX timers_by_partition ON timers (partition, fire_at);

CREATE TABLE kafka_offsets (
    subscription text NOT NULL,
    topic text NOT NULL,
    kafka_partition integer NOT NULL,
    next_offset bigint NOT NULL,
    epoch integer NOT NULL,
    PRIMARY KEY (subscription, topic, kafka_partition)
);

-- The catalog (records msgpack), changed by compare-and-set on meta 'catalog_version'.
CREATE TABLE deployments (id text PRIMARY KEY, record bytea NOT NULL);
CREATE TABLE service_revisions (service bytea PRIMARY KEY, record bytea NOT NULL);
CREATE TABLE kafka_clusters (name text PRIMARY KEY, record bytea NOT NULL);
CREATE TABLE subscriptions (id text PRIMARY KEY, record bytea NOT NULL);

-- Cluster membership. A node is alive while its heartbeat is fresh; a partition is owned by `node`
-- at `epoch`, and every commit of the partition's batches checks (node, epoch) in its transaction.
-- `seq` and `inbox_seq` are the partition's high-water marks, persisted by those same commits.
CREATE TABLE nodes (
    node text PRIMARY KEY,
    expires_at timestamptz NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    host text NOT NULL DEFAULT '',
    pid integer NOT NULL DEFAULT 0,
    ingress_url text NOT NULL DEFAULT '',
    admin_url text NOT NULL DEFAULT ''
);
CREATE TABLE partition_leases (
    partition integer PRIMARY KEY,
    node text,
    epoch bigint NOT NULL DEFAULT 0,
    seq bigint NOT NULL DEFAULT 0,
    inbox_seq bigint NOT NULL DEFAULT 0,
    acquired_at timestamptz
);

-- Effects on invocations of another partition: written in the sender's transaction, applied and
-- deleted in the owner's, in id order. `source` is unique per effect, so a repeated write is a no-op.
CREATE TABLE deliveries (
    id bigserial PRIMARY KEY,
    partition integer NOT NULL,
    source text NOT NULL,
    body bytea NOT NULL
);
CREATE UNIQUE INDEX deliveries_by_source ON deliveries (source);
CREATE INDEX deliveries_by_partition ON deliveries (partition, id);
