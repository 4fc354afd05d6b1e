-- 003 — The outbox (webhook_events), the queue (webhook_deliveries) and the attempt history (webhook_logs).
--
-- Flow: an application INSERTs into webhook_events inside its own transaction. A statement-level trigger fans
-- each new event out to one webhook_deliveries row per matching config and NOTIFYs the workers, all in the
-- producer's transaction: if it rolls back, nothing is sent; if it commits, every delivery exists.

-- ---------------------------------------------------------------------------------------------------------
-- webhook_events: the outbox producers write to.
--
--   INSERT INTO webhook_events (event_type, organization_id, data)
--   VALUES ('contact.created', '4f1c…', '{"id": "…", "first_name": "John"}');
-- ---------------------------------------------------------------------------------------------------------
CREATE TABLE webhook_events (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    event_type      text NOT NULL REFERENCES webhook_event_types (name),
    organization_id uuid NULL,
    data            jsonb NOT NULL DEFAULT '{}'::jsonb,
    occurred_at     timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE webhook_events IS
    'The outbox: INSERT an event here in your own transaction; Herald delivers it to every subscribed config.';
COMMENT ON COLUMN webhook_events.occurred_at IS 'Becomes the envelope''s "timestamp" (ISO 8601, UTC, milliseconds).';

-- Row-level checks with messages a producer can act on. (The foreign key above would also reject an unknown
-- type, but with a generic message; this trigger runs first.)
CREATE FUNCTION herald_check_event() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM webhook_event_types WHERE name = NEW.event_type) THEN
        RAISE EXCEPTION 'unknown webhook event type %', quote_literal(coalesce(NEW.event_type, 'NULL'))
            USING ERRCODE = 'foreign_key_violation',
                  HINT = 'Known types: SELECT name FROM webhook_event_types;';
    END IF;
    IF NEW.data IS NULL OR jsonb_typeof(NEW.data) <> 'object' THEN
        RAISE EXCEPTION 'webhook_events.data must be a JSON object, got %',
                coalesce('a JSON ' || jsonb_typeof(NEW.data), 'NULL')
            USING ERRCODE = 'check_violation', HINT = 'Wrap the value, e.g. {"value": …}.';
    END IF;
    -- 256 KiB of jsonb: receivers and logs should not be flooded by one event.
    IF pg_column_size(NEW.data) > 262144 THEN
        RAISE EXCEPTION 'webhook_events.data is too large: % bytes, the limit is 262144 (256 KiB)', pg_column_size(NEW.data)
            USING ERRCODE = 'program_limit_exceeded',
                  HINT = 'Send an id and let the receiver fetch the full record.';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER webhook_events_check
    BEFORE INSERT ON webhook_events
    FOR EACH ROW EXECUTE FUNCTION herald_check_event();

-- ---------------------------------------------------------------------------------------------------------
-- webhook_deliveries: the queue. One row per (event, config).
--
-- State machine (see docs/ARCHITECTURE.md):
--   pending, lease_token NULL         waiting; due when next_attempt_at <= now()
--   pending, lease_token set          claimed by leased_by; next_attempt_at is the lease expiry
--   delivered                         a 2xx was received (terminal)
--   failed                            the last attempt failed, or the config was disabled (terminal; replayable)
-- ---------------------------------------------------------------------------------------------------------
CREATE TABLE webhook_deliveries (
    -- Also sent as X-Webhook-Id: unique per (event, config), stable across retries and replays.
    id                   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    event_id             uuid NOT NULL REFERENCES webhook_events (id) ON DELETE CASCADE,
    config_id            uuid NOT NULL REFERENCES webhook_configs (id) ON DELETE CASCADE,
    status               text NOT NULL DEFAULT 'pending'
                         CHECK (status IN ('pending', 'delivered', 'failed')),
    -- Counted when an attempt is claimed, so a delivery that keeps killing workers still runs out of attempts.
    attempts             integer NOT NULL DEFAULT 0,
    -- Overrides the config's and the worker's limit for this delivery (test deliveries get 1).
    max_attempts         integer NULL,
    -- When pending and not leased: when the next attempt is due. When leased: when the lease expires.
    next_attempt_at      timestamptz NOT NULL DEFAULT now(),
    -- Fencing token of the current claim; a result is applied only if it carries this token.
    lease_token          uuid NULL,
    leased_by            text NULL,
    last_attempt_at      timestamptz NULL,
    last_response_status integer NULL,
    last_error           text NULL,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    completed_at         timestamptz NULL,
    replay_count         integer NOT NULL DEFAULT 0,
    replayed_at          timestamptz NULL,
    UNIQUE (event_id, config_id)
);

-- The claim indexes. Partial: only rows waiting for an attempt are in them, so they stay as small as the
-- backlog however many millions of finished deliveries the table holds. The claim reads them per endpoint
-- (config_id), oldest first, taking at most each endpoint's free in-flight slots; first attempts and retries
-- have one each so the claim can give both a share without stepping over the other. A claim takes its row out
-- (lease_token is set), a retry puts it back into the second.
CREATE INDEX webhook_deliveries_due_first ON webhook_deliveries (config_id, next_attempt_at)
    WHERE status = 'pending' AND lease_token IS NULL AND attempts = 0;
CREATE INDEX webhook_deliveries_due_retry ON webhook_deliveries (config_id, next_attempt_at)
    WHERE status = 'pending' AND lease_token IS NULL AND attempts > 0;

-- The leases, ordered by expiry: herald_rescue finds expired ones without stepping over the due backlog.
-- Holds only deliveries in flight (at most the workers' total concurrency).
CREATE INDEX webhook_deliveries_leased ON webhook_deliveries (next_attempt_at) WHERE lease_token IS NOT NULL;

-- Operator look-ups and the ON DELETE CASCADE from webhook_configs.
CREATE INDEX webhook_deliveries_config ON webhook_deliveries (config_id, status);

-- A queue table is updated several times per row: leave room for HOT updates and vacuum it early.
ALTER TABLE webhook_deliveries SET (fillfactor = 70, autovacuum_vacuum_scale_factor = 0.01,
                                    autovacuum_analyze_scale_factor = 0.02);

-- ---------------------------------------------------------------------------------------------------------
-- webhook_logs: one row per delivery attempt. History, so no foreign keys: it outlives deleted configs and
-- pruned deliveries, and inserting it costs no lookups.
--   outcome: delivered | retry (failed, another attempt scheduled) | failed (failed, no attempts left)
--            | lost (the worker holding the lease vanished; outcome unknown, the attempt is counted)
-- ---------------------------------------------------------------------------------------------------------
CREATE TABLE webhook_logs (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id     uuid NOT NULL,
    event_id        uuid NOT NULL,
    config_id       uuid NOT NULL,
    event_type      text NOT NULL,
    attempt         integer NOT NULL,
    outcome         text NOT NULL CHECK (outcome IN ('delivered', 'retry', 'failed', 'lost')),
    -- The exact request body sent (NULL for a lost attempt, whose request Herald did not see finish).
    payload         text NULL,
    response_status integer NULL,
    -- Capped (64 KiB); bytes that are not UTF-8 are replaced by U+FFFD so any response can be stored.
    response_body   text NULL,
    error           text NULL,
    duration_ms     integer NULL,
    worker          text NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX webhook_logs_delivery ON webhook_logs (delivery_id, attempt);
-- Time-ordered look-ups (herald logs --since) and retention pruning. BRIN: rows arrive in time order, so a
-- block-range index is a few pages, costs almost nothing per insert, and still narrows a time range.
CREATE INDEX webhook_logs_created ON webhook_logs USING brin (created_at);

-- ---------------------------------------------------------------------------------------------------------
-- Fan-out, in the producer's transaction. Statement-level with a transition table, so a bulk INSERT of
-- 10,000 events runs one join and one NOTIFY, not 10,000 of each.
-- ---------------------------------------------------------------------------------------------------------
CREATE FUNCTION herald_fan_out() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- `SET LOCAL herald.fan_out = 'off'` skips the fan-out for one transaction: `herald test` uses it to
    -- address one config with an ordinary event row.
    IF current_setting('herald.fan_out', true) = 'off' THEN
        RETURN NULL;
    END IF;
    INSERT INTO webhook_deliveries (event_id, config_id, next_attempt_at)
    SELECT e.id, c.id, now()
      FROM new_events e
      JOIN webhook_configs c
        ON c.is_active
       AND c.organization_id IS NOT DISTINCT FROM e.organization_id   -- never across organizations
       AND (e.event_type = ANY (c.events) OR '*' = ANY (c.events));
    IF FOUND THEN
        -- Wakes every LISTENing worker when the transaction commits (not before: NOTIFY is transactional).
        PERFORM pg_notify('herald_deliveries', '');
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER webhook_events_fan_out
    AFTER INSERT ON webhook_events
    REFERENCING NEW TABLE AS new_events
    FOR EACH STATEMENT EXECUTE FUNCTION herald_fan_out();
