-- 010 — Partitioned webhook_logs, step 1 of 3: choose where the old table ends.
--
-- webhook_logs becomes a table partitioned by created_at (sql/012). The table as it is today is kept whole, as
-- the first partition, webhook_logs_legacy, holding everything before a bound fixed here: midnight UTC at least
-- one day ahead. Attaching it as that partition needs proof that no row lies beyond the bound. A CHECK
-- constraint gives that proof without a long lock:
--   * here it is added NOT VALID, which checks only rows written from now on (a moment's lock, no scan);
--   * 011 validates the old rows in a transaction of its own, which scans the table but lets every insert,
--     update and delete go on meanwhile (SHARE UPDATE EXCLUSIVE);
--   * 012 attaches the table, and PostgreSQL skips the scan because the valid constraint already proves it.

-- How webhook_logs is partitioned; one row. Change the interval with herald_set_log_partition_interval()
-- (sql/012), not by hand.
CREATE TABLE herald_log_partitioning (
    singleton          boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    -- Each partition covers this much time. Retention drops whole partitions, so it is the granularity of
    -- retention: with '1 day' and HERALD_RETENTION=30d, attempts are kept 30 to 31 days.
    partition_interval interval NOT NULL DEFAULT interval '1 day',
    -- Upper bound of webhook_logs_legacy, the table as it was before partitioning.
    legacy_bound       timestamptz NOT NULL
);

INSERT INTO herald_log_partitioning (legacy_bound)
VALUES (date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' + interval '2 days');

DO $$
BEGIN
    EXECUTE format('ALTER TABLE webhook_logs ADD CONSTRAINT webhook_logs_before_partitioning '
                   'CHECK (created_at < %L) NOT VALID',
                   (SELECT legacy_bound FROM herald_log_partitioning));
END
$$;
