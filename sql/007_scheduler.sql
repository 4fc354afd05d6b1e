-- 007 — The scheduler at production shape (issues 10 and 16): claim work, not configs; one claim at a time
-- per endpoint; an adaptive in-flight limit per endpoint; health bookkeeping that never waits on a lock;
-- dead workers' leases freed from their heartbeats; late results applied when nobody took the delivery over.
--
-- This file replaces the three protocol functions of sql/004. Read it top to bottom: ordered delivery's columns,
-- signals, the adaptive limit, THE CLAIM QUERY, then complete, rescue and the read-only helpers (reconcile,
-- backlog, endpoints under pressure). The "Concurrency" section of docs/ARCHITECTURE.md has the lock table.
--
-- LOCKS, in the only order any protocol function takes them (so none can wait on another in a cycle):
--   1. a per-endpoint advisory lock, try-only  (herald_claim)          never waits
--   2. webhook_deliveries rows, SKIP LOCKED    (claim, complete, rescue) never waits
--   3. webhook_configs rows, SKIP LOCKED       (claim: health and limit) never waits
-- No protocol function ever waits for a lock, so a person's open transaction (psql, `herald config delete`
-- cascading over a large backlog, a long replay) delays at most the rows it holds: other endpoints go on.
-- Operator statements (replay, config update/delete) may wait on the protocol's short transactions; that is
-- one direction only, so no deadlock.

-- ---------------------------------------------------------------------------------------------------------
-- Ordered delivery per key (opt-in, issue 13). A producer sets webhook_events.ordering_key (e.g. 'contact:42');
-- a config with ordering = 'key' then gets that key's deliveries one at a time, in event order (event_seq,
-- assigned at INSERT, in the statement's row order). Deliveries of other configs, and those without a key, carry
-- no ordering state and cost nothing extra.
--
-- How: such a delivery is created "blocked" (ordering_blocked), outside the claim's due indexes. Per (config, key)
-- at most one is unblocked: the head. The claim, holding the endpoint's lock (one claim at a time per endpoint),
-- promotes the next blocked delivery by event_seq when the key has no head left — when the head was delivered or
-- finally failed. It learns which keys to look at from signals that carry the key (written at fan-out and when
-- a head finishes), so it never scans the waiting rows. A replayed delivery (replay_count > 0) is sent outside
-- the order: it neither is a head nor waits for one.
-- ---------------------------------------------------------------------------------------------------------
ALTER TABLE webhook_events ADD COLUMN ordering_key text NULL;
ALTER TABLE webhook_events ADD COLUMN event_seq bigint GENERATED ALWAYS AS IDENTITY;
COMMENT ON COLUMN webhook_events.ordering_key IS
    'Optional. Deliveries of events with the same key go one at a time, in event order, to configs with ordering = ''key''.';
COMMENT ON COLUMN webhook_events.event_seq IS 'Event order: assigned at INSERT, in a statement''s row order.';

ALTER TABLE webhook_configs ADD COLUMN ordering text NOT NULL DEFAULT 'none'
    CONSTRAINT webhook_configs_ordering_check CHECK (ordering IN ('none', 'key'));
COMMENT ON COLUMN webhook_configs.ordering IS
    '''none'': deliveries go independently; ''key'': deliveries of events sharing an ordering_key go one at a time, in event order.';

-- Set at fan-out for ordered configs only (NULL otherwise).
ALTER TABLE webhook_deliveries ADD COLUMN ordering_key text NULL;
ALTER TABLE webhook_deliveries ADD COLUMN event_seq bigint NULL;
ALTER TABLE webhook_deliveries ADD COLUMN ordering_blocked boolean NOT NULL DEFAULT false;

-- Per key, in event order: the claim's promotion (the first blocked one) and its "is there a head?" check.
-- Holds only pending deliveries of ordered configs that carry a key.
CREATE INDEX webhook_deliveries_ordering ON webhook_deliveries (config_id, ordering_key, event_seq)
    WHERE status = 'pending' AND ordering_key IS NOT NULL;

-- The claim indexes of sql/003, now without blocked deliveries: a key with 10,000 events waiting costs the claim
-- one entry (its head), not 10,000.
DROP INDEX webhook_deliveries_due_first;
DROP INDEX webhook_deliveries_due_retry;
CREATE INDEX webhook_deliveries_due_first ON webhook_deliveries (config_id, next_attempt_at)
    WHERE status = 'pending' AND lease_token IS NULL AND attempts = 0 AND NOT ordering_blocked;
CREATE INDEX webhook_deliveries_due_retry ON webhook_deliveries (config_id, next_attempt_at)
    WHERE status = 'pending' AND lease_token IS NULL AND attempts > 0 AND NOT ordering_blocked;

-- The fan-out trigger copies ordering_key and event_seq to deliveries of ordered configs and creates them blocked:
-- its current definition is in sql/009 (which also says why an event fanned out to nothing).

-- Turning ordering off releases what waits behind heads; turning it on applies to new events.
CREATE FUNCTION herald_config_ordering_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.ordering = 'none' THEN
        UPDATE webhook_deliveries SET ordering_blocked = false
         WHERE config_id = NEW.id AND status = 'pending' AND ordering_key IS NOT NULL AND ordering_blocked;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER webhook_configs_ordering_changed
    AFTER UPDATE OF ordering ON webhook_configs
    FOR EACH ROW WHEN (OLD.ordering IS DISTINCT FROM NEW.ordering)
    EXECUTE FUNCTION herald_config_ordering_changed();

-- One row per (config, key) with a delivery waiting behind another: how many wait, the head they wait for (NULL
-- for an instant, between a head finishing and the next claim promoting the next one), and how long the oldest
-- has waited.
CREATE VIEW webhook_ordering_blocked AS
SELECT d.config_id, d.ordering_key, count(*) AS waiting,
       (SELECT h.id FROM webhook_deliveries h
         WHERE h.config_id = d.config_id AND h.ordering_key = d.ordering_key AND h.status = 'pending'
           AND NOT h.ordering_blocked AND h.replay_count = 0
         ORDER BY h.event_seq LIMIT 1) AS head_delivery_id,
       min(d.created_at) AS oldest_waiting_since,
       extract(epoch FROM now() - min(d.created_at))::numeric(12, 3) AS oldest_waiting_seconds
  FROM webhook_deliveries d
 WHERE d.status = 'pending' AND d.ordering_key IS NOT NULL AND d.ordering_blocked
 GROUP BY d.config_id, d.ordering_key;

-- ---------------------------------------------------------------------------------------------------------
-- Endpoint signals: "endpoint X may have work from time T", plus what its last attempts said.
--
-- The claim used to visit every config (two index probes each) to find the few with due work: 1 s per claim
-- with 100,000 configs. Now it reads only endpoints that were signalled. A signal is written:
--   * by a trigger on webhook_deliveries, for every statement that leaves a delivery pending and unleased
--     (fan-out, a retry being scheduled, rescue, replay, `herald retry`, an operator's own UPDATE), due at the
--     earliest next_attempt_at of that statement's rows for the endpoint;
--   * by herald_complete, for every endpoint it released a slot of (due now), with the batch's counts of
--     delivered / failed / overloaded attempts and whether the endpoint answered 410 Gone;
--   * by herald_claim, for an endpoint it left due work at (cut by the batch size, or circuit open).
-- The claim consumes the due signals of the endpoints it locks, folds their counts into the endpoint's health
-- and limit, and claims. Signals are only ever inserted by writers (an INSERT never waits on a row lock) and
-- deleted by the claim holding the endpoint's lock, so a signal committed at any moment is either seen by that
-- claim or left for the next one: no lost wake-ups. Duplicates are harmless.
--
-- Invariant (what keeps every pending delivery reachable): for every pending, unleased delivery D there is a
-- signal for D's endpoint due no later than D.next_attempt_at, or the endpoint has a delivery in flight whose
-- completion or rescue will signal it. herald_reconcile_signals() re-establishes it from scratch (workers call
-- it when they start, and once a minute), so even a signal lost to a bug costs a minute, not a delivery.
-- ---------------------------------------------------------------------------------------------------------
CREATE TABLE herald_endpoint_signals (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    config_id   uuid NOT NULL,          -- no foreign key: inserting must never wait on a config row lock
    due_at      timestamptz NOT NULL,
    delivered   integer NOT NULL DEFAULT 0,
    failed      integer NOT NULL DEFAULT 0,
    overloaded  integer NOT NULL DEFAULT 0,   -- timeouts, 429, 503: the receiver is struggling, not broken
    gone        boolean NOT NULL DEFAULT false,
    -- Set when the signal is about one ordering key of an ordered config: a delivery was queued behind it, or its
    -- head finished. The claim then checks whether the key needs its next head promoted.
    ordering_key text NULL
);
-- The claim's scan (oldest due first) and its delete of one endpoint's due signals.
CREATE INDEX herald_endpoint_signals_due ON herald_endpoint_signals (due_at);
CREATE INDEX herald_endpoint_signals_config ON herald_endpoint_signals (config_id, due_at);
-- A few hundred live rows, inserted and deleted all day: vacuum it early and often, like a queue.
ALTER TABLE herald_endpoint_signals SET (autovacuum_vacuum_scale_factor = 0.0, autovacuum_vacuum_threshold = 1000,
                                         autovacuum_vacuum_cost_delay = 0);

COMMENT ON TABLE herald_endpoint_signals IS
    'Wake-ups per endpoint for herald_claim (which endpoints may have due work) and the health counts of recent attempts. Internal.';

CREATE FUNCTION herald_signal_pending() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- Blocked deliveries of an ordered key signal that key (the claim decides whether it needs a head).
    INSERT INTO herald_endpoint_signals (config_id, due_at, ordering_key)
    SELECT r.config_id, min(r.next_attempt_at), k.ordering_key
      FROM changed_rows r
     CROSS JOIN LATERAL (SELECT CASE WHEN r.ordering_blocked THEN r.ordering_key END AS ordering_key) k
     WHERE r.status = 'pending' AND r.lease_token IS NULL
     GROUP BY r.config_id, k.ordering_key;
    -- A head that finished (delivered, or failed for good): its key may promote the next one.
    IF TG_OP = 'UPDATE' THEN
        INSERT INTO herald_endpoint_signals (config_id, due_at, ordering_key)
        SELECT DISTINCT r.config_id, now(), r.ordering_key
          FROM changed_rows r
         WHERE r.status <> 'pending' AND r.ordering_key IS NOT NULL AND r.replay_count = 0;
    END IF;
    RETURN NULL;
END
$$;

-- Statement-level, so a fan-out of 10,000 deliveries to one endpoint writes one signal, not 10,000.
CREATE TRIGGER webhook_deliveries_signal_insert
    AFTER INSERT ON webhook_deliveries
    REFERENCING NEW TABLE AS changed_rows
    FOR EACH STATEMENT EXECUTE FUNCTION herald_signal_pending();
CREATE TRIGGER webhook_deliveries_signal_update
    AFTER UPDATE ON webhook_deliveries
    REFERENCING NEW TABLE AS changed_rows
    FOR EACH STATEMENT EXECUTE FUNCTION herald_signal_pending();

-- ---------------------------------------------------------------------------------------------------------
-- New columns.
-- ---------------------------------------------------------------------------------------------------------
-- The claiming worker's HERALD_MAX_ATTEMPTS, recorded at the first claim, so every worker (and the rescue)
-- applies the same limit: the delivery's own max_attempts, else the config's (read live, so lowering it applies
-- to pending deliveries at once), else this.
ALTER TABLE webhook_deliveries ADD COLUMN default_max_attempts integer NULL;
-- The lease a rescue took back. A late result carrying it is still applied while nobody has claimed the
-- delivery again (a late 200 ends it delivered instead of being sent again); the next claim clears it.
ALTER TABLE webhook_deliveries ADD COLUMN lost_lease_token uuid NULL;

-- The claim that made the attempt: unique, so writing an attempt twice (a reconnect after a commit whose reply
-- was lost) adds no second row, and a late result replaces the 'lost' row the rescue wrote for it.
ALTER TABLE webhook_logs ADD COLUMN lease_token uuid NULL;
CREATE UNIQUE INDEX webhook_logs_lease ON webhook_logs (lease_token) WHERE lease_token IS NOT NULL;
-- Which replay of the delivery the attempt belongs to (0: before any replay), so attempt numbers that start again
-- at 1 after a replay can be told apart. Sent as X-Webhook-Replay.
ALTER TABLE webhook_logs ADD COLUMN replay integer NOT NULL DEFAULT 0;

-- The adaptive in-flight limit (AIMD, shared by all workers): NULL means "at the ceiling" (max_in_flight, else
-- HERALD_ENDPOINT_CONCURRENCY), which is where every endpoint starts and where a healthy one stays at no cost.
ALTER TABLE webhook_configs ADD COLUMN concurrency_limit real NULL;
ALTER TABLE webhook_configs ADD COLUMN limit_decreased_at timestamptz NULL;
COMMENT ON COLUMN webhook_configs.concurrency_limit IS
    'Adaptive in-flight limit: halves on timeouts, 429 and 503 (at most once a second), grows by one per window of successes back to max_in_flight. NULL: at the ceiling.';

-- Leases per endpoint (the claim counts an endpoint's requests in flight) and by expiry (the rescue). Holds only
-- what is in flight: at most the workers' total concurrency.
DROP INDEX webhook_deliveries_leased;
CREATE INDEX webhook_deliveries_leased ON webhook_deliveries (config_id, next_attempt_at) WHERE lease_token IS NOT NULL;

-- ---------------------------------------------------------------------------------------------------------
-- The adaptive limit, as a pure function of its inputs (the clock is a parameter, so it is tested without
-- waiting): additive increase, multiplicative decrease, as in TCP congestion control.
--   * overloaded attempts (timeouts, 429, 503) halve the limit, at most once a second: a burst of timeouts
--     from one overload counts once, not once per request;
--   * a batch with no failure grows it by delivered / limit (one per full window of successes);
--   * it never goes below 1 or above the ceiling; back at the ceiling it becomes NULL (no state kept).
-- ---------------------------------------------------------------------------------------------------------
CREATE FUNCTION herald_next_limit(p_limit real, p_ceiling integer, p_delivered bigint, p_failed bigint,
                                  p_overloaded bigint, p_decreased_at timestamptz, p_now timestamptz,
                                  OUT new_limit real, OUT decreased boolean)
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    current real := least(coalesce(p_limit, p_ceiling), p_ceiling);
BEGIN
    decreased := false;
    IF p_overloaded > 0 THEN
        IF p_decreased_at IS NULL OR p_now - p_decreased_at >= interval '1 second' THEN
            current := greatest(1, floor(current / 2));
            decreased := true;
        END IF;
    ELSIF p_failed = 0 AND p_delivered > 0 THEN
        current := least(p_ceiling, current + p_delivered / current);
    END IF;
    new_limit := CASE WHEN current >= p_ceiling THEN NULL ELSE current END;
END
$$;

-- ---------------------------------------------------------------------------------------------------------
-- An endpoint's free in-flight slots: its adaptive limit (at most max_in_flight, else the workers'
-- HERALD_ENDPOINT_CONCURRENCY) minus its requests in flight across all workers (the small
-- webhook_deliveries_leased index). None while disabled or while the circuit is open; one when half-open
-- (cool-down over, still failing), for the probe. Exact only under the endpoint's claim lock (herald_claim).
-- ---------------------------------------------------------------------------------------------------------
CREATE FUNCTION herald_free_slots(c webhook_configs, p_endpoint_concurrency integer, p_circuit_threshold integer)
RETURNS integer
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN NOT c.is_active THEN 0
                WHEN c.circuit_open_until > now() THEN 0
                WHEN c.consecutive_failures >= p_circuit_threshold THEN 1
                ELSE floor(least(coalesce(c.concurrency_limit, c.max_in_flight, p_endpoint_concurrency),
                                 coalesce(c.max_in_flight, p_endpoint_concurrency)))::integer
           END
           - (SELECT count(*) FROM webhook_deliveries x WHERE x.config_id = c.id AND x.lease_token IS NOT NULL)::integer;
$$;

-- ---------------------------------------------------------------------------------------------------------
-- THE CLAIM QUERY.
--
--   SELECT * FROM herald_claim(64, '30 seconds', 'host:123');
--
-- 1. Endpoints: up to p_limit endpoints with a due signal, oldest signal first. Each is taken with a
--    transaction-scoped advisory lock, try-only: one claim at a time decides an endpoint, and another worker
--    claiming at the same moment skips it instead of waiting. Holding it, this claim sees every other claim of
--    that endpoint committed (each statement below takes a fresh snapshot), so the in-flight count is exact
--    across workers: a cap of 1 means one request at a time, a half-open circuit gets one probe.
-- 2. Health: the endpoints' due signals are consumed; their counts update consecutive failures, the circuit
--    and the adaptive limit, and a 410 Gone or a long failing period disables the config. Config rows are
--    locked SKIP LOCKED: one held in a person's open transaction keeps its signals for later, nothing waits.
-- 3. Rows: per endpoint, the oldest due first attempts and the oldest due retries (partial indexes
--    webhook_deliveries_due_first / _due_retry), SKIP LOCKED — at most its free slots of each, so a claim over
--    100 endpoints locks a few rows of each, not a batch of each — alternating so neither starves the other, cut at
--    the endpoint's free slots (adaptive limit minus in flight; 0 while the circuit is open, 1 when half-open),
--    the first p_limit overall by age. Leased in the same statement: attempts + 1, a fresh lease_token,
--    next_attempt_at = lease expiry. A disabled config's queue is failed here without being sent, a batch at a
--    time, and so are rows at their attempt limit and rows whose event belongs to another organization than
--    the config (the config moved): none of those is sent or counts against the endpoint's health.
-- 4. Follow-up: an endpoint left with due work and free slots (cut by p_limit, or rows locked by someone
--    else) is signalled again, due now or when its circuit closes; one at its cap is not (a completion will
--    signal it), so an endpoint at its cap or with an open circuit is never polled in a loop.
-- ---------------------------------------------------------------------------------------------------------
DROP FUNCTION herald_claim(integer, interval, text, integer, integer);
CREATE FUNCTION herald_claim(p_limit integer, p_lease interval, p_worker text,
                             p_endpoint_concurrency integer DEFAULT 50, p_circuit_threshold integer DEFAULT 10,
                             p_default_max_attempts integer DEFAULT 10,  -- HERALD_MAX_ATTEMPTS's default
                             p_circuit_cooldown interval DEFAULT '30 seconds',
                             p_disable_after interval DEFAULT '5 days')
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
    WITH due AS (
        SELECT s.id, s.config_id, s.delivered, s.failed, s.overloaded, s.gone, s.ordering_key
          FROM herald_endpoint_signals s
         WHERE s.config_id = ANY (v_endpoints) AND s.due_at <= now()
    ), promoted AS (
        UPDATE webhook_deliveries d
           SET ordering_blocked = false
         WHERE d.id IN (
               SELECT (SELECT y.id FROM webhook_deliveries y
                        WHERE y.config_id = k.config_id AND y.ordering_key = k.ordering_key
                          AND y.status = 'pending' AND y.ordering_blocked
                        ORDER BY y.event_seq LIMIT 1)
                 FROM (SELECT DISTINCT u.config_id, u.ordering_key FROM due u WHERE u.ordering_key IS NOT NULL) k
                WHERE NOT EXISTS (
                      SELECT 1 FROM webhook_deliveries z
                       WHERE z.config_id = k.config_id AND z.ordering_key = k.ordering_key
                         AND z.status = 'pending' AND NOT z.ordering_blocked AND z.replay_count = 0))
           AND d.ordering_blocked
        RETURNING 1
    ), counts AS (
        SELECT d.config_id, sum(d.delivered) AS delivered, sum(d.failed) AS failed, sum(d.overloaded) AS overloaded,
               bool_or(d.gone) AS gone
          FROM due d GROUP BY d.config_id
    ), needs AS (
        -- Only endpoints whose state changes are written: a healthy endpoint at its ceiling costs nothing here.
        SELECT k.* FROM counts k JOIN webhook_configs c ON c.id = k.config_id
         WHERE k.failed > 0 OR k.gone OR c.consecutive_failures > 0 OR c.circuit_open_until IS NOT NULL
            OR c.concurrency_limit IS NOT NULL
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

    -- 3. Claim (and fail what must not be sent).
    RETURN QUERY
    WITH endpoints AS (
        SELECT c.id AS config_id, c.is_active, c.organization_id,
               herald_free_slots(c, p_endpoint_concurrency, p_circuit_threshold) AS free
          FROM webhook_configs c
         WHERE c.id = ANY (v_endpoints)
    ), first_attempts AS (
        SELECT s.config_id, least(s.free, p_limit) AS free, d.id, d.next_attempt_at, false AS is_retry
          FROM endpoints s
         CROSS JOIN LATERAL (
               SELECT x.id, x.next_attempt_at
                 FROM webhook_deliveries x
                WHERE x.config_id = s.config_id AND x.status = 'pending' AND x.lease_token IS NULL
                  AND x.attempts = 0 AND NOT x.ordering_blocked AND x.next_attempt_at <= now()
                ORDER BY x.next_attempt_at LIMIT least(s.free, p_limit)
                  FOR UPDATE SKIP LOCKED
         ) d
         WHERE s.free > 0
    ), retries AS (
        SELECT s.config_id, least(s.free, p_limit) AS free, d.id, d.next_attempt_at, true AS is_retry
          FROM endpoints s
         CROSS JOIN LATERAL (
               SELECT x.id, x.next_attempt_at
                 FROM webhook_deliveries x
                WHERE x.config_id = s.config_id AND x.status = 'pending' AND x.lease_token IS NULL
                  AND x.attempts > 0 AND NOT x.ordering_blocked AND x.next_attempt_at <= now()
                ORDER BY x.next_attempt_at LIMIT least(s.free, p_limit)
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
    ), ranked AS (
        -- First attempts and retries alternate, so each gets at least half of a batch when both wait …
        SELECT k.*, row_number() OVER (PARTITION BY k.config_id, k.is_retry ORDER BY k.next_attempt_at) AS turn
          FROM candidates k
    ), capped AS (
        -- … and no endpoint gets more than its free slots.
        SELECT r.*, row_number() OVER (PARTITION BY r.config_id ORDER BY r.turn, r.next_attempt_at) AS place
          FROM ranked r
    ), chosen AS (
        SELECT c.id FROM (
            SELECT c.id, c.turn, c.next_attempt_at FROM capped c WHERE c.place <= c.free
             ORDER BY c.turn, c.next_attempt_at
             LIMIT p_limit) c
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
          JOIN webhook_deliveries d ON d.id = k.id
          JOIN webhook_events e ON e.id = d.event_id
          JOIN webhook_configs c ON c.id = d.config_id
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
           AND d.status = 'pending'
           AND d.lease_token IS NULL
        RETURNING d.id, d.event_id, d.config_id, d.attempts, d.lease_token, d.max_attempts AS own_limit,
                  d.default_max_attempts, d.replay_count, v.refusal
    ), refused AS (
        INSERT INTO webhook_logs (delivery_id, event_id, config_id, event_type, attempt, outcome, error, worker, replay)
        SELECT l.id, l.event_id, l.config_id, e.event_type, l.attempts, 'failed', l.refusal, p_worker, l.replay_count
          FROM leased l JOIN webhook_events e ON e.id = l.event_id
         WHERE l.refusal IS NOT NULL
        RETURNING 1
    )
    SELECT l.id, l.lease_token, l.attempts, e.id, e.event_type,
           to_char(e.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
           e.data::text, c.id, c.url, c.secret,
           coalesce(l.own_limit, c.max_attempts, l.default_max_attempts), c.is_active,
           CASE WHEN c.previous_secret_expires_at > now() THEN c.previous_secret END, l.replay_count
      FROM leased l
      JOIN webhook_events e ON e.id = l.event_id
      JOIN webhook_configs c ON c.id = l.config_id
     WHERE l.refusal IS NULL;

    -- 4. Endpoints left with due work and a free slot (or an open circuit, or a disabled queue still draining)
    -- are signalled again; one at its cap is not.
    INSERT INTO herald_endpoint_signals (config_id, due_at)
    SELECT s.config_id, greatest(s.head, coalesce(s.circuit_open_until, s.head))
      FROM (
        SELECT c.id AS config_id, c.is_active, c.circuit_open_until,
               herald_free_slots(c, p_endpoint_concurrency, p_circuit_threshold) AS free,
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
      ) s
     WHERE s.head <= now()
       AND (NOT s.is_active OR s.free > 0 OR s.circuit_open_until > now());
END
$$;

-- ---------------------------------------------------------------------------------------------------------
-- Outcomes of many attempts in one round trip (arrays, one element per attempt).
--   p_outcome:    'delivered' | 'retry' (due again after p_delay_ms) | 'failed'
--   p_overloaded: the attempt timed out or got 429/503 (feeds the endpoint's adaptive limit)
-- Returns how many outcomes were applied, and the ids it could not lock ("busy": a replay, a rescue or a
-- config delete holds them right now), which the worker keeps and writes again. It never waits for a lock.
--
-- The fence: an outcome is applied when it carries the delivery's current lease_token, or the lease a rescue
-- took back (lost_lease_token) while nobody has claimed the delivery again. Otherwise it is only logged.
-- One log row per attempt: keyed by the lease token, a second write of the same attempt adds nothing, and a
-- late result replaces the 'lost' row the rescue wrote.
-- ---------------------------------------------------------------------------------------------------------
DROP FUNCTION herald_complete(uuid[], uuid[], uuid[], uuid[], text[], integer[], text[], bigint[], integer[],
                              text[], text[], integer[], text[], text, integer, interval, interval);
CREATE FUNCTION herald_complete(
    p_delivery_id uuid[], p_lease_token uuid[], p_event_id uuid[], p_config_id uuid[], p_event_type text[],
    p_attempt integer[], p_outcome text[], p_delay_ms bigint[], p_response_status integer[],
    p_response_body text[], p_error text[], p_duration_ms integer[], p_payload text[], p_worker text,
    p_overloaded boolean[] DEFAULT NULL, p_replay integer[] DEFAULT NULL)
RETURNS TABLE (applied integer, busy uuid[])
LANGUAGE plpgsql AS $$
DECLARE
    v_locked uuid[];
    v_busy   uuid[];
BEGIN
    -- Rows in id order, SKIP LOCKED: never waits, so never deadlocks with a replay or a config delete.
    SELECT coalesce(array_agg(x.id), '{}') INTO v_locked
      FROM (SELECT d.id FROM webhook_deliveries d WHERE d.id = ANY (p_delivery_id) ORDER BY d.id
               FOR UPDATE SKIP LOCKED) x;
    -- Busy: still there, but held by someone else. (Gone rows, deleted with their config, are only logged.)
    SELECT coalesce(array_agg(x), '{}') INTO v_busy
      FROM unnest(p_delivery_id) AS x
     WHERE x <> ALL (v_locked) AND EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.id = x);

    RETURN QUERY
    WITH r AS (
        SELECT *
          FROM unnest(p_delivery_id, p_lease_token, p_event_id, p_config_id, p_event_type, p_attempt, p_outcome,
                      p_delay_ms, p_response_status, p_response_body, p_error, p_duration_ms, p_payload,
                      coalesce(p_overloaded, array_fill(false, ARRAY[cardinality(p_delivery_id)])),
                      coalesce(p_replay, array_fill(0, ARRAY[cardinality(p_delivery_id)])))
            AS r(delivery_id, lease_token, event_id, config_id, event_type, attempt, outcome, delay_ms,
                 response_status, response_body, error, duration_ms, payload, overloaded, replay)
         WHERE r.delivery_id <> ALL (v_busy)
    ), written AS (
        UPDATE webhook_deliveries d
           SET status               = CASE r.outcome WHEN 'retry' THEN 'pending' ELSE r.outcome END,
               next_attempt_at      = CASE r.outcome WHEN 'retry'
                                           THEN now() + r.delay_ms * interval '1 millisecond'
                                           ELSE d.next_attempt_at END,
               lease_token          = NULL,
               lost_lease_token     = NULL,
               leased_by            = NULL,
               last_response_status = r.response_status,
               last_error           = r.error,
               updated_at           = now(),
               completed_at         = CASE WHEN r.outcome = 'retry' THEN NULL ELSE now() END
          FROM r
         WHERE d.id = r.delivery_id
           AND d.id = ANY (v_locked)
           AND (d.lease_token = r.lease_token                                           -- the fence
                OR (d.lease_token IS NULL AND d.lost_lease_token = r.lease_token AND d.attempts = r.attempt))
        RETURNING d.id
    ), logged AS (
        INSERT INTO webhook_logs AS l (delivery_id, event_id, config_id, event_type, attempt, outcome, payload,
                                       response_status, response_body, error, duration_ms, worker, lease_token, replay)
        SELECT r.delivery_id, r.event_id, r.config_id, r.event_type, r.attempt, r.outcome, r.payload,
               r.response_status, r.response_body, r.error, r.duration_ms, p_worker, r.lease_token, r.replay
          FROM r
        ON CONFLICT (lease_token) WHERE lease_token IS NOT NULL DO UPDATE
           SET outcome = EXCLUDED.outcome, payload = EXCLUDED.payload, response_status = EXCLUDED.response_status,
               response_body = EXCLUDED.response_body, error = EXCLUDED.error, duration_ms = EXCLUDED.duration_ms,
               worker = EXCLUDED.worker
         WHERE l.outcome = 'lost'
        RETURNING 1
    ), gone AS (
        -- 410 Gone disables the config at once (so no new event fans out to it), unless a person holds its row:
        -- then the claim does it from the signal below. SKIP LOCKED, after the delivery rows: never waits.
        UPDATE webhook_configs c
           SET is_active = false, disabled_at = now(),
               disabled_reason = 'the endpoint answered 410 Gone; enable the config again once it is back'
         WHERE c.id IN (SELECT k.id FROM webhook_configs k
                         WHERE k.is_active
                           AND k.id IN (SELECT r.config_id FROM r WHERE r.response_status = 410 AND r.outcome <> 'delivered')
                           FOR NO KEY UPDATE SKIP LOCKED)
        RETURNING 1
    ), signalled AS (
        -- Every endpoint gets a slot back; its health counts ride along. (Retries scheduled above signal their
        -- own due time through the trigger.)
        INSERT INTO herald_endpoint_signals (config_id, due_at, delivered, failed, overloaded, gone)
        SELECT r.config_id, now(), count(*) FILTER (WHERE r.outcome = 'delivered'),
               count(*) FILTER (WHERE r.outcome <> 'delivered'),
               count(*) FILTER (WHERE r.outcome <> 'delivered' AND r.overloaded),
               coalesce(bool_or(r.response_status = 410), false)
          FROM r
         GROUP BY r.config_id
        RETURNING 1
    )
    SELECT (SELECT count(*)::integer FROM written), v_busy;
END
$$;

-- ---------------------------------------------------------------------------------------------------------
-- Leases to take back:
--   * expired ones (the worker was killed, hung, or lost its database for longer than the lease);
--   * those of a worker whose heartbeat is older than p_stale (3 heartbeats): a dead worker's slots come back in
--     seconds, not at the end of its lease. Heartbeats come from a thread of their own, so a worker that is
--     alive but busy is not mistaken for a dead one;
--   * with p_release_worker: every lease held under that worker id (a worker restarted with a stable
--     HERALD_WORKER_ID releases what its earlier incarnation left, before it claims anything).
-- Each lost attempt is logged (outcome 'lost', keyed by its lease so a late result replaces it); the delivery is
-- due at once, or failed when that was its last attempt (the same limit the claim uses: the delivery's, the
-- config's, else the one recorded at its first claim). The lease is kept in lost_lease_token: if the worker
-- was only paused, its late result is still applied while nobody has claimed the delivery again.
-- ---------------------------------------------------------------------------------------------------------
DROP FUNCTION herald_rescue(integer, integer);
CREATE FUNCTION herald_rescue(p_default_max_attempts integer, p_limit integer,
                              p_stale interval DEFAULT '15 seconds', p_release_worker text DEFAULT NULL,
                              p_self text DEFAULT NULL)
RETURNS integer
LANGUAGE sql AS $$
    WITH stale AS (
        -- Not the caller (it knows it is alive), and not right after PostgreSQL itself restarted: then every
        -- heartbeat is old because nobody could write one, not because the workers died.
        SELECT h.worker FROM herald_worker_heartbeats h
         WHERE h.last_seen_at < now() - p_stale
           AND h.worker IS DISTINCT FROM p_self
           AND pg_postmaster_start_time() < now() - p_stale
        UNION ALL
        SELECT p_release_worker WHERE p_release_worker IS NOT NULL
    ), lost AS (
        SELECT d.id, d.leased_by, d.lease_token,
               CASE WHEN d.next_attempt_at <= now() THEN 'expired'
                    WHEN d.leased_by = p_release_worker THEN 'released'
                    ELSE 'stale' END AS why
          FROM webhook_deliveries d
         WHERE d.lease_token IS NOT NULL
           AND (d.next_attempt_at <= now() OR d.leased_by IN (SELECT s.worker FROM stale s))
         ORDER BY d.next_attempt_at
         LIMIT p_limit
           FOR UPDATE SKIP LOCKED
    ), rescued AS (
        UPDATE webhook_deliveries d
           SET status           = CASE WHEN d.attempts >= coalesce(d.max_attempts, c.max_attempts,
                                                                   d.default_max_attempts, p_default_max_attempts)
                                       THEN 'failed' ELSE 'pending' END,
               completed_at     = CASE WHEN d.attempts >= coalesce(d.max_attempts, c.max_attempts,
                                                                   d.default_max_attempts, p_default_max_attempts)
                                       THEN now() END,
               next_attempt_at  = now(),
               lease_token      = NULL,
               lost_lease_token = lost.lease_token,
               leased_by        = NULL,
               last_response_status = NULL,
               last_error       = format('attempt %s lost: %s', d.attempts, CASE lost.why
                                      WHEN 'expired' THEN format('the lease held by %s expired before a result was written',
                                                                 coalesce(lost.leased_by, 'a worker'))
                                      WHEN 'released' THEN format('%s restarted before writing a result', lost.leased_by)
                                      ELSE format('%s stopped sending heartbeats', lost.leased_by) END),
               updated_at       = now()
          FROM lost, webhook_configs c
         WHERE d.id = lost.id
           AND c.id = d.config_id
        RETURNING d.id, d.event_id, d.config_id, d.attempts, d.last_error, lost.leased_by, lost.lease_token,
                  d.replay_count
    ), logged AS (
        INSERT INTO webhook_logs (delivery_id, event_id, config_id, event_type, attempt, outcome, error, worker,
                                  lease_token, replay)
        SELECT r.id, r.event_id, r.config_id, e.event_type, r.attempts, 'lost', r.last_error, r.leased_by,
               r.lease_token, r.replay_count
          FROM rescued r
          JOIN webhook_events e ON e.id = r.event_id
        ON CONFLICT (lease_token) WHERE lease_token IS NOT NULL DO NOTHING
        RETURNING 1
    ), signalled AS (
        -- The endpoints get their slots back (rows made due again signal themselves through the trigger).
        INSERT INTO herald_endpoint_signals (config_id, due_at)
        SELECT DISTINCT r.config_id, now() FROM rescued r
        RETURNING 1
    )
    SELECT count(*)::integer FROM rescued;
$$;

-- ---------------------------------------------------------------------------------------------------------
-- Endpoints that have pending, unleased deliveries: a loose index scan over webhook_deliveries_due_first and
-- _due_retry, one index probe per such endpoint, however many idle configs exist.
-- ---------------------------------------------------------------------------------------------------------
CREATE FUNCTION herald_endpoints_with_backlog()
RETURNS SETOF uuid
LANGUAGE sql STABLE
ROWS 10  -- the planner's default guess (1,000) made joins on it hash all of webhook_configs
AS $$
    WITH RECURSIVE first_attempts(config_id) AS (
        (SELECT x.config_id FROM webhook_deliveries x
          WHERE x.status = 'pending' AND x.lease_token IS NULL AND x.attempts = 0 AND NOT x.ordering_blocked
          ORDER BY x.config_id LIMIT 1)
        UNION ALL
        SELECT (SELECT x.config_id FROM webhook_deliveries x
                 WHERE x.status = 'pending' AND x.lease_token IS NULL AND x.attempts = 0 AND NOT x.ordering_blocked
                   AND x.config_id > e.config_id
                 ORDER BY x.config_id LIMIT 1)
          FROM first_attempts e WHERE e.config_id IS NOT NULL
    ), retries(config_id) AS (
        (SELECT x.config_id FROM webhook_deliveries x
          WHERE x.status = 'pending' AND x.lease_token IS NULL AND x.attempts > 0 AND NOT x.ordering_blocked
          ORDER BY x.config_id LIMIT 1)
        UNION ALL
        SELECT (SELECT x.config_id FROM webhook_deliveries x
                 WHERE x.status = 'pending' AND x.lease_token IS NULL AND x.attempts > 0 AND NOT x.ordering_blocked
                   AND x.config_id > e.config_id
                 ORDER BY x.config_id LIMIT 1)
          FROM retries e WHERE e.config_id IS NOT NULL
    )
    SELECT f.config_id FROM first_attempts f WHERE f.config_id IS NOT NULL
    UNION
    SELECT r.config_id FROM retries r WHERE r.config_id IS NOT NULL;
$$;

-- ---------------------------------------------------------------------------------------------------------
-- Re-establishes the signal invariant from the queue itself: one signal per endpoint that has pending,
-- unleased deliveries, due at its oldest. A loose index scan over webhook_deliveries_due_first / _due_retry:
-- one probe per endpoint with a backlog, whatever the number of idle configs. Workers call it at start and once
-- a minute; it is also what to run after restoring the queue table from a backup.
-- ---------------------------------------------------------------------------------------------------------
CREATE FUNCTION herald_reconcile_signals()
RETURNS integer
LANGUAGE sql AS $$
    WITH endpoints(config_id) AS (
        SELECT herald_endpoints_with_backlog()
    ), added AS (
        INSERT INTO herald_endpoint_signals (config_id, due_at)
        SELECT e.config_id,
               least((SELECT min(x.next_attempt_at) FROM webhook_deliveries x
                       WHERE x.config_id = e.config_id AND x.status = 'pending' AND x.lease_token IS NULL
                         AND x.attempts = 0 AND NOT x.ordering_blocked),
                     (SELECT min(x.next_attempt_at) FROM webhook_deliveries x
                       WHERE x.config_id = e.config_id AND x.status = 'pending' AND x.lease_token IS NULL
                         AND x.attempts > 0 AND NOT x.ordering_blocked))
          FROM endpoints e
        RETURNING 1
    ), keys AS (
        -- Ordering keys with deliveries waiting (webhook_deliveries_ordering): the claim promotes a head where
        -- none is left.
        INSERT INTO herald_endpoint_signals (config_id, due_at, ordering_key)
        SELECT DISTINCT x.config_id, now(), x.ordering_key
          FROM webhook_deliveries x
         WHERE x.status = 'pending' AND x.ordering_key IS NOT NULL AND x.ordering_blocked
        RETURNING 1
    )
    SELECT (SELECT count(*)::integer FROM added) + (SELECT count(*)::integer FROM keys);
$$;

-- Deliveries that existed before this migration get their signals now.
SELECT herald_reconcile_signals();

-- ---------------------------------------------------------------------------------------------------------
-- The backlog per endpoint, for /metrics and `herald stats`: only endpoints with pending, unleased deliveries
-- are visited (the loose index scan above), so it costs the same with 100 configs or 100,000.
-- ---------------------------------------------------------------------------------------------------------
CREATE FUNCTION herald_backlog()
RETURNS TABLE (config_id uuid, due bigint, oldest_due_seconds double precision, circuit_open boolean,
               concurrency_limit real)
LANGUAGE sql STABLE
-- Index look-ups per endpoint with a backlog, never a scan of every config.
SET enable_seqscan = off
SET enable_hashjoin = off
SET enable_mergejoin = off
AS $$
    WITH endpoints(config_id) AS (SELECT herald_endpoints_with_backlog())
    SELECT c.id,
           (SELECT count(*) FROM webhook_deliveries x WHERE x.config_id = c.id AND x.status = 'pending'
               AND x.lease_token IS NULL AND x.next_attempt_at <= now()),
           coalesce(extract(epoch FROM now() - (SELECT min(x.next_attempt_at) FROM webhook_deliveries x
               WHERE x.config_id = c.id AND x.status = 'pending' AND x.lease_token IS NULL
                 AND x.next_attempt_at <= now()))::double precision, 0),
           coalesce(c.circuit_open_until > now(), false),
           c.concurrency_limit
      FROM endpoints e JOIN webhook_configs c ON c.id = e.config_id;
$$;

-- ---------------------------------------------------------------------------------------------------------
-- Endpoints under pressure: circuit open (or half-open) or adaptive limit below the ceiling. What /metrics and
-- `herald stats` list per endpoint; from a partial index that holds only those, so it stays small however many
-- configs exist.
-- ---------------------------------------------------------------------------------------------------------
CREATE INDEX webhook_configs_pressure ON webhook_configs (id)
    WHERE circuit_open_until IS NOT NULL OR concurrency_limit IS NOT NULL;

CREATE FUNCTION herald_endpoints_under_pressure()
RETURNS TABLE (config_id uuid, circuit_open boolean, concurrency_limit real)
LANGUAGE sql STABLE AS $$
    SELECT c.id, coalesce(c.circuit_open_until > now(), false), c.concurrency_limit
      FROM webhook_configs c
     WHERE c.circuit_open_until IS NOT NULL OR c.concurrency_limit IS NOT NULL;
$$;
