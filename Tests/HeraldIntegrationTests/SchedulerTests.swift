import Foundation
import HeraldPostgres
import HeraldTestSupport
import Synchronization
import Testing

/// The scheduler at production shape (sql/007): the adaptive limit, claims that visit only endpoints with work,
/// and dead workers' leases coming back early.
@Suite struct SchedulerTests {
    /// The AIMD rule as a pure SQL function: the clock is a parameter.
    @Test func adaptiveLimitHalvesOnOverloadAtMostOnceASecondAndGrowsBackByWindows() throws {
        let fixture = try Fixture()
        func next(_ limit: String, delivered: Int = 0, failed: Int = 0, overloaded: Int = 0,
                  decreasedAgo: Double? = nil) throws -> (String?, String?) {
            let row = try fixture.connection.query("""
                SELECT new_limit, decreased FROM herald_next_limit($1::real, 50, $2, $3, $4,
                    CASE WHEN $5::float8 IS NULL THEN NULL ELSE timestamptz '2026-01-01 00:00:10' - $5::float8 * interval '1 second' END,
                    timestamptz '2026-01-01 00:00:10')
                """, [limit == "NULL" ? nil : limit, String(delivered), String(failed), String(overloaded),
                      decreasedAgo.map { String($0) }]).rows[0]
            return (row[0], row[1])
        }
        // At the ceiling (NULL) a timeout halves it.
        #expect(try next("NULL", failed: 3, overloaded: 3) == ("25", "t"))
        // A second burst within a second of the last decrease is the same overload: no second cut.
        #expect(try next("25", failed: 5, overloaded: 5, decreasedAgo: 0.5) == ("25", "f"))
        #expect(try next("25", failed: 5, overloaded: 5, decreasedAgo: 1.5) == ("12", "t"))
        // Never below 1.
        #expect(try next("1", failed: 1, overloaded: 1, decreasedAgo: 5) == ("1", "t"))
        // Successes grow it by one per full window: 12 successes at a limit of 12 → 13.
        #expect(try next("12", delivered: 12) == ("13", "f"))
        // Failures that are not overload (e.g. 500) do not change it; the circuit breaker handles those.
        #expect(try next("12", delivered: 3, failed: 2) == ("12", "f"))
        // Back at the ceiling it is NULL again: no state kept for a healthy endpoint.
        #expect(try next("49.5", delivered: 50) == (nil, "f"))
    }

    /// A receiver that serves only 5 requests at once and holds the rest until a slot frees, 200 ms of work each
    /// (25 a second): at the default cap of 50, queued requests wait about 2 s, twice the 1 s timeout, so timeouts
    /// are certain however busy the machine is (at 100 ms of work the wait was 1 s, and a slow worker that kept
    /// fewer requests in flight saw none). The limit must come down, then grow back to the ceiling once the
    /// receiver is fast again.
    @Test func adaptiveLimitShrinksForAReceiverThatServesFiveAtOnceAndGrowsBack() throws {
        let fixture = try Fixture()
        let slots = DispatchSemaphore(value: 5)
        let slow = Atomic<Bool>(true)
        let receiver = try TestReceiver { _, _ in
            guard slow.load(ordering: .relaxed) else { return .status(200) }
            let arrived = Date()
            slots.wait()
            defer { slots.signal() }
            // The client gave up at 1 s: like a server that notices the closed connection, do not spend a slot on
            // it. Otherwise abandoned requests queue up ahead of new ones and the overload never ends.
            if Date().timeIntervalSince(arrived) < 0.9 { Thread.sleep(forTimeInterval: 0.2) }
            return .status(200)
        }
        let config = try fixture.addConfig(url: receiver.url, maxAttempts: 100)
        try fixture.connection.query("""
            INSERT INTO webhook_events (event_type, data) SELECT 'contact.created', '{}' FROM generate_series(1, 400)
            """)
        _ = try fixture.startWorker(["HERALD_BACKOFF_BASE_MS": "50", "HERALD_BACKOFF_MAX_MS": "200"])
        #expect(try eventually(timeout: 30) {
            (try fixture.scalar("SELECT concurrency_limit FROM webhook_configs WHERE id = $1", [config]))
                .flatMap(Double.init).map { $0 < 50 } ?? false
        }, "the limit did not come down under overload")
        // Eased off, not switched off: the circuit never opened for what was only overload.
        #expect(try fixture.count("SELECT count(*) FROM webhook_configs WHERE circuit_open_until IS NOT NULL") == 0)
        slow.store(false, ordering: .relaxed)
        #expect(try fixture.waitUntilSettled(timeout: 60))
        #expect(try fixture.count("SELECT count(*) FROM webhook_deliveries WHERE status = 'delivered'") == 400)
        // More traffic to a fast receiver: the limit climbs back to the ceiling (NULL).
        try fixture.connection.query("""
            INSERT INTO webhook_events (event_type, data) SELECT 'contact.created', '{}' FROM generate_series(1, 3000)
            """)
        #expect(try eventually(timeout: 60) {
            try fixture.scalar("SELECT concurrency_limit IS NULL FROM webhook_configs WHERE id = $1", [config]) == "t"
        }, "the limit did not grow back")
        #expect(try fixture.waitUntilSettled(timeout: 60))
    }

    /// 100,000 configs, one with work: a claim reads a few config rows per delivery, not all of them. Measured with
    /// PostgreSQL's own per-table counters, not a clock.
    /// The cap counts requests on the wire (sql/016): a claim may reuse the slots of attempts that were answered but
    /// are not written yet, matched by their lease token (so a lease taken back meanwhile frees nothing); never while
    /// the circuit is half-open.
    @Test func answeredButUnwrittenAttemptsFreeTheirSlotsMatchedByLeaseToken() throws {
        let fixture = try Fixture()
        let config = try fixture.addConfig(url: "https://example.com/hook")
        try fixture.connection.query("UPDATE webhook_configs SET max_in_flight = 3 WHERE id = $1", [config])
        for _ in 0..<12 { try fixture.emit() }
        func claim(answered: [[String?]]) throws -> [[String?]] {
            // As the write in the same transaction does for the endpoints whose slots it releases.
            try fixture.connection.query("INSERT INTO herald_endpoint_signals (config_id, due_at) VALUES ($1, now())", [config])
            return try fixture.connection.query("""
                SELECT delivery_id, lease_token FROM herald_claim(10, '1 minute', 'w',
                    p_answered_ids => $1::uuid[], p_answered_tokens => $2::uuid[])
                """, [PostgresArray.literal(answered.map { $0[0] }), PostgresArray.literal(answered.map { $0[1] })]).rows
        }
        let first = try claim(answered: [])
        #expect(first.count == 3)
        // At the cap: nothing more.
        #expect(try claim(answered: []).isEmpty)
        // Two of the three were answered: two more go out (5 leases, 3 requests on the wire) ...
        let second = try claim(answered: Array(first.prefix(2)))
        #expect(second.count == 2)
        // ... and the same answers do not free the same slots twice.
        #expect(try claim(answered: Array(first.prefix(2))).isEmpty)
        // A lease taken back and given out again meanwhile (a new token): its old answer frees nothing. Answered:
        // first[1], first[2] (2 of 5 leases), so 3 are on the wire.
        try fixture.connection.query("UPDATE webhook_deliveries SET lease_token = gen_random_uuid() WHERE id = $1", [first[0][0]])
        #expect(try claim(answered: first).isEmpty)
        // first[1], first[2] and second[0] answered: 2 on the wire, 1 free.
        #expect(try claim(answered: Array(first.dropFirst()) + [second[0]]).count == 1)
        #expect(try fixture.count("SELECT count(*) FROM webhook_deliveries WHERE lease_token IS NOT NULL") == 6)
        // Half-open circuit (failures at the threshold): a single probe, and its answer must be written first.
        try fixture.connection.query("UPDATE webhook_deliveries SET lease_token = NULL, next_attempt_at = now() WHERE status = 'pending'")
        try fixture.connection.query("UPDATE webhook_configs SET consecutive_failures = 10 WHERE id = $1", [config])
        let probe = try claim(answered: [])
        #expect(probe.count == 1)
        #expect(try claim(answered: probe).isEmpty)
    }

    /// Step 2 of a claim only consumes the signals of healthy endpoints (sql/019), and must still fold everything
    /// else: a failure among "work left" signals, deliveries at an endpoint whose adaptive limit is below its
    /// ceiling (the limit grows back), and a success after failures (it clears them).
    @Test func aClaimFoldsEverySignalThatChangesAnEndpointAndOnlyConsumesTheRest() throws {
        let fixture = try Fixture()
        let healthy = try fixture.addConfig(url: "https://example.com/healthy")
        let failing = try fixture.addConfig(url: "https://example.com/failing")
        let limited = try fixture.addConfig(url: "https://example.com/limited")
        try fixture.connection.query("UPDATE webhook_configs SET concurrency_limit = 10 WHERE id = $1", [limited])
        func signal(_ config: String, delivered: Int = 0, failed: Int = 0) throws {
            try fixture.connection.query("""
                INSERT INTO herald_endpoint_signals (config_id, due_at, delivered, failed) VALUES ($1, now(), $2, $3)
                """, [config, String(delivered), String(failed)])
        }
        func claimOnly(_ config: String) throws {
            // One endpoint per claim: the others' signals must not decide this one's path.
            try fixture.connection.query("DELETE FROM herald_endpoint_signals WHERE config_id <> $1", [config])
            _ = try fixture.connection.query("SELECT count(*) FROM herald_claim(10, '1 minute', 'w')")
            #expect(try fixture.count("SELECT count(*) FROM herald_endpoint_signals WHERE config_id = $1", [config]) == 0)
        }
        try signal(healthy, delivered: 5)
        try signal(healthy)
        try claimOnly(healthy)
        #expect(try fixture.scalar("""
            SELECT format('%s %s %s', consecutive_failures, circuit_open_until IS NULL, concurrency_limit IS NULL)
              FROM webhook_configs WHERE id = $1
            """, [healthy]) == "0 t t")

        try signal(failing)
        try signal(failing, failed: 2)
        try claimOnly(failing)
        #expect(try fixture.count("SELECT consecutive_failures FROM webhook_configs WHERE id = $1", [failing]) == 2)

        try signal(limited, delivered: 10)
        try claimOnly(limited)
        #expect(try fixture.scalar("SELECT concurrency_limit FROM webhook_configs WHERE id = $1", [limited]) == "11")

        // A success clears what failures left: the count, the circuit, and a failing period on its own (what a
        // batch of overloads leaves while the limit stays at its ceiling; sql/016's fold never cleared that one).
        for state in ["consecutive_failures = 3, failing_since = now() - interval '1 hour'",
                      "circuit_open_until = now() - interval '1 second', consecutive_failures = 10",
                      "failing_since = now() - interval '1 hour'"] {
            let config = try fixture.addConfig(url: "https://example.com/recovering")
            try fixture.connection.query("UPDATE webhook_configs SET \(state) WHERE id = $1", [config])
            try signal(config, delivered: 1)
            try claimOnly(config)
            #expect(try fixture.scalar("""
                SELECT format('%s %s %s', consecutive_failures, failing_since IS NULL, circuit_open_until IS NULL)
                  FROM webhook_configs WHERE id = $1
                """, [config]) == "0 t t", "after \(state)")
        }
    }

    /// A claim that refuses what it picked (the attempt limit was lowered, so the rows fail unsent) leaves the
    /// endpoint's slots free: it signals the endpoint again, so the rest of its queue is claimed at once, not at the
    /// next reconciliation a minute later.
    @Test func aClaimThatRefusesWhatItPickedSignalsTheEndpointAgain() throws {
        let fixture = try Fixture()
        let config = try fixture.addConfig(url: "https://example.com/hook")
        try fixture.connection.query("UPDATE webhook_configs SET max_in_flight = 1 WHERE id = $1", [config])
        for _ in 0..<3 { try fixture.emit() }
        // The oldest delivery has used its attempts already.
        try fixture.connection.query("""
            UPDATE webhook_deliveries SET attempts = 5, max_attempts = 5
             WHERE id = (SELECT id FROM webhook_deliveries ORDER BY next_attempt_at, id LIMIT 1)
            """)
        try fixture.connection.query("UPDATE webhook_deliveries SET next_attempt_at = now() - interval '1 minute' WHERE attempts = 5")
        #expect(try fixture.count("SELECT count(*) FROM herald_claim(10, '1 minute', 'w')") == 0)
        #expect(try fixture.count("SELECT count(*) FROM webhook_deliveries WHERE status = 'failed'") == 1)
        // Signalled again, due now: the next claim takes the next delivery.
        #expect(try fixture.count("SELECT count(*) FROM herald_endpoint_signals WHERE config_id = $1 AND due_at <= now()", [config]) >= 1)
        #expect(try fixture.count("SELECT count(*) FROM herald_claim(10, '1 minute', 'w')") == 1)
    }

    /// A batch of retries gets one signal, for the earliest; once a claim has consumed it, the rest of the batch,
    /// due later, must still be signalled (else it waits for the reconciliation, up to a minute, whenever nothing
    /// else of the endpoint is in flight to bring a claim).
    @Test func retriesDueLaterThanTheOneAClaimTookKeepASignalForTheirTime() throws {
        let fixture = try Fixture()
        let config = try fixture.addConfig(url: "https://example.com/hook")
        for _ in 0..<3 { try fixture.emit() }
        // Three retries, as one write leaves them: due a second ago, in a minute and in two.
        try fixture.connection.query("""
            UPDATE webhook_deliveries d SET attempts = 1, next_attempt_at = now() + n.delay
              FROM (SELECT id, (row_number() OVER (ORDER BY id) - 1) * interval '1 minute' - interval '1 second' AS delay
                      FROM webhook_deliveries) n
             WHERE d.id = n.id
            """)
        #expect(try fixture.count("SELECT count(*) FROM herald_claim(10, '1 minute', 'w')") == 1)
        let next = "(SELECT min(next_attempt_at) FROM webhook_deliveries WHERE config_id = $1 AND lease_token IS NULL AND status = 'pending')"
        #expect(try fixture.count("""
            SELECT count(*) FROM herald_endpoint_signals WHERE config_id = $1 AND due_at > now() AND due_at <= \(next)
            """, [config]) >= 1)
    }

    /// A worker's session plans its statements once: the claim at its first call (a generic plan, sql/007), the
    /// write of results after a few. One that started on a nearly empty queue kept plans that read webhook_events
    /// end to end on every claim, and webhook_deliveries twice on every write, once the queue had grown (31 s a
    /// claim and 120 ms a write at 150,000 events: the slow first minute of every soak). Now the rows a claim and a
    /// write read stay proportional to the rows they handle (sql/016).
    @Test func aWorkerSessionPlannedOnAnEmptyQueueReadsOnlyWhatItHandlesOnceTheQueueHasGrown() throws {
        let fixture = try Fixture()
        try fixture.addConfig(url: "https://example.com/hook")
        let worker = try fixture.database.connect()
        // Claims, then writes every claimed delivery as delivered, on the worker's session, as a worker does.
        func claimAndComplete() throws -> (claimed: Int, applied: String?) {
            let claimed = try worker.query("""
                SELECT delivery_id, lease_token, event_id, config_id, event_type, attempt
                  FROM herald_claim(64, '1 minute', 'w')
                """).rows
            let column = { (i: Int) in PostgresArray.literal(claimed.map { $0[i] }) }
            let applied = try worker.query("""
                SELECT applied FROM herald_complete($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[],
                    $6::integer[], array_fill('delivered'::text, ARRAY[$7::integer]), array_fill(NULL::bigint, ARRAY[$7::integer]),
                    array_fill(200, ARRAY[$7::integer]), array_fill('ok'::text, ARRAY[$7::integer]),
                    array_fill(NULL::text, ARRAY[$7::integer]), array_fill(1, ARRAY[$7::integer]),
                    array_fill(NULL::text, ARRAY[$7::integer]), 'w')
                """, [column(0), column(1), column(2), column(3), column(4), column(5), String(claimed.count)]).scalar
            return (claimed.count, applied)
        }
        // Past the first five calls, after which PostgreSQL may keep a generic plan for herald_complete's statements.
        for _ in 0..<7 {
            try fixture.emit()
            let round = try claimAndComplete()
            #expect(round.claimed == 1 && round.applied == "1")
        }
        try fixture.connection.query("""
            INSERT INTO webhook_events (event_type, data)
            SELECT 'contact.created', jsonb_build_object('n', i) FROM generate_series(1, 20000) AS i
            """)
        try worker.query("BEGIN")
        let round = try claimAndComplete()
        #expect(round.claimed == 50 && round.applied == "50")  // 50: the default cap
        let read = try worker.query("""
            SELECT relname, idx_tup_fetch + seq_tup_read FROM pg_stat_xact_user_tables
             WHERE relname IN ('webhook_events', 'webhook_deliveries', 'webhook_configs')
            """).rows
        try worker.query("COMMIT")
        #expect(read.count == 3)
        for row in read {
            #expect(Int(row[1] ?? "") ?? .max < 1000,
                    "\(row[0] ?? "?"): \(row[1] ?? "?") rows read to claim and write 50 deliveries")
        }
    }

    /// sql/017: deliveries created by one transaction share (config_id, next_attempt_at). With B-tree
    /// deduplication their due-index entries were one posting list, which a scan cannot mark dead until every row
    /// in it is gone, so each claim stepped again over every row already claimed, until vacuum.
    @Test func claimedRowsOfOneTransactionAreSteppedOverOnceNotOnEveryClaim() throws {
        let fixture = try Fixture()
        // A scan marks an index entry dead only once its row is dead to every transaction of the database, and in
        // CI an autovacuum ANALYZE (of these rows, or of another table) sometimes holds a snapshot for a while: no
        // autovacuum on these tables, and the later probes below are retried until the marks could be made.
        try fixture.connection.query("ALTER TABLE webhook_deliveries SET (autovacuum_enabled = false)")
        try fixture.connection.query("ALTER TABLE webhook_events SET (autovacuum_enabled = false)")
        try fixture.addConfig(url: "https://example.com/hook")
        try fixture.connection.query("""
            INSERT INTO webhook_events (event_type, data)
            SELECT 'contact.created', jsonb_build_object('n', i) FROM generate_series(1, 400) AS i
            """)
        let session = try fixture.database.connect()
        #expect(try session.query("SELECT count(*) FROM herald_claim(64, '1 minute', 'w')").scalar == "50")
        // What the claim's per-endpoint probe does: the first due row of the endpoint, by the due index.
        try session.query("SET enable_seqscan = off")
        try session.query("SET enable_bitmapscan = off")
        func probeEntriesRead() throws -> Int {
            func entries() throws -> Int {
                try session.query("SELECT pg_stat_force_next_flush()")
                _ = try fixture.connection.query("SELECT pg_stat_clear_snapshot()")
                return try fixture.count("""
                    SELECT idx_tup_read FROM pg_stat_user_indexes WHERE indexrelname = 'webhook_deliveries_due_first'
                    """)
            }
            let before = try entries()
            #expect(try session.query("""
                SELECT count(*) FROM (
                    SELECT next_attempt_at FROM webhook_deliveries
                     WHERE config_id = (SELECT id FROM webhook_configs) AND status = 'pending' AND lease_token IS NULL
                       AND attempts = 0 AND NOT ordering_blocked AND next_attempt_at <= now()
                     ORDER BY next_attempt_at LIMIT 1) x
                """).scalar == "1")
            return try entries() - before
        }
        // The first probe reads the 50 entries of the claimed rows (so the index is what it used).
        #expect(try probeEntriesRead() > 50)
        // Every later one skips them, once nothing older than the claim can still see the rows. Without sql/017
        // the posting list stays and every probe reads them all again, however long this waits.
        var again = Int.max
        #expect(try eventually(timeout: 30, interval: 0.2) {
            again = try probeEntriesRead()
            return again <= 2
        }, "the probe read \(again) index entries again")
    }

    /// sql/018: a transaction that NOTIFYs holds a cluster-wide lock while it commits, so the fan-out wakes the
    /// workers only when an endpoint it queued to has no due signal (no claim of it already coming).
    @Test func aFanOutNotifiesOnlyWhenAnEndpointHasNoDueSignal() throws {
        let fixture = try Fixture()
        try fixture.addConfig(name: "a", url: "https://example.com/a")
        let listener = try fixture.database.connect()
        try listener.query("LISTEN herald_deliveries")
        func notified() throws -> Bool {
            var received = 0
            // Drain everything pending: a notification arrives once its transaction has committed.
            while !(try listener.waitForNotifications(timeoutMilliseconds: 300)).isEmpty { received += 1 }
            return received > 0
        }
        try fixture.emit()
        #expect(try notified(), "an idle endpoint's first event wakes the workers")
        try fixture.emit()
        try fixture.emit()
        #expect(try !notified(), "its due signal is still there: a claim of it is coming anyway")

        // Once a claim has taken the signal (and the deliveries), the next event wakes them again.
        let session = try fixture.database.connect()
        #expect(try session.query("SELECT count(*) FROM herald_claim(64, '1 minute', 'w')").scalar == "3")
        #expect(try fixture.count("SELECT count(*) FROM herald_endpoint_signals WHERE due_at <= now()") == 0)
        try fixture.emit()
        #expect(try notified())

        // An event queued to two endpoints wakes them when either has no due signal.
        try fixture.addConfig(name: "b", url: "https://example.com/b")
        try fixture.emit()
        #expect(try notified(), "endpoint b had no signal")
        try fixture.emit()
        #expect(try !notified())

        // A signal due later (a retry's) is no claim coming now.
        try fixture.connection.query("UPDATE herald_endpoint_signals SET due_at = now() + interval '1 hour'")
        try fixture.emit()
        #expect(try notified())
    }

    @Test func aClaimWith100000IdleConfigsVisitsOnlyEndpointsWithDueWork() throws {
        let fixture = try Fixture()
        try fixture.connection.query("""
            INSERT INTO webhook_configs (name, url, events, organization_id)
            SELECT 'idle ' || g, 'https://example.com/idle', '{*}', gen_random_uuid() FROM generate_series(1, 100000) g
            """)
        try fixture.addConfig(url: "https://example.com/hot")
        for _ in 0..<20 { try fixture.emit() }
        try fixture.connection.query("ANALYZE webhook_configs")
        let session = try fixture.database.connect()
        func configReads() throws -> Int {
            try session.query("SELECT pg_stat_force_next_flush()")
            _ = try fixture.connection.query("SELECT pg_stat_clear_snapshot()")
            return try fixture.count("""
                SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0) FROM pg_stat_user_tables
                 WHERE relname = 'webhook_configs'
                """)
        }
        let before = try configReads()
        let claimed = try session.query("SELECT count(*) FROM herald_claim(64, '1 minute', 'w')").scalar
        let after = try configReads()
        #expect(claimed == "20")
        // A few rows per claimed delivery (joins by primary key); the first release read every one of the 100,001.
        #expect(after - before < 500, "the claim read \(after - before) config rows")
        // The backlog sample for /metrics has the same shape.
        try fixture.connection.query("UPDATE webhook_deliveries SET lease_token = NULL, next_attempt_at = now()")
        let beforeBacklog = try configReads()
        #expect(try session.query("SELECT count(*) FROM herald_backlog()").scalar == "1")
        let backlogReads = try configReads() - beforeBacklog
        #expect(backlogReads < 500, "the backlog sample read \(backlogReads) config rows")
    }

    /// A worker whose heartbeat stopped loses its leases long before they expire; if it was only paused, its
    /// late result is applied while nobody has taken the delivery again, and only logged once someone has.
    @Test func staleHeartbeatRescueAndTheLateResultRule() throws {
        let fixture = try Fixture()
        try fixture.addConfig(url: "https://example.com/hook")
        try fixture.emit()
        try fixture.emit()
        let paused = try fixture.database.connect()
        let claimed = try paused.query("SELECT delivery_id, lease_token FROM herald_claim(10, '10 minutes', 'paused')").rows
        #expect(claimed.count == 2)
        try fixture.connection.query("""
            INSERT INTO herald_worker_heartbeats (worker, last_seen_at) VALUES ('paused', now() - interval '20 seconds')
            """)
        // Not this worker's own (a worker never takes itself for dead), and fresh heartbeats are left alone.
        #expect(try fixture.scalar("SELECT herald_rescue(5, 100, '1 minute')") == "0")
        #expect(try fixture.scalar("SELECT herald_rescue(5, 100, '1 second', NULL, 'paused')") == "0")
        #expect(try fixture.scalar("SELECT herald_rescue(5, 100, '1 second')") == "2")
        #expect(try fixture.scalar("SELECT string_agg(outcome, ',') FROM webhook_logs") == "lost,lost")

        func complete(_ row: [String?], outcome: String, status: String) throws -> String? {
            try fixture.scalar("""
                SELECT applied FROM herald_complete(ARRAY[$1]::uuid[], ARRAY[$2]::uuid[],
                    ARRAY[(SELECT event_id FROM webhook_deliveries WHERE id = $1)],
                    ARRAY[(SELECT config_id FROM webhook_deliveries WHERE id = $1)], ARRAY['contact.created'], ARRAY[1],
                    ARRAY[$3], ARRAY[NULL]::bigint[], ARRAY[$4]::integer[], ARRAY[NULL]::text[], ARRAY[NULL]::text[],
                    ARRAY[5], ARRAY['{}'], 'paused')
                """, [row[0], row[1], outcome, status])
        }
        // The first: rescued, not yet claimed again. The paused worker wakes up and reports its 200: applied,
        // and the attempt has one log row (the 'lost' row became 'delivered').
        #expect(try complete(claimed[0], outcome: "delivered", status: "200") == "1")
        #expect(try fixture.scalar("SELECT status FROM webhook_deliveries WHERE id = $1", [claimed[0][0]]) == "delivered")
        #expect(try fixture.scalar("SELECT string_agg(outcome, ',') FROM webhook_logs WHERE delivery_id = $1",
                                   [claimed[0][0]]) == "delivered")
        // Writing the same result again (a reconnect after a lost reply) adds nothing.
        #expect(try complete(claimed[0], outcome: "delivered", status: "200") == "0")
        #expect(try fixture.count("SELECT count(*) FROM webhook_logs WHERE delivery_id = $1", [claimed[0][0]]) == 1)

        // The second: another worker claimed it again first. The late result is only logged.
        let other = try fixture.connection.query("SELECT delivery_id, attempt FROM herald_claim(10, '1 minute', 'other')").rows
        #expect(other.count == 1 && other[0][0] == claimed[1][0] && other[0][1] == "2")
        #expect(try complete(claimed[1], outcome: "delivered", status: "200") == "0")
        #expect(try fixture.scalar("SELECT status || ' ' || (lease_token IS NOT NULL) FROM webhook_deliveries WHERE id = $1",
                                   [claimed[1][0]]) == "pending true")
        #expect(try fixture.scalar("SELECT string_agg(outcome || ' ' || attempt, ',') FROM webhook_logs WHERE delivery_id = $1",
                                   [claimed[1][0]]) == "delivered 1")
    }

    /// After a replay the attempt numbers start again at 1: the request says which replay it belongs to, and so
    /// does each log row.
    @Test func replayedDeliveriesAreMarkedInTheRequestAndTheLog() throws {
        let fixture = try Fixture()
        let receiver = try TestReceiver()
        try fixture.addConfig(url: receiver.url)
        try fixture.emit()
        _ = try fixture.startWorker()
        #expect(try fixture.waitUntilSettled())
        let delivery = try fixture.scalar("SELECT id FROM webhook_deliveries")!
        #expect(try fixture.scalar("SELECT herald_replay(ARRAY[$1]::uuid[])", [delivery]) == "1")
        #expect(eventually { receiver.requests.count == 2 })
        #expect(try fixture.waitUntilSettled())
        #expect(receiver.requests[0].headers["x-webhook-replay"] == nil)
        #expect(receiver.requests[1].headers["x-webhook-replay"] == "1")
        #expect(receiver.requests[1].headers["x-webhook-attempt"] == "1")
        #expect(try fixture.scalar("SELECT string_agg(replay || ':' || attempt, ',' ORDER BY id) FROM webhook_logs") == "0:1,1:1")
    }

    /// A worker restarted under the same HERALD_WORKER_ID releases what its earlier run left behind at once,
    /// instead of waiting for the 10-minute lease.
    @Test func aWorkerRestartedWithAStableIdReleasesItsOldLeases() throws {
        let fixture = try Fixture()
        let receiver = try TestReceiver()
        try fixture.addConfig(url: receiver.url)
        for _ in 0..<5 { try fixture.emit() }
        #expect(try fixture.count("SELECT count(*) FROM herald_claim(10, '10 minutes', 'stable-1')") == 5)
        // Its heartbeat is fresh: only its own restart can free these before the lease ends.
        try fixture.connection.query("INSERT INTO herald_worker_heartbeats (worker) VALUES ('stable-1')")
        _ = try fixture.startWorker(["HERALD_WORKER_ID": "stable-1", "HERALD_LEASE_MS": "600000"])
        #expect(try fixture.waitUntilSettled(timeout: 20))
        #expect(receiver.requests.count == 5)
        #expect(try fixture.count("SELECT count(*) FROM webhook_logs WHERE outcome = 'lost' AND error LIKE '%restarted%'") == 5)
    }
}
