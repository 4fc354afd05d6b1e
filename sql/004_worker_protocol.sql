-- 004 — The worker protocol: claim, complete, rescue.
--
-- Workers call only these three functions, so the whole claim/lease protocol can be read here.
--   1. herald_claim     takes a lease on up to n due deliveries (FOR UPDATE SKIP LOCKED: workers never wait on
--                       each other and never get the same row) and returns everything needed to send them.
--   2. herald_complete  writes the outcomes of many attempts in one statement, fenced by the lease token: a
--                       worker that lost its lease cannot overwrite a newer outcome. Every attempt is logged.
--   3. herald_rescue    finds leases that expired (the worker was killed or lost its database) and logs the
--                       lost attempt; the delivery becomes due at once, or failed if it has no attempts left.

-- ---------------------------------------------------------------------------------------------------------
-- THE CLAIM QUERY.
-- Reads the partial index webhook_deliveries_due in next_attempt_at order, skipping rows another worker has
-- locked, and takes a lease: lease_token identifies this claim, next_attempt_at becomes the lease expiry, so
-- if this worker dies the row simply becomes due again. attempts is counted here, not on completion.
-- p_lease must be much longer than the HTTP timeout, or a slow attempt would be sent twice at once.
-- ---------------------------------------------------------------------------------------------------------
CREATE FUNCTION herald_claim(p_limit integer, p_lease interval, p_worker text)
RETURNS TABLE (
    delivery_id  uuid,
    lease_token  uuid,
    attempt      integer,
    event_id     uuid,
    event_type   text,
    occurred_at  text,     -- ISO 8601 UTC with milliseconds, as sent in the envelope
    data         text,     -- jsonb text; the worker re-encodes it compactly
    config_id    uuid,
    url          text,
    secret       text,
    max_attempts integer,  -- the delivery's, else the config's; NULL: the worker's default applies
    is_active    boolean
)
LANGUAGE plpgsql
-- Planned for the actual batch size on every call. A generic plan (what a LANGUAGE sql function or a reused
-- prepared statement gets) cannot see that LIMIT is small, guesses thousands of rows and hash-joins the whole
-- webhook_events table: measured 11 ms per claim of 64 instead of 3 ms.
SET plan_cache_mode = force_custom_plan
AS $$
BEGIN
    RETURN QUERY
    WITH due AS (
        SELECT d.id
          FROM webhook_deliveries d
         WHERE d.status = 'pending'
           AND d.next_attempt_at <= now()
           AND d.lease_token IS NULL
         ORDER BY d.next_attempt_at
         LIMIT p_limit
           FOR UPDATE SKIP LOCKED
    )
    UPDATE webhook_deliveries d
       SET attempts        = d.attempts + 1,
           lease_token     = gen_random_uuid(),
           leased_by       = p_worker,
           next_attempt_at = now() + p_lease,
           last_attempt_at = now(),
           updated_at      = now()
      FROM due, webhook_events e, webhook_configs c
     WHERE d.id = due.id
       AND e.id = d.event_id
       AND c.id = d.config_id
    RETURNING d.id, d.lease_token, d.attempts, e.id, e.event_type,
              to_char(e.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
              e.data::text, c.id, c.url, c.secret, coalesce(d.max_attempts, c.max_attempts), c.is_active;
END
$$;

-- ---------------------------------------------------------------------------------------------------------
-- Outcomes of many attempts in one round trip (arrays, one element per attempt).
--   p_outcome:  'delivered' | 'retry' (due again after p_delay_ms) | 'failed'
-- Returns how many outcomes were applied; the others had lost their lease (they are still logged, because
-- the request really was sent).
-- ---------------------------------------------------------------------------------------------------------
CREATE FUNCTION herald_complete(
    p_delivery_id uuid[], p_lease_token uuid[], p_event_id uuid[], p_config_id uuid[], p_event_type text[],
    p_attempt integer[], p_outcome text[], p_delay_ms bigint[], p_response_status integer[],
    p_response_body text[], p_error text[], p_duration_ms integer[], p_payload text[], p_worker text)
RETURNS integer
LANGUAGE sql AS $$
    WITH r AS (
        SELECT *
          FROM unnest(p_delivery_id, p_lease_token, p_event_id, p_config_id, p_event_type, p_attempt, p_outcome,
                      p_delay_ms, p_response_status, p_response_body, p_error, p_duration_ms, p_payload)
            AS r(delivery_id, lease_token, event_id, config_id, event_type, attempt, outcome, delay_ms,
                 response_status, response_body, error, duration_ms, payload)
    ), applied AS (
        UPDATE webhook_deliveries d
           SET status               = CASE r.outcome WHEN 'retry' THEN 'pending' ELSE r.outcome END,
               next_attempt_at      = CASE r.outcome WHEN 'retry'
                                           THEN now() + r.delay_ms * interval '1 millisecond'
                                           ELSE d.next_attempt_at END,
               lease_token          = NULL,
               leased_by            = NULL,
               last_response_status = r.response_status,
               last_error           = r.error,
               updated_at           = now(),
               completed_at         = CASE WHEN r.outcome = 'retry' THEN NULL ELSE now() END
          FROM r
         WHERE d.id = r.delivery_id
           AND d.lease_token = r.lease_token      -- the fence
        RETURNING d.id, d.config_id, r.response_status
    ), gone AS (
        -- 410 Gone: the receiver says the endpoint is gone for good (Standard Webhooks): stop sending to it.
        UPDATE webhook_configs c
           SET is_active = false, disabled_at = now(),
               disabled_reason = 'the endpoint answered 410 Gone; enable the config again once it is back'
         WHERE c.is_active AND c.id IN (SELECT config_id FROM applied WHERE response_status = 410)
        RETURNING c.id
    ), logged AS (
        INSERT INTO webhook_logs (delivery_id, event_id, config_id, event_type, attempt, outcome, payload,
                                  response_status, response_body, error, duration_ms, worker)
        SELECT r.delivery_id, r.event_id, r.config_id, r.event_type, r.attempt, r.outcome, r.payload,
               r.response_status, r.response_body, r.error, r.duration_ms, p_worker
          FROM r
        RETURNING 1
    )
    -- (A data-modifying CTE always runs to completion, so `logged` needs no reference here.)
    SELECT count(*)::integer FROM applied;
$$;

-- ---------------------------------------------------------------------------------------------------------
-- Expired leases: the worker that held them was killed, hung, or lost its database connection for longer
-- than the lease. Each lost attempt is logged (outcome 'lost'); the delivery is due again at once, or failed
-- when that was its last attempt. Every worker runs this about once a second; it reads the same partial
-- index as the claim and finds nothing in the normal case.
-- ---------------------------------------------------------------------------------------------------------
CREATE FUNCTION herald_rescue(p_default_max_attempts integer, p_limit integer)
RETURNS integer
LANGUAGE sql AS $$
    WITH lost AS (
        SELECT d.id, d.leased_by
          FROM webhook_deliveries d
         WHERE d.status = 'pending'
           AND d.next_attempt_at <= now()
           AND d.lease_token IS NOT NULL
         ORDER BY d.next_attempt_at
         LIMIT p_limit
           FOR UPDATE SKIP LOCKED
    ), rescued AS (
        UPDATE webhook_deliveries d
           SET status          = CASE WHEN d.attempts >= coalesce(d.max_attempts, c.max_attempts, p_default_max_attempts)
                                      THEN 'failed' ELSE 'pending' END,
               completed_at    = CASE WHEN d.attempts >= coalesce(d.max_attempts, c.max_attempts, p_default_max_attempts)
                                      THEN now() END,
               next_attempt_at = now(),
               lease_token     = NULL,
               leased_by       = NULL,
               last_response_status = NULL,
               last_error      = format('attempt %s lost: the lease held by %s expired before a result was written',
                                        d.attempts, coalesce(lost.leased_by, 'a worker')),
               updated_at      = now()
          FROM lost, webhook_configs c
         WHERE d.id = lost.id
           AND c.id = d.config_id
        RETURNING d.id, d.event_id, d.config_id, d.attempts, d.status, d.last_error, lost.leased_by
    ), logged AS (
        INSERT INTO webhook_logs (delivery_id, event_id, config_id, event_type, attempt, outcome, error, worker)
        SELECT r.id, r.event_id, r.config_id, e.event_type, r.attempts,
               CASE r.status WHEN 'failed' THEN 'failed' ELSE 'lost' END, r.last_error, r.leased_by
          FROM rescued r
          JOIN webhook_events e ON e.id = r.event_id
        RETURNING 1
    )
    SELECT count(*)::integer FROM logged;
$$;
