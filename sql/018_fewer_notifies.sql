-- 018 — The fan-out NOTIFYs only when a worker needs waking, not on every transaction that inserts events.
--
-- Why: a transaction that has called NOTIFY takes a lock on the whole cluster (database 0) while it commits, so
-- that notifications are queued in commit order (async.c, PreCommit_Notify). Every such commit waits for the
-- one before it, WAL flush included. The outbox is written in the application's own transactions, so with one
-- NOTIFY per event-inserting transaction, every concurrent writer of the application queued on that lock at
-- commit: with many writers, commits stall (Recall.ai's incident of 2025, "Postgres LISTEN/NOTIFY does not
-- scale"). In the soak (four producers, 300 transactions a second) `ps` showed the producers "INSERT waiting"
-- most of the time.
--
-- The rule: a fan-out NOTIFYs only if one of the endpoints it queued to has no due signal yet. A due signal
-- means a claim of that endpoint is already coming: a worker was woken for it (by the NOTIFY of the transaction
-- that left it), or the endpoint has requests in flight and the write of their results is followed by a claim,
-- or a retry came due and the next poll (HERALD_POLL_MS, 500 ms) takes it. That claim sees this transaction's
-- deliveries if it starts after this commit; if it started before and missed them, the endpoint still has
-- requests in flight (the claim took the earlier rows), whose write is followed by another claim. So a busy
-- endpoint is driven by its own results, and only an idle endpoint's first event wakes the workers.
--
-- That reasoning has holes (measured: without more, p99 latency at 200 and 1,000 events/s went from 30 ms to
-- 415–435 ms): the claim may skip the endpoint (another claim holds it), or take nothing and leave no request in
-- flight, and then the signal waited for the next poll, 500 ms. So workers poll every 25 ms while work is
-- flowing (DispatcherStateMachine.activePollInterval: a claim returned rows or results were written in the last
-- 2 s), and an event left that way waits at most about that long; an idle worker polls every HERALD_POLL_MS and
-- is woken by the NOTIFY of the first event to an endpoint without a signal.
--
-- The check reads signals in the statement's snapshot, taken before the deliveries (and their signal, added by
-- the trigger at the end of the statement) are inserted: it sees signals left by committed transactions and by
-- this transaction's earlier statements (which NOTIFYed by the same rule), never its own. One index probe per
-- endpoint queued to (herald_endpoint_signals_config).
--
-- Test: SchedulerTests.aFanOutNotifiesOnlyWhenAnEndpointHasNoDueSignal. Measured: docs/PERFORMANCE.md.
CREATE OR REPLACE FUNCTION herald_fan_out() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    first_event record;
    reason      text;
    v_inserted  boolean;
    v_wake      boolean;
BEGIN
    -- `SET LOCAL herald.fan_out = 'off'` skips the fan-out for one transaction: `herald test` uses it to
    -- address one config with an ordinary event row.
    IF current_setting('herald.fan_out', true) = 'off' THEN
        RETURN NULL;
    END IF;
    -- Ordered configs (sql/007) get the event's key and order, and the delivery starts blocked: the claim makes
    -- the oldest of each key its head.
    WITH queued AS (
        INSERT INTO webhook_deliveries (event_id, config_id, next_attempt_at, ordering_key, event_seq, ordering_blocked)
        SELECT e.id, c.id, now(),
               CASE WHEN c.ordering = 'key' THEN e.ordering_key END,
               CASE WHEN c.ordering = 'key' AND e.ordering_key IS NOT NULL THEN e.event_seq END,
               c.ordering = 'key' AND e.ordering_key IS NOT NULL
          FROM new_events e
          JOIN webhook_configs c
            ON c.is_active
           AND c.organization_id IS NOT DISTINCT FROM e.organization_id   -- never across organizations
           AND (e.event_type = ANY (c.events) OR '*' = ANY (c.events))
        RETURNING config_id
    )
    SELECT count(*) > 0,
           coalesce(bool_or(NOT EXISTS (SELECT 1 FROM herald_endpoint_signals s
                                         WHERE s.config_id = k.config_id AND s.due_at <= now())), false)
      INTO v_inserted, v_wake
      FROM (SELECT DISTINCT q.config_id FROM queued q) k;
    IF v_wake THEN
        -- Wakes every LISTENing worker when the transaction commits (not before: NOTIFY is transactional).
        PERFORM pg_notify('herald_deliveries', '');
    END IF;
    IF NOT v_inserted THEN
        SELECT event_type, organization_id INTO first_event FROM new_events LIMIT 1;
        IF FOUND THEN
            reason := herald_why_no_deliveries(first_event.event_type, first_event.organization_id);
            IF reason IS NOT NULL THEN
                RAISE NOTICE 'webhook event fanned out to 0 deliveries: %', reason;
            END IF;
        END IF;
    END IF;
    RETURN NULL;
END
$$;
