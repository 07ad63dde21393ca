-- Schema version 4: the catalog and Kafka offsets in tables of their own, out of the state of the
-- reserved object `__perdure` (which keeps only workflow promises). Existing rows are moved.
--
--   deployments       (id TEXT PRIMARY KEY, record BLOB)      -- msgpack perdure.storage.api.Deployment
--   service_revisions (service TEXT PRIMARY KEY, record BLOB) -- msgpack ServiceRevision
--   kafka_clusters    (name TEXT PRIMARY KEY, record BLOB)    -- msgpack KafkaCluster
--   subscriptions     (id TEXT PRIMARY KEY, record BLOB)      -- msgpack Subscription
--   kafka_offsets     (subscription, topic, partition, next_offset, epoch), one row per Kafka partition
--   meta              ('catalog_version', n): bumped by every catalog change (compare-and-set)

CREATE TABLE deployments (id TEXT PRIMARY KEY, record BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE service_revisions (service TEXT PRIMARY KEY, record BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE kafka_clusters (name TEXT PRIMARY KEY, record BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE subscriptions (id TEXT PRIMARY KEY, record BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE kafka_offsets (
    subscription TEXT NOT NULL,
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    epoch INTEGER NOT NULL,
    PRIMARY KEY (subscription, topic, partition)
) WITHOUT ROWID;

INSERT INTO deployments (id, record)
    SELECT CAST(name AS TEXT), value FROM state WHERE service = '__perdure' AND key = 'deployments';
INSERT INTO service_revisions (service, record)
    SELECT CAST(name AS TEXT), value FROM state WHERE service = '__perdure' AND key = 'service-revisions';
INSERT INTO kafka_clusters (name, record)
    SELECT CAST(name AS TEXT), value FROM state WHERE service = '__perdure' AND key = 'kafka-clusters';
INSERT INTO subscriptions (id, record)
    SELECT CAST(name AS TEXT), value FROM state WHERE service = '__perdure' AND key = 'subscriptions';
-- Offsets were state of key 'offsets/{subscription}', named '{partition}/{topic}', valued
-- '{next_offset}' or '{next_offset},{epoch}'.
INSERT INTO kafka_offsets (subscription, topic, partition, next_offset, epoch)
    SELECT substr(key, 9), substr(n, instr(n, '/') + 1), CAST(substr(n, 1, instr(n, '/') - 1) AS INTEGER),
           CAST(CASE WHEN instr(v, ',') > 0 THEN substr(v, 1, instr(v, ',') - 1) ELSE v END AS INTEGER),
           CASE WHEN instr(v, ',') > 0 THEN CAST(substr(v, instr(v, ',') + 1) AS INTEGER) ELSE 0 END
    FROM (SELECT key, CAST(name AS TEXT) AS n, CAST(value AS TEXT) AS v
          FROM state WHERE service = '__perdure' AND substr(key, 1, 8) = 'offsets/');
DELETE FROM state WHERE service = '__perdure'
    AND (key IN ('deployments', 'service-revisions', 'kafka-clusters', 'subscriptions')
         OR substr(key, 1, 8) = 'offsets/');
INSERT OR REPLACE INTO meta (name, value) VALUES ('catalog_version', 1);
