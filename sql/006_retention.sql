-- 006 — Retention: prune what is finished and old, in small batches.
--
--   SELECT * FROM herald_prune(interval '30 days');            -- one batch (default 1,000 rows of each kind)
--   SELECT * FROM herald_prune(interval '30 days', p_dry_run => true);   -- counts, changes nothing
--
-- `herald prune --older-than 30d` calls it until nothing is left, one short transaction per batch, so no lock is
-- held for long. It deletes: deliveries that finished (delivered or failed) before the cutoff; webhook_logs rows
-- written before it; events older than it that no delivery refers to any more. Pending deliveries and their
-- events are never touched, however old.
--
-- Very large installations: partition webhook_logs by month (PARTITION BY RANGE (created_at)) and drop whole
-- partitions instead; see README, "Retention".

-- p_skip_if_busy: return zeros at once if another session is pruning (workers with HERALD_RETENTION call it
-- with true, so only one of them prunes at a time).
CREATE FUNCTION herald_prune(p_older_than interval, p_batch integer DEFAULT 1000, p_dry_run boolean DEFAULT false,
                             p_skip_if_busy boolean DEFAULT false)
RETURNS TABLE (deliveries bigint, logs bigint, events bigint)
LANGUAGE plpgsql AS $$
DECLARE
    cutoff timestamptz := now() - p_older_than;
    d bigint;
    l bigint;
    e bigint;
BEGIN
    IF p_skip_if_busy AND NOT pg_try_advisory_xact_lock(7220136354046182) THEN
        RETURN QUERY SELECT 0::bigint, 0::bigint, 0::bigint;
        RETURN;
    END IF;
    IF p_older_than <= interval '0' THEN
        RAISE EXCEPTION 'herald_prune needs a positive age, got %', p_older_than USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_dry_run THEN
        SELECT count(*) INTO d FROM webhook_deliveries x WHERE x.status <> 'pending' AND x.completed_at < cutoff;
        SELECT count(*) INTO l FROM webhook_logs x WHERE x.created_at < cutoff;
        SELECT count(*) INTO e FROM webhook_events v
         WHERE v.occurred_at < cutoff
           AND NOT EXISTS (SELECT 1 FROM webhook_deliveries x WHERE x.event_id = v.id
                              AND NOT (x.status <> 'pending' AND x.completed_at < cutoff));
        RETURN QUERY SELECT d, l, e;
        RETURN;
    END IF;
    WITH gone AS (
        -- Locked and checked again: a delivery replayed meanwhile (pending again) is not deleted.
        DELETE FROM webhook_deliveries WHERE id IN (
            SELECT x.id FROM webhook_deliveries x WHERE x.status <> 'pending' AND x.completed_at < cutoff LIMIT p_batch
               FOR UPDATE SKIP LOCKED)
          AND status <> 'pending'
        RETURNING 1)
    SELECT count(*) INTO d FROM gone;
    WITH gone AS (
        DELETE FROM webhook_logs WHERE id IN (
            SELECT x.id FROM webhook_logs x WHERE x.created_at < cutoff LIMIT p_batch)
        RETURNING 1)
    SELECT count(*) INTO l FROM gone;
    WITH gone AS (
        DELETE FROM webhook_events WHERE id IN (
            SELECT v.id FROM webhook_events v
             WHERE v.occurred_at < cutoff AND NOT EXISTS (SELECT 1 FROM webhook_deliveries x WHERE x.event_id = v.id)
             LIMIT p_batch)
        RETURNING 1)
    SELECT count(*) INTO e FROM gone;
    RETURN QUERY SELECT d, l, e;
END
$$;
