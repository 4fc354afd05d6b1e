-- 015 — How PostgreSQL runs the protocol functions: no JIT compilation, and plain index scans in the claim.
--
-- Both found with the soak (scripts/bench --soak: 3,000 events/s offered while 2 workers deliver), where delivery
-- collapsed from 44,000 to 2,500 a minute once the backlog passed about 300,000 deliveries.
--
-- 1. JIT. The claim's plans are generic (sql/007) and index-only; their estimated cost grows with the table's
--    row count, and past jit_above_cost (100,000 by default) PostgreSQL compiles every execution with LLVM before
--    running it. perf on the claiming backends: 82 % of their CPU in libLLVM, 100 to 800 ms per claim for
--    statements that run in 1 ms. Herald's statements are short and run thousands of times a second; compiling
--    them never pays. Off for every function the workers, producers (the triggers) and operators call per
--    delivery or per batch.
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN SELECT p.oid::regprocedure FROM pg_proc p
              WHERE p.pronamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema())
                AND p.proname IN ('herald_claim', 'herald_complete', 'herald_rescue', 'herald_backlog',
                                  'herald_endpoints_with_backlog', 'herald_endpoints_under_pressure',
                                  'herald_reconcile_signals', 'herald_prune', 'herald_fan_out',
                                  'herald_signal_pending', 'herald_queue_health', 'herald_replay',
                                  'herald_replay_matching', 'herald_retry_now') LOOP
        EXECUTE format('ALTER FUNCTION %s SET jit = off', f);
    END LOOP;
END
$$;

-- 2. Plain index scans in the claim. It counts an endpoint's requests in flight in webhook_deliveries_leased,
--    which also holds an entry for every row that was in flight until vacuum removes it. A plain index scan marks
--    such an entry dead the first time it meets it (once no transaction can see the row), so later scans skip it;
--    a bitmap scan never does. Every access in the claim is a short, ordered range, which is what plain scans do.
ALTER FUNCTION herald_claim(integer, interval, text, integer, integer, integer, interval, interval)
    SET enable_bitmapscan = off;
