#!/usr/bin/env python3
"""Herald's benchmark (run it through scripts/bench, which installs and builds what this needs).

Scenarios, all against one PostgreSQL, workers and receiver sharing this machine:
  drain     N events pre-inserted (signed, fan-out F, P-byte payloads), K worker processes drain them
  naive     the same with the one-delivery-per-transaction baseline (herald-naive-baseline), for the ratio
  latency   a producer (pgbench, one INSERT per transaction) at fixed rates; occurred_at -> nginx receipt
  memory    peak RSS of one worker holding 1,000 requests in flight against a receiver that answers after 1 s
  backlog   drain again with 1,000,000 not-yet-due deliveries and 5,000,000 webhook_logs rows present
Standard library only; it talks to PostgreSQL through psql and pgbench.
"""
import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from harness import ROOT, Postgres, free_port, pg_bin, proc_cpu, proc_status, serve_http

BENCH = os.path.join(ROOT, ".bench")
BIN = os.environ.get("HERALD_BENCH_BIN", os.path.join(ROOT, ".build/release"))


def log(message):
    print(message, file=sys.stderr, flush=True)


class Nginx:
    """nginx answering 200 to any POST, logging the receipt time (ms) and X-Webhook-Id of every request."""

    def __init__(self, directory):
        os.makedirs(directory, exist_ok=True)
        os.chmod(directory, 0o777)
        self.port = free_port()
        self.log_path = os.path.join(directory, "access.log")
        open(self.log_path, "w").close()
        config = os.path.join(directory, "nginx.conf")
        user = "user nobody nogroup;" if os.geteuid() == 0 else ""
        with open(config, "w") as f:
            f.write(f"""{user}
worker_processes 1;
daemon off;
error_log {directory}/error.log warn;
pid {directory}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    log_format herald '$msec $http_x_webhook_id';
    access_log {self.log_path} herald buffer=256k flush=1s;
    client_body_temp_path {directory}/body;
    client_body_buffer_size 1m;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    server {{
        listen 127.0.0.1:{self.port} backlog=4096;
        location / {{ return 200 "ok"; }}
    }}
}}
""")
        self.process = subprocess.Popen([shutil.which("nginx") or "/usr/sbin/nginx", "-c", config, "-p", directory],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise SystemExit("nginx did not start; see " + directory + "/error.log")

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}/webhooks"

    def receipts(self, since_offset):
        """{delivery id: receipt time (s)} for lines written after since_offset (waits for nginx's flush)."""
        time.sleep(1.2)
        result = {}
        with open(self.log_path) as f:
            f.seek(since_offset)
            for line in f:
                parts = line.split()
                if len(parts) == 2:
                    result[parts[1]] = float(parts[0])
        return result

    def offset(self):
        time.sleep(1.2)
        return os.path.getsize(self.log_path)

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=10)


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


def reset(pg, url, fanout):
    pg.sql("TRUNCATE webhook_events, webhook_deliveries, webhook_logs, webhook_configs, herald_worker_heartbeats")
    for i in range(fanout):
        # max_in_flight: the benchmark measures one endpoint taking everything the workers can send.
        pg.sql(f"INSERT INTO webhook_configs (name, url, events, secret, max_in_flight) "
               f"VALUES ('bench-{i}', '{url}', '{{*}}', 'bench-secret-{i}', 5000)")


def insert_events(pg, count, payload):
    # A data object of about `payload` bytes: an id, a counter and padding.
    pad = max(0, payload - 60)
    pg.sql(f"INSERT INTO webhook_events (event_type, data) SELECT 'message.sent', "
           f"jsonb_build_object('id', gen_random_uuid(), 'n', i, 'text', repeat('x', {pad})) "
           f"FROM generate_series(1, {count}) AS i")
    pg.sql("VACUUM ANALYZE webhook_deliveries")


def start_workers(pg, count, concurrency, extra=None):
    env = dict(os.environ, DATABASE_URL=pg.url, HERALD_ALLOWED_NETWORKS="127.0.0.0/8",
               HERALD_CONCURRENCY=str(concurrency), HERALD_LOG_LEVEL="warning", HERALD_METRICS_ADDR="off")
    env.update(extra or {})
    return [subprocess.Popen([os.path.join(BIN, "herald"), "work", "--worker-id", f"bench-{i}"], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for i in range(count)]


def stop_workers(workers):
    for w in workers:
        w.send_signal(signal.SIGTERM)
    for w in workers:
        try:
            w.wait(timeout=20)
        except subprocess.TimeoutExpired:
            w.kill()


def wait_drained(pg, timeout, sample=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if sample:
            sample()
        # Index-backed on purpose: a count over the whole table would compete with what is being measured
        # (it cost 200 ms a poll once a million rows of backlog were present).
        if pg.scalar(REMAINING) == 0:
            return True
        time.sleep(0.05)
    return False


# Anything left to do now: first attempts waiting, requests in flight, or retries due within the hour.
REMAINING = """
    SELECT (EXISTS (SELECT 1 FROM webhook_deliveries WHERE status = 'pending' AND lease_token IS NULL AND attempts = 0)
         OR EXISTS (SELECT 1 FROM webhook_deliveries WHERE lease_token IS NOT NULL)
         OR EXISTS (SELECT 1 FROM webhook_configs c JOIN webhook_deliveries d ON d.config_id = c.id
                     WHERE d.status = 'pending' AND d.lease_token IS NULL AND d.attempts > 0
                       AND d.next_attempt_at < now() + interval '1 hour'))::int
"""


def drain(pg, receiver_url, events, fanout, payload, workers, concurrency, label="drain"):
    reset(pg, receiver_url, fanout)
    insert_events(pg, events, payload)
    return run_drain(pg, events * fanout, workers, concurrency, label)


def run_drain(pg, expected, workers, concurrency, label):
    pg_before = pg.cpu_seconds()
    started = time.time()
    procs = start_workers(pg, workers, concurrency)
    if not wait_drained(pg, timeout=max(120, expected / 200)):
        stop_workers(procs)
        raise SystemExit(f"{label}: not drained in time")
    elapsed = time.time() - started
    worker_cpu = sum(proc_cpu(p.pid) for p in procs)
    worker_rss = max(proc_status(p.pid, "VmHWM") for p in procs)
    pg_cpu = pg.cpu_seconds() - pg_before
    stop_workers(procs)
    delivered = pg.scalar("SELECT count(*) FROM webhook_deliveries WHERE status = 'delivered' AND next_attempt_at < now() + interval '1 hour'")
    if delivered != expected:
        raise SystemExit(f"{label}: {delivered} of {expected} delivered")
    return {
        "scenario": label, "workers": workers, "concurrency": concurrency, "deliveries": expected,
        "seconds": round(elapsed, 2), "per_second": round(expected / elapsed),
        "worker_cpu_s_per_10k": round(worker_cpu / expected * 10000, 2),
        "postgres_cpu_share": round(pg_cpu / (elapsed * os.cpu_count()), 2),
        "peak_rss_mib": round(worker_rss / 2**20, 1),
    }


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


def memory(pg, in_flight, events):
    receiver = SlowReceiver()
    receiver.start()
    receiver.ready.wait()
    reset(pg, receiver.url, 1)
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


def main():
    parser = argparse.ArgumentParser(description="Herald's benchmark; see docs/PERFORMANCE.md.")
    parser.add_argument("--quick", action="store_true", help="small sizes: a run under a minute (used by CI)")
    parser.add_argument("--events", type=int, default=100_000, help="events per drain run (default 100,000)")
    parser.add_argument("--workers", default="1,2,4", help="worker process counts to drain with (default 1,2,4)")
    parser.add_argument("--concurrency", type=int, default=128, help="in-flight requests per worker (default 128)")
    parser.add_argument("--payload", type=int, default=300, help="approximate data bytes per event (default 300)")
    parser.add_argument("--fanout", type=int, default=1, help="configs each event goes to (default 1)")
    parser.add_argument("--rates", default="200,1000,5000", help="offered events/s for latency (default 200,1000,5000)")
    parser.add_argument("--latency-seconds", type=int, default=10, help="producer run time per rate (default 10)")
    parser.add_argument("--naive-events", type=int, default=5_000, help="events for the naive baseline (default 5,000)")
    parser.add_argument("--backlog-deliveries", type=int, default=1_000_000)
    parser.add_argument("--backlog-logs", type=int, default=5_000_000)
    parser.add_argument("--skip-backlog", action="store_true", help="leave out the backlog scenario")
    parser.add_argument("--profile", action="store_true",
                        help="print the top statements by total time (pg_stat_statements) after the drain runs")
    parser.add_argument("--output", default=os.path.join(BENCH, "results.json"))
    args = parser.parse_args()
    if args.quick:
        args.events, args.workers, args.naive_events = 3_000, "1,2", 500
        args.rates, args.latency_seconds = "200", 3
        args.backlog_deliveries, args.backlog_logs = 20_000, 50_000
    workers = [int(k) for k in args.workers.split(",")]

    os.makedirs(BENCH, exist_ok=True)
    # Under /tmp, not the checkout: PostgreSQL runs as another user, who may not reach a private home folder.
    pg_dir = tempfile.mkdtemp(prefix="herald-bench-pg-")
    log("starting PostgreSQL and nginx")
    pg = Postgres(pg_dir)
    nginx = None
    results = {"machine": {"cpus": os.cpu_count(), "kernel": os.uname().release}, "args": vars(args), "runs": []}
    try:
        pg.migrate(os.path.join(BIN, "herald"))
        nginx = Nginx(os.path.join(BENCH, "nginx"))
        pg.sql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        pg.sql("SELECT pg_stat_statements_reset()")
        if os.environ.get("HERALD_BENCH_AUTO_EXPLAIN"):
            for setting in ["session_preload_libraries = 'auto_explain'", "auto_explain.log_min_duration = '15ms'",
                            "auto_explain.log_nested_statements = on", "auto_explain.log_analyze = on",
                            "auto_explain.log_buffers = on"]:
                pg.sql(f"ALTER DATABASE herald SET {setting}")
        for k in workers:
            log(f"drain: {args.events:,} events x {args.fanout}, {k} worker(s)")
            results["runs"].append(drain(pg, nginx.url, args.events, args.fanout, args.payload, k, args.concurrency))
        best = max(workers)
        if args.profile:
            results["profile"] = pg.sql(
                "SELECT round(total_exec_time::numeric, 0) || ' ms total | ' || calls || ' calls | ' || rows || ' rows | ' "
                "|| round((total_exec_time / greatest(calls, 1))::numeric, 3) || ' ms/call | ' || left(regexp_replace(query, '\\s+', ' ', 'g'), 90) "
                "FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 8").splitlines()
            log("\n".join(["top statements during the drain runs:"] + results["profile"]))
        log(f"naive baseline: {args.naive_events:,} events, {best} process(es)")
        results["runs"].append(naive(pg, nginx.url, args.naive_events, args.payload, best))
        for rate in [int(r) for r in args.rates.split(",")]:
            log(f"latency: {rate} events/s for {args.latency_seconds} s")
            results["runs"].append(latency(pg, nginx, rate, args.latency_seconds, 1, args.concurrency))
        log("memory: many requests in flight in one worker")
        results["runs"].append(memory(pg, 1000 if not args.quick else 200, 3000 if not args.quick else 400))
        if not args.skip_backlog:
            log(f"backlog: drain {args.events:,} events with a large history present")
            reset(pg, nginx.url, args.fanout)
            add_backlog(pg, args.backlog_deliveries, args.backlog_logs)
            insert_events(pg, args.events, args.payload)
            run = run_drain(pg, args.events * args.fanout, best, args.concurrency, "drain with backlog")
            results["runs"].append(run)
    finally:
        if nginx:
            nginx.stop()
        pg.stop()
        if os.environ.get("HERALD_BENCH_AUTO_EXPLAIN"):
            shutil.copy(os.path.join(pg_dir, "postgres.log"), os.path.join(BENCH, "postgres.log"))
        shutil.rmtree(pg_dir, ignore_errors=True)

    report(results, best)
    with open(args.output, "w") as f:
        json.dump(results, f, indent=2)
    log(f"wrote {args.output}")


def report(results, best):
    runs = results["runs"]
    print(f"\nHerald benchmark — {results['machine']['cpus']} CPUs, PostgreSQL + workers + nginx on one machine\n")
    print("| scenario | workers | deliveries | seconds | deliveries/s | worker CPU s / 10k | Postgres CPU share | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|---|")
    for r in runs:
        if r["scenario"] in ("drain", "drain with backlog", "naive baseline"):
            print(f"| {r['scenario']} | {r['workers']} | {r['deliveries']:,} | {r['seconds']} | {r['per_second']:,} | "
                  f"{r.get('worker_cpu_s_per_10k', '-')} | {r.get('postgres_cpu_share', '-')} | {r.get('peak_rss_mib', '-')} |")
    drains = {r["workers"]: r for r in runs if r["scenario"] == "drain"}
    naive_run = next((r for r in runs if r["scenario"] == "naive baseline"), None)
    backlog = next((r for r in runs if r["scenario"] == "drain with backlog"), None)
    print()
    if naive_run and best in drains:
        print(f"Herald / naive baseline ({best} processes each): {drains[best]['per_second'] / naive_run['per_second']:.1f}x")
    if backlog and best in drains:
        print(f"drain with backlog / empty: {backlog['per_second'] / drains[best]['per_second']:.2f}")
    print("\n| offered events/s | achieved | p50 ms | p95 ms | p99 ms | max ms |")
    print("|---|---|---|---|---|---|")
    for r in runs:
        if r["scenario"] == "latency":
            print(f"| {r['offered_per_second']:,} | {r['achieved_per_second']:,} | {r['p50_ms']} | {r['p95_ms']} | "
                  f"{r['p99_ms']} | {r['max_ms']} |")
    for r in runs:
        if r["scenario"] == "memory":
            print(f"\npeak RSS of one worker with {r['in_flight']:,} requests in flight: {r['peak_rss_mib']} MiB")


if __name__ == "__main__":
    main()
