#!/usr/bin/env python3
"""Herald's benchmark (run it through scripts/bench, which installs and builds what this needs).

Every scenario runs the workers at Herald's DEFAULT settings: no HERALD_CONCURRENCY, no max_in_flight on a config,
no lease, poll or breaker settings. The only variables a worker gets are HERALD_ALLOWED_NETWORKS=127.0.0.0/8
(the receivers are on loopback, which Herald refuses by default: an SSRF guard, not a performance setting),
HERALD_LOG_LEVEL and HERALD_METRICS_ADDR=127.0.0.1:0 (metrics on, as by default, on a free port each). A scenario
that is about a setting says so when it runs, and why.

Scenarios (--scenario NAME, repeatable; all of them by default), each against one PostgreSQL (durable settings),
workers and receivers sharing this machine:
  hot           one endpoint created with `herald config create`, N events, 2 workers; then the same with the
                config's max_in_flight lifted to 5000, for the ratio
  cost          what one delivery writes (issue 11): a drain to one endpoint at defaults, with WAL bytes, full-page
                images and records, table and index growth, HOT updates and PostgreSQL CPU, per delivery
  many-configs  100,000 configs of which 1,000 receive events (Zipf over the 1,000), vs only the 1,000 present
  slow          nginx (echo module) answering after 50 ms and after 200 ms, over 100 endpoints; rate and peak RSS
  https         100 endpoints on an nginx TLS receiver (self-signed certificate, HERALD_CA_FILE), vs plain HTTP
  limited       a receiver that serves only N requests at once (N = 10, 30), 100 ms each, holding the rest
  chaos         scripts/chaos.py --at-defaults, with and without kills and a PostgreSQL restart
  drain         N events pre-inserted (signed, fan-out F, P-byte payloads), K worker processes (1, 2, 4) drain them
  naive         the one-delivery-per-transaction baseline (herald-naive-baseline), for the ratio
  latency       a producer (pgbench, one INSERT per transaction) at fixed rates; occurred_at -> nginx receipt
  memory        peak RSS of one worker holding 1,000 requests in flight (sets HERALD_CONCURRENCY: its subject)
  backlog       drain again with 1,000,000 not-yet-due deliveries and 5,000,000 webhook_logs rows present
  --soak MIN    (only when asked) steady offered load for MIN minutes with retention short (issue 11): delivered
                per minute, table and index sizes, dead rows and log partitions over time; one endpoint, or
                --soak-endpoints N with each event going to one of N endpoints at random
Standard library only; it talks to PostgreSQL through psql and pgbench.
"""
import argparse
import asyncio
import json
import glob
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

from harness import (ROOT, LimitedReceiver, Nginx, Postgres, free_port, pg_bin, proc_cpu, proc_status, serve_http,
                     worker_env)

BENCH = os.path.join(ROOT, ".bench")
BIN = os.environ.get("HERALD_BENCH_BIN", os.path.join(ROOT, ".build/release"))
DRAIN_TIMEOUT = [1800]  # seconds; --drain-timeout
METRICS_OFF = [False]  # --metrics-off
SCENARIOS = ["hot", "cost", "many-configs", "slow", "https", "limited", "chaos", "ordering", "drain", "naive", "latency",
             "memory", "backlog"]


def log(message):
    print(message, file=sys.stderr, flush=True)


class SlowReceiver(threading.Thread):
    """Answers every POST after one second: keeps a worker's requests in flight, to measure its memory."""

    def __init__(self):
        super().__init__(daemon=True)
        self.port = free_port()
        self.ready = threading.Event()

    def run(self):
        async def respond(headers):
            await asyncio.sleep(1)
            return b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

        serve_http(self.port, respond, self.ready)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}/slow"


def truncate(pg):
    pg.sql("TRUNCATE webhook_events, webhook_deliveries, webhook_logs, webhook_configs, herald_worker_heartbeats")


def reset(pg, url, fanout):
    """Empty tables and `fanout` configs as a user creates them: signed, every event type, no max_in_flight."""
    truncate(pg)
    for i in range(fanout):
        pg.sql(f"INSERT INTO webhook_configs (name, url, events, secret) "
               f"VALUES ('bench-{i}', '{url}', '{{*}}', 'bench-secret-{i}')")


def endpoints(pg, urls):
    """One config per URL, organization NULL, every event type, signed, no max_in_flight: each event goes to all."""
    values = ",".join(f"('endpoint-{i}', '{u}', '{{*}}', 'bench-secret-{i}')" for i, u in enumerate(urls))
    pg.script(f"INSERT INTO webhook_configs (name, url, events, secret) VALUES {values};")


def insert_events(pg, count, payload):
    # A data object of about `payload` bytes: an id, a counter and padding.
    pad = max(0, payload - 60)
    pg.sql(f"INSERT INTO webhook_events (event_type, data) SELECT 'message.sent', "
           f"jsonb_build_object('id', gen_random_uuid(), 'n', i, 'text', repeat('x', {pad})) "
           f"FROM generate_series(1, {count}) AS i")
    pg.sql("VACUUM ANALYZE webhook_deliveries")


def start_workers(pg, count, concurrency=None, extra=None):
    """`count` workers at default settings; `concurrency` (HERALD_CONCURRENCY) only when a scenario is about it."""
    extra = dict(extra or {})
    if METRICS_OFF[0]:
        extra["HERALD_METRICS_ADDR"] = "off"
    if concurrency:
        extra["HERALD_CONCURRENCY"] = str(concurrency)
    env = worker_env(pg.url, extra)
    # Their log (warnings and above) goes to .bench/worker-N.log: a pipe nobody reads would fill up after 64 KiB
    # and block the worker's next log line.
    procs = []
    for i in range(count):
        with open(os.path.join(BENCH, f"worker-{i}.log"), "a") as log_file:
            procs.append(subprocess.Popen([os.path.join(BIN, "herald"), "work", "--worker-id", f"bench-{i}"],
                                          env=env, stdout=subprocess.DEVNULL, stderr=log_file))
    return procs


def stop_workers(workers):
    for w in workers:
        w.send_signal(signal.SIGTERM)
    for w in workers:
        try:
            w.wait(timeout=20)
        except subprocess.TimeoutExpired:
            w.kill()


def wait_drained(pg, timeout, sample=None, remaining=None):
    deadline = time.time() + timeout
    session = pg.session()  # one connection for every poll: a new psql each time competed with the workers
    try:
        while time.time() < deadline:
            if sample:
                sample()
            # Index-backed on purpose: a count over the whole table would compete with what is being measured
            # (it cost 200 ms a poll once a million rows of backlog were present).
            if session.scalar(remaining or REMAINING) == 0:
                return True
            time.sleep(0.05)
        return False
    finally:
        session.close()


# Anything left to do now: first attempts waiting, requests in flight, or retries due within the hour.
REMAINING = """
    SELECT (EXISTS (SELECT 1 FROM webhook_deliveries WHERE status = 'pending' AND lease_token IS NULL AND attempts = 0)
         OR EXISTS (SELECT 1 FROM webhook_deliveries WHERE lease_token IS NOT NULL)
         OR EXISTS (SELECT 1 FROM webhook_configs c JOIN webhook_deliveries d ON d.config_id = c.id
                     WHERE d.status = 'pending' AND d.lease_token IS NULL AND d.attempts > 0
                       AND d.next_attempt_at < now() + interval '1 hour'))::int
"""
# The same without the per-config probes: for many configs and no large retry backlog (many-configs), where one
# probe per config would make the benchmark's own poll the heaviest query.
REMAINING_FEW_RETRIES = REMAINING.replace(
    "webhook_configs c JOIN webhook_deliveries d ON d.config_id = c.id", "webhook_deliveries d")


def drain(pg, receiver_url, events, fanout, payload, workers, concurrency, label="drain"):
    reset(pg, receiver_url, fanout)
    insert_events(pg, events, payload)
    return run_drain(pg, events * fanout, workers, label, concurrency=concurrency)


def run_drain(pg, expected, workers, label, concurrency=None, extra=None, remaining=None):
    """Starts `workers` workers, times them until nothing is left to do, checks every delivery was delivered."""
    pg_before = pg.cpu_seconds()
    started = time.time()
    procs = start_workers(pg, workers, concurrency, extra)
    rss = [0]

    def sample():
        rss[0] = max([rss[0]] + [proc_status(p.pid, "VmRSS") for p in procs])

    # Generous: at defaults a drain may be slow, and that is what is measured.
    if not wait_drained(pg, timeout=DRAIN_TIMEOUT[0], sample=sample, remaining=remaining):
        stop_workers(procs)
        raise SystemExit(f"{label}: not drained in time")
    elapsed = time.time() - started
    worker_cpu = sum(proc_cpu(p.pid) for p in procs)
    worker_rss = max([rss[0]] + [proc_status(p.pid, "VmHWM") for p in procs])
    pg_cpu = pg.cpu_seconds() - pg_before
    stop_workers(procs)
    delivered = pg.scalar("SELECT count(*) FROM webhook_deliveries WHERE status = 'delivered' "
                          "AND next_attempt_at < now() + interval '1 hour'")
    if delivered != expected:
        raise SystemExit(f"{label}: {delivered} of {expected} delivered")
    return {
        "scenario": label, "workers": workers, "concurrency": concurrency or "default", "deliveries": expected,
        "seconds": round(elapsed, 2), "per_second": round(expected / elapsed),
        "worker_cpu_s_per_10k": round(worker_cpu / expected * 10000, 2),
        "postgres_cpu_share": round(pg_cpu / (elapsed * os.cpu_count()), 2), "postgres_cpu_s": round(pg_cpu, 3),
        "peak_rss_mib": round(worker_rss / 2**20, 1),
    }


# --- hot: one endpoint as a user creates it --------------------------------------------------------------------

def hot(pg, receiver_url, events, payload, workers):
    truncate(pg)
    # Created the way the README tells a user to: `herald config create`, which sets no max_in_flight.
    subprocess.run([os.path.join(BIN, "herald"), "config", "create", "--database-url", pg.url, "--name", "hot",
                    "--url", receiver_url, "--events", "*", "--secret", "bench-secret-hot"],
                   check=True, capture_output=True)
    insert_events(pg, events, payload)
    log(f"  defaults: {events:,} events, {workers} workers")
    at_defaults = run_drain(pg, events, workers, "hot, defaults")
    log(f"    {at_defaults['per_second']:,}/s; deliveries per worker: {deliveries_per_worker(pg)}")
    pg.sql("TRUNCATE webhook_events, webhook_deliveries, webhook_logs, herald_worker_heartbeats")
    pg.sql("UPDATE webhook_configs SET max_in_flight = 5000")
    log("  max_in_flight lifted: this run sets the config's max_in_flight = 5000 (the setting this comparison is "
        "about: how much the per-endpoint cap costs a fast endpoint)")
    insert_events(pg, events, payload)
    lifted = run_drain(pg, events, workers, "hot, max_in_flight 5000")
    log(f"    {lifted['per_second']:,}/s; deliveries per worker: {deliveries_per_worker(pg)}")
    return [at_defaults, lifted]


def deliveries_per_worker(pg):
    """How the deliveries were shared between the workers, most first. At one hot endpoint at defaults one worker
    makes nearly all of them, and sharing them out was measured slower (docs/PERFORMANCE.md, "Fifth session")."""
    return pg.sql("SELECT string_agg(n::text, ' / ' ORDER BY n DESC) FROM "
                  "(SELECT count(*) AS n FROM webhook_logs WHERE outcome = 'delivered' GROUP BY worker) x")


# --- cost: what one delivery writes (issue 11) ----------------------------------------------------------------

COST_TABLES = ["webhook_deliveries", "webhook_logs", "herald_endpoint_signals", "webhook_events"]


def queue_health(pg):
    """Rows, dead rows and bytes (heap, indexes and TOAST; webhook_logs over its partitions) of Herald's hot
    tables, as `herald stats` and /metrics report them: herald_queue_health() (sql/013)."""
    tables = {}
    for line in pg.sql("SELECT table_name, live_rows, dead_rows, bytes FROM herald_queue_health()").splitlines():
        name, live, dead, size = line.split("|")
        tables[name] = {"live_rows": int(live or 0), "dead_rows": int(dead or 0), "bytes": int(size or 0)}
    return tables


def write_counters(pg):
    time.sleep(1.2)  # backends report table and WAL statistics at most once a second
    row = pg.sql("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn, wal_records, wal_fpi, pg_current_wal_lsn() "
                 "FROM pg_stat_wal").split("|")
    counters = {"wal_bytes": int(float(row[0])), "wal_records": int(row[1]), "wal_fpi": int(row[2]), "lsn": row[3]}
    health = queue_health(pg)
    for table in COST_TABLES:
        counters[f"{table}_bytes"] = health[table]["bytes"]
    upd = pg.sql("SELECT coalesce(sum(n_tup_upd), 0), coalesce(sum(n_tup_hot_upd), 0) FROM pg_stat_user_tables "
                 "WHERE relname = 'webhook_deliveries'").split("|")
    counters["deliveries_updates"], counters["deliveries_hot_updates"] = int(upd[0]), int(upd[1])
    return counters


def cost(pg, receiver_url, events, payload, workers):
    """A drain of `events` events to one endpoint created with `herald config create`, at defaults. Counted from
    after the INSERT and its fan-out (the application's part) to the end of the drain, following a CHECKPOINT
    as any steady state does every few minutes: full-page images are part of what a delivery costs."""
    truncate(pg)
    subprocess.run([os.path.join(BIN, "herald"), "config", "create", "--database-url", pg.url, "--name", "cost",
                    "--url", receiver_url, "--events", "*", "--secret", "bench-secret-cost"],
                   check=True, capture_output=True)
    insert_events(pg, events, payload)
    pg.sql("CHECKPOINT")
    before = write_counters(pg)
    run = run_drain(pg, events, workers, "cost: drain to one endpoint")
    after = write_counters(pg)
    pg_cpu = run["postgres_cpu_s"]
    delta = {k: after[k] - before[k] for k in after if k != "lsn"}
    # Which records the bytes are (pg_waldump's own summary), for the write-up in docs/PERFORMANCE.md.
    dump = subprocess.run([pg_bin("pg_waldump"), "-p", os.path.join(pg.directory, "data", "pg_wal"), "-s",
                           before["lsn"], "-e", after["lsn"], "--stats=record"], capture_output=True, text=True)
    top = sorted((l for l in dump.stdout.splitlines()[2:] if "/" in l.split()[0:1][0] if l.split()),
                 key=lambda l: -float(l.split()[-2]) if l.split()[-2].replace(".", "").isdigit() else 0)
    run["wal_top_records"] = top[:12]
    log("\n".join(["    WAL by record type (pg_waldump --stats=record):"] + ["      " + l for l in top[:12]]))
    n = events
    run.update({
        "wal_bytes_per_delivery": round(delta["wal_bytes"] / n), "wal_records_per_delivery": round(delta["wal_records"] / n, 1),
        "wal_fpi_per_1k": round(delta["wal_fpi"] / n * 1000, 1),
        "postgres_cpu_us_per_delivery": round(pg_cpu / n * 1e6),
        "hot_update_share": round(delta["deliveries_hot_updates"] / max(delta["deliveries_updates"], 1), 3),
        "deliveries_updates_per_delivery": round(delta["deliveries_updates"] / n, 2),
        "growth_bytes_per_delivery": {t: round(delta[f"{t}_bytes"] / n) for t in COST_TABLES},
        "log_row_bytes": pg.scalar("SELECT coalesce(avg(pg_column_size(l.*)), 0)::int FROM webhook_logs l"),
    })
    log(f"    {run['per_second']:,}/s, {run['wal_bytes_per_delivery']:,} WAL bytes and "
        f"{run['postgres_cpu_us_per_delivery']} µs PostgreSQL CPU per delivery")
    return [run]


# --- ordering: ordered delivery per key (issue 13) ----------------------------------------------------------------

def ordering(pg, receiver_url, keys, per_key, single_key_events, payload, workers):
    """The same events to one config with ordering = 'none', then 'key': `keys` keys × `per_key` events, inserted
    interleaved; then one key alone, bounded by one request at a time."""
    pad = max(0, payload - 60)
    runs = []
    for mode, label in (("none", "ordering: unordered config"), ("key", "ordering: ordered config")):
        truncate(pg)
        pg.sql(f"INSERT INTO webhook_configs (name, url, events, secret, ordering) "
               f"VALUES ('ordering', '{receiver_url}', '{{*}}', 'bench-secret', '{mode}')")
        pg.sql(f"INSERT INTO webhook_events (event_type, data, ordering_key) SELECT 'contact.updated', "
               f"jsonb_build_object('n', n, 'text', repeat('x', {pad})), 'contact:' || k "
               f"FROM generate_series(1, {per_key}) n, generate_series(1, {keys}) k ORDER BY n, k")
        pg.sql("VACUUM ANALYZE webhook_deliveries")
        log(f"  {label}: {keys:,} keys x {per_key} events, {workers} workers")
        run = run_drain(pg, keys * per_key, workers, f"{label}, {keys:,} keys x {per_key}")
        log(f"    {run['per_second']:,}/s")
        runs.append(run)
    truncate(pg)
    pg.sql(f"INSERT INTO webhook_configs (name, url, events, secret, ordering) "
           f"VALUES ('ordering', '{receiver_url}', '{{*}}', 'bench-secret', 'key')")
    pg.sql(f"INSERT INTO webhook_events (event_type, data, ordering_key) SELECT 'contact.updated', "
           f"jsonb_build_object('n', n), 'contact:1' FROM generate_series(1, {single_key_events}) n ORDER BY n")
    log(f"  ordering: one key, {single_key_events:,} events (one request at a time), {workers} workers")
    run = run_drain(pg, single_key_events, workers, f"ordering: one key x {single_key_events:,}")
    log(f"    {run['per_second']:,}/s")
    runs.append(run)
    return runs


# --- many-configs: 100,000 configs, 1,000 active, Zipf ---------------------------------------------------------

def zipf_ranks(count, active, seed, exponent=1.0):
    rng = random.Random(seed)
    weights = [1 / (k ** exponent) for k in range(1, active + 1)]
    return rng.choices(range(1, active + 1), weights=weights, k=count)


def many_configs(pg, receiver_url, total, active, events, payload, workers, seed):
    """Each active config is the one config of its own organization, so an event (organization_id of a config
    picked Zipf-wise) goes to exactly one endpoint. The idle configs belong to other organizations and receive
    nothing. They are inserted after the events: fan-out cost is not what this measures, the claim's is."""
    ranks = zipf_ranks(events, active, seed)
    top = max(ranks.count(1), 1)
    pad = max(0, payload - 60)
    runs = []
    for present in (active, total):
        truncate(pg)
        pg.sql(f"INSERT INTO webhook_configs (organization_id, name, url, events, secret) "
               f"SELECT md5('org-' || k)::uuid, 'active-' || k, '{receiver_url}', '{{*}}', 'bench-secret-' || k "
               f"FROM generate_series(1, {active}) AS k")
        pg.script(f"INSERT INTO webhook_events (event_type, organization_id, data) "
                  f"SELECT 'message.sent', md5('org-' || k)::uuid, "
                  f"jsonb_build_object('id', gen_random_uuid(), 'n', n, 'text', repeat('x', {pad})) "
                  f"FROM unnest('{{{','.join(map(str, ranks))}}}'::int[]) WITH ORDINALITY AS t(k, n);")
        if present > active:
            started = time.time()
            pg.sql(f"INSERT INTO webhook_configs (organization_id, name, url, events, secret) "
                   f"SELECT md5('idle-org-' || k)::uuid, 'idle-' || k, '{receiver_url}/idle/' || k, '{{*}}', "
                   f"'bench-secret-idle-' || k FROM generate_series(1, {present - active}) AS k")
            log(f"  {present - active:,} idle configs inserted in {time.time() - started:.1f} s")
        pg.sql("VACUUM ANALYZE")
        log(f"  {present:,} configs present, {active:,} receiving {events:,} events (Zipf; the busiest gets "
            f"{top:,}), {workers} workers")
        run = run_drain(pg, events, workers, f"many-configs, {present:,} configs", remaining=REMAINING_FEW_RETRIES)
        run["configs"] = present
        log(f"    {run['per_second']:,}/s")
        runs.append(run)
    return runs


# --- slow receivers --------------------------------------------------------------------------------------------

def drain_endpoints(pg, urls, events, payload, workers, label, extra=None):
    """One config per URL, `events` events that each go to all of them, drained by `workers` workers."""
    truncate(pg)
    endpoints(pg, urls)
    insert_events(pg, events, payload)
    return run_drain(pg, events * len(urls), workers, label, extra=extra)


def slow(pg, nginx, delays_ms, endpoint_count, deliveries, payload, workers):
    runs = []
    events = max(1, deliveries // endpoint_count)
    for delay in delays_ms:
        log(f"  answering after {delay} ms: {events * endpoint_count:,} deliveries over {endpoint_count} endpoints, "
            f"{workers} workers")
        run = drain_endpoints(pg, [nginx.url_for(f"/d{delay}/e{i}") for i in range(endpoint_count)], events, payload,
                              workers, f"slow receivers, {delay} ms")
        run.update(delay_ms=delay, endpoints=endpoint_count)
        log(f"    {run['per_second']:,}/s, peak RSS {run['peak_rss_mib']} MiB")
        runs.append(run)
    return runs


# --- https -----------------------------------------------------------------------------------------------------

def https(pg, tls_nginx, plain_nginx, endpoint_count, deliveries, payload, workers):
    runs = []
    events = max(1, deliveries // endpoint_count)
    for label, receiver, extra in (("https", tls_nginx, {"HERALD_CA_FILE": tls_nginx.ca_file}),
                                   ("http", plain_nginx, None)):
        log(f"  {label}: {events * endpoint_count:,} deliveries over {endpoint_count} endpoints, {workers} workers"
            + (" (HERALD_CA_FILE: the receiver's self-signed certificate)" if extra else ""))
        run = drain_endpoints(pg, [receiver.url_for(f"/e{i}") for i in range(endpoint_count)], events, payload,
                              workers, f"{label}, {endpoint_count} endpoints", extra=extra)
        run.update(protocol=label, endpoints=endpoint_count)
        log(f"    {run['per_second']:,}/s")
        runs.append(run)
    return runs


# --- limited receiver ------------------------------------------------------------------------------------------

def limited(pg, limits, seconds, warmup, payload, workers, work_s=0.1):
    runs = []
    for limit in limits:
        receiver = LimitedReceiver(limit, work_s)
        receiver.start()
        receiver.ready.wait()
        capacity = limit / work_s
        events = int(capacity * seconds * 1.5) + 200  # always a backlog
        reset(pg, receiver.url, 1)
        insert_events(pg, events, payload)
        log(f"  serves {limit} at once, {work_s * 1000:.0f} ms each (capacity {capacity:,.0f}/s): {seconds} s with "
            f"{events:,} events waiting, {workers} workers")
        procs = start_workers(pg, workers)
        started = time.time()
        time.sleep(seconds)
        ended = time.time()
        stop_workers(procs)
        window = f"created_at >= to_timestamp({started + warmup}) AND created_at < to_timestamp({ended})"
        delivered_all, delivered, attempts, no_answer = [int(x) for x in pg.sql(
            f"SELECT count(*) FILTER (WHERE outcome = 'delivered' AND created_at < to_timestamp({ended})), "
            f"count(*) FILTER (WHERE outcome = 'delivered' AND {window}), "
            f"count(*) FILTER (WHERE outcome <> 'lost' AND {window}), "
            f"count(*) FILTER (WHERE outcome IN ('retry', 'failed') AND response_status IS NULL AND {window}) "
            f"FROM webhook_logs").split("|")]
        error = pg.sql(f"SELECT coalesce(min(error), '') FROM webhook_logs WHERE response_status IS NULL AND {window}")
        answered = sum(1 for t in receiver.answered if started + warmup <= t < ended)
        rate = delivered / (ended - started - warmup)
        run = {"scenario": f"limited receiver, N={limit}", "limit": limit, "capacity_per_second": capacity,
               "seconds": seconds, "warmup_seconds": warmup, "workers": workers,
               "per_second_overall": round(delivered_all / (ended - started)), "per_second": round(rate),
               "share_of_capacity": round(rate / capacity, 2),
               "receiver_answers_per_second": round(answered / (ended - started - warmup)),
               "attempts_after_warmup": attempts, "timed_out_after_warmup": no_answer,
               "timed_out_share": round(no_answer / attempts, 3) if attempts else 0.0,
               "queued_at_receiver_peak": receiver.waiting_peak, "sample_error": error[:120]}
        log(f"    {rate:,.0f}/s after {warmup} s ({rate / capacity:.0%} of capacity), "
            f"{run['timed_out_share']:.1%} of attempts without an answer, up to {receiver.waiting_peak} queued")
        runs.append(run)
    return runs


# --- chaos -----------------------------------------------------------------------------------------------------

def chaos(events, timeout, kill_every):
    runs = []
    for faults in (True, False):
        out = os.path.join(BENCH, f"chaos-{'faults' if faults else 'clean'}.json")
        if os.path.exists(out):
            os.remove(out)
        command = [sys.executable, os.path.join(ROOT, "scripts/chaos.py"), "--at-defaults", "--events", str(events),
                   "--timeout", str(timeout), "--kill-every", str(kill_every), "--json", out]
        if not faults:
            command.append("--no-faults")
        log(f"  {'with SIGKILLs and a PostgreSQL restart' if faults else 'without faults'}: {events:,} events x 2")
        env = dict(os.environ, HERALD_BIN=os.path.join(BIN, "herald"))
        result = subprocess.run(command, env=env, capture_output=True, text=True)
        if not os.path.exists(out):
            raise SystemExit("chaos.py failed:\n" + result.stdout + result.stderr)
        with open(out) as f:
            run = json.load(f)
        run["scenario"] = "chaos, " + ("faults" if faults else "no faults")
        log(f"    {run['seconds']} s, lost {run['lost']}, {run['kills']} kills, "
            f"{'PASS' if run['ok'] else 'FAIL'}")
        runs.append(run)
    return runs


# --- the earlier scenarios, now at defaults --------------------------------------------------------------------

def naive(pg, receiver_url, events, payload, workers):
    reset(pg, receiver_url, 1)
    insert_events(pg, events, payload)
    env = dict(os.environ, DATABASE_URL=pg.url)
    started = time.time()
    procs = [subprocess.Popen([os.path.join(BIN, "herald-naive-baseline")], env=env, stdout=subprocess.DEVNULL)
             for _ in range(workers)]
    for p in procs:
        p.wait()
    elapsed = time.time() - started
    delivered = pg.scalar("SELECT count(*) FROM webhook_deliveries WHERE status = 'delivered'")
    if delivered != events:
        raise SystemExit(f"naive: {delivered} of {events} delivered")
    return {"scenario": "naive baseline", "workers": workers, "concurrency": 1, "deliveries": events,
            "seconds": round(elapsed, 2), "per_second": round(events / elapsed)}


def latency(pg, nginx, rate, seconds, workers, concurrency):
    reset(pg, nginx.url, 1)
    script = os.path.join(BENCH, "produce.sql")
    with open(script, "w") as f:
        f.write("INSERT INTO webhook_events (event_type, data) VALUES ('contact.created', "
                "jsonb_build_object('id', gen_random_uuid(), 'text', repeat('x', 240)));\n")
    offset = nginx.offset()
    procs = start_workers(pg, workers, concurrency)
    time.sleep(0.5)
    clients = max(2, min(8, rate // 500))
    subprocess.run([pg_bin("pgbench"), "-n", "-f", script, "-R", str(rate), "-T", str(seconds), "-c", str(clients),
                    "-j", "2", "-h", "127.0.0.1", "-p", pg.port, "-U", "herald", "herald"],
                   check=True, capture_output=True, env=pg.env)
    wait_drained(pg, timeout=120)
    stop_workers(procs)
    receipts = nginx.receipts(offset)
    occurred = {}
    for line in pg.sql("SELECT d.id || ' ' || extract(epoch FROM e.occurred_at) FROM webhook_deliveries d "
                       "JOIN webhook_events e ON e.id = d.event_id").splitlines():
        delivery, at = line.split()
        occurred[delivery] = float(at)
    samples = sorted((receipts[d] - occurred[d]) * 1000 for d in occurred if d in receipts)
    if not samples:
        raise SystemExit("latency: no receipts logged")

    def pct(p):
        return round(samples[min(len(samples) - 1, int(p / 100 * len(samples)))], 1)

    return {"scenario": "latency", "offered_per_second": rate, "achieved_per_second": round(len(samples) / seconds),
            "events": len(samples), "p50_ms": pct(50), "p95_ms": pct(95), "p99_ms": pct(99),
            "max_ms": round(samples[-1], 1)}


# --- soak: months of operation squeezed into minutes (issue 11) -------------------------------------------------

SOAK_TABLES = ["webhook_deliveries", "webhook_events", "webhook_logs", "herald_endpoint_signals", "webhook_configs"]


def soak_sample(pg):
    sample = {"at": time.time()}
    health = queue_health(pg)
    for table in SOAK_TABLES:
        sample[table] = dict(health[table], mib=round(health[table]["bytes"] / 2**20, 1))
    sample["log_partitions"] = pg.scalar("SELECT count(*) FROM herald_log_partitions WHERE upper_bound <= now()")
    sample["oldest_log"] = pg.sql("SELECT coalesce(extract(epoch FROM now() - min(lower_bound))::int, 0) "
                                  "FROM herald_log_partitions WHERE lower_bound > '-infinity'")
    sample["pending"] = pg.scalar("SELECT count(*) FROM webhook_deliveries WHERE status = 'pending'")
    return sample


def soak(pg, nginx, minutes, rate, workers, payload, endpoint_count=1):
    """One endpoint as a user creates it (or `endpoint_count`, each event to one of them at random), `rate`
    events/s offered by pgbench for `minutes` (ten per transaction), 2 workers at defaults but for the two
    settings this scenario is about: HERALD_RETENTION=2m and 1-minute webhook_logs partitions (`herald migrate
    --log-partition-interval 1m`), so that retention cuts happen every minute of the run instead of once a day."""
    truncate(pg)
    # Minute partitions from this minute on: the (empty) daily partition holding today goes first.
    for name in pg.sql("SELECT partition FROM herald_log_partitions").split():
        pg.sql(f"DROP TABLE {name}")
    subprocess.run([os.path.join(BIN, "herald"), "migrate", "--database-url", pg.url, "--sql-dir",
                    os.path.join(ROOT, "sql"), "--log-partition-interval", "1m"], check=True, capture_output=True)
    organization = "NULL"
    if endpoint_count == 1:
        subprocess.run([os.path.join(BIN, "herald"), "config", "create", "--database-url", pg.url, "--name", "soak",
                        "--url", nginx.url, "--events", "*", "--secret", "bench-secret-soak"],
                       check=True, capture_output=True)
    else:
        # Each endpoint is its organization's one config (as `herald config create --organization` makes it), and
        # each event names one of those organizations at random: one delivery per event, spread evenly.
        pg.sql(f"INSERT INTO webhook_configs (organization_id, name, url, events, secret) "
               f"SELECT gen_random_uuid(), 'soak-' || i, '{nginx.url}?endpoint=' || i, '{{*}}', 'bench-secret-soak' "
               f"FROM generate_series(1, {endpoint_count}) AS i")
        organizations = pg.sql("SELECT organization_id FROM webhook_configs ORDER BY name").split()
        organization = ("(ARRAY['" + "','".join(organizations) + "']::uuid[])"
                        f"[1 + floor(random() * {endpoint_count})::int]")
    log(f"  settings: HERALD_RETENTION=2m and 1-minute log partitions (what this scenario is about), "
        f"{rate:,} events/s offered for {minutes} min to {endpoint_count} endpoint{'s' if endpoint_count > 1 else ''}, "
        f"{workers} workers")
    # Ten events per transaction: one INSERT per transaction tops out near 1,600 commits/s on this machine next to
    # the workers (each commit waits for its WAL flush: see latency), below the rate this scenario offers.
    script = os.path.join(BENCH, "soak.sql")
    with open(script, "w") as f:
        f.write("INSERT INTO webhook_events (event_type, organization_id, data) SELECT 'contact.created', "
                f"{organization}, jsonb_build_object('id', gen_random_uuid(), 'text', repeat('x', {max(0, payload - 60)})) "
                "FROM generate_series(1, 10);\n")
    procs = start_workers(pg, workers, extra={"HERALD_RETENTION": "2m"})
    log_offset = nginx.offset()
    producer = subprocess.Popen([pg_bin("pgbench"), "-n", "-f", script, "-R", str(rate / 10), "-T", str(minutes * 60),
                                 "-c", "4", "-j", "2", "-h", "127.0.0.1", "-p", pg.port, "-U", "herald", "herald"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=pg.env, text=True)
    samples = []
    started = time.time()
    cpu_before = pg.cpu_seconds()
    try:
        for minute in range(1, minutes + 1):
            time.sleep(max(0, started + minute * 60 - time.time()))
            time.sleep(1.1)  # nginx flushes its log once a second
            with open(nginx.log_path, "rb") as f:
                f.seek(log_offset)
                chunk = f.read()
            delivered = chunk.count(b"\n")
            log_offset += len(chunk)
            sample = soak_sample(pg)
            sample.update({"minute": minute, "delivered": delivered})
            samples.append(sample)
            d, l = sample["webhook_deliveries"], sample["webhook_logs"]
            log(f"    minute {minute}: {delivered:,} delivered, {sample['pending']:,} pending; deliveries "
                f"{d['mib']} MiB ({d['dead_rows']:,} dead), logs {l['mib']} MiB in partitions back "
                f"{sample['oldest_log']} s")
    finally:
        out, _ = producer.communicate(timeout=120)
        pg_cpu = pg.cpu_seconds() - cpu_before
        stop_workers(procs)
    offered = next((line for line in out.splitlines() if line.startswith("number of transactions actually")), "")
    # The first retention cut: the first sample whose oldest log partition is younger than the run.
    cut = next((i for i, s_ in enumerate(samples) if 0 < int(s_["oldest_log"]) < s_["at"] - started), None)
    produced = re.search(r"processed: (\d+)", offered)
    result = {"scenario": "soak", "minutes": minutes, "offered_per_second": rate, "workers": workers,
              "endpoints": endpoint_count, "events_inserted": int(produced.group(1)) * 10 if produced else None,
              "delivered_total": sum(x["delivered"] for x in samples),
              "producer": offered, "samples": samples, "postgres_cpu_s": round(pg_cpu, 1),
              "first_cut_minute": samples[cut]["minute"] if cut is not None else None}
    if cut is not None and cut + 1 < len(samples):
        after, last = samples[cut + 1], samples[-1]

        def total(sample):
            return sum(sample[t]["mib"] for t in SOAK_TABLES)

        result.update({"compare_minute": after["minute"], "size_ratio": round(total(last) / max(total(after), 0.1), 3),
                       "throughput_ratio": round(last["delivered"] / max(after["delivered"], 1), 3)})
    return result


def memory(pg, in_flight, events):
    receiver = SlowReceiver()
    receiver.start()
    receiver.ready.wait()
    reset(pg, receiver.url, 1)
    log(f"  this scenario sets HERALD_CONCURRENCY={in_flight} and the config's max_in_flight = {in_flight}: it is "
        f"about those settings (memory with {in_flight:,} requests in flight in one worker)")
    pg.sql(f"UPDATE webhook_configs SET max_in_flight = {in_flight}")
    insert_events(pg, events, 300)
    procs = start_workers(pg, 1, in_flight)
    peak = [0]

    def sample():
        peak[0] = max(peak[0], proc_status(procs[0].pid, "VmRSS"))

    wait_drained(pg, timeout=300, sample=sample)
    hwm = proc_status(procs[0].pid, "VmHWM")
    stop_workers(procs)
    return {"scenario": "memory", "in_flight": in_flight, "deliveries": events,
            "peak_rss_mib": round(max(hwm, peak[0]) / 2**20, 1)}


def add_backlog(pg, deliveries, logs):
    log(f"  adding a backlog: {deliveries:,} pending deliveries due tomorrow, {logs:,} webhook_logs rows")
    pg.sql(f"""
        BEGIN;
        SET LOCAL herald.fan_out = 'off';
        INSERT INTO webhook_events (id, event_type, data)
        SELECT gen_random_uuid(), 'message.sent', jsonb_build_object('n', i) FROM generate_series(1, {deliveries}) i;
        INSERT INTO webhook_deliveries (event_id, config_id, next_attempt_at, attempts)
        SELECT e.id, (SELECT id FROM webhook_configs LIMIT 1), now() + interval '1 day', 1
          FROM webhook_events e WHERE NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = e.id);
        COMMIT;
        INSERT INTO webhook_logs (delivery_id, event_id, config_id, event_type, attempt, outcome, payload,
                                  response_status, response_body, duration_ms, created_at)
        SELECT gen_random_uuid(), gen_random_uuid(), gen_random_uuid(), 'message.sent', 1, 'delivered',
               repeat('x', 300), 200, 'ok', 3, now() - interval '1 day'
          FROM generate_series(1, {logs});
    """)
    pg.sql("VACUUM ANALYZE")


def int_list(text):
    return [int(x) for x in text.split(",") if x]


def positive(text):
    """An argparse type: a whole number of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main():
    parser = argparse.ArgumentParser(
        description="Herald's benchmark, at default worker and config settings; see docs/PERFORMANCE.md.",
        epilog="Scenarios: " + ", ".join(SCENARIOS))
    parser.add_argument("--quick", action="store_true", help="small sizes: a run of about a minute (used by CI)")
    parser.add_argument("--scenario", action="append", choices=SCENARIOS, metavar="NAME",
                        help="run only this scenario (repeatable; default: all): " + ", ".join(SCENARIOS))
    parser.add_argument("--scenario-workers", type=int, default=2,
                        help="worker processes in hot, many-configs, slow, https, limited (default 2)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--payload", type=int, default=300, help="approximate data bytes per event (default 300)")
    parser.add_argument("--drain-timeout", type=int, default=1800,
                        help="give up on a drain after this many seconds (default 1800)")
    parser.add_argument("--metrics-off", action="store_true",
                        help="run workers with HERALD_METRICS_ADDR=off (default: metrics on, as Herald's default, "
                             "which also samples the backlog every 5 s)")
    group = parser.add_argument_group("hot")
    group.add_argument("--hot-events", type=int, default=20_000, help="default 20,000")
    group = parser.add_argument_group("cost")
    group.add_argument("--cost-events", type=int, default=20_000, help="default 20,000")
    group = parser.add_argument_group("ordering")
    group.add_argument("--ordering-keys", type=int, default=1_000, help="default 1,000")
    group.add_argument("--ordering-per-key", type=int, default=20, help="default 20")
    group.add_argument("--ordering-single", type=int, default=2_000, help="events of the one-key run (default 2,000)")
    group = parser.add_argument_group("many-configs")
    group.add_argument("--configs", type=int, default=100_000, help="configs present (default 100,000)")
    group.add_argument("--active-configs", type=int, default=1_000, help="of which receive events (default 1,000)")
    group.add_argument("--many-events", type=int, default=20_000, help="events, one delivery each (default 20,000)")
    group = parser.add_argument_group("slow")
    group.add_argument("--slow-delays", default="50,200", help="receiver delays in ms (default 50,200)")
    group.add_argument("--slow-endpoints", type=int, default=100, help="default 100")
    group.add_argument("--slow-deliveries", type=int, default=40_000, help="per delay (default 40,000)")
    group = parser.add_argument_group("https")
    group.add_argument("--https-endpoints", type=int, default=100, help="default 100")
    group.add_argument("--https-deliveries", type=int, default=20_000, help="default 20,000")
    group = parser.add_argument_group("limited")
    group.add_argument("--limits", default="10,30", help="requests the receiver serves at once (default 10,30)")
    group.add_argument("--limited-seconds", type=int, default=90, help="run time per limit (default 90)")
    group.add_argument("--limited-warmup", type=int, default=30,
                       help="seconds left out of the rate and timeout share (default 30)")
    group = parser.add_argument_group("chaos")
    group.add_argument("--chaos-events", type=int, default=20_000, help="events x 2 configs (default 20,000)")
    group.add_argument("--chaos-kill-every", type=float, default=1.0,
                       help="mean seconds between SIGKILLs (default 1, chaos.py's own)")
    group.add_argument("--chaos-timeout", type=int, default=1800, help="give up after (default 1800 s)")
    group = parser.add_argument_group("drain, naive, latency, memory, backlog")
    group.add_argument("--events", type=int, default=100_000, help="events per drain run (default 100,000)")
    group.add_argument("--workers", default="1,2,4", help="worker process counts to drain with (default 1,2,4)")
    group.add_argument("--concurrency", type=int, default=None,
                       help="set HERALD_CONCURRENCY in drain and latency (default: not set, Herald's default)")
    group.add_argument("--fanout", type=int, default=1, help="configs each event goes to (default 1)")
    group.add_argument("--rates", default="200,1000,5000", help="offered events/s for latency (default 200,1000,5000)")
    group.add_argument("--latency-seconds", type=int, default=10, help="producer run time per rate (default 10)")
    group.add_argument("--naive-events", type=int, default=5_000, help="events for the naive baseline (default 5,000)")
    group.add_argument("--backlog-deliveries", type=int, default=1_000_000)
    group.add_argument("--backlog-logs", type=int, default=5_000_000)
    group.add_argument("--skip-backlog", action="store_true", help="leave out the backlog scenario")
    parser.add_argument("--soak", type=int, default=0, metavar="MINUTES",
                        help="run only the soak scenario, for MINUTES minutes (issue 11; try 10)")
    parser.add_argument("--soak-rate", type=int, default=3000, help="offered events/s in the soak (default 3,000)")
    parser.add_argument("--soak-endpoints", type=positive, default=1,
                        help="endpoints the soak's events are spread over, at random (default 1: one hot endpoint)")
    parser.add_argument("--profile", action="store_true",
                        help="print the top statements by total time (pg_stat_statements) after the drain runs")
    parser.add_argument("--output", default=os.path.join(BENCH, "results.json"))
    args = parser.parse_args()
    if args.quick:
        # Small enough for scripts/test; every scenario still runs and prints its rows. Nothing is timed.
        args.hot_events = args.cost_events = 500
        args.ordering_keys, args.ordering_per_key, args.ordering_single = 50, 4, 50
        args.configs, args.active_configs, args.many_events = 10_000, 100, 300
        args.slow_deliveries, args.https_deliveries = 1_000, 1_000
        args.limited_seconds, args.limited_warmup = 4, 1
        args.chaos_events = 100
        args.events, args.workers, args.naive_events = 500, "2", 200
        args.rates, args.latency_seconds = "200", 2
        args.backlog_deliveries, args.backlog_logs = 20_000, 50_000
    DRAIN_TIMEOUT[0] = args.drain_timeout
    METRICS_OFF[0] = args.metrics_off
    scenarios = args.scenario or ([] if args.soak else SCENARIOS)
    if args.skip_backlog and "backlog" in scenarios:
        scenarios = [s for s in scenarios if s != "backlog"]
    workers = int_list(args.workers)
    best = max(workers)
    k = args.scenario_workers

    os.makedirs(BENCH, exist_ok=True)
    for old_log in glob.glob(os.path.join(BENCH, "worker-*.log")):
        os.remove(old_log)
    if args.metrics_off:
        log("note: --metrics-off: workers run with HERALD_METRICS_ADDR=off (no /metrics, no backlog sampling)")
    if args.concurrency:
        log(f"note: --concurrency sets HERALD_CONCURRENCY={args.concurrency} in drain and latency (asked for)")
    # Under /tmp, not the checkout: PostgreSQL runs as another user, who may not reach a private home folder.
    pg_dir = tempfile.mkdtemp(prefix="herald-bench-pg-")
    log("starting PostgreSQL and nginx")
    pg = Postgres(pg_dir)
    receivers = []
    results = {"machine": {"cpus": os.cpu_count(), "kernel": os.uname().release}, "args": vars(args),
               "scenarios": scenarios, "runs": []}
    runs = results["runs"]
    try:
        pg.migrate(os.path.join(BIN, "herald"))
        nginx = Nginx(os.path.join(BENCH, "nginx"))
        receivers.append(nginx)
        pg.sql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        if args.profile:
            # Also the statements inside herald_claim and herald_complete: that is where their time goes.
            pg.sql("ALTER SYSTEM SET pg_stat_statements.track = 'all'")
            pg.sql("SELECT pg_reload_conf()")
        pg.sql("SELECT pg_stat_statements_reset()")
        if os.environ.get("HERALD_BENCH_AUTO_EXPLAIN"):
            for setting in ["session_preload_libraries = 'auto_explain'", "auto_explain.log_min_duration = '15ms'",
                            "auto_explain.log_nested_statements = on", "auto_explain.log_analyze = on",
                            "auto_explain.log_buffers = on"]:
                pg.sql(f"ALTER DATABASE herald SET {setting}")
        if args.soak:
            log(f"soak: {args.soak_rate:,} events/s for {args.soak} minutes, retention 2 minutes")
            runs.append(soak(pg, nginx, args.soak, args.soak_rate, k, args.payload, args.soak_endpoints))
        if "hot" in scenarios:
            log(f"hot: one endpoint created with `herald config create`, {args.hot_events:,} events")
            runs.extend(hot(pg, nginx.url, args.hot_events, args.payload, k))
        if "cost" in scenarios:
            log(f"cost: what a delivery writes, {args.cost_events:,} events to one endpoint")
            runs.extend(cost(pg, nginx.url, args.cost_events, args.payload, k))
        if "ordering" in scenarios:
            log(f"ordering: {args.ordering_keys:,} keys x {args.ordering_per_key} events, ordered vs unordered")
            runs.extend(ordering(pg, nginx.url, args.ordering_keys, args.ordering_per_key, args.ordering_single,
                                 args.payload, k))
        if "many-configs" in scenarios:
            log(f"many-configs: {args.configs:,} configs, {args.active_configs:,} of them receiving events")
            runs.extend(many_configs(pg, nginx.url, args.configs, args.active_configs, args.many_events,
                                     args.payload, k, args.seed))
        if "slow" in scenarios:
            delays = int_list(args.slow_delays)
            log(f"slow: nginx (echo module) answering after {', '.join(map(str, delays))} ms")
            locations = {f"/d{d}/": f"echo_read_request_body; echo_sleep {d / 1000}; echo ok;" for d in delays}
            slow_nginx = Nginx(os.path.join(BENCH, "nginx-slow"), locations)
            receivers.append(slow_nginx)
            runs.extend(slow(pg, slow_nginx, delays, args.slow_endpoints, args.slow_deliveries, args.payload, k))
        if "https" in scenarios:
            log("https: nginx with TLS (self-signed certificate) vs plain HTTP, answering at once")
            tls_nginx = Nginx(os.path.join(BENCH, "nginx-tls"), tls=True)
            receivers.append(tls_nginx)
            runs.extend(https(pg, tls_nginx, nginx, args.https_endpoints, args.https_deliveries, args.payload, k))
        if "limited" in scenarios:
            log("limited: a receiver that serves N requests at once and holds the rest")
            runs.extend(limited(pg, int_list(args.limits), args.limited_seconds, args.limited_warmup,
                                args.payload, k))
        if "drain" in scenarios:
            for n in workers:
                log(f"drain: {args.events:,} events x {args.fanout}, {n} worker(s)")
                runs.append(drain(pg, nginx.url, args.events, args.fanout, args.payload, n, args.concurrency))
        if args.profile:
            results["profile"] = pg.sql(
                "SELECT round(total_exec_time::numeric, 0) || ' ms total | ' || calls || ' calls | ' || rows || ' rows | ' "
                "|| round((total_exec_time / greatest(calls, 1))::numeric, 3) || ' ms/call | ' || left(regexp_replace(query, '\\s+', ' ', 'g'), 160) "
                "FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 16").splitlines()
            log("\n".join(["top statements so far:"] + results["profile"]))
        if "naive" in scenarios:
            log(f"naive baseline: {args.naive_events:,} events, {best} process(es)")
            runs.append(naive(pg, nginx.url, args.naive_events, args.payload, best))
        if "latency" in scenarios:
            for rate in int_list(args.rates):
                log(f"latency: {rate} events/s for {args.latency_seconds} s")
                runs.append(latency(pg, nginx, rate, args.latency_seconds, 1, args.concurrency))
        if "memory" in scenarios:
            log("memory: many requests in flight in one worker")
            runs.append(memory(pg, 1000 if not args.quick else 200, 3000 if not args.quick else 400))
        if "backlog" in scenarios:
            log(f"backlog: drain {args.events:,} events with a large history present")
            reset(pg, nginx.url, args.fanout)
            add_backlog(pg, args.backlog_deliveries, args.backlog_logs)
            insert_events(pg, args.events, args.payload)
            runs.append(run_drain(pg, args.events * args.fanout, best, "drain with backlog",
                                  concurrency=args.concurrency))
        if "chaos" in scenarios:
            log(f"chaos: scripts/chaos.py --at-defaults, {args.chaos_events:,} events x 2")
            runs.extend(chaos(args.chaos_events, args.chaos_timeout, args.chaos_kill_every))
    finally:
        for receiver in receivers:
            receiver.stop()
        pg.stop()
        if os.environ.get("HERALD_BENCH_AUTO_EXPLAIN"):
            shutil.copy(os.path.join(pg_dir, "postgres.log"), os.path.join(BENCH, "postgres.log"))
        shutil.rmtree(pg_dir, ignore_errors=True)

    report(results, best)
    with open(args.output, "w") as f:
        json.dump(results, f, indent=2)
    log(f"wrote {args.output}")


def find(runs, prefix):
    return [r for r in runs if r["scenario"].startswith(prefix)]


def report(results, best):
    runs = results["runs"]
    print(f"\nHerald benchmark — {results['machine']['cpus']} CPUs, PostgreSQL + workers + receivers on one machine.")
    print("Workers at default settings (only HERALD_ALLOWED_NETWORKS=127.0.0.0/8 for the loopback receivers), "
          "configs without max_in_flight, unless a row says otherwise."
          + (" Metrics OFF (--metrics-off)." if results["args"].get("metrics_off") else
             " Metrics on, as by default (backlog sampled every 5 s).") + "\n")
    drains = [r for r in runs if "per_second" in r and "deliveries" in r and "worker_cpu_s_per_10k" in r
              or r["scenario"] == "naive baseline"]
    if drains:
        print("| scenario | workers | deliveries | seconds | deliveries/s | worker CPU s / 10k | Postgres CPU share "
              "| peak RSS MiB |")
        print("|---|---|---|---|---|---|---|---|")
        for r in drains:
            print(f"| {r['scenario']} | {r['workers']} | {r['deliveries']:,} | {r['seconds']} | {r['per_second']:,} | "
                  f"{r.get('worker_cpu_s_per_10k', '-')} | {r.get('postgres_cpu_share', '-')} | "
                  f"{r.get('peak_rss_mib', '-')} |")
        print()
    for r in find(runs, "cost"):
        growth = ", ".join(f"{t} {b:,}" for t, b in r["growth_bytes_per_delivery"].items())
        print(f"cost per delivery ({r['deliveries']:,} to one endpoint, {r['per_second']:,}/s): "
              f"{r['wal_bytes_per_delivery']:,} WAL bytes ({r['wal_records_per_delivery']} records, "
              f"{r['wal_fpi_per_1k']} full-page images per 1,000), {r['postgres_cpu_us_per_delivery']} µs PostgreSQL "
              f"CPU, {r['deliveries_updates_per_delivery']} updates of webhook_deliveries ({r['hot_update_share']:.0%} "
              f"HOT); growth in bytes: {growth}; a webhook_logs row averages {r['log_row_bytes']} bytes\n")
    for r in find(runs, "soak"):
        print(f"soak: {r['offered_per_second']:,} events/s offered (10 per transaction) to {r['endpoints']} "
              f"endpoint{'s' if r['endpoints'] > 1 else ''} for {r['minutes']} min "
              f"({r['producer']} transactions), "
              f"HERALD_RETENTION=2m, 1-minute log partitions, {r['workers']} workers at defaults otherwise; "
              f"PostgreSQL CPU {r['postgres_cpu_s']} s")
        print("| minute | delivered | pending | deliveries MiB (dead rows) | events MiB | logs MiB "
              "| signals MiB (dead) | configs MiB (dead) | oldest log partition s |")
        print("|---|---|---|---|---|---|---|---|---|")
        for x in r["samples"]:
            def mib(t):
                return f"{x[t]['mib']:.1f}"
            print(f"| {x['minute']} | {x['delivered']:,} | {x['pending']:,} | {mib('webhook_deliveries')} "
                  f"({x['webhook_deliveries']['dead_rows']:,}) | {mib('webhook_events')} | {mib('webhook_logs')} | "
                  f"{mib('herald_endpoint_signals')} ({x['herald_endpoint_signals']['dead_rows']:,}) | "
                  f"{mib('webhook_configs')} ({x['webhook_configs']['dead_rows']:,}) | {x['oldest_log']} |")
        if r.get("events_inserted"):
            pending = r["samples"][-1]["pending"] if r["samples"] else 0
            print(f"\nover the run: {r['delivered_total']:,} delivered of {r['events_inserted']:,} events inserted "
                  f"({r['delivered_total'] / r['events_inserted']:.1%}), {pending:,} pending at the end "
                  f"(about {pending / r['offered_per_second']:.0f} s of the offered load)")
        if "size_ratio" in r:
            print(f"\nlast minute vs minute {r['compare_minute']} (the one after the first retention cut, minute "
                  f"{r['first_cut_minute']}): total size ×{r['size_ratio']}, delivered ×{r['throughput_ratio']} "
                  f"(target: both within 10 %: {'met' if abs(r['size_ratio'] - 1) <= 0.1 and abs(r['throughput_ratio'] - 1) <= 0.1 else 'not met'})")
        print()
    limited_runs = find(runs, "limited receiver")
    if limited_runs:
        print("| limited receiver | capacity N/0.1 s | delivered/s after warm-up | share of capacity | overall/s "
              "| attempts timed out after warm-up | peak queued at receiver |")
        print("|---|---|---|---|---|---|---|")
        for r in limited_runs:
            print(f"| N={r['limit']}, {r['seconds']} s (warm-up {r['warmup_seconds']} s) | {r['capacity_per_second']:,.0f} "
                  f"| {r['per_second']:,} | {r['share_of_capacity']:.0%} | {r['per_second_overall']:,} | "
                  f"{r['timed_out_after_warmup']:,} of {r['attempts_after_warmup']:,} ({r['timed_out_share']:.1%}) | "
                  f"{r['queued_at_receiver_peak']} |")
        print()
    chaos_runs = find(runs, "chaos")
    if chaos_runs:
        print("| chaos at defaults | deliveries | seconds | lost | duplicates | attempts | SIGKILLs | PG restarts "
              "| result |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in chaos_runs:
            print(f"| {r['scenario']} | {r['deliveries']:,} | {r['seconds']} | {r['lost']} | {r['duplicates']} | "
                  f"{r['attempts']:,} | {r['kills']} | {r['restarts']} | {'PASS' if r['ok'] else 'FAIL'} |")
        print()
    latency_runs = find(runs, "latency")
    if latency_runs:
        print("| offered events/s | achieved | p50 ms | p95 ms | p99 ms | max ms |")
        print("|---|---|---|---|---|---|")
        for r in latency_runs:
            print(f"| {r['offered_per_second']:,} | {r['achieved_per_second']:,} | {r['p50_ms']} | {r['p95_ms']} | "
                  f"{r['p99_ms']} | {r['max_ms']} |")
        print()
    for r in find(runs, "memory"):
        print(f"peak RSS of one worker with {r['in_flight']:,} requests in flight (HERALD_CONCURRENCY and "
              f"max_in_flight set to that): {r['peak_rss_mib']} MiB\n")

    # Ratios and issue 10's targets (benchmark figures on a 2-core machine, not pass/fail tests).
    lines = []

    def target(what, figure, met):
        lines.append(f"| {what} | {figure} | {'met' if met else 'not met'} |")

    hot_runs = find(runs, "hot")
    if len(hot_runs) == 2:
        d, l = hot_runs[0]["per_second"], hot_runs[1]["per_second"]
        target("hot endpoint: defaults / max_in_flight lifted ≥ 0.90", f"{d:,} / {l:,} = {d / l:.2f}", d / l >= 0.9)
        target("hot endpoint at defaults ≥ 10,000/s (2 workers)", f"{d:,}/s", d >= 10_000)
    many = find(runs, "many-configs")
    if len(many) == 2:
        small, large = many[0], many[1]
        ratio = large["per_second"] / small["per_second"]
        target(f"{large['configs']:,} configs vs {small['configs']:,}: cost ≤ 20 % (ratio ≥ 0.80)",
               f"{large['per_second']:,} / {small['per_second']:,} = {ratio:.2f}", ratio >= 0.8)
    for r in find(runs, "slow receivers"):
        if r["delay_ms"] == 200:
            target(f"200 ms receivers, {r['endpoints']} endpoints ≥ 4,000/s", f"{r['per_second']:,}/s",
                   r["per_second"] >= 4000)
            target("worker peak RSS there ≤ 128 MiB", f"{r['peak_rss_mib']} MiB", r["peak_rss_mib"] <= 128)
    tls = find(runs, "https")
    plain = find(runs, "http,")
    if tls and plain:
        lines.append(f"| https / http, answering at once (no target) | {tls[0]['per_second']:,} / "
                     f"{plain[0]['per_second']:,} = {tls[0]['per_second'] / plain[0]['per_second']:.2f} | - |")
    if len(chaos_runs) == 2:
        f_, c_ = chaos_runs
        ratio = f_["seconds"] / max(c_["seconds"], 0.1)
        target("chaos at defaults: time with faults ≤ 2 × without, nothing lost",
               f"{f_['seconds']} s / {c_['seconds']} s = {ratio:.1f}×, lost {f_['lost']} + {c_['lost']}",
               ratio <= 2 and f_["lost"] == 0 and c_["lost"] == 0)
    for r in limited_runs:
        target(f"limited receiver N={r['limit']}: ≥ 80 % of {r['capacity_per_second']:,.0f}/s",
               f"{r['per_second']:,}/s = {r['share_of_capacity']:.0%}", r["share_of_capacity"] >= 0.8)
        target(f"limited receiver N={r['limit']}: < 5 % timed out after the first {r['warmup_seconds']} s",
               f"{r['timed_out_share']:.1%}", r["timed_out_share"] < 0.05)
    ordering_runs = find(runs, "ordering")
    if len(ordering_runs) == 3:
        unordered, ordered, single = ordering_runs
        ratio = ordered["per_second"] / unordered["per_second"]
        lines.append(f"| ordered / unordered config, many keys (issue 13: ≥ 0.50) | {ordered['per_second']:,} / "
                     f"{unordered['per_second']:,} = {ratio:.2f} | {'met' if ratio >= 0.5 else 'not met'} |")
        lines.append(f"| one ordering key: one request at a time (report) | {single['per_second']:,}/s | - |")
    drain_runs = {r["workers"]: r for r in runs if r["scenario"] == "drain"}
    naive_run = next((r for r in runs if r["scenario"] == "naive baseline"), None)
    backlog = next((r for r in runs if r["scenario"] == "drain with backlog"), None)
    if naive_run and best in drain_runs:
        lines.append(f"| Herald / naive baseline ({best} processes each) | "
                     f"{drain_runs[best]['per_second'] / naive_run['per_second']:.1f}× | - |")
    if backlog and best in drain_runs:
        lines.append(f"| drain with backlog / empty | {backlog['per_second'] / drain_runs[best]['per_second']:.2f} | - |")
    if lines:
        print("| target (issue 10) or ratio | figure | |")
        print("|---|---|---|")
        print("\n".join(lines))
        print()


if __name__ == "__main__":
    main()
