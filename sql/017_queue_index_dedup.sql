-- 017 — Queue indexes without B-tree deduplication, so a claimed row's old index entry is skipped once, not on
-- every claim until vacuum.
--
-- What was measured (scripts/bench --scenario slow, HERALD_BENCH_AUTO_EXPLAIN=1): each endpoint's probe in the
-- claim ("does it have due work?", one row wanted) fetched 121 heap tuples on average, and its scan for first
-- attempts read 125 buffers to lock 3 rows. The rows stepped over were the old versions of deliveries already
-- claimed: a claim's UPDATE moves a row out of the due indexes (lease_token is in their predicate), and its old
-- index entry stays until vacuum or until a scan finds the heap tuple dead to everyone and marks the entry dead
-- (kill_prior_tuple), after which no scan reads it again.
--
-- That marking never happened here, because of deduplication (PostgreSQL 13+, on by default). Entries with equal
-- keys are merged into one posting-list tuple, and a scan can mark a posting list dead only when every row in it
-- is dead. Equal keys are the normal case in a queue: the fan-out sets next_attempt_at = now(), which is the
-- transaction's start time, so every delivery of an endpoint created by one transaction (a batch of events, an
-- import, the benchmark's setup) has the same (config_id, next_attempt_at); and every lease of one claim has the
-- same expiry. Until vacuum reached the index, every claim stepped over all of that endpoint's claimed rows again.
--
-- Reproduced by hand: 400 deliveries of one endpoint created in one transaction, 50 claimed and committed; the
-- probe then fetched 51 heap tuples on every run. With deduplication off it fetched 11 once (marking them), then 1.
-- Test: SchedulerTests.claimedRowsOfOneTransactionAreSteppedOverOnceNotOnEveryClaim.
--
-- What it costs: posting lists would make these indexes smaller when many rows share a key, but they only ever
-- hold what is due or in flight, and their entries are short-lived, so there is little to compress; the unique
-- and operator indexes keep deduplication. The signal indexes churn the same way (one signal per endpoint and
-- transaction, all with due_at = now(), deleted when a claim consumes them).
--
-- ALTER INDEX … SET takes a SHARE UPDATE EXCLUSIVE lock: deliveries keep flowing while it runs. It applies to
-- entries written from now on; entries already merged stay so until their rows are claimed (or until
-- REINDEX INDEX CONCURRENTLY, if an installation with a very large backlog wants the effect at once).
ALTER INDEX webhook_deliveries_due_first SET (deduplicate_items = off);
ALTER INDEX webhook_deliveries_due_retry SET (deduplicate_items = off);
ALTER INDEX webhook_deliveries_leased SET (deduplicate_items = off);
ALTER INDEX herald_endpoint_signals_due SET (deduplicate_items = off);
ALTER INDEX herald_endpoint_signals_config SET (deduplicate_items = off);
