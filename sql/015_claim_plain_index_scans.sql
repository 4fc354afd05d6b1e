-- 015 — The claim reads its indexes with plain index scans, never bitmap scans.
--
-- Found in the soak (scripts/bench --soak: 3,000 events/s offered while 2 workers deliver): the claim took 20 to
-- 40 ms instead of 3, nearly all of it counting one endpoint's requests in flight in webhook_deliveries_leased.
-- That partial index holds the rows in flight, but also an entry for every row that was in flight until vacuum
-- removes it: each completion leaves one behind. A plain index scan marks such an entry dead the first time it
-- meets it (once no transaction can see the row), so later scans skip it and inserts reclaim the space; a bitmap
-- scan never does, so every claim visited every leftover of the last vacuum cycle again, and with a large queue
-- a vacuum cycle is long. The planner chose the bitmap scan for the count. Plain scans are also what the rest of
-- the claim wants: every access is a short, ordered range.
ALTER FUNCTION herald_claim(integer, interval, text, integer, integer, integer, interval, interval)
    SET enable_bitmapscan = off;
