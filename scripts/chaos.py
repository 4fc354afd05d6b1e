#!/usr/bin/env python3
"""Herald's chaos test (run it through scripts/chaos).

A receiver on loopback answers each request at random: 500, a hang past the worker's timeout, a connection
reset, or 200. Three workers drain N events x 2 configs while one of them is SIGKILLed and restarted every
fraction of a second, and PostgreSQL is restarted once mid-run. At the end every delivery must be `delivered`,
the receiver must have accepted every (event, config), every attempt must have a webhook_logs row, and no lease
may be left. Exit status 0 only if all of that holds.

--at-defaults runs the workers at Herald's default settings except for four overrides that make a run finish in
minutes instead of hours (HERALD_TIMEOUT_MS=1000, HERALD_BACKOFF_BASE_MS=100, HERALD_BACKOFF_MAX_MS=1500,
HERALD_MAX_ATTEMPTS=40): no lease, poll, concurrency or circuit-breaker overrides. --no-faults leaves out the kills
and the PostgreSQL restart (the same receiver), so scripts/bench can compare drain times.
"""
import json
import argparse
import asyncio
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

from harness import ROOT, Postgres, free_port, serve_http, worker_env

HERALD = os.environ.get("HERALD_BIN", os.path.join(ROOT, ".build/release/herald"))


class ChaosReceiver(threading.Thread):
    """Answers at random; remembers which X-Webhook-Id it accepted (answered 200) and how often."""

    def __init__(self, timeout_s, seed):
        super().__init__(daemon=True)
        self.port = free_port()
        self.timeout_s = timeout_s
        self.random = random.Random(seed)
        self.accepted = {}
        self.requests = 0
        self.ready = threading.Event()

    def run(self):
        async def respond(headers):
            self.requests += 1
            roll = self.random.random()
            if roll < 0.15:
                return b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\nboom"
            if roll < 0.20:
                await asyncio.sleep(self.timeout_s * 2)
                return None  # hang past the worker's timeout, then close
            if roll < 0.25:
                return "reset"
            delivery = headers.get("x-webhook-id")
            self.accepted[delivery] = self.accepted.get(delivery, 0) + 1
            return b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

        serve_http(self.port, respond, self.ready)


def main():
    parser = argparse.ArgumentParser(description="Herald's chaos test.")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--kill-every", type=float, default=1.0, help="mean seconds between SIGKILLs (default 1)")
    parser.add_argument("--timeout", type=int, default=600, help="give up after this many seconds")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="1,000 events: the size the test suite runs")
    parser.add_argument("--at-defaults", action="store_true",
                        help="workers at default settings but for timeout 1 s, backoff 100 ms..1.5 s, 40 attempts")
    parser.add_argument("--no-faults", action="store_true", help="no SIGKILLs and no PostgreSQL restart")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    if args.quick:
        args.events = 1_000
    rng = random.Random(args.seed)

    # Under /tmp, not the checkout: PostgreSQL runs as another user, who may not reach a private home folder.
    directory = tempfile.mkdtemp(prefix="herald-chaos-pg-")
    pg = Postgres(directory, fast=True)
    # The receiver's hang lasts twice the worker's timeout.
    receiver = ChaosReceiver(timeout_s=1.0 if args.at_defaults else 0.5, seed=args.seed)
    receiver.start()
    receiver.ready.wait()
    workers = {}
    kills = restarts = 0
    if args.at_defaults:
        # Only these four, so the run ends in minutes; everything else (lease, poll, concurrency, circuit breaker)
        # is Herald's default. worker_env adds HERALD_ALLOWED_NETWORKS (loopback receiver) and keeps metrics on.
        env = worker_env(pg.url, {"HERALD_TIMEOUT_MS": "1000", "HERALD_BACKOFF_BASE_MS": "100",
                                  "HERALD_BACKOFF_MAX_MS": "1500", "HERALD_MAX_ATTEMPTS": "40",
                                  "HERALD_LOG_LEVEL": "error"})
    else:
        env = dict(os.environ, DATABASE_URL=pg.url, HERALD_ALLOWED_NETWORKS="127.0.0.0/8", HERALD_TIMEOUT_MS="500",
                   HERALD_BACKOFF_BASE_MS="50", HERALD_BACKOFF_MAX_MS="1000", HERALD_MAX_ATTEMPTS="100",
                   HERALD_LEASE_MS="2000", HERALD_POLL_MS="100", HERALD_CONCURRENCY="64", HERALD_LOG_LEVEL="error",
                   # The circuit breaker stays on (a run of failures pauses the endpoint), with a short cool-down.
                   HERALD_CIRCUIT_COOLDOWN_MS="200", HERALD_METRICS_ADDR="off")

    def start(index):
        workers[index] = subprocess.Popen([HERALD, "work", "--worker-id", f"chaos-{index}"], env=env,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    try:
        pg.migrate(HERALD)
        for name in ("a", "b"):
            pg.sql(f"INSERT INTO webhook_configs (name, url, events, secret) "
                   f"VALUES ('{name}', 'http://127.0.0.1:{receiver.port}/{name}', '{{*}}', 'chaos-secret')")
        pg.sql(f"INSERT INTO webhook_events (event_type, data) SELECT 'message.sent', jsonb_build_object('n', i) "
               f"FROM generate_series(1, {args.events}) AS i")
        expected = args.events * 2
        started = time.time()
        for index in range(args.workers):
            start(index)
        restarted_pg = False
        next_kill = time.time() + rng.expovariate(1 / args.kill_every)
        delivered = 0
        while time.time() - started < args.timeout:
            time.sleep(0.1)
            now = time.time()
            if now >= next_kill and not args.no_faults:
                victim = rng.randrange(args.workers)
                workers[victim].kill()
                workers[victim].wait()
                kills += 1
                start(victim)
                next_kill = now + rng.expovariate(1 / args.kill_every)
            try:
                delivered = pg.scalar("SELECT count(*) FROM webhook_deliveries WHERE status = 'delivered'")
            except subprocess.CalledProcessError:
                continue  # PostgreSQL is restarting
            if not restarted_pg and not args.no_faults and delivered >= expected // 3:
                pg.restart()
                restarted_pg = True
                restarts += 1
            if delivered == expected:
                break
        elapsed = time.time() - started
        for process in workers.values():
            process.send_signal(signal.SIGTERM)
        for process in workers.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()

        ids = pg.sql("SELECT id FROM webhook_deliveries WHERE status = 'delivered'").split()
        not_delivered = expected - len(ids)
        never_accepted = sum(1 for d in ids if d not in receiver.accepted)
        lost = not_delivered + never_accepted
        duplicates = sum(count - 1 for count in receiver.accepted.values() if count > 1)
        attempts = pg.scalar("SELECT count(*) FROM webhook_logs")
        unlogged = pg.scalar("SELECT count(*) FROM webhook_deliveries d WHERE d.attempts <> "
                             "(SELECT count(DISTINCT attempt) FROM webhook_logs l WHERE l.delivery_id = d.id)")
        leased = pg.scalar("SELECT count(*) FROM webhook_deliveries WHERE lease_token IS NOT NULL")
        lost_attempts = pg.scalar("SELECT count(*) FROM webhook_logs WHERE outcome = 'lost'")
        print(f"deliveries      {expected:,} ({args.events:,} events x 2 configs, {args.workers} workers)")
        print(f"lost            {lost}  (not delivered: {not_delivered}, delivered but never accepted: {never_accepted})")
        print(f"duplicates      {duplicates} ({duplicates / expected:.2%} of deliveries accepted more than once)")
        print(f"attempts        {attempts:,} logged ({attempts / expected:.2f} per delivery; "
              f"{lost_attempts} lost with a killed worker); receiver saw {receiver.requests:,} requests")
        print(f"unlogged        {unlogged} deliveries whose attempts are not all in webhook_logs")
        print(f"leased at end   {leased}")
        print(f"faults          {kills} SIGKILLs, {restarts} PostgreSQL restart")
        print(f"drain time      {elapsed:.1f} s")
        ok = lost == 0 and unlogged == 0 and leased == 0 and restarts == (0 if args.no_faults else 1)
        print("RESULT          " + ("PASS" if ok else "FAIL"))
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"events": args.events, "deliveries": expected, "workers": args.workers,
                           "at_defaults": args.at_defaults, "faults": not args.no_faults, "kills": kills,
                           "restarts": restarts, "lost": lost, "not_delivered": not_delivered,
                           "duplicates": duplicates, "attempts": attempts, "unlogged": unlogged, "leased": leased,
                           "seconds": round(elapsed, 1), "ok": ok}, f, indent=2)
        sys.exit(0 if ok else 1)
    finally:
        for process in workers.values():
            if process.poll() is None:
                process.kill()
        pg.stop()
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
