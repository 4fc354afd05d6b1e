-- 014 — What the operator console (issue 14, `herald console`) reads and does, as SQL an operator can also run
-- in psql. The console adds no tables: it reads the same rows as the CLI and calls the same functions
-- (herald_replay, herald_replay_matching, herald_replay_candidates, herald_workers, webhook_delivery_stats).
--
-- 1. herald_body_sent(delivery): the exact request body a delivery sent. THE one place that knows where bodies
--    are kept; the console shows it, and rebuilds the envelope from the event (marked so) when it returns NULL.
-- 2. herald_send_test_event(config): a webhook.test event addressed to one config, one attempt (`herald test`
--    and the console's "Send test event").
-- 3. herald_attempts_per_minute(minutes): delivered and failed attempts per minute, zeros included (the
--    console's chart).
-- 4. webhook_endpoint_health: each config's health in one row (the console's endpoints list).

-- ---------------------------------------------------------------------------------------------------------
-- 1. The exact body sent. Every attempt of a delivery sends the same bytes (the envelope is built from the
--    event, deterministically; sql/012 rebuilds it in webhook_attempts.body), so the last attempt that sent a
--    body is the body. NULL when none did: never attempted, only lost attempts, or only refusals (failed unsent).
-- ---------------------------------------------------------------------------------------------------------
CREATE FUNCTION herald_body_sent(p_delivery_id uuid)
RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT a.body
      FROM webhook_attempts a
     WHERE a.delivery_id = p_delivery_id AND a.body IS NOT NULL
     ORDER BY a.id DESC
     LIMIT 1
$$;

COMMENT ON FUNCTION herald_body_sent(uuid) IS
    'The exact request body a delivery sent (NULL when no attempt recorded one).';

-- ---------------------------------------------------------------------------------------------------------
-- 2. A test event for one config: an ordinary event row that fans out to this config only, with a single
--    attempt. Returns the delivery id; a worker sends it and webhook_logs holds the verdict.
-- ---------------------------------------------------------------------------------------------------------
CREATE FUNCTION herald_send_test_event(p_config_id uuid)
RETURNS uuid
LANGUAGE plpgsql AS $$
DECLARE
    config   record;
    event    uuid;
    delivery uuid;
    previous text := current_setting('herald.fan_out', true);
BEGIN
    SELECT id, is_active, organization_id INTO config FROM webhook_configs WHERE id = p_config_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no webhook config %', p_config_id USING ERRCODE = 'no_data_found';
    END IF;
    IF NOT config.is_active THEN
        RAISE EXCEPTION 'config % is disabled: enable it first (herald config enable %)', p_config_id, p_config_id
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    -- The event must not fan out to the organization's other configs: the fan-out is off for this INSERT only.
    PERFORM set_config('herald.fan_out', 'off', true);
    INSERT INTO webhook_events (event_type, organization_id, data)
    VALUES ('webhook.test', config.organization_id,
            jsonb_build_object('message', 'This is a test event from Herald', 'config_id', p_config_id::text,
                               'sent_at', now()))
    RETURNING id INTO event;
    PERFORM set_config('herald.fan_out', coalesce(previous, ''), true);
    INSERT INTO webhook_deliveries (event_id, config_id, max_attempts) VALUES (event, p_config_id, 1)
    RETURNING id INTO delivery;
    PERFORM pg_notify('herald_deliveries', '');
    RETURN delivery;
END
$$;

-- ---------------------------------------------------------------------------------------------------------
-- 3. Attempts per minute over the last p_minutes minutes, oldest first, one row per minute (zeros included).
--    "failed" is every attempt that did not deliver: retry, failed and lost. Reads the BRIN index on created_at.
-- ---------------------------------------------------------------------------------------------------------
CREATE FUNCTION herald_attempts_per_minute(p_minutes integer DEFAULT 60)
RETURNS TABLE (minute timestamptz, delivered bigint, failed bigint)
LANGUAGE sql STABLE AS $$
    WITH minutes AS (
        SELECT generate_series(date_trunc('minute', now()) - (p_minutes - 1) * interval '1 minute',
                               date_trunc('minute', now()), interval '1 minute') AS minute
    ), counted AS (
        SELECT date_trunc('minute', l.created_at) AS minute,
               count(*) FILTER (WHERE l.outcome = 'delivered') AS delivered,
               count(*) FILTER (WHERE l.outcome <> 'delivered') AS failed
          FROM webhook_logs l
         WHERE l.created_at >= date_trunc('minute', now()) - (p_minutes - 1) * interval '1 minute'
         GROUP BY 1
    )
    SELECT m.minute, coalesce(c.delivered, 0), coalesce(c.failed, 0)
      FROM minutes m LEFT JOIN counted c USING (minute)
     ORDER BY m.minute
$$;

-- ---------------------------------------------------------------------------------------------------------
-- 4. One row per config: the 24 h numbers of webhook_config_stats and the live state of the endpoint.
--    cap: the adaptive in-flight limit (sql/007) when the endpoint is eased off, else max_in_flight, else NULL
--    (the workers' HERALD_ENDPOINT_CONCURRENCY).
-- ---------------------------------------------------------------------------------------------------------
CREATE VIEW webhook_endpoint_health AS
SELECT c.id AS config_id, c.name, c.organization_id, c.url, c.is_active, c.disabled_reason, c.disabled_at,
       s.attempts_24h, s.delivered_24h, s.failed_attempts_24h, s.success_rate_pct, s.pending, s.failed,
       s.last_error, c.consecutive_failures, c.failing_since,
       CASE WHEN c.circuit_open_until > now() THEN 'open'
            WHEN c.circuit_open_until IS NOT NULL THEN 'half-open'
            ELSE 'closed' END AS circuit,
       c.circuit_open_until,
       (SELECT count(*) FROM webhook_deliveries d
         WHERE d.config_id = c.id AND d.status = 'pending' AND d.lease_token IS NOT NULL) AS in_flight,
       c.max_in_flight, round(c.concurrency_limit::numeric, 1) AS adaptive_limit
  FROM webhook_configs c
  JOIN webhook_config_stats s ON s.config_id = c.id;
