-- 004 — The worker protocol: claim, complete, rescue.
--
-- The whole claim/lease protocol is these three functions, so it can be read here. (Workers also write
-- heartbeats, sample the backlog for their metrics and, with HERALD_RETENTION, call herald_prune: sql/005, 006.)
--   1. herald_claim     takes a lease on up to n due deliveries (FOR UPDATE SKIP LOCKED: workers never wait on
--                       each other and never get the same row) and returns everything needed to send them.
--   2. herald_complete  writes the outcomes of many attempts in one statement, fenced by the lease token: a
--                       worker that lost its lease cannot overwrite a newer outcome. Every attempt is logged.
--   3. herald_rescue    finds leases that expired (the worker was killed or lost its database) and logs the
--                       lost attempt; the delivery becomes due at once, or failed if it has no attempts left.

-- ---------------------------------------------------------------------------------------------------------
-- THE CLAIM QUERY.
-- Per endpoint, reads the partial indexes webhook_deliveries_due_first / _due_retry in next_attempt_at order
-- (at most the endpoint's free in-flight slots, none while its circuit is open), skipping rows another worker
-- has locked, and takes a lease: lease_token identifies this claim, next_attempt_at becomes the lease expiry,
-- so if this worker dies the row simply becomes due again. attempts is counted here, not on completion.
-- p_lease must be much longer than the HTTP timeout, or a slow attempt would be sent twice at once.
-- ---------------------------------------------------------------------------------------------------------
CREATE FUNCTION herald_claim(p_limit integer, p_lease interval, p_worker text,
                             p_endpoint_concurrency integer DEFAULT 50, p_circuit_threshold integer DEFAULT 10)
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
    is_active    boolean,
    previous_secret text   -- during a rotation, until it expires
)
LANGUAGE plpgsql
-- Planned for the actual batch size on every call. A generic plan (what a LANGUAGE sql function or a reused
-- prepared statement gets) cannot see that LIMIT is small, guesses thousands of rows and hash-joins the whole
-- webhook_events table: measured 11 ms per claim of 64 instead of 3 ms.
SET plan_cache_mode = force_custom_plan
-- At most a few hundred rows are touched, each found by an index: never a sequential scan or a hash of a whole
-- table, which the planner picks when statistics are young (measured: 25 ms per claim instead of 3).
SET enable_seqscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
BEGIN
    RETURN QUERY
    WITH in_flight AS (
        -- Requests in flight per endpoint, across all workers (the small webhook_deliveries_leased index).
        SELECT x.config_id, count(*) AS n FROM webhook_deliveries x WHERE x.lease_token IS NOT NULL GROUP BY x.config_id
    ), slots AS (
        -- Free in-flight slots per endpoint: one slow or failing endpoint cannot take every worker slot. An open
        -- circuit has none; a half-open one (cool-down over, still failing) has one, for the probe.
        SELECT c.id AS config_id,
               least(p_limit, greatest(0,
                     CASE WHEN c.circuit_open_until > now() THEN 0
                          WHEN c.consecutive_failures >= p_circuit_threshold THEN 1
                          ELSE coalesce(c.max_in_flight, p_endpoint_concurrency) END - coalesce(f.n, 0))) AS free
          FROM webhook_configs c
          LEFT JOIN in_flight f ON f.config_id = c.id
    ), first_attempts AS (
        -- Per endpoint, the oldest due first attempts and, below, the oldest due retries, each read in order from
        -- its own partial index (webhook_deliveries_due_first / _due_retry). SKIP LOCKED here, where the rows are
        -- found, so concurrent workers step past each other's rows instead of all choosing the same oldest ones
        -- (rows locked but not chosen are released when this statement commits). LIMIT p_limit, a constant, not
        -- `free`: with a per-row LIMIT the planner guesses 10 % of the table and sizes every sort and window for
        -- it, which made claims slower as the table grew (measured 3 ms at 10,000 rows, 49 ms at 40,000); `free`
        -- is applied below.
        SELECT s.config_id, s.free, d.id, d.next_attempt_at, false AS is_retry
          FROM slots s
         CROSS JOIN LATERAL (
               SELECT x.id, x.next_attempt_at
                 FROM webhook_deliveries x
                WHERE x.config_id = s.config_id AND x.status = 'pending' AND x.lease_token IS NULL
                  AND x.attempts = 0 AND x.next_attempt_at <= now()
                ORDER BY x.next_attempt_at LIMIT p_limit
                  FOR UPDATE SKIP LOCKED
         ) d
         WHERE s.free > 0
    ), retries AS (
        SELECT s.config_id, s.free, d.id, d.next_attempt_at, true AS is_retry
          FROM slots s
         CROSS JOIN LATERAL (
               SELECT x.id, x.next_attempt_at
                 FROM webhook_deliveries x
                WHERE x.config_id = s.config_id AND x.status = 'pending' AND x.lease_token IS NULL
                  AND x.attempts > 0 AND x.next_attempt_at <= now()
                ORDER BY x.next_attempt_at LIMIT p_limit
                  FOR UPDATE SKIP LOCKED
         ) d
         WHERE s.free > 0
    ), candidates AS (
        SELECT * FROM first_attempts UNION ALL SELECT * FROM retries
    ), ranked AS (
        -- First attempts and retries alternate, so each gets at least half of a batch when both wait: a large
        -- retry backlog cannot starve fresh events (nor the reverse) …
        SELECT k.*, row_number() OVER (PARTITION BY k.config_id, k.is_retry ORDER BY k.next_attempt_at) AS turn
          FROM candidates k
    ), capped AS (
        -- … and no endpoint gets more than its free slots.
        SELECT r.*, row_number() OVER (PARTITION BY r.config_id ORDER BY r.turn, r.next_attempt_at) AS place
          FROM ranked r
    ), chosen AS (
        SELECT c.id
          FROM capped c
         WHERE c.place <= c.free
         ORDER BY c.turn, c.next_attempt_at
         LIMIT p_limit
    )
    -- The chosen rows are already locked (above).
    UPDATE webhook_deliveries d
       SET attempts        = d.attempts + 1,
           lease_token     = gen_random_uuid(),
           leased_by       = p_worker,
           next_attempt_at = now() + p_lease,
           last_attempt_at = now(),
           updated_at      = now()
      FROM chosen, webhook_events e, webhook_configs c
     WHERE d.id = chosen.id
       AND d.status = 'pending'
       AND d.lease_token IS NULL
       AND e.id = d.event_id
       AND c.id = d.config_id
    RETURNING d.id, d.lease_token, d.attempts, e.id, e.event_type,
              to_char(e.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
              e.data::text, c.id, c.url, c.secret, coalesce(d.max_attempts, c.max_attempts), c.is_active,
              CASE WHEN c.previous_secret_expires_at > now() THEN c.previous_secret END;
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
    p_response_body text[], p_error text[], p_duration_ms integer[], p_payload text[], p_worker text,
    p_circuit_threshold integer DEFAULT 10, p_circuit_cooldown interval DEFAULT '30 seconds',
    p_disable_after interval DEFAULT '5 days')
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
        RETURNING d.id, d.config_id, r.response_status, r.outcome
    ), outcomes AS (
        SELECT a.config_id,
               bool_or(a.outcome = 'delivered')                    AS any_delivered,
               count(*) FILTER (WHERE a.outcome <> 'delivered')    AS failures,
               coalesce(bool_or(a.response_status = 410), false)   AS gone
          FROM applied a
         GROUP BY a.config_id
    ), changed AS (
        -- Only configs whose health changes are written (a healthy endpoint costs nothing here), locked in id
        -- order so two workers updating the same configs cannot deadlock.
        SELECT c.id, o.any_delivered, o.failures, o.gone
          FROM webhook_configs c JOIN outcomes o ON o.config_id = c.id
         WHERE o.gone OR NOT o.any_delivered OR c.consecutive_failures > 0 OR c.circuit_open_until IS NOT NULL
         ORDER BY c.id
           FOR NO KEY UPDATE OF c
    ), health AS (
        -- Endpoint health: a success closes the circuit; failures in a row open it for a cool-down that doubles
        -- each time the threshold is passed again (capped at an hour); 410 Gone, or failing for longer than
        -- p_disable_after, disables the config with a reason a person can read.
        UPDATE webhook_configs c
           SET consecutive_failures = CASE WHEN k.any_delivered THEN 0 ELSE c.consecutive_failures + k.failures END,
               failing_since        = CASE WHEN k.any_delivered THEN NULL ELSE coalesce(c.failing_since, now()) END,
               circuit_open_until   = CASE
                   WHEN k.any_delivered THEN NULL
                   WHEN c.consecutive_failures + k.failures >= p_circuit_threshold
                       THEN now() + least(p_circuit_cooldown * power(2, least(10,
                                (c.consecutive_failures + k.failures) / p_circuit_threshold - 1)), interval '1 hour')
                   ELSE c.circuit_open_until END,
               is_active            = c.is_active AND NOT (k.gone OR (NOT k.any_delivered
                                          AND coalesce(c.failing_since, now()) < now() - p_disable_after)),
               disabled_at          = CASE WHEN c.is_active AND (k.gone OR (NOT k.any_delivered
                                          AND coalesce(c.failing_since, now()) < now() - p_disable_after))
                                           THEN now() ELSE c.disabled_at END,
               disabled_reason      = CASE
                   WHEN NOT c.is_active THEN c.disabled_reason
                   WHEN k.gone THEN 'the endpoint answered 410 Gone; enable the config again once it is back'
                   WHEN NOT k.any_delivered AND coalesce(c.failing_since, now()) < now() - p_disable_after
                       THEN format('every attempt failed since %s (%s in a row); enable the config again once the endpoint works',
                                   to_char(c.failing_since AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS "UTC"'),
                                   c.consecutive_failures + k.failures)
                   ELSE c.disabled_reason END
          FROM changed k
         WHERE c.id = k.id
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
-- when that was its last attempt. Every worker runs this about once a second; it reads the small partial
-- index webhook_deliveries_leased (deliveries in flight only) and finds nothing in the normal case.
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
