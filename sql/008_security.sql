-- 008 — Tenant isolation and outbox integrity (issue 12).
--
-- 1. A config that moves to another organization must never receive the old organization's events: its
--    unfinished deliveries end 'failed' without being sent, and replay refuses (or, in bulk, skips) any delivery
--    whose event belongs to another organization than its config now does. (The claim checks it too: sql/007.)
-- 2. Narrowing a config's `events` takes effect for deliveries still queued: those of types it no longer
--    subscribes to end 'failed' without being sent, and are not replayed. The receiver asked not to get them;
--    what is in flight at that moment still completes. (`webhook.test` deliveries, which `herald test` addresses
--    to one config whatever it subscribes to, are exempt.)
-- 3. Events are immutable once they have deliveries: a delivery is a promise to send exactly that event, and its
--    checks (type, object, size, organization at fan-out) were made on the row as it was. The 256 KiB limit is
--    measured on the JSON text, not the stored (possibly compressed) size.

-- ---------------------------------------------------------------------------------------------------------
-- Events: checked on INSERT and UPDATE; frozen once fanned out.
-- ---------------------------------------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION herald_check_event() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    size bigint;
BEGIN
    IF TG_OP = 'UPDATE'
       AND (NEW.event_type IS DISTINCT FROM OLD.event_type OR NEW.organization_id IS DISTINCT FROM OLD.organization_id
            OR NEW.data IS DISTINCT FROM OLD.data OR NEW.occurred_at IS DISTINCT FROM OLD.occurred_at)
       AND EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = OLD.id) THEN
        RAISE EXCEPTION 'webhook event % cannot be changed: it already has deliveries', OLD.id
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  DETAIL = 'event_type, organization_id, data and occurred_at are fixed once an event has fanned out.',
                  HINT = 'Insert a new event instead; its deliveries get new ids.';
    END IF;
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
    -- 256 KiB of JSON text, as a receiver would get it (roughly; the envelope is compact). pg_column_size would
    -- measure the stored size, which is compressed when the value came from another table: a 3 MB value passed.
    size := octet_length(NEW.data::text);
    IF size > 262144 THEN
        RAISE EXCEPTION 'webhook_events.data is too large: % bytes of JSON, the limit is 262144 (256 KiB)', size
            USING ERRCODE = 'program_limit_exceeded',
                  HINT = 'Send an id and let the receiver fetch the full record.';
    END IF;
    RETURN NEW;
END
$$;

DROP TRIGGER webhook_events_check ON webhook_events;
CREATE TRIGGER webhook_events_check
    BEFORE INSERT OR UPDATE ON webhook_events
    FOR EACH ROW EXECUTE FUNCTION herald_check_event();

-- ---------------------------------------------------------------------------------------------------------
-- Configs: moving to another organization, or narrowing `events`, settles what is still queued.
-- Each delivery settled here gets a webhook_logs row (outcome 'failed', no payload, worker NULL), like the
-- deliveries a worker fails without sending because their config was disabled: `herald logs` and `herald show`
-- then say why it ended. `attempt` is the number of attempts already made (0: never sent).
-- ---------------------------------------------------------------------------------------------------------
CREATE FUNCTION herald_config_scope_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.organization_id IS DISTINCT FROM OLD.organization_id THEN
        -- In flight included: the lease token is cleared, so the worker's result cannot make it 'delivered'
        -- (its attempt, sent before the move to the endpoint of that time, is still logged).
        WITH settled AS (
            UPDATE webhook_deliveries d
               SET status = 'failed', completed_at = now(), next_attempt_at = now(), lease_token = NULL,
                   leased_by = NULL, last_response_status = NULL, updated_at = now(),
                   last_error = format('not sent: webhook config %s moved from organization %s to %s; '
                                       'events of the old organization are never sent to it',
                                       NEW.id, coalesce(OLD.organization_id::text, 'NULL'),
                                       coalesce(NEW.organization_id::text, 'NULL'))
             WHERE d.config_id = NEW.id AND d.status = 'pending'
            RETURNING d.id, d.event_id, d.config_id, d.attempts, d.last_error
        )
        INSERT INTO webhook_logs (delivery_id, event_id, config_id, event_type, attempt, outcome, error)
        SELECT s.id, s.event_id, s.config_id, e.event_type, s.attempts, 'failed', s.last_error
          FROM settled s JOIN webhook_events e ON e.id = s.event_id;
    END IF;
    IF NEW.events IS DISTINCT FROM OLD.events AND NOT '*' = ANY (NEW.events) THEN
        -- Not in flight: an attempt already on its way completes as usual.
        WITH settled AS (
            UPDATE webhook_deliveries d
               SET status = 'failed', completed_at = now(), next_attempt_at = now(), updated_at = now(),
                   last_error = format('not sent: webhook config %s no longer subscribes to %s',
                                       NEW.id, e.event_type)
              FROM webhook_events e
             WHERE d.config_id = NEW.id AND d.status = 'pending' AND d.lease_token IS NULL
               AND e.id = d.event_id AND e.event_type <> 'webhook.test'
               AND NOT e.event_type = ANY (NEW.events)
            RETURNING d.id, d.event_id, d.config_id, d.attempts, d.last_error, e.event_type
        )
        INSERT INTO webhook_logs (delivery_id, event_id, config_id, event_type, attempt, outcome, error)
        SELECT s.id, s.event_id, s.config_id, s.event_type, s.attempts, 'failed', s.last_error FROM settled s;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER webhook_configs_scope_changed
    AFTER UPDATE OF organization_id, events ON webhook_configs
    FOR EACH ROW
    WHEN (OLD.organization_id IS DISTINCT FROM NEW.organization_id OR OLD.events IS DISTINCT FROM NEW.events)
    EXECUTE FUNCTION herald_config_scope_changed();

-- ---------------------------------------------------------------------------------------------------------
-- What a config may receive today: an event of its own organization, of a type it subscribes to (or the test
-- event). One definition for bulk replay, its dry run and `herald replay --dry-run`'s list (sql/009).
-- ---------------------------------------------------------------------------------------------------------
CREATE FUNCTION herald_config_may_receive(p_event_organization uuid, p_event_type text,
                                          p_config_organization uuid, p_config_events text[])
RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT p_event_organization IS NOT DISTINCT FROM p_config_organization
       AND (p_event_type = 'webhook.test' OR p_event_type = ANY (p_config_events) OR '*' = ANY (p_config_events))
$$;

-- ---------------------------------------------------------------------------------------------------------
-- Replay: only what the config may receive today. herald_replay refuses the whole call and names the
-- deliveries; herald_replay_matching skips them (its dry run counts only what it would replay, and says in a
-- NOTICE how many it leaves out).
-- ---------------------------------------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION herald_replay(p_delivery_ids uuid[])
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    missing  text;
    pending  text;
    foreign_ text;
    unsubscribed text;
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
    SELECT string_agg(d.id::text, ', ') INTO foreign_
      FROM webhook_deliveries d
      JOIN webhook_events e ON e.id = d.event_id
      JOIN webhook_configs c ON c.id = d.config_id
     WHERE d.id = ANY (p_delivery_ids) AND e.organization_id IS DISTINCT FROM c.organization_id;
    IF foreign_ IS NOT NULL THEN
        RAISE EXCEPTION 'not replayed: the event belongs to another organization than the webhook config now does: %', foreign_
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'A config that moved to another organization never receives the old organization''s events.';
    END IF;
    SELECT string_agg(d.id::text, ', ') INTO unsubscribed
      FROM webhook_deliveries d
      JOIN webhook_events e ON e.id = d.event_id
      JOIN webhook_configs c ON c.id = d.config_id
     WHERE d.id = ANY (p_delivery_ids) AND e.event_type <> 'webhook.test'
       AND NOT (e.event_type = ANY (c.events) OR '*' = ANY (c.events));
    IF unsubscribed IS NOT NULL THEN
        RAISE EXCEPTION 'not replayed: the webhook config no longer subscribes to the event''s type: %', unsubscribed
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Add the type to the config''s events first (herald config update … --events …).';
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

CREATE OR REPLACE FUNCTION herald_replay_matching(
    p_status text DEFAULT 'failed', p_config_id uuid DEFAULT NULL, p_event_type text DEFAULT NULL,
    p_since timestamptz DEFAULT NULL, p_until timestamptz DEFAULT NULL, p_limit integer DEFAULT NULL,
    p_dry_run boolean DEFAULT false)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    affected integer;
    skipped  integer;
BEGIN
    IF p_status NOT IN ('failed', 'delivered') THEN
        RAISE EXCEPTION 'can only replay failed or delivered deliveries, not %', quote_literal(p_status)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_dry_run THEN
        SELECT count(*) FILTER (WHERE herald_config_may_receive(e.organization_id, e.event_type,
                                                                c.organization_id, c.events)),
               count(*) FILTER (WHERE NOT herald_config_may_receive(e.organization_id, e.event_type,
                                                                    c.organization_id, c.events))
          INTO affected, skipped
          FROM webhook_deliveries d
          JOIN webhook_events e ON e.id = d.event_id
          JOIN webhook_configs c ON c.id = d.config_id
         WHERE d.status = p_status
           AND (p_config_id IS NULL OR d.config_id = p_config_id)
           AND (p_event_type IS NULL OR e.event_type = p_event_type)
           AND (p_since IS NULL OR d.completed_at >= p_since)
           AND (p_until IS NULL OR d.completed_at < p_until);
        IF skipped > 0 THEN
            RAISE NOTICE 'skipping % deliveries whose event belongs to another organization than their webhook config, or is of a type it no longer subscribes to', skipped;
        END IF;
        RETURN affected;
    END IF;
    WITH chosen AS (
        SELECT d.id
          FROM webhook_deliveries d
          JOIN webhook_events e ON e.id = d.event_id
          JOIN webhook_configs c ON c.id = d.config_id
         WHERE d.status = p_status
           AND (p_config_id IS NULL OR d.config_id = p_config_id)
           AND (p_event_type IS NULL OR e.event_type = p_event_type)
           AND (p_since IS NULL OR d.completed_at >= p_since)
           AND (p_until IS NULL OR d.completed_at < p_until)
           -- Never across organizations, never a type the config no longer subscribes to.
           AND herald_config_may_receive(e.organization_id, e.event_type, c.organization_id, c.events)
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
