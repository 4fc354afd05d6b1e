import Foundation
import HeraldPostgres
import HeraldTestSupport
import Testing

/// The protocol under concurrency (issue 16): interleavings with real sessions holding real locks, and real
/// `herald work` processes.
@Suite struct ConcurrencyTests {
    /// A person's open transaction on a failing config's row must not hold up deliveries to anyone else.
    @Test func aConfigRowHeldInAnOpenTransactionDelaysNoOtherEndpoint() throws {
        let fixture = try Fixture()
        let failing = try TestReceiver { _, _ in .status(500) }
        let healthy = try TestReceiver()
        let failingConfig = try fixture.addConfig(name: "failing", url: failing.url, events: "{contact.created}",
                                                  maxAttempts: 100)
        try fixture.addConfig(name: "healthy", url: healthy.url, events: "{contact.updated}")
        for _ in 0..<5 { try fixture.emit("contact.created") }
        _ = try fixture.startWorker(["HERALD_BACKOFF_BASE_MS": "50", "HERALD_BACKOFF_MAX_MS": "100"])
        #expect(eventually { failing.requests.count >= 5 })
        // psql: BEGIN; UPDATE webhook_configs … (and no COMMIT for a while).
        let person = try fixture.database.connect()
        try person.query("BEGIN")
        try person.query("UPDATE webhook_configs SET name = 'failing (looking at it)' WHERE id = $1", [failingConfig])
        defer { _ = try? person.query("ROLLBACK") }
        let emitted = Date()
        for _ in 0..<20 { try fixture.emit("contact.updated") }
        #expect(eventually(timeout: 10) { healthy.requests.count == 20 })
        let slowest = healthy.requests.map { $0.receivedAt.timeIntervalSince(emitted) }.max() ?? 99
        // Generous for a loaded 2-core machine: waiting on the person's lock would last until the ROLLBACK,
        // past the 10 s above (and the check below sees any backend waiting).
        #expect(slowest < 5.0, "a delivery to the healthy endpoint waited \(slowest) s")
        // Nobody waits on the person's lock: no worker backend is blocked.
        #expect(try fixture.count("""
            SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'
            """) == 0)
    }

    /// A disabled config's queue ends failed, none of it sent, at once: not one delivery per circuit cool-down.
    @Test func aDisabledConfigsQueuedDeliveriesAllFailWithoutBeingSent() throws {
        let fixture = try Fixture()
        let receiver = try TestReceiver()
        let config = try fixture.addConfig(name: "off", url: receiver.url)
        try fixture.connection.query("""
            INSERT INTO webhook_events (event_type, data) SELECT 'contact.created', '{}' FROM generate_series(1, 200)
            """)
        // Some are retries scheduled far ahead: they fail too, without waiting for their turn.
        try fixture.connection.query("""
            UPDATE webhook_deliveries SET attempts = 1, next_attempt_at = now() + interval '1 hour'
             WHERE id IN (SELECT id FROM webhook_deliveries ORDER BY id LIMIT 20)
            """)
        try fixture.connection.query("UPDATE webhook_configs SET is_active = false WHERE id = $1", [config])
        _ = try fixture.startWorker()
        #expect(try fixture.waitUntilSettled(timeout: 15))
        #expect(receiver.requests.isEmpty)
        #expect(try fixture.count("SELECT count(*) FROM webhook_deliveries WHERE status = 'failed' AND last_error LIKE 'not sent:%disabled%'") == 200)
        // Refusals are not endpoint failures: the circuit stays closed.
        #expect(try fixture.scalar("SELECT consecutive_failures || ' ' || (circuit_open_until IS NULL) FROM webhook_configs") == "0 true")
        #expect(try fixture.count("SELECT count(*) FROM webhook_logs WHERE outcome = 'failed' AND error LIKE 'not sent:%'") == 200)
    }

    /// max_in_flight = 1 across two workers, NOTIFY waking both at once: the receiver never sees two requests.
    @Test func maxInFlightOneHoldsAcrossTwoWorkers() throws {
        let fixture = try Fixture()
        let inFlight = PeakConcurrency()
        let receiver = try TestReceiver(responder: inFlight.responder(holding: 1.0))
        let config = try fixture.addConfig(url: receiver.url)
        try fixture.connection.query("UPDATE webhook_configs SET max_in_flight = 1 WHERE id = $1", [config])
        let slow = ["HERALD_TIMEOUT_MS": "3000", "HERALD_LEASE_MS": "20000"]
        _ = try fixture.startWorker(slow)
        _ = try fixture.startWorker(slow)
        Thread.sleep(forTimeInterval: 0.5)
        for _ in 0..<6 { try fixture.emit() }
        #expect(try fixture.waitUntilSettled(timeout: 30))
        #expect(receiver.requests.count == 6)
        #expect(inFlight.peak == 1)
    }

    /// Lowering a config's max_attempts below what a pending delivery already used ends it without another send.
    @Test func loweringMaxAttemptsBelowAPendingDeliverysAttemptsSendsNothingMore() throws {
        let fixture = try Fixture()
        let receiver = try TestReceiver { _, _ in .status(500) }
        let config = try fixture.addConfig(url: receiver.url, maxAttempts: 10)
        try fixture.emit()
        let worker = try fixture.startWorker(["HERALD_BACKOFF_BASE_MS": "300", "HERALD_BACKOFF_MAX_MS": "300"])
        #expect(eventually { receiver.requests.count >= 3 })
        worker.kill()
        _ = worker.waitForExit(timeout: 5)
        // The rescue would fail it on its own if a lease were left; make sure we test the claim instead.
        try fixture.connection.query("UPDATE webhook_deliveries SET lease_token = NULL, next_attempt_at = now()")
        let sent = receiver.requests.count
        try fixture.connection.query("UPDATE webhook_configs SET max_attempts = 2 WHERE id = $1", [config])
        _ = try fixture.startWorker()
        #expect(try fixture.waitUntilSettled(timeout: 15))
        #expect(receiver.requests.count == sent)
        #expect(try fixture.scalar("SELECT status || ': ' || last_error FROM webhook_deliveries")
                == "failed: not sent: the attempt limit (2) was reached")
    }

    /// herald_complete never waits for a lock, so it cannot deadlock with a replay or a config delete that lock
    /// the same rows in another order: rows someone holds come back as "busy" for the worker to write again.
    @Test func completeNeverWaitsOnAReplayOrAConfigDelete() throws {
        let fixture = try Fixture()
        let config = try fixture.addConfig(url: "https://example.com/a")
        try fixture.addConfig(name: "b", url: "https://example.com/b")
        for _ in 0..<4 { try fixture.emit() }
        let claimed = try fixture.connection.query("SELECT delivery_id, lease_token, config_id FROM herald_claim(20, '1 minute', 'w')").rows
        #expect(claimed.count == 8)
        let other = try fixture.database.connect()
        try other.query("BEGIN")
        // A replay (or anything) holding one delivery row, and a config delete cascading over another config's.
        try other.query("SELECT 1 FROM webhook_deliveries WHERE id = $1 FOR UPDATE", [claimed.first { $0[2] != config }![0]])
        try other.query("DELETE FROM webhook_configs WHERE id = $1", [config])
        let worker = try fixture.database.connect()
        // If complete waited for any lock, this would fail with 55P03 instead of returning.
        try worker.query("SET lock_timeout = '200ms'")
        let ids = claimed.map { $0[0] }, tokens = claimed.map { $0[1] }
        let result = try worker.query("""
            SELECT applied, cardinality(busy) FROM herald_complete($1::uuid[], $2::uuid[],
                (SELECT array_agg(event_id ORDER BY array_position($1::uuid[], id)) FROM webhook_deliveries WHERE id = ANY ($1::uuid[])),
                (SELECT array_agg(config_id ORDER BY array_position($1::uuid[], id)) FROM webhook_deliveries WHERE id = ANY ($1::uuid[])),
                array_fill('contact.created'::text, ARRAY[8]), array_fill(1, ARRAY[8]), array_fill('delivered'::text, ARRAY[8]),
                array_fill(NULL::bigint, ARRAY[8]), array_fill(200, ARRAY[8]), array_fill(NULL::text, ARRAY[8]),
                array_fill(NULL::text, ARRAY[8]), array_fill(1, ARRAY[8]), array_fill('{}'::text, ARRAY[8]), 'w')
            """, [PostgresArray.literal(ids), PostgresArray.literal(tokens)]).rows[0]
        // Three of config b's four are written; one is busy (held), and config a's four are busy (being deleted).
        #expect(result == ["3", "5"])
        try other.query("ROLLBACK")
    }

    /// A result the database refuses for a reason other than the connection costs only that result: the batch is
    /// split until the bad record is found, it is logged and dropped (its lease expires, it is retried), and every
    /// other result of the batch is written.
    @Test func aResultTheDatabaseRefusesDoesNotTakeTheRestOfItsBatchWithIt() throws {
        let fixture = try Fixture()
        let receiver = try TestReceiver()
        try fixture.addConfig(url: receiver.url)
        for n in 0..<20 { try fixture.emit(data: #"{"n": \#(n)}"#) }
        let poisoned = try fixture.scalar("""
            SELECT d.id FROM webhook_deliveries d JOIN webhook_events e ON e.id = d.event_id WHERE e.data->>'n' = '7'
            """)!
        // Stands for any row PostgreSQL refuses (a constraint, a bug): logging that one delivery's attempt fails.
        try fixture.connection.query("""
            CREATE FUNCTION refuse_one() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.delivery_id = '\(poisoned)' THEN RAISE EXCEPTION 'refused for the test'; END IF;
                RETURN NEW;
            END $$
            """)
        try fixture.connection.query(
            "CREATE TRIGGER refuse_one BEFORE INSERT ON webhook_logs FOR EACH ROW EXECUTE FUNCTION refuse_one()")
        let worker = try fixture.startWorker(["HERALD_LEASE_MS": "60000"])
        #expect(try eventually {
            try fixture.count("SELECT count(*) FROM webhook_deliveries WHERE status = 'delivered'") == 19
        })
        #expect(try fixture.scalar("SELECT status || ' ' || (lease_token IS NOT NULL) FROM webhook_deliveries WHERE id = $1",
                                   [poisoned]) == "pending true")
        #expect(eventually { worker.output.contains("could not record an attempt") })
        #expect(receiver.requests.count == 20)
    }

    /// `herald prune` takes the same advisory lock as the workers' pruner: it waits for a running batch
    /// instead of deleting beside it.
    @Test func heraldPruneWaitsForTheWorkersPruner() throws {
        let fixture = try Fixture()
        let holder = try fixture.database.connect()
        try holder.query("BEGIN")
        try holder.query("SELECT pg_advisory_xact_lock(7220136354046182)")
        let prune = try HeraldProcess(["prune", "--older-than", "1d"], environment: ["DATABASE_URL": fixture.database.url])
        defer { prune.kill() }
        #expect(try eventually {
            try fixture.count("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted") == 1
        })
        #expect(prune.isRunning)
        try holder.query("COMMIT")
        #expect(prune.waitForExit(timeout: 20) && prune.terminationStatus == 0)
    }
}
