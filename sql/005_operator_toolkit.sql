-- 005 — The operator's toolkit in SQL: replay, test deliveries, stats views, worker heartbeats.
--
-- Everything `herald replay`, `herald test` and `herald stats` do is a function or view here, so an operator in
-- psql needs no CLI:
--   SELECT herald_replay(ARRAY['<delivery id>']::uuid[]);              -- replay chosen deliveries
--   SELECT herald_replay_matching(p_status => 'failed', p_since => now() - interval '1 day');
--   SELECT * FROM webhook_delivery_stats;  SELECT * FROM webhook_config_stats;  SELECT * FROM herald_workers;

-- Bulk replay by time. Partial over failed rows only: delivered rows, the vast majority, never enter it, so it
-- costs the hot path nothing. (Look-ups by event use the UNIQUE (event_id, config_id) index.)
CREATE INDEX webhook_deliveries_failed ON webhook_deliveries (completed_at) WHERE status = 'failed';

-- ---------------------------------------------------------------------------------------------------------
-- Replay: a finished delivery becomes due again as a fresh attempt cycle (attempts from 0), with the same id
-- (so the same X-Webhook-Id) and its webhook_logs history kept.
-- ---------------------------------------------------------------------------------------------------------
CREATE FUNCTION herald_replay(p_delivery_ids uuid[])
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    missing  text;
    pending  text;
    replayed integer;
BEGIN
    -- Lock them first, so a concurrent claim or replay cannot slip in between the checks and the update.
    PERFORM 1 FROM webhook_deliveries WHERE id = ANY (p_delivery_ids) ORDER BY id FOR UPDATE;
    SELECT string_agg(x::text, ', ') INTO missing
      FROM unnest(p_delivery_ids) AS x
     WHERE NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.id = x);
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'no such delivery: %', missing
            USING ERRCODE = 'no_data_found', HINT = 'Delivery ids are webhook_deliveries.id (the X-Webhook-Id header).';
    END IF;
    SELECT string_agg(d.id::text, ', ') INTO pending
      FROM webhook_deliveries d WHERE d.id = ANY (p_delivery_ids) AND d.status = 'pending';
    IF pending IS NOT NULL THEN
        RAISE EXCEPTION 'delivery still pending, nothing to replay: %', pending
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Only failed or delivered deliveries can be replayed; pending ones are retried already.';
    END IF;
    UPDATE webhook_deliveries
       SET status = 'pending', attempts = 0, next_attempt_at = now(), lease_token = NULL, leased_by = NULL,
           completed_at = NULL, max_attempts = NULL, replay_count = replay_count + 1, replayed_at = now(),
           updated_at = now()
     WHERE id = ANY (p_delivery_ids)
       AND status <> 'pending';
    GET DIAGNOSTICS replayed = ROW_COUNT;
    PERFORM pg_notify('herald_deliveries', '');
    RETURN replayed;
END
$$;

-- Bulk replay by filter. p_status is 'failed' (default) or 'delivered' (only when asked for explicitly).
-- Time bounds apply to when the delivery finished. p_limit replays at most that many (the CLI calls it in
-- batches to show progress and keep locks short). p_dry_run counts without changing anything.
CREATE FUNCTION herald_replay_matching(
    p_status text DEFAULT 'failed', p_config_id uuid DEFAULT NULL, p_event_type text DEFAULT NULL,
    p_since timestamptz DEFAULT NULL, p_until timestamptz DEFAULT NULL, p_limit integer DEFAULT NULL,
    p_dry_run boolean DEFAULT false)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    affected integer;
BEGIN
    IF p_status NOT IN ('failed', 'delivered') THEN
        RAISE EXCEPTION 'can only replay failed or delivered deliveries, not %', quote_literal(p_status)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_dry_run THEN
        SELECT count(*) INTO affected
          FROM webhook_deliveries d JOIN webhook_events e ON e.id = d.event_id
         WHERE d.status = p_status
           AND (p_config_id IS NULL OR d.config_id = p_config_id)
           AND (p_event_type IS NULL OR e.event_type = p_event_type)
           AND (p_since IS NULL OR d.completed_at >= p_since)
           AND (p_until IS NULL OR d.completed_at < p_until);
        RETURN affected;
    END IF;
    WITH chosen AS (
        SELECT d.id
          FROM webhook_deliveries d JOIN webhook_events e ON e.id = d.event_id
         WHERE d.status = p_status
           AND (p_config_id IS NULL OR d.config_id = p_config_id)
           AND (p_event_type IS NULL OR e.event_type = p_event_type)
           AND (p_since IS NULL OR d.completed_at >= p_since)
           AND (p_until IS NULL OR d.completed_at < p_until)
         ORDER BY d.completed_at
         LIMIT p_limit
           FOR UPDATE OF d SKIP LOCKED
    )
    UPDATE webhook_deliveries d
       SET status = 'pending', attempts = 0, next_attempt_at = now(), lease_token = NULL, leased_by = NULL,
           completed_at = NULL, max_attempts = NULL, replay_count = d.replay_count + 1, replayed_at = now(),
           updated_at = now()
      FROM chosen WHERE d.id = chosen.id AND d.status = p_status;
    GET DIAGNOSTICS affected = ROW_COUNT;
    IF affected > 0 THEN
        PERFORM pg_notify('herald_deliveries', '');
    END IF;
    RETURN affected;
END
$$;

-- ---------------------------------------------------------------------------------------------------------
-- Worker heartbeats: each worker upserts its row every few seconds.
-- ---------------------------------------------------------------------------------------------------------
CREATE TABLE herald_worker_heartbeats (
    worker       text PRIMARY KEY,
    started_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    in_flight    integer NOT NULL DEFAULT 0,
    concurrency  integer NOT NULL DEFAULT 0
);

CREATE VIEW herald_workers AS
SELECT worker, started_at, last_seen_at, in_flight, concurrency,
       last_seen_at > now() - interval '30 seconds' AS alive
  FROM herald_worker_heartbeats
 ORDER BY last_seen_at DESC;

-- ---------------------------------------------------------------------------------------------------------
-- Stats for dashboards and `herald stats`.
-- ---------------------------------------------------------------------------------------------------------
CREATE VIEW webhook_delivery_stats AS
SELECT
    count(*) FILTER (WHERE status = 'pending')                                              AS pending,
    count(*) FILTER (WHERE status = 'delivered')                                            AS delivered,
    count(*) FILTER (WHERE status = 'failed')                                               AS failed,
    count(*) FILTER (WHERE status = 'pending' AND lease_token IS NOT NULL)                  AS in_flight,
    count(*) FILTER (WHERE status = 'pending' AND lease_token IS NULL AND next_attempt_at <= now()) AS due_now,
    count(*) FILTER (WHERE status = 'pending' AND lease_token IS NULL AND next_attempt_at > now()
                       AND attempts > 0)                                                    AS retries_scheduled,
    extract(epoch FROM now() - min(next_attempt_at) FILTER (
        WHERE status = 'pending' AND lease_token IS NULL AND next_attempt_at <= now()))::numeric(12, 3)
                                                                                            AS oldest_due_seconds,
    (SELECT count(*) FROM herald_workers WHERE alive)                                       AS workers_alive
FROM webhook_deliveries;

-- Per config over the last 24 hours of attempts (webhook_logs_created index).
CREATE VIEW webhook_config_stats AS
SELECT c.id AS config_id, c.name, c.is_active,
       count(l.id)                                             AS attempts_24h,
       count(l.id) FILTER (WHERE l.outcome = 'delivered')      AS delivered_24h,
       count(l.id) FILTER (WHERE l.outcome <> 'delivered')     AS failed_attempts_24h,
       round(100.0 * count(l.id) FILTER (WHERE l.outcome = 'delivered') / nullif(count(l.id), 0), 1)
                                                               AS success_rate_pct,
       (SELECT l2.error FROM webhook_logs l2
         WHERE l2.config_id = c.id AND l2.outcome <> 'delivered' AND l2.created_at > now() - interval '24 hours'
         ORDER BY l2.created_at DESC LIMIT 1)                  AS last_error,
       (SELECT count(*) FROM webhook_deliveries d WHERE d.config_id = c.id AND d.status = 'pending') AS pending,
       (SELECT count(*) FROM webhook_deliveries d WHERE d.config_id = c.id AND d.status = 'failed')  AS failed
  FROM webhook_configs c
  LEFT JOIN webhook_logs l ON l.config_id = c.id AND l.created_at > now() - interval '24 hours'
 GROUP BY c.id, c.name, c.is_active;
