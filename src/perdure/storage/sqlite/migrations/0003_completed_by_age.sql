-- Schema version 3: find completed invocations by age, for the retention sweeper.
-- A completed invocation's modified_at is (at least) its completion time; the engine deletes it
-- once its retention (idempotency or journal retention of its handler) has passed.
CREATE INDEX invocations_by_modified ON invocations (status, modified_at);
