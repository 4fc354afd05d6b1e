-- 012 — webhook_logs partitioned by time, managed by Herald with plain PostgreSQL (no extension), and what one
-- attempt writes cut down. Sections:
--   1. The conversion: the old table becomes the first partition, webhook_logs_legacy (no scan, no rewrite).
--   2. Partitions: the herald_log_partitions view, herald_create_log_partitions(), the interval setting.
--   3. Retention: whole partitions are dropped (detached CONCURRENTLY by `herald prune` and the workers);
--      finished deliveries and events are still deleted in small batches (herald_prune).
--   4. Attempt bodies: no longer copied into every log row; rebuilt byte for byte from the event
--      (herald_envelope, view webhook_attempts).
--   5. herald_complete and herald_rescue without the lease-token unique index (a partitioned table cannot have
--      one that leaves out created_at): an attempt is still logged once.
--
-- Why partitions: at 10,000 deliveries/s a day is 864 million log rows. Deleting them row by row leaves as many
-- dead tuples and index entries for vacuum to clean; dropping a partition removes a day of them in one step and
-- leaves nothing behind. There is no DEFAULT partition, so old partitions can be detached concurrently.

-- ---------------------------------------------------------------------------------------------------------
-- 1. The conversion. Locks webhook_logs for the moment the catalog changes take: 011 proved every old row lies
--    before legacy_bound, so attaching the old table does not scan it, and its indexes are reused as they are.
-- ---------------------------------------------------------------------------------------------------------
-- Views over webhook_logs (webhook_config_stats, and any a user made) follow a renamed table, so they are set
-- aside and created again over the new one at the end of this section.
CREATE TEMPORARY TABLE herald_views_on_logs ON COMMIT DROP AS
SELECT DISTINCT v.oid, v.oid::regclass::text AS name, pg_get_viewdef(v.oid) AS definition
  FROM pg_depend d
  JOIN pg_rewrite w ON w.oid = d.objid
  JOIN pg_class v ON v.oid = w.ev_class
 WHERE d.refobjid = 'webhook_logs'::regclass AND v.oid <> 'webhook_logs'::regclass;
DO $$
DECLARE
    v record;
BEGIN
    FOR v IN SELECT * FROM herald_views_on_logs ORDER BY oid DESC LOOP
        EXECUTE format('DROP VIEW %s', v.name);
    END LOOP;
END
$$;

ALTER TABLE webhook_logs RENAME TO webhook_logs_legacy;
ALTER INDEX webhook_logs_pkey RENAME TO webhook_logs_legacy_pkey;
ALTER INDEX webhook_logs_delivery RENAME TO webhook_logs_legacy_delivery;
ALTER INDEX webhook_logs_created RENAME TO webhook_logs_legacy_created;
ALTER INDEX webhook_logs_lease RENAME TO webhook_logs_legacy_lease;
-- PostgreSQL 15 has no identity columns on partitioned tables: ids come from a plain sequence, continuing.
ALTER TABLE webhook_logs_legacy ALTER COLUMN id DROP IDENTITY;
CREATE SEQUENCE webhook_logs_id_seq AS bigint;
SELECT setval('webhook_logs_id_seq', coalesce((SELECT max(id) FROM webhook_logs_legacy), 0) + 1, false);

-- One row per delivery attempt (see sql/003 for the columns). Partitioned by created_at, the time the attempt
-- was recorded. No primary key: one would have to include created_at, and nothing looks a row up by id alone;
-- ids are unique all the same (one sequence).
CREATE TABLE webhook_logs (
    id              bigint NOT NULL DEFAULT nextval('webhook_logs_id_seq'),
    delivery_id     uuid NOT NULL,
    event_id        uuid NOT NULL,
    config_id       uuid NOT NULL,
    event_type      text NOT NULL,
    attempt         integer NOT NULL,
    outcome         text NOT NULL
                    CONSTRAINT webhook_logs_outcome_check CHECK (outcome IN ('delivered', 'retry', 'failed', 'lost')),
    -- NULL since 012 for attempts Herald sent: the body is rebuilt from the event (section 4, view
    -- webhook_attempts). Kept for rows written before, and for a body that is not the event's envelope.
    payload         text NULL,
    response_status integer NULL,
    response_body   text NULL,
    error           text NULL,
    duration_ms     integer NULL,
    worker          text NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    lease_token     uuid NULL,
    replay          integer NOT NULL DEFAULT 0
) PARTITION BY RANGE (created_at);
ALTER SEQUENCE webhook_logs_id_seq OWNED BY webhook_logs.id;

-- `herald show`, `herald logs --delivery`, and the late-result rule of herald_complete (delivery, attempt).
CREATE INDEX webhook_logs_delivery ON webhook_logs (delivery_id, attempt);
-- Time ranges within a partition (`herald logs --since`, the 24-hour stats): BRIN, a few pages per partition,
-- almost free per insert. Whole partitions outside a range are skipped by partition pruning.
CREATE INDEX webhook_logs_created ON webhook_logs USING brin (created_at);
-- (The lease-token index of 007 is gone from new partitions: herald_complete finds a rescued attempt's row by
-- delivery and attempt instead, one index fewer to write per attempt.)

-- The old table becomes the partition of everything before legacy_bound; attached, not copied.
DO $$
DECLARE
    v_bound timestamptz := (SELECT legacy_bound FROM herald_log_partitioning);
BEGIN
    IF EXISTS (SELECT 1 FROM webhook_logs_legacy) THEN
        EXECUTE format('ALTER TABLE webhook_logs ATTACH PARTITION webhook_logs_legacy '
                       'FOR VALUES FROM (MINVALUE) TO (%L)', v_bound);
    ELSE
        -- A new installation (or an empty history): the empty table stays as the partition of everything before
        -- this interval, so that a row dated in the past (an import, a test) has somewhere to go until retention
        -- passes it. Partitions start now.
        v_bound := date_bin((SELECT partition_interval FROM herald_log_partitioning), now(),
                            timestamptz '2000-01-01 00:00:00+00');
        UPDATE herald_log_partitioning SET legacy_bound = v_bound;
        ALTER TABLE webhook_logs_legacy DROP CONSTRAINT webhook_logs_before_partitioning;
        EXECUTE format('ALTER TABLE webhook_logs ATTACH PARTITION webhook_logs_legacy '
                       'FOR VALUES FROM (MINVALUE) TO (%L)', v_bound);
    END IF;
    COMMENT ON TABLE webhook_logs_legacy IS
        'herald: a partition of webhook_logs (everything before partitioning); herald prune drops it past retention';
END
$$;

DO $$
DECLARE
    v record;
BEGIN
    FOR v IN SELECT * FROM herald_views_on_logs ORDER BY oid LOOP
        EXECUTE format('CREATE VIEW %s AS %s', v.name, v.definition);
    END LOOP;
END
$$;

-- ---------------------------------------------------------------------------------------------------------
-- 2. Partitions. Named webhook_logs_YYYYMMDDtHHMI after their lower bound (UTC); each is commented so that
--    Herald recognises its own tables, and drops only those.
-- ---------------------------------------------------------------------------------------------------------
CREATE VIEW herald_log_partitions AS
SELECT c.relname::text AS partition,
       CASE WHEN b[1] = 'MINVALUE' THEN '-infinity'::timestamptz ELSE btrim(b[1], '''')::timestamptz END AS lower_bound,
       btrim(b[2], '''')::timestamptz AS upper_bound,
       true AS attached,
       i.inhdetachpending AS detaching,     -- a DETACH ... CONCURRENTLY that was interrupted
       greatest(c.reltuples, 0)::bigint AS rows_estimate,
       pg_total_relation_size(c.oid) AS bytes
  FROM pg_inherits i
  JOIN pg_class c ON c.oid = i.inhrelid
 CROSS JOIN LATERAL regexp_match(pg_get_expr(c.relpartbound, c.oid), 'FROM \((.+)\) TO \((.+)\)') AS b
 WHERE i.inhparent = 'webhook_logs'::regclass
UNION ALL
-- Detached but not yet dropped (a pruner stopped between the two steps): dropped by the next prune.
SELECT c.relname::text, NULL, NULL, false, false, greatest(c.reltuples, 0)::bigint, pg_total_relation_size(c.oid)
  FROM pg_class c
 WHERE c.relkind = 'r'
   AND c.relnamespace = (SELECT p.relnamespace FROM pg_class p WHERE p.oid = 'webhook_logs'::regclass)
   AND obj_description(c.oid, 'pg_class') LIKE 'herald: a partition of webhook_logs%'
   AND NOT EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = c.oid);

-- How far ahead partitions exist: a week, or three partitions if that is more, but never more than 100
-- partitions (hourly: about 4 days; the 1-minute partitions of tests and soaks: 100 minutes). Workers top it up
-- every minute, so a row always has a partition to go to unless every worker has been stopped for that long.
CREATE FUNCTION herald_log_partition_horizon(p_interval interval, p_now timestamptz)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE AS $$
    SELECT p_now + least(greatest(interval '7 days', 3 * p_interval), 100 * p_interval)
$$;

-- Creates the partitions missing up to the horizon; returns how many. One session at a time (advisory lock;
-- another caller returns 0 at once). Each partition is created on its own and then attached, which locks
-- webhook_logs only in SHARE UPDATE EXCLUSIVE mode: inserts and queries go on meanwhile.
CREATE FUNCTION herald_create_log_partitions(p_now timestamptz DEFAULT now())
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_interval interval := (SELECT partition_interval FROM herald_log_partitioning);
    v_origin   constant timestamptz := timestamptz '2000-01-01 00:00:00+00';
    v_from     timestamptz;
    v_to       timestamptz;
    v_name     text;
    v_created  integer := 0;
BEGIN
    IF NOT pg_try_advisory_xact_lock(7220136354046184) THEN
        RETURN 0;
    END IF;
    PERFORM set_config('lock_timeout', '5s', true);
    SELECT max(upper_bound) INTO v_from FROM herald_log_partitions WHERE attached;
    v_from := coalesce(v_from, date_bin(v_interval, p_now, v_origin));
    WHILE v_from < herald_log_partition_horizon(v_interval, p_now) LOOP
        v_to := date_bin(v_interval, v_from, v_origin) + v_interval;
        IF v_to < p_now THEN
            -- Nobody created partitions for longer than an interval (every worker stopped): one partition
            -- spans the gap up to the current interval instead of one per missed interval.
            v_to := date_bin(v_interval, p_now, v_origin);
        END IF;
        v_name := 'webhook_logs_' || to_char(v_from AT TIME ZONE 'UTC', 'YYYYMMDD"t"HH24MI');
        EXECUTE format('CREATE TABLE %I (LIKE webhook_logs INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', v_name);
        EXECUTE format('COMMENT ON TABLE %I IS %L', v_name,
                       'herald: a partition of webhook_logs; herald prune drops it past retention');
        EXECUTE format('ALTER TABLE webhook_logs ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                       v_name, v_from, v_to);
        v_created := v_created + 1;
        v_from := v_to;
    END LOOP;
    RETURN v_created;
END
$$;

-- The width of partitions from now on. Between 1 minute and 1 day, and a whole number of minutes that divides a
-- day, so partitions line up with the clock: '1 day' (the default), '1 hour', '15 minutes', ... Shorter
-- partitions enforce retention more closely and mean more tables. The partition holding the current time keeps
-- its width; those entirely in the future are empty and are made again at the new width.
CREATE FUNCTION herald_set_log_partition_interval(p_interval interval)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_seconds numeric := extract(epoch FROM p_interval);
    p record;
    v_rows boolean;
BEGIN
    IF p_interval IS NULL OR v_seconds < 60 OR v_seconds > 86400 OR v_seconds % 60 <> 0 OR 86400 % v_seconds <> 0 THEN
        RAISE EXCEPTION 'the webhook_logs partition interval must be a whole number of minutes between 1 minute and 1 day that divides a day (1 minute, 15 minutes, 1 hour, 1 day ...), got %', p_interval
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE herald_log_partitioning SET partition_interval = p_interval;
    PERFORM set_config('lock_timeout', '5s', true);
    FOR p IN SELECT partition FROM herald_log_partitions WHERE attached AND lower_bound > now() ORDER BY lower_bound DESC LOOP
        EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I)', p.partition) INTO v_rows;
        EXIT WHEN v_rows;   -- a row written for the future: keep it and everything before it
        EXECUTE format('ALTER TABLE webhook_logs DETACH PARTITION %I', p.partition);
        EXECUTE format('DROP TABLE %I', p.partition);
    END LOOP;
    RETURN herald_create_log_partitions();
END
$$;

SELECT herald_create_log_partitions();

-- ---------------------------------------------------------------------------------------------------------
-- 3. Retention. A partition is dropped once its upper bound is past the retention age: every row in it is.
--    `herald prune` and the workers (HERALD_RETENTION) do it with DETACH PARTITION ... CONCURRENTLY, which
--    cannot run inside a function; herald_drop_log_partitions() below is the plain way, for psql.
-- ---------------------------------------------------------------------------------------------------------

-- The partitions retention removes: those whose every row is older than p_older_than (upper bound past it), and
-- any left detached by an interrupted prune; oldest first. The one definition `herald prune`, the workers,
-- herald_drop_log_partitions and herald_prune's dry run all use.
CREATE FUNCTION herald_expired_log_partitions(p_older_than interval)
RETURNS SETOF herald_log_partitions
LANGUAGE sql STABLE AS $$
    SELECT * FROM herald_log_partitions p
     WHERE NOT p.attached OR p.upper_bound <= now() - p_older_than
     ORDER BY p.upper_bound NULLS FIRST
$$;

-- For psql: drops the log partitions past p_older_than with a plain DETACH (it waits at most 5 s for the
-- queries using webhook_logs, then gives up with an error); returns their names.
CREATE FUNCTION herald_drop_log_partitions(p_older_than interval)
RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    p record;
BEGIN
    IF p_older_than IS NULL OR p_older_than <= interval '0' THEN
        RAISE EXCEPTION 'herald_drop_log_partitions needs a positive age, got %', p_older_than
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM pg_advisory_xact_lock(7220136354046182);   -- the pruners' lock (sql/006)
    PERFORM set_config('lock_timeout', '5s', true);
    FOR p IN SELECT * FROM herald_expired_log_partitions(p_older_than) LOOP
        IF p.attached AND p.detaching THEN
            RAISE EXCEPTION 'partition % is being detached concurrently; finish it with: ALTER TABLE webhook_logs DETACH PARTITION % FINALIZE', p.partition, p.partition
                USING ERRCODE = 'object_in_use';
        ELSIF p.attached THEN
            EXECUTE format('ALTER TABLE webhook_logs DETACH PARTITION %I', p.partition);
        END IF;
        EXECUTE format('DROP TABLE %I', p.partition);
        RETURN NEXT p.partition;
    END LOOP;
END
$$;

-- What retention reads in the queue and the outbox. BRIN: both tables are written in time order, so a few pages
-- of index narrow a batch to the old end of the table (before, each batch read all of both tables: 300 ms a batch
-- with a million events, in the soak). Almost free to keep up: a row added to the page range still being filled
-- does not touch the index at all.
CREATE INDEX webhook_deliveries_created ON webhook_deliveries USING brin (created_at);
CREATE INDEX webhook_events_occurred ON webhook_events USING brin (occurred_at);

-- Finished deliveries and old events, in batches, as before. An event goes once its last delivery has gone:
-- those of the deliveries this batch deleted are checked at once. p_sweep also looks for old events that have
-- no delivery at all (no subscriber when they were inserted, or left by an earlier prune); that reads every old
-- event still waiting on a pending delivery, so the workers sweep once every ten minutes, not every batch.
-- webhook_logs rows only from the old table
-- (webhook_logs_legacy) while it is attached, so that its rows go at the retention age too rather than all
-- at once when the whole table is past it. Newer log rows go with their partitions. The dry run counts those
-- too, from the statistics' row estimates.
DROP FUNCTION herald_prune(interval, integer, boolean, boolean);
CREATE FUNCTION herald_prune(p_older_than interval, p_batch integer DEFAULT 1000, p_dry_run boolean DEFAULT false,
                             p_skip_if_busy boolean DEFAULT false, p_sweep boolean DEFAULT true)
RETURNS TABLE (deliveries bigint, logs bigint, events bigint)
LANGUAGE plpgsql AS $$
DECLARE
    cutoff timestamptz := now() - p_older_than;
    v_events uuid[];
    v_legacy boolean := EXISTS (SELECT 1 FROM herald_log_partitions
                                 WHERE partition = 'webhook_logs_legacy' AND attached AND NOT detaching);
    d bigint;
    l bigint := 0;
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
        SELECT count(*) INTO d FROM webhook_deliveries x
         WHERE x.created_at < cutoff AND x.status <> 'pending' AND x.completed_at < cutoff;
        IF v_legacy THEN
            EXECUTE 'SELECT count(*) FROM webhook_logs_legacy WHERE created_at < $1' INTO l USING cutoff;
        END IF;
        l := l + coalesce((SELECT sum(p.rows_estimate) FROM herald_expired_log_partitions(p_older_than) p
                            WHERE p.partition <> 'webhook_logs_legacy'), 0);
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
            -- created_at: a delivery finished before the cutoff was created before it too (the BRIN index).
            SELECT x.id FROM webhook_deliveries x
             WHERE x.created_at < cutoff AND x.status <> 'pending' AND x.completed_at < cutoff LIMIT p_batch
               FOR UPDATE SKIP LOCKED)
          AND status <> 'pending'
        RETURNING event_id)
    SELECT count(*), coalesce(array_agg(DISTINCT g.event_id), '{}') INTO d, v_events FROM gone g;
    IF v_legacy THEN
        EXECUTE 'WITH gone AS (DELETE FROM webhook_logs_legacy WHERE id IN (
                     SELECT x.id FROM webhook_logs_legacy x WHERE x.created_at < $1 LIMIT $2) RETURNING 1)
                 SELECT count(*) FROM gone' INTO l USING cutoff, p_batch;
    END IF;
    WITH gone AS (
        DELETE FROM webhook_events WHERE id IN (
            SELECT v.id FROM webhook_events v
             WHERE v.id = ANY (v_events) AND v.occurred_at < cutoff
               AND NOT EXISTS (SELECT 1 FROM webhook_deliveries x WHERE x.event_id = v.id)
            UNION ALL
            (SELECT v.id FROM webhook_events v
              WHERE p_sweep AND v.occurred_at < cutoff AND v.id <> ALL (v_events)
                AND NOT EXISTS (SELECT 1 FROM webhook_deliveries x WHERE x.event_id = v.id)
              LIMIT p_batch))
        RETURNING 1)
    SELECT count(*) INTO e FROM gone;
    RETURN QUERY SELECT d, l, e;
END
$$;

-- ---------------------------------------------------------------------------------------------------------
-- 4. Attempt bodies. The body Herald sends is a pure function of the event row (HeraldCore's Envelope:
--    `{"event":…,"timestamp":…,"data":…}`, data compacted), and an event cannot change once it has deliveries
--    (sql/008), so the body is rebuilt here instead of being stored with every attempt: a log row shrinks by
--    the size of the payload (548 to about 250 bytes with the benchmark's 300-byte data).
--    HeraldIntegrationTests checks this function against Envelope byte for byte, and against what receivers got.
-- ---------------------------------------------------------------------------------------------------------
CREATE FUNCTION herald_envelope(p_event_type text, p_occurred_at timestamptz, p_data jsonb)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    -- jsonb's text differs from compact JSON only by the blanks after ':' and ','; the pattern keeps every
    -- string literal whole (first alternative) and drops blanks outside them (second).
    SELECT '{"event":' || to_json(p_event_type)::text
        || ',"timestamp":"' || to_char(p_occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
        || '","data":' || regexp_replace(p_data::text, '("(?:[^"\\]|\\.)*")|[ \n\r\t]+', '\1', 'g')
        || '}'
$$;

-- webhook_logs with `body`: the exact bytes each attempt sent (NULL when nothing was sent: a lost attempt,
-- or one settled without sending). Rebuilding needs the event; once retention has deleted it, body is NULL
-- for the few log rows that outlive it (logs go by whole partitions, events by age).
CREATE VIEW webhook_attempts AS
SELECT l.*,
       CASE WHEN l.payload IS NOT NULL THEN l.payload
            WHEN l.outcome <> 'lost' AND l.duration_ms IS NOT NULL
            THEN herald_envelope(e.event_type, e.occurred_at, e.data) END AS body
  FROM webhook_logs l
  LEFT JOIN webhook_events e ON e.id = l.event_id;

-- ---------------------------------------------------------------------------------------------------------
-- 5. One log row per attempt, without a unique index on the lease token. Every write of an attempt's row
--    happens while its delivery row is locked (the rescue's UPDATE, herald_complete's SKIP LOCKED), so two
--    writers of the same attempt never run at once, and a plain check is enough:
--      * the usual case, the result of the current lease: nothing can be logged for it yet, a plain INSERT
--        (the ON CONFLICT of 007 cost a speculative insertion and its confirmation in the WAL per attempt);
--      * a late result: it replaces the 'lost' row the rescue wrote (found by delivery and attempt);
--      * anything else (written twice, or its delivery claimed again or deleted): logged once, if not yet.
-- ---------------------------------------------------------------------------------------------------------
DROP FUNCTION herald_complete(uuid[], uuid[], uuid[], uuid[], text[], integer[], text[], bigint[], integer[],
                              text[], text[], integer[], text[], text, boolean[], integer[]);
CREATE FUNCTION herald_complete(
    p_delivery_id uuid[], p_lease_token uuid[], p_event_id uuid[], p_config_id uuid[], p_event_type text[],
    p_attempt integer[], p_outcome text[], p_delay_ms bigint[], p_response_status integer[],
    p_response_body text[], p_error text[], p_duration_ms integer[], p_payload text[], p_worker text,
    p_overloaded boolean[] DEFAULT NULL, p_replay integer[] DEFAULT NULL)
RETURNS TABLE (applied integer, busy uuid[])
LANGUAGE plpgsql AS $$
DECLARE
    v_locked  uuid[];
    v_current uuid[];
    v_busy    uuid[];
BEGIN
    -- Rows in id order, SKIP LOCKED: never waits, so never deadlocks with a replay or a config delete.
    -- v_current: those still leased under the token the result carries.
    SELECT coalesce(array_agg(x.id), '{}'),
           coalesce(array_agg(x.id) FILTER (WHERE x.lease_token = ANY (p_lease_token)), '{}')
      INTO v_locked, v_current
      FROM (SELECT d.id, d.lease_token FROM webhook_deliveries d WHERE d.id = ANY (p_delivery_id) ORDER BY d.id
               FOR UPDATE SKIP LOCKED) x;
    -- Busy: still there, but held by someone else. (Gone rows, deleted with their config, are only logged.)
    SELECT coalesce(array_agg(x), '{}') INTO v_busy
      FROM unnest(p_delivery_id) AS x
     WHERE x <> ALL (v_locked) AND EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.id = x);

    RETURN QUERY
    WITH r AS (
        SELECT r.*, r.delivery_id = ANY (v_current) AS current
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
        INSERT INTO webhook_logs (delivery_id, event_id, config_id, event_type, attempt, outcome, payload,
                                  response_status, response_body, error, duration_ms, worker, lease_token, replay)
        SELECT r.delivery_id, r.event_id, r.config_id, r.event_type, r.attempt, r.outcome, r.payload,
               r.response_status, r.response_body, r.error, r.duration_ms, p_worker, r.lease_token, r.replay
          FROM r
         WHERE r.current
            OR NOT EXISTS (SELECT 1 FROM webhook_logs l
                            WHERE l.delivery_id = r.delivery_id AND l.attempt = r.attempt
                              AND l.lease_token = r.lease_token)
        RETURNING 1
    ), late AS (
        UPDATE webhook_logs l
           SET outcome = r.outcome, payload = r.payload, response_status = r.response_status,
               response_body = r.response_body, error = r.error, duration_ms = r.duration_ms, worker = p_worker
          FROM r
         WHERE NOT r.current
           AND l.delivery_id = r.delivery_id AND l.attempt = r.attempt AND l.lease_token = r.lease_token
           AND l.outcome = 'lost'
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

-- The rescue (sql/007), its 'lost' row written once per lease by the same rule.
DROP FUNCTION herald_rescue(integer, integer, interval, text, text);
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
         WHERE NOT EXISTS (SELECT 1 FROM webhook_logs l
                            WHERE l.delivery_id = r.id AND l.attempt = r.attempts AND l.lease_token = r.lease_token)
        RETURNING 1
    ), signalled AS (
        -- The endpoints get their slots back (rows made due again signal themselves through the trigger).
        INSERT INTO herald_endpoint_signals (config_id, due_at)
        SELECT DISTINCT r.config_id, now() FROM rescued r
        RETURNING 1
    )
    SELECT count(*)::integer FROM rescued;
$$;
