-- 002 — Webhook configs: where events go.
--
-- Columns follow the documented config fields (name, url, events, secret, is_active). Configs are scoped to an
-- organization; organization_id NULL is a tenant of its own (it only receives events whose organization_id is
-- also NULL). A trigger rejects bad rows with messages that name the problem, because operators write this
-- table by hand in psql as often as through the CLI.

CREATE TABLE webhook_configs (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id uuid NULL,
    name            text NOT NULL,
    url             text NOT NULL,
    events          text[] NOT NULL,
    secret          text NULL,
    -- During a secret rotation: the old secret, still used for a second Standard Webhooks signature until
    -- previous_secret_expires_at, so receivers can switch over without rejecting anything.
    previous_secret text NULL,
    previous_secret_expires_at timestamptz NULL,
    is_active       boolean NOT NULL DEFAULT true,
    -- Overrides the worker's HERALD_MAX_ATTEMPTS for this endpoint when set.
    max_attempts    integer NULL,
    -- Requests in flight to this endpoint across all workers; NULL: the workers' HERALD_ENDPOINT_CONCURRENCY.
    max_in_flight   integer NULL,
    -- Endpoint health, kept by herald_complete (sql/004): failed attempts in a row, since when, and until when
    -- the circuit is open (no new attempts; then one probe at a time until a success closes it).
    consecutive_failures integer NOT NULL DEFAULT 0,
    failing_since   timestamptz NULL,
    circuit_open_until timestamptz NULL,
    -- Why and when Herald disabled it by itself (410 Gone, or failing for longer than HERALD_DISABLE_AFTER).
    disabled_reason text NULL,
    disabled_at     timestamptz NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

COMMENT ON COLUMN webhook_configs.events IS 'Event types this config receives; ''*'' means every type.';
COMMENT ON COLUMN webhook_configs.secret IS 'HMAC-SHA256 key; NULL sends unsigned requests. Never logged.';

-- The fan-out trigger looks configs up by organization; the table is small, but keep the lookup cheap.
CREATE INDEX webhook_configs_organization ON webhook_configs (organization_id) WHERE is_active;

CREATE FUNCTION herald_check_config() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    authority text;
    unknown   text;
BEGIN
    -- Health bookkeeping by the workers changes none of the checked fields: skip the checks, keep updated_at.
    IF TG_OP = 'UPDATE' AND NEW.name IS NOT DISTINCT FROM OLD.name AND NEW.url IS NOT DISTINCT FROM OLD.url
       AND NEW.events IS NOT DISTINCT FROM OLD.events AND NEW.secret IS NOT DISTINCT FROM OLD.secret
       AND NEW.max_attempts IS NOT DISTINCT FROM OLD.max_attempts
       AND NEW.max_in_flight IS NOT DISTINCT FROM OLD.max_in_flight
       AND NEW.organization_id IS NOT DISTINCT FROM OLD.organization_id
       AND NEW.is_active IS NOT DISTINCT FROM OLD.is_active THEN
        RETURN NEW;
    END IF;
    IF NEW.name IS NULL OR btrim(NEW.name) = '' THEN
        RAISE EXCEPTION 'webhook_configs.name must not be empty'
            USING ERRCODE = 'check_violation', HINT = 'Give the config a human-readable name, e.g. ''CRM sync''.';
    END IF;

    IF NEW.url IS NULL OR NEW.url !~* '^https?://' THEN
        RAISE EXCEPTION 'webhook_configs.url must be an absolute http:// or https:// URL, got %', quote_literal(coalesce(NEW.url, 'NULL'))
            USING ERRCODE = 'check_violation', HINT = 'Example: https://example.com/webhooks';
    END IF;
    IF NEW.url ~ '[[:space:][:cntrl:]]' THEN
        RAISE EXCEPTION 'webhook_configs.url must not contain spaces or control characters, got %', quote_literal(NEW.url)
            USING ERRCODE = 'check_violation';
    END IF;
    authority := substring(NEW.url FROM '^[A-Za-z]+://([^/?#]*)');
    IF authority IS NULL OR authority = '' OR authority ~ '^:' THEN
        RAISE EXCEPTION 'webhook_configs.url has no host: %', quote_literal(NEW.url)
            USING ERRCODE = 'check_violation', HINT = 'Example: https://example.com/webhooks';
    END IF;
    IF position('@' IN authority) > 0 THEN
        RAISE EXCEPTION 'webhook_configs.url must not carry credentials (user:password@host)'
            USING ERRCODE = 'check_violation',
                  HINT = 'Receivers authenticate Herald by the X-Webhook-Signature header; set webhook_configs.secret instead.';
    END IF;

    IF NEW.events IS NULL OR cardinality(NEW.events) = 0 THEN
        RAISE EXCEPTION 'webhook_configs.events must list at least one event type'
            USING ERRCODE = 'check_violation', HINT = 'Use ARRAY[''contact.created''], or ARRAY[''*''] for every type.';
    END IF;
    SELECT string_agg(quote_literal(coalesce(t, 'NULL')), ', ') INTO unknown
      FROM unnest(NEW.events) AS t
     WHERE t IS NULL OR (t <> '*' AND NOT EXISTS (SELECT 1 FROM webhook_event_types k WHERE k.name = t));
    IF unknown IS NOT NULL THEN
        RAISE EXCEPTION 'webhook_configs.events has unknown event type(s): %', unknown
            USING ERRCODE = 'check_violation', HINT = 'Known types: SELECT name FROM webhook_event_types; ''*'' means all.';
    END IF;

    IF NEW.secret = '' THEN
        RAISE EXCEPTION 'webhook_configs.secret must be NULL (unsigned) or a non-empty string'
            USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.max_attempts IS NOT NULL AND (NEW.max_attempts < 1 OR NEW.max_attempts > 100) THEN
        RAISE EXCEPTION 'webhook_configs.max_attempts must be between 1 and 100, got %', NEW.max_attempts
            USING ERRCODE = 'check_violation';
    END IF;

    IF NEW.max_in_flight IS NOT NULL AND (NEW.max_in_flight < 1 OR NEW.max_in_flight > 10000) THEN
        RAISE EXCEPTION 'webhook_configs.max_in_flight must be between 1 and 10000, got %', NEW.max_in_flight
            USING ERRCODE = 'check_violation';
    END IF;

    IF TG_OP = 'UPDATE' THEN
        NEW.updated_at := now();
        -- Enabling a config again clears the reason it was disabled for and gives it a clean bill of health.
        IF NEW.is_active AND NOT OLD.is_active THEN
            NEW.disabled_reason := NULL;
            NEW.disabled_at := NULL;
            NEW.consecutive_failures := 0;
            NEW.failing_since := NULL;
            NEW.circuit_open_until := NULL;
        END IF;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER webhook_configs_check
    BEFORE INSERT OR UPDATE ON webhook_configs
    FOR EACH ROW EXECUTE FUNCTION herald_check_config();
