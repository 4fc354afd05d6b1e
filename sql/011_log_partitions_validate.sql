-- 011 — Partitioned webhook_logs, step 2 of 3: prove that every old row lies before the bound chosen in 010.
--
-- A transaction of its own: VALIDATE CONSTRAINT reads the whole table but takes only a SHARE UPDATE EXCLUSIVE
-- lock, so workers go on writing attempts while it runs (seconds per few million rows).
ALTER TABLE webhook_logs VALIDATE CONSTRAINT webhook_logs_before_partitioning;
