-- 019 — A claim at a healthy endpoint consumes its signals without the fold.
--
-- Step 2 of every claim folds the endpoints' due signals into their state (failures, circuit, adaptive limit,
-- 410 Gone, the next head of each ordering key) and consumes the signals. When every endpoint the claim took is
-- healthy there is nothing to fold: every signal says "delivered" (or only "work left") and no endpoint has
-- failures, a failing period, a circuit or a limit below its ceiling. The fold's statement still ran: 0.3–0.4 ms
-- of a claim on an idle database (auto_explain, at 5 and at 45 rows; docs/PERFORMANCE.md "Fifth session").
--
-- Now one small DELETE (about 0.03 ms) consumes the due signals when nothing needs folding, decided in its own
-- snapshot; the fold runs, for every endpoint of the claim, only when it deleted nothing. A claim-and-complete
-- loop on an idle database, alternated with sql/016's claim: at 45 rows a cycle the claim took 2.4, 2.7 and
-- 2.4 ms, now 2.0, 2.2 and 2.0 ms; at 5 rows, 1.01, 1.08 and 0.98 ms, now 0.99, 1.02 and 0.96 ms (less than the
-- fold's own time, not explained). In scripts/bench (hot, cost) the difference is within the noise; in the
-- soak at one endpoint (PostgreSQL at its limit, claims many) 80–84 % of the offered events were delivered in
-- 10 minutes against 67–74 % without, alternated.
--
-- Also fixed in the fold (inherited from sql/016): an endpoint with failing_since set is folded, so that a
-- success clears it (see `needs`).
--
-- The claim is otherwise sql/016's, redefined whole because PostgreSQL cannot change part of a function.

-- Whether an endpoint carries state that its next success changes (failures counted, a failing period, a
-- circuit, an adaptive limit below its ceiling): then its signals must be folded even when they only say
-- "delivered". One definition for the fast path and the fold below, which must agree (they did not on
-- failing_since). A plain expression, which PostgreSQL inlines where it is used.
CREATE FUNCTION herald_endpoint_recovering(c webhook_configs)
RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT c.consecutive_failures > 0 OR c.circuit_open_until IS NOT NULL OR c.concurrency_limit IS NOT NULL
           OR c.failing_since IS NOT NULL
$$;

CREATE OR REPLACE FUNCTION herald_claim(p_limit integer, p_lease interval, p_worker text,
                             p_endpoint_concurrency integer DEFAULT 50, p_circuit_threshold integer DEFAULT 10,
                             p_default_max_attempts integer DEFAULT 10,  -- HERALD_MAX_ATTEMPTS's default
                             p_circuit_cooldown interval DEFAULT '30 seconds',
                             p_disable_after interval DEFAULT '5 days',
                             -- The caller's attempts that were answered (delivered) but are not written yet: each
                             -- delivery id with the lease token it was sent under. Their requests are off the wire.
                             p_answered_ids uuid[] DEFAULT '{}', p_answered_tokens uuid[] DEFAULT '{}')
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
    max_attempts integer,  -- the limit for this delivery (see default_max_attempts)
    is_active    boolean,
    previous_secret text,  -- during a rotation, until it expires
    replay       integer   -- webhook_deliveries.replay_count: 0 before any replay (X-Webhook-Replay when > 0)
)
LANGUAGE plpgsql
-- Index access only: with sequential scans, hash and merge joins off, every join is an index nested loop and the
-- plan does not depend on the parameters, so one generic plan serves every call. Re-planning each of its
-- statements on every call (force_custom_plan, which sql/004 needed) was half of its cost: 6.1 → 3.2 ms per call
-- at a hot endpoint (docs/PERFORMANCE.md).
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
SET enable_bitmapscan = off   -- sql/015
SET jit = off                 -- sql/015
AS $$
DECLARE
    v_endpoints uuid[];
BEGIN
    -- 1. Endpoints with due signals that no other claim is deciding right now.
    -- An endpoint often has several signals (one per completed batch): read a window of them, oldest first, and
    -- keep the first p_limit distinct endpoints.
    SELECT coalesce(array_agg(x.config_id), '{}') INTO v_endpoints
      FROM (SELECT s.config_id
              FROM (SELECT s.config_id, s.due_at FROM herald_endpoint_signals s
                     WHERE s.due_at <= now() ORDER BY s.due_at LIMIT greatest(p_limit, 1) * 8) s
             GROUP BY s.config_id
             ORDER BY min(s.due_at)
             LIMIT greatest(p_limit, 1)) x
     WHERE pg_try_advisory_xact_lock(72201363, hashtext(x.config_id::text));
    IF cardinality(v_endpoints) = 0 THEN
        RETURN;
    END IF;

    -- Signals of deleted configs would otherwise stay due forever.
    DELETE FROM herald_endpoint_signals s
     WHERE s.config_id = ANY (v_endpoints)
       AND NOT EXISTS (SELECT 1 FROM webhook_configs c WHERE c.id = s.config_id);

    -- 2. Health: fold the due signals into each endpoint's state; promote the next head of ordering keys that
    -- have none left (the head finished, or the key is new). Under the endpoint's lock, so two claims cannot both
    -- promote one for the same key.
    -- The usual case first (sql/019): every due signal only says "delivered" and no endpoint of this claim has
    -- state to change (no failures or failing period, no circuit, no adaptive limit below its ceiling, no
    -- ordering key). Then folding changes nothing and the signals are only consumed: one small statement instead
    -- of the fold's fifteen parts. Both conditions are read in the DELETE's own snapshot, so a failure signalled
    -- meanwhile is either seen here (and folded below) or left for the next claim, never consumed unread.
    DELETE FROM herald_endpoint_signals s
     WHERE s.config_id = ANY (v_endpoints) AND s.due_at <= now()
       AND NOT EXISTS (SELECT 1 FROM herald_endpoint_signals x
                        WHERE x.config_id = ANY (v_endpoints) AND x.due_at <= now()
                          AND (x.failed > 0 OR x.gone OR x.ordering_key IS NOT NULL))
       AND NOT EXISTS (SELECT 1 FROM webhook_configs c
                        WHERE c.id = ANY (v_endpoints) AND herald_endpoint_recovering(c));
    IF NOT FOUND THEN
        WITH due AS (
            SELECT s.id, s.config_id, s.delivered, s.failed, s.overloaded, s.gone, s.ordering_key
              FROM herald_endpoint_signals s
             WHERE s.config_id = ANY (v_endpoints) AND s.due_at <= now()
        ), promoted AS (
            UPDATE webhook_deliveries d
               SET ordering_blocked = false
             WHERE d.id = ANY (ARRAY(     -- by id: never a scan of the table, whatever the estimates (3. at the top)
                   SELECT (SELECT y.id FROM webhook_deliveries y
                            WHERE y.config_id = k.config_id AND y.ordering_key = k.ordering_key
                              AND y.status = 'pending' AND y.ordering_blocked
                            ORDER BY y.event_seq LIMIT 1)
                     FROM (SELECT DISTINCT u.config_id, u.ordering_key FROM due u WHERE u.ordering_key IS NOT NULL) k
                    WHERE NOT EXISTS (
                          SELECT 1 FROM webhook_deliveries z
                           WHERE z.config_id = k.config_id AND z.ordering_key = k.ordering_key
                             AND z.status = 'pending' AND NOT z.ordering_blocked AND z.replay_count = 0)))
               AND d.ordering_blocked
            RETURNING 1
        ), counts AS (
            SELECT d.config_id, sum(d.delivered) AS delivered, sum(d.failed) AS failed, sum(d.overloaded) AS overloaded,
                   bool_or(d.gone) AS gone
              FROM due d GROUP BY d.config_id
        ), needs AS (
            -- Only endpoints whose state changes are written: a healthy endpoint at its ceiling costs nothing here.
            SELECT k.* FROM counts k JOIN webhook_configs c ON c.id = k.config_id
             -- (sql/019: herald_endpoint_recovering now includes failing_since. A batch of overloads alone, while
             -- the limit stays at its ceiling (it halves at most once a second), sets it and leaves the rest as it
             -- was: without it the next success would not clear it, and days later one failed batch would disable
             -- a healthy endpoint.)
             WHERE k.failed > 0 OR k.gone OR herald_endpoint_recovering(c)
        ), lockable AS (
            SELECT c.id FROM webhook_configs c WHERE c.id IN (SELECT n.config_id FROM needs n)
               FOR NO KEY UPDATE SKIP LOCKED
        ), updated AS (
            UPDATE webhook_configs c
               SET concurrency_limit    = (herald_next_limit(c.concurrency_limit, coalesce(c.max_in_flight, p_endpoint_concurrency),
                                             n.delivered, n.failed, n.overloaded, c.limit_decreased_at, now())).new_limit,
                   limit_decreased_at   = CASE WHEN (herald_next_limit(c.concurrency_limit,
                                                      coalesce(c.max_in_flight, p_endpoint_concurrency), n.delivered,
                                                      n.failed, n.overloaded, c.limit_decreased_at, now())).decreased
                                               THEN now() ELSE c.limit_decreased_at END,
                   -- Overload counts toward the circuit only once the limit is down to 1: an overloaded receiver
                   -- is eased off, not switched off. Any success resets the count.
                   consecutive_failures = CASE WHEN n.delivered > 0 THEN 0
                                               ELSE c.consecutive_failures + n.failed
                                                    - CASE WHEN coalesce(c.concurrency_limit, 2) > 1 THEN n.overloaded ELSE 0 END
                                          END,
                   failing_since        = CASE WHEN n.delivered > 0 THEN NULL
                                               WHEN n.failed > 0 THEN coalesce(c.failing_since, now())
                                               ELSE c.failing_since END,
                   circuit_open_until   = CASE
                       WHEN n.delivered > 0 THEN NULL
                       WHEN c.consecutive_failures + n.failed
                            - CASE WHEN coalesce(c.concurrency_limit, 2) > 1 THEN n.overloaded ELSE 0 END >= p_circuit_threshold
                            AND n.failed - CASE WHEN coalesce(c.concurrency_limit, 2) > 1 THEN n.overloaded ELSE 0 END > 0
                           THEN now() + least(p_circuit_cooldown * power(2, least(10, greatest(0,
                                    (c.consecutive_failures + n.failed) / p_circuit_threshold - 1))), interval '1 hour')
                       ELSE c.circuit_open_until END,
                   is_active            = c.is_active AND NOT (n.gone OR (n.delivered = 0 AND n.failed > 0
                                              AND coalesce(c.failing_since, now()) < now() - p_disable_after)),
                   disabled_at          = CASE WHEN c.is_active AND (n.gone OR (n.delivered = 0 AND n.failed > 0
                                              AND coalesce(c.failing_since, now()) < now() - p_disable_after))
                                               THEN now() ELSE c.disabled_at END,
                   disabled_reason      = CASE
                       WHEN NOT c.is_active THEN c.disabled_reason
                       WHEN n.gone THEN 'the endpoint answered 410 Gone; enable the config again once it is back'
                       WHEN n.delivered = 0 AND n.failed > 0 AND coalesce(c.failing_since, now()) < now() - p_disable_after
                           THEN format('every attempt failed since %s (%s in a row); enable the config again once the endpoint works',
                                       to_char(c.failing_since AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS "UTC"'),
                                       c.consecutive_failures + n.failed)
                       ELSE c.disabled_reason END
              FROM needs n
             WHERE c.id = n.config_id AND c.id IN (SELECT k.id FROM lockable k)
               AND c.id = ANY (v_endpoints)     -- bounded whatever the join order (see 3. at the top)
            RETURNING c.id
        ), consumed AS (
            DELETE FROM herald_endpoint_signals s USING due WHERE s.id = due.id
            RETURNING 1
        )
        -- Every due signal is consumed. An endpoint whose config row someone holds keeps their counts as one signal,
        -- to be folded by a later claim (one row, not one per batch, so they cannot pile up while the lock lasts).
        INSERT INTO herald_endpoint_signals (config_id, due_at, delivered, failed, overloaded, gone)
        SELECT n.config_id, now(), n.delivered, n.failed, n.overloaded, n.gone
          FROM needs n
         WHERE n.config_id NOT IN (SELECT u.id FROM updated u);
    END IF;

    -- 3. Claim (and fail what must not be sent).
    RETURN QUERY
    WITH answered AS MATERIALIZED (
        -- Per endpoint, the leases whose answers are back: matched by delivery and lease token, so a lease that
        -- was written meanwhile, or taken back by a rescue, frees nothing. Once per claim (MATERIALIZED), each
        -- found by id: the token is compared with IS NOT DISTINCT FROM so that the small
        -- webhook_deliveries_leased index (lease_token IS NOT NULL) cannot be chosen and scanned per id.
        SELECT y.config_id, count(*)::integer AS n
          FROM unnest(p_answered_ids, p_answered_tokens) AS a (id, token)
         CROSS JOIN LATERAL (SELECT x.config_id FROM webhook_deliveries x
                              WHERE x.id = a.id AND x.lease_token IS NOT DISTINCT FROM a.token OFFSET 0) y
         GROUP BY y.config_id
    ), endpoints AS (
        SELECT c.id AS config_id, c.is_active, c.organization_id,
               herald_claimable_slots(c, p_endpoint_concurrency, p_circuit_threshold,
                   (SELECT a.n FROM answered a WHERE a.config_id = c.id)) AS free
          FROM webhook_configs c
         WHERE c.id = ANY (v_endpoints)
    ), sharing AS (
        -- How many rows of each kind (first attempts, retries) to read and lock per endpoint: this claim's fair
        -- share of p_limit among the endpoints with free slots and due work. Taking turns, it takes no more of
        -- any endpoint while every endpoint has rows. Reading up to each endpoint's free slots instead locked
        -- 3,400 rows per claim of 100 over 70 endpoints (35 ms a claim, receivers answering in 200 ms). With
        -- uneven queues a claim may take fewer than p_limit: step 4 signals the endpoints it left work at.
        SELECT ceil(greatest(p_limit, 1)::numeric / greatest(count(*), 1))::integer AS share
          FROM endpoints s
         WHERE s.is_active AND s.free > 0
           -- Probes per endpoint, written as scalar subqueries: an EXISTS the planner may turn into one scan of
           -- every due row, hashed (which a plan made on a small queue did).
           AND ((SELECT 1 FROM webhook_deliveries x
                  WHERE x.config_id = s.config_id AND x.status = 'pending' AND x.lease_token IS NULL
                    AND x.attempts = 0 AND NOT x.ordering_blocked AND x.next_attempt_at <= now() LIMIT 1) IS NOT NULL
                OR (SELECT 1 FROM webhook_deliveries x
                     WHERE x.config_id = s.config_id AND x.status = 'pending' AND x.lease_token IS NULL
                       AND x.attempts > 0 AND NOT x.ordering_blocked AND x.next_attempt_at <= now() LIMIT 1) IS NOT NULL)
    ), first_attempts AS (
        SELECT s.config_id, least(s.free, p_limit) AS free, d.id, d.next_attempt_at, false AS is_retry
          FROM endpoints s
         CROSS JOIN sharing h
         CROSS JOIN LATERAL (
               SELECT x.id, x.next_attempt_at
                 FROM webhook_deliveries x
                WHERE x.config_id = s.config_id AND x.status = 'pending' AND x.lease_token IS NULL
                  AND x.attempts = 0 AND NOT x.ordering_blocked AND x.next_attempt_at <= now()
                ORDER BY x.next_attempt_at LIMIT least(s.free, h.share)
                  FOR UPDATE SKIP LOCKED
         ) d
         WHERE s.free > 0
    ), retries AS (
        SELECT s.config_id, least(s.free, p_limit) AS free, d.id, d.next_attempt_at, true AS is_retry
          FROM endpoints s
         CROSS JOIN sharing h
         CROSS JOIN LATERAL (
               SELECT x.id, x.next_attempt_at
                 FROM webhook_deliveries x
                WHERE x.config_id = s.config_id AND x.status = 'pending' AND x.lease_token IS NULL
                  AND x.attempts > 0 AND NOT x.ordering_blocked AND x.next_attempt_at <= now()
                ORDER BY x.next_attempt_at LIMIT least(s.free, h.share)
                  FOR UPDATE SKIP LOCKED
         ) d
         WHERE s.free > 0
    ), disabled AS (
        -- A disabled config's whole queue, due or not, a batch at a time: it fails without being sent.
        SELECT s.config_id, d.id
          FROM endpoints s
         CROSS JOIN LATERAL (
               SELECT x.id FROM webhook_deliveries x
                WHERE x.config_id = s.config_id AND x.status = 'pending' AND x.lease_token IS NULL
                LIMIT 500
                  FOR UPDATE SKIP LOCKED
         ) d
         WHERE NOT s.is_active
    ), candidates AS (
        SELECT * FROM first_attempts UNION ALL SELECT * FROM retries
    ), found AS (
        -- Per endpoint in service, what its two scans found: step 4 (below) reads it twice.
        SELECT s.config_id, count(k.id) AS found, count(k.id) FILTER (WHERE NOT k.is_retry) AS firsts,
               count(k.id) FILTER (WHERE k.is_retry) AS retries
          FROM endpoints s LEFT JOIN candidates k ON k.config_id = s.config_id
         WHERE s.is_active
         GROUP BY s.config_id
    ), ranked AS (
        -- First attempts and retries alternate, so each gets at least half of a batch when both wait …
        SELECT k.*, row_number() OVER (PARTITION BY k.config_id, k.is_retry ORDER BY k.next_attempt_at) AS turn
          FROM candidates k
    ), capped AS (
        -- … and no endpoint gets more than its free slots.
        SELECT r.*, row_number() OVER (PARTITION BY r.config_id ORDER BY r.turn, r.next_attempt_at) AS place
          FROM ranked r
    ), picked AS (
        SELECT c.config_id, c.id FROM capped c WHERE c.place <= c.free
         ORDER BY c.turn, c.next_attempt_at
         LIMIT p_limit
    ), chosen AS (
        SELECT p.id FROM picked p
        UNION ALL
        SELECT x.id FROM disabled x
    ), verdicts AS (
        SELECT d.id,
               CASE WHEN NOT c.is_active
                        THEN format('not sent: webhook config %s is disabled', c.id)
                    WHEN e.organization_id IS DISTINCT FROM c.organization_id
                        THEN format('not sent: the event belongs to organization %s, the config to %s (it moved)',
                                    coalesce(e.organization_id::text, 'none'), coalesce(c.organization_id::text, 'none'))
                    WHEN d.attempts >= coalesce(d.max_attempts, c.max_attempts, d.default_max_attempts,
                                                p_default_max_attempts)
                        THEN format('not sent: the attempt limit (%s) was reached', coalesce(d.max_attempts,
                                    c.max_attempts, d.default_max_attempts, p_default_max_attempts))
               END AS refusal
          FROM chosen k
         CROSS JOIN LATERAL (SELECT x.* FROM webhook_deliveries x WHERE x.id = k.id OFFSET 0) d
         CROSS JOIN LATERAL (SELECT x.organization_id FROM webhook_events x WHERE x.id = d.event_id OFFSET 0) e
         CROSS JOIN LATERAL (SELECT x.* FROM webhook_configs x WHERE x.id = d.config_id OFFSET 0) c
    ), leased AS (
        -- The chosen rows are already locked (above).
        UPDATE webhook_deliveries d
           SET attempts             = CASE WHEN v.refusal IS NULL THEN d.attempts + 1 ELSE d.attempts END,
               status               = CASE WHEN v.refusal IS NULL THEN 'pending' ELSE 'failed' END,
               lease_token          = CASE WHEN v.refusal IS NULL THEN gen_random_uuid() END,
               lost_lease_token     = NULL,
               leased_by            = CASE WHEN v.refusal IS NULL THEN p_worker END,
               default_max_attempts = coalesce(d.default_max_attempts, p_default_max_attempts),
               next_attempt_at      = CASE WHEN v.refusal IS NULL THEN now() + p_lease ELSE d.next_attempt_at END,
               last_attempt_at      = CASE WHEN v.refusal IS NULL THEN now() ELSE d.last_attempt_at END,
               last_error           = coalesce(v.refusal, d.last_error),
               last_response_status = CASE WHEN v.refusal IS NULL THEN d.last_response_status END,
               completed_at         = CASE WHEN v.refusal IS NULL THEN NULL ELSE now() END,
               updated_at           = now()
          FROM verdicts v
         WHERE d.id = v.id
           AND d.id = ANY (ARRAY(SELECT w.id FROM verdicts w))
           -- The recheck, written so that no index can serve it: the rows are found by id (above), never by
           -- scanning webhook_deliveries_config for every pending row, which a plan made on a small table did.
           AND (d.status = 'pending' AND d.lease_token IS NULL) IS TRUE
        RETURNING d.id, d.event_id, d.config_id, d.attempts, d.lease_token, d.max_attempts AS own_limit,
                  d.default_max_attempts, d.replay_count, v.refusal
    ), refused AS (
        INSERT INTO webhook_logs (delivery_id, event_id, config_id, event_type, attempt, outcome, error, worker, replay)
        SELECT l.id, l.event_id, l.config_id, e.event_type, l.attempts, 'failed', l.refusal, p_worker, l.replay_count
          FROM leased l
         CROSS JOIN LATERAL (SELECT x.event_type FROM webhook_events x WHERE x.id = l.event_id OFFSET 0) e
         WHERE l.refusal IS NOT NULL
        RETURNING 1
    ), resignalled AS (
        -- 4. (an endpoint in service) Signalled again when it has free slots left after this claim and may have
        -- due work left: rows found but not leased (the batch was cut at p_limit, or they were refused), a scan
        -- that stopped at its share, or due rows that someone else held locked. Read from what this statement
        -- found (it no longer counts the endpoint's leases and probes its queue a second time: half of what each
        -- endpoint cost a claim over many endpoints). An endpoint at its cap is not signalled: a completion does.
        INSERT INTO herald_endpoint_signals (config_id, due_at)
        SELECT s.config_id, now()
          FROM endpoints s
         CROSS JOIN sharing h
          JOIN found f ON f.config_id = s.config_id
         CROSS JOIN LATERAL (SELECT count(*) AS n FROM leased l
                              WHERE l.config_id = s.config_id AND l.refusal IS NULL) t
         WHERE s.is_active AND s.free > t.n
           AND (f.found > t.n OR f.firsts >= least(s.free, h.share) OR f.retries >= least(s.free, h.share)
                OR (SELECT 1 FROM webhook_deliveries x
                     WHERE x.config_id = s.config_id AND x.status = 'pending' AND x.lease_token IS NULL
                       AND x.attempts = 0 AND NOT x.ordering_blocked AND x.next_attempt_at <= now()
                       AND NOT EXISTS (SELECT 1 FROM candidates k WHERE k.id = x.id) LIMIT 1) IS NOT NULL
                OR (SELECT 1 FROM webhook_deliveries x
                     WHERE x.config_id = s.config_id AND x.status = 'pending' AND x.lease_token IS NULL
                       AND x.attempts > 0 AND NOT x.ordering_blocked AND x.next_attempt_at <= now()
                       AND NOT EXISTS (SELECT 1 FROM candidates k WHERE k.id = x.id) LIMIT 1) IS NOT NULL)
        RETURNING 1
    ), scheduled AS (
        -- An endpoint whose due rows this claim exhausted, with retries (or first attempts) due later: signalled for
        -- the earliest of them, unless a signal already comes by then. The signal that woke this claim was for
        -- the earliest of a batch of retries; the rest of that batch, due a little later, had no signal of its
        -- own once it was consumed, and waited for the reconciliation (up to a minute) when nothing else of the
        -- endpoint was in flight to bring a claim.
        INSERT INTO herald_endpoint_signals (config_id, due_at)
        SELECT n.config_id, n.due_at
          FROM (SELECT s.config_id,
                       least((SELECT x.next_attempt_at FROM webhook_deliveries x
                               WHERE x.config_id = s.config_id AND x.status = 'pending' AND x.lease_token IS NULL
                                 AND x.attempts = 0 AND NOT x.ordering_blocked AND x.next_attempt_at > now()
                               ORDER BY x.next_attempt_at LIMIT 1),
                             (SELECT x.next_attempt_at FROM webhook_deliveries x
                               WHERE x.config_id = s.config_id AND x.status = 'pending' AND x.lease_token IS NULL
                                 AND x.attempts > 0 AND NOT x.ordering_blocked AND x.next_attempt_at > now()
                               ORDER BY x.next_attempt_at LIMIT 1)) AS due_at
                  FROM endpoints s
                 CROSS JOIN sharing h
                  JOIN found f ON f.config_id = s.config_id
                 WHERE s.is_active
                   AND f.firsts < least(greatest(s.free, 1), h.share) AND f.retries < least(greatest(s.free, 1), h.share)) n
         WHERE n.due_at IS NOT NULL
           AND (SELECT 1 FROM herald_endpoint_signals g
                 WHERE g.config_id = n.config_id AND g.due_at <= n.due_at AND g.due_at > now() LIMIT 1) IS NULL
        RETURNING 1
    )
    SELECT l.id, l.lease_token, l.attempts, e.id, e.event_type,
           to_char(e.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
           e.data::text, c.id, c.url, c.secret,
           coalesce(l.own_limit, c.max_attempts, l.default_max_attempts), c.is_active,
           CASE WHEN c.previous_secret_expires_at > now() THEN c.previous_secret END, l.replay_count
      FROM leased l
     CROSS JOIN LATERAL (SELECT x.* FROM webhook_events x WHERE x.id = l.event_id OFFSET 0) e
     CROSS JOIN LATERAL (SELECT x.* FROM webhook_configs x WHERE x.id = l.config_id OFFSET 0) c
     WHERE l.refusal IS NULL;

    -- 4. (out of service) An endpoint whose circuit is open, signalled for when it closes, or a disabled config's
    -- queue still draining, signalled again while it has rows left. (Those in service: above.)
    INSERT INTO herald_endpoint_signals (config_id, due_at)
    SELECT s.config_id, greatest(s.head, coalesce(s.circuit_open_until, s.head))
      FROM (
        SELECT c.id AS config_id, c.is_active, c.circuit_open_until,
               CASE WHEN NOT c.is_active
                    THEN (SELECT min(now()) FROM webhook_deliveries x
                           WHERE x.config_id = c.id AND x.status = 'pending' AND x.lease_token IS NULL)
                    ELSE least(
                        (SELECT min(x.next_attempt_at) FROM webhook_deliveries x
                          WHERE x.config_id = c.id AND x.status = 'pending' AND x.lease_token IS NULL AND x.attempts = 0
                            AND NOT x.ordering_blocked),
                        (SELECT min(x.next_attempt_at) FROM webhook_deliveries x
                          WHERE x.config_id = c.id AND x.status = 'pending' AND x.lease_token IS NULL AND x.attempts > 0
                            AND NOT x.ordering_blocked))
               END AS head
          FROM webhook_configs c
         WHERE c.id = ANY (v_endpoints)
           AND (NOT c.is_active OR c.circuit_open_until > now())
      ) s
     WHERE s.head <= now();
END
$$;
