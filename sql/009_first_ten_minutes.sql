-- 009 — The first ten minutes (issue 15): what a newcomer trips over, answered by the database itself.
--
-- 1. Config names are unique within an organization, the NULL organization included, so `herald test NAME`
--    and every other name look-up means one config. Existing duplicates are renamed first ("CRM" → "CRM (2)"),
--    oldest kept as it is, each rename raised as a NOTICE (`herald migrate` prints them).
-- 2. An event that fans out to nothing says why: herald_why_no_deliveries() names the reason (no config of that
--    organization subscribes to the type, or its subscribers are disabled); `herald emit` prints it, and an
--    INSERT in psql that fans out to nothing raises it as a NOTICE.
-- 3. herald_retry_now(): pending deliveries due now (`herald retry`), instead of waiting out their backoff.
-- 4. herald_replay_candidates(): what herald_replay_matching would replay, listed (`herald replay --dry-run`).

-- ---------------------------------------------------------------------------------------------------------
-- 1. Unique names per organization.
-- ---------------------------------------------------------------------------------------------------------
DO $$
DECLARE
    dup       record;
    candidate text;
    suffix    integer;
BEGIN
    FOR dup IN
        SELECT id, organization_id, name
          FROM (SELECT id, organization_id, name,
                       row_number() OVER (PARTITION BY organization_id, name ORDER BY created_at, id) AS rank
                  FROM webhook_configs) ranked
         WHERE rank > 1
         ORDER BY organization_id NULLS FIRST, name, rank
    LOOP
        suffix := 2;
        LOOP
            candidate := dup.name || ' (' || suffix || ')';
            EXIT WHEN NOT EXISTS (SELECT 1 FROM webhook_configs c
                                   WHERE c.organization_id IS NOT DISTINCT FROM dup.organization_id
                                     AND c.name = candidate);
            suffix := suffix + 1;
        END LOOP;
        UPDATE webhook_configs SET name = candidate WHERE id = dup.id;
        RAISE NOTICE 'renamed webhook config % (organization %) from % to % (config names are now unique per organization)',
            dup.id, coalesce(dup.organization_id::text, 'none'), quote_literal(dup.name), quote_literal(candidate);
    END LOOP;
END
$$;

ALTER TABLE webhook_configs
    ADD CONSTRAINT webhook_configs_name_per_organization UNIQUE NULLS NOT DISTINCT (organization_id, name);

-- ---------------------------------------------------------------------------------------------------------
-- 2. Why an event fanned out to nothing. NULL when a config of the event's organization would receive it.
-- ---------------------------------------------------------------------------------------------------------
CREATE FUNCTION herald_why_no_deliveries(p_event_type text, p_organization_id uuid)
RETURNS text
LANGUAGE sql STABLE AS $$
    WITH mine AS (
        SELECT c.name, c.is_active, (p_event_type = ANY (c.events) OR '*' = ANY (c.events)) AS subscribed
          FROM webhook_configs c
         WHERE c.organization_id IS NOT DISTINCT FROM p_organization_id
    ), elsewhere AS (
        SELECT count(*) AS n,
               count(DISTINCT coalesce(c.organization_id::text, 'none')) AS orgs,
               min(coalesce(c.organization_id::text, 'none')) AS one_org
          FROM webhook_configs c
         WHERE c.organization_id IS DISTINCT FROM p_organization_id
           AND c.is_active AND (p_event_type = ANY (c.events) OR '*' = ANY (c.events))
    )
    SELECT CASE
        WHEN EXISTS (SELECT 1 FROM mine WHERE subscribed AND is_active) THEN NULL
        WHEN EXISTS (SELECT 1 FROM mine WHERE subscribed) THEN
            'every config of organization ' || coalesce(p_organization_id::text, 'none') || ' subscribed to '
            || p_event_type || ' is disabled: '
            || (SELECT string_agg(quote_literal(name), ', ' ORDER BY name) FROM mine WHERE subscribed)
            || ' (herald config enable NAME)'
        ELSE
            'no config of organization ' || coalesce(p_organization_id::text, 'none') || ' subscribes to '
            || p_event_type
            || CASE WHEN EXISTS (SELECT 1 FROM mine)
                    THEN ' (its configs: ' || (SELECT string_agg(quote_literal(name), ', ' ORDER BY name) FROM mine)
                         || '; add the type with herald config update NAME --events …)'
                    ELSE '' END
            || CASE WHEN e.n > 0
                    THEN '; ' || e.n || ' config(s) of ' ||
                         CASE WHEN e.orgs = 1 THEN 'organization ' || e.one_org ELSE e.orgs || ' other organizations' END
                         || ' do, but a config only receives events of its own organization'
                         || CASE WHEN e.orgs = 1 AND e.one_org <> 'none' THEN ' (emit with --org ' || e.one_org || ')'
                                 WHEN e.orgs = 1 THEN ' (emit without --org)' ELSE '' END
                    ELSE '' END
        END
      FROM elsewhere e
$$;

COMMENT ON FUNCTION herald_why_no_deliveries(text, uuid) IS
    'Why an event of this type and organization fans out to no delivery; NULL when some config would receive it.';

-- The fan-out of sql/003, unchanged but for the end: a statement that fanned out to nothing at all raises a
-- NOTICE saying why (psql shows it; most drivers and Rails, which sets client_min_messages to warning, do not).
-- Only computed when nothing was inserted, so a fan-out that finds its configs costs exactly what it did.
CREATE OR REPLACE FUNCTION herald_fan_out() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    first_event record;
    reason      text;
BEGIN
    -- `SET LOCAL herald.fan_out = 'off'` skips the fan-out for one transaction: `herald test` uses it to
    -- address one config with an ordinary event row.
    IF current_setting('herald.fan_out', true) = 'off' THEN
        RETURN NULL;
    END IF;
    -- Ordered configs (sql/007) get the event's key and order, and the delivery starts blocked: the claim makes
    -- the oldest of each key its head.
    INSERT INTO webhook_deliveries (event_id, config_id, next_attempt_at, ordering_key, event_seq, ordering_blocked)
    SELECT e.id, c.id, now(),
           CASE WHEN c.ordering = 'key' THEN e.ordering_key END,
           CASE WHEN c.ordering = 'key' AND e.ordering_key IS NOT NULL THEN e.event_seq END,
           c.ordering = 'key' AND e.ordering_key IS NOT NULL
      FROM new_events e
      JOIN webhook_configs c
        ON c.is_active
       AND c.organization_id IS NOT DISTINCT FROM e.organization_id   -- never across organizations
       AND (e.event_type = ANY (c.events) OR '*' = ANY (c.events));
    IF FOUND THEN
        -- Wakes every LISTENing worker when the transaction commits (not before: NOTIFY is transactional).
        PERFORM pg_notify('herald_deliveries', '');
    ELSE
        SELECT event_type, organization_id INTO first_event FROM new_events LIMIT 1;
        IF FOUND THEN
            reason := herald_why_no_deliveries(first_event.event_type, first_event.organization_id);
            IF reason IS NOT NULL THEN
                RAISE NOTICE 'webhook event fanned out to 0 deliveries: %', reason;
            END IF;
        END IF;
    END IF;
    RETURN NULL;
END
$$;

-- ---------------------------------------------------------------------------------------------------------
-- 3. Retry now: pending deliveries waiting out a backoff become due at once. Those in flight are left alone
--    (their attempt is under way); finished ones are for herald_replay. The signal trigger of sql/007 wakes
--    the endpoint; the NOTIFY wakes the workers. Returns the ids made due.
-- ---------------------------------------------------------------------------------------------------------
CREATE FUNCTION herald_retry_now(p_delivery_ids uuid[] DEFAULT NULL, p_config_id uuid DEFAULT NULL)
RETURNS SETOF uuid
LANGUAGE plpgsql AS $$
DECLARE
    made_due uuid[];
BEGIN
    IF p_delivery_ids IS NULL AND p_config_id IS NULL THEN
        RAISE EXCEPTION 'herald_retry_now needs delivery ids or a config id'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    WITH due AS (
        UPDATE webhook_deliveries d
           SET next_attempt_at = now(), updated_at = now()
         WHERE d.status = 'pending' AND d.lease_token IS NULL AND d.next_attempt_at > now()
           AND (p_delivery_ids IS NULL OR d.id = ANY (p_delivery_ids))
           AND (p_config_id IS NULL OR d.config_id = p_config_id)
        RETURNING d.id
    )
    SELECT coalesce(array_agg(id), '{}') INTO made_due FROM due;
    IF cardinality(made_due) > 0 THEN
        PERFORM pg_notify('herald_deliveries', '');
    END IF;
    RETURN QUERY SELECT unnest(made_due);
END
$$;

-- ---------------------------------------------------------------------------------------------------------
-- 4. What herald_replay_matching (sql/008) would replay, oldest first: the same conditions, listed.
-- ---------------------------------------------------------------------------------------------------------
CREATE FUNCTION herald_replay_candidates(
    p_status     text DEFAULT 'failed',
    p_config_id  uuid DEFAULT NULL,
    p_event_type text DEFAULT NULL,
    p_since      timestamptz DEFAULT NULL,
    p_until      timestamptz DEFAULT NULL,
    p_limit      integer DEFAULT 50)
RETURNS TABLE (delivery_id uuid, config text, event_type text, attempts integer, completed_at timestamptz,
               last_error text)
LANGUAGE sql STABLE AS $$
    SELECT d.id, c.name, e.event_type, d.attempts, d.completed_at, d.last_error
      FROM webhook_deliveries d
      JOIN webhook_events e ON e.id = d.event_id
      JOIN webhook_configs c ON c.id = d.config_id
     WHERE d.status = p_status
       AND (p_config_id IS NULL OR d.config_id = p_config_id)
       AND (p_event_type IS NULL OR e.event_type = p_event_type)
       AND (p_since IS NULL OR d.completed_at >= p_since)
       AND (p_until IS NULL OR d.completed_at < p_until)
       AND herald_config_may_receive(e.organization_id, e.event_type, c.organization_id, c.events)
     ORDER BY d.completed_at, d.id
     LIMIT p_limit
$$;

