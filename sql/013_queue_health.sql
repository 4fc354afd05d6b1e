-- 013 — Queue health: what a database administrator watches in a queue that lives in their database.
--
--   SELECT * FROM herald_queue_health();   -- rows, dead rows and size of Herald's hot tables
--   SELECT * FROM herald_xmin_horizon();   -- the oldest transaction (or slot) holding back vacuum, if any
--
-- `herald stats` prints both and warns about a long transaction; workers export them in /metrics
-- (herald_table_dead_rows, herald_table_bytes, herald_oldest_transaction_seconds, ...).
--
-- Why the horizon matters: vacuum can only remove a dead row once no transaction could still see it. One
-- session left "idle in transaction" for an hour keeps every claim's and every completion's old row versions
-- for that hour: webhook_deliveries and its indexes grow, and the claim slows down, although the queue is short.
-- That is the failure River's, Oban's and pgqueuer's users have met; it is not something a queue can fix, only
-- show early.

-- The tables Herald updates all day, with webhook_logs summed over its partitions.
CREATE FUNCTION herald_queue_health()
RETURNS TABLE (table_name text, live_rows bigint, dead_rows bigint, bytes bigint, last_vacuum timestamptz)
LANGUAGE sql STABLE AS $$
    SELECT t.name, sum(s.n_live_tup)::bigint, sum(s.n_dead_tup)::bigint,
           sum(pg_total_relation_size(s.relid))::bigint,
           max(greatest(s.last_autovacuum, s.last_vacuum))
      FROM unnest(ARRAY['webhook_deliveries', 'herald_endpoint_signals', 'webhook_configs', 'webhook_events',
                        'webhook_logs']) WITH ORDINALITY AS t(name, position)
      JOIN LATERAL (SELECT p.relid FROM pg_partition_tree(t.name::regclass) p
                    UNION SELECT t.name::regclass) r ON true
      JOIN pg_stat_user_tables s ON s.relid = r.relid
     GROUP BY t.name, t.position
     ORDER BY t.position
$$;

-- The oldest holder of the xmin horizon in this cluster: a session's open transaction or snapshot, a prepared
-- transaction, or a replication slot. `xid_age` is how many transactions it is behind; `seconds` how long it has
-- been open (NULL for a slot). Sessions of other users show only when the caller may read their activity
-- (pg_read_all_stats).
CREATE FUNCTION herald_xmin_horizon()
RETURNS TABLE (holder text, xid_age integer, seconds double precision, detail text)
LANGUAGE sql STABLE AS $$
    SELECT * FROM (
        SELECT format('session %s (%s, %s)', a.pid, coalesce(a.usename, '?'), coalesce(a.application_name, '')) AS holder,
               age(a.backend_xmin) AS xid_age,
               extract(epoch FROM now() - coalesce(a.xact_start, a.query_start))::double precision AS seconds,
               coalesce(a.state, '?') || coalesce(': ' || left(a.query, 100), '') AS detail
          FROM pg_stat_activity a
         WHERE a.backend_xmin IS NOT NULL AND a.pid <> pg_backend_pid()
        UNION ALL
        SELECT format('prepared transaction %s', p.gid), age(p.transaction), extract(epoch FROM now() - p.prepared)::double precision,
               'COMMIT PREPARED or ROLLBACK PREPARED it'
          FROM pg_prepared_xacts p
        UNION ALL
        SELECT format('replication slot %s', s.slot_name), greatest(age(s.xmin), age(s.catalog_xmin)), NULL::double precision,
               format('%s slot, %s', s.slot_type, CASE WHEN s.active THEN 'active' ELSE 'inactive: drop it if unused' END)
          FROM pg_replication_slots s
         WHERE s.xmin IS NOT NULL OR s.catalog_xmin IS NOT NULL
    ) h
    ORDER BY h.xid_age DESC NULLS LAST
    LIMIT 1
$$;

-- The queue's own vacuum settings. sql/003 set fillfactor 70 and vacuum at 1 % dead rows; the soak (1,000
-- deliveries/s, retention 2 minutes: scripts/bench --soak) showed vacuum starting often enough but finishing too
-- late: with the default cost delay (2 ms per 200 pages of work) a pass over webhook_deliveries took minutes, and
-- dead rows stood at 150,000 after 4 minutes while the table grew though the queue stayed short. Every update of
-- this table leaves a dead row (none is HOT, see docs/PERFORMANCE.md), so its vacuum runs unthrottled, like
-- herald_endpoint_signals' (sql/007); how much that lowers the dead-row figure is not measured yet. ANALYZE less
-- often: the claim's plans are fixed (index scans only) and do not depend on the statistics.
ALTER TABLE webhook_deliveries SET (autovacuum_vacuum_cost_delay = 0, autovacuum_analyze_scale_factor = 0.1);
-- webhook_configs: one row per endpoint, updated by every claim that folds signals (health, adaptive limit).
ALTER TABLE webhook_configs SET (autovacuum_vacuum_cost_delay = 0);
