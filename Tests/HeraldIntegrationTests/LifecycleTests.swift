import Foundation
import HeraldCore
import HeraldPostgres
import HeraldTestSupport
import HeraldWorker
import Testing

/// Issue 11: `webhook_logs` partitioned by time and managed by Herald (sql/010–012), retention by whole
/// partitions, the migration from the unpartitioned table, and attempt bodies rebuilt from the event.
@Suite struct LifecycleTests {
    /// Replaces the fixture's partitions by 1-minute ones starting `minutesBack` minutes ago, as if the workers
    /// had kept them for that long (tests cannot wait for days to pass).
    private func minutePartitions(_ fixture: Fixture, startingMinutesAgo minutesBack: Int) throws {
        for name in try fixture.connection.query("SELECT partition FROM herald_log_partitions").rows.map({ $0[0]! }) {
            try fixture.connection.query("DROP TABLE \(name)")
        }
        try fixture.connection.query("UPDATE herald_log_partitioning SET partition_interval = interval '1 minute'")
        let created = try fixture.count(
            "SELECT herald_create_log_partitions(now() - $1::interval)", ["\(minutesBack) minutes"])
        #expect(created >= 100)
    }

    private func insertLogRow(_ fixture: Fixture, minutesFromNow minutes: Double) throws {
        try fixture.connection.query("""
            INSERT INTO webhook_logs (delivery_id, event_id, config_id, event_type, attempt, outcome, created_at)
            VALUES (gen_random_uuid(), gen_random_uuid(), gen_random_uuid(), 'contact.created', 1, 'delivered',
                    now() + $1::interval)
            """, ["\(minutes) minutes"])
    }

    @Test func partitionsExistAheadForEveryTimeARowCanHaveAndThereIsNoDefault() throws {
        let fixture = try Fixture()
        #expect(try fixture.scalar("SELECT partdefid FROM pg_partitioned_table WHERE partrelid = 'webhook_logs'::regclass") == "0")
        #expect(try fixture.scalar("SELECT relkind FROM pg_class WHERE oid = 'webhook_logs'::regclass") == "p")
        // Daily partitions by default, contiguous from the start of today to at least a week ahead.
        let gaps = try fixture.count("""
            SELECT count(*) FROM (SELECT lower_bound, lag(upper_bound) OVER (ORDER BY lower_bound) AS previous
                                    FROM herald_log_partitions WHERE attached) p
             WHERE previous IS NOT NULL AND previous <> lower_bound
            """)
        #expect(gaps == 0)
        #expect(try fixture.scalar("SELECT min(lower_bound) <= now() AND max(upper_bound) >= now() + interval '7 days' FROM herald_log_partitions") == "t")
        // A row for every hour of the coming week has a partition to go to.
        try fixture.connection.query("""
            INSERT INTO webhook_logs (delivery_id, event_id, config_id, event_type, attempt, outcome, created_at)
            SELECT gen_random_uuid(), gen_random_uuid(), gen_random_uuid(), 'contact.created', 1, 'delivered',
                   now() + k * interval '1 hour'
              FROM generate_series(0, 7 * 24 - 1) AS k
            """)
        #expect(try fixture.count("SELECT count(*) FROM webhook_logs") == 7 * 24)
        #expect(try fixture.count("SELECT count(DISTINCT tableoid) FROM webhook_logs") >= 7)
        // Beyond the horizon there is no catch-all partition: the row is refused, naming the table.
        let refused = #expect(throws: PostgresError.self) { try insertLogRow(fixture, minutesFromNow: 60 * 24 * 30) }
        #expect(refused?.sqlState == "23514" && refused?.message.contains("webhook_logs") == true)

        // The interval is validated, and applies to the partitions created from then on.
        let rejected = try HeraldProcess.run(["migrate", "--log-partition-interval", "7m"],
                                             environment: ["DATABASE_URL": fixture.database.url])
        #expect(rejected.status != 0 && rejected.output.contains("divide a day"))
        let invalid = #expect(throws: PostgresError.self) {
            try fixture.connection.query("SELECT herald_set_log_partition_interval(interval '90 seconds')")
        }
        #expect(invalid?.sqlState == "22023")
        try minutePartitions(fixture, startingMinutesAgo: 0)
        #expect(try fixture.scalar("SELECT bool_and(upper_bound - lower_bound = interval '1 minute') FROM herald_log_partitions WHERE lower_bound > now()") == "t")
    }

    @Test func workersCreatePartitionsAheadAndDropThosePastRetention() throws {
        let fixture = try Fixture()
        try minutePartitions(fixture, startingMinutesAgo: 10)
        let insertedAt = try #require(try fixture.scalar("SELECT now()"))
        for minute in -10...5 { try insertLogRow(fixture, minutesFromNow: Double(minute) + 0.01) }
        let horizonBefore = try #require(try fixture.scalar("SELECT max(upper_bound) FROM herald_log_partitions"))

        let worker = try fixture.startWorker(["HERALD_RETENTION": "4m"])
        // The maintenance thread tops the partitions up to 100 minutes ahead and drops those past retention.
        #expect(try eventually(timeout: 30) {
            try fixture.scalar("""
                SELECT max(upper_bound) >= now() + interval '99 minutes' AND min(lower_bound) >= now() - interval '5 minutes'
                       AND bool_and(attached)
                  FROM herald_log_partitions
                """) == "t"
        })
        // Detached is not yet dropped: wait for the drop to be reported before stopping the worker.
        #expect(eventually(timeout: 30) { worker.output.contains("dropped webhook_logs partitions past retention") })
        #expect(try fixture.scalar("SELECT max(upper_bound) > $1::timestamptz FROM herald_log_partitions", [horizonBefore]) == "t")
        // What is left is contiguous: nothing newer than retention went, and no gap opened.
        #expect(try fixture.count("""
            SELECT count(*) FROM (SELECT lower_bound, lag(upper_bound) OVER (ORDER BY lower_bound) AS previous
                                    FROM herald_log_partitions) p
             WHERE previous IS NOT NULL AND previous <> lower_bound
            """) == 0)
        #expect(try fixture.count("SELECT count(*) FROM webhook_logs WHERE created_at > $1::timestamptz + interval '30 seconds'",
                                  [insertedAt]) == 5)
        worker.terminate()
        #expect(worker.waitForExit(timeout: 10))
    }

    /// The signals table churns about 1,000 rows a second in the soak, and autovacuum visits a database once a
    /// minute at most: the workers vacuum it between those visits (it grew to 28 MiB and 100,000 dead rows in the
    /// soak without).
    @Test func workersVacuumTheSignalsTableBetweenAutovacuumVisits() throws {
        let fixture = try Fixture()
        // Only the worker may vacuum it here, so that what is seen is the worker's doing.
        try fixture.connection.query("ALTER TABLE herald_endpoint_signals SET (autovacuum_enabled = false)")
        try fixture.connection.query("""
            INSERT INTO herald_endpoint_signals (config_id, due_at)
            SELECT gen_random_uuid(), now() + interval '1 day' FROM generate_series(1, 5000)
            """)
        try fixture.connection.query("DELETE FROM herald_endpoint_signals WHERE due_at > now() + interval '12 hours'")
        let deadRows = "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'herald_endpoint_signals'"
        #expect(try eventually(timeout: 10) { try fixture.count(deadRows) >= 5000 })
        #expect(try fixture.count(
            "SELECT vacuum_count + autovacuum_count FROM pg_stat_user_tables WHERE relname = 'herald_endpoint_signals'") == 0)

        let worker = try fixture.startWorker()
        // Twice: it goes on vacuuming (the first version stopped at the first vacuum it had to skip).
        #expect(try eventually(timeout: 30) {
            try fixture.count(
                "SELECT vacuum_count FROM pg_stat_user_tables WHERE relname = 'herald_endpoint_signals'") >= 2
                && fixture.count(deadRows) == 0
        })
        worker.terminate()
        #expect(worker.waitForExit(timeout: 10))
        #expect(!worker.output.contains("cannot vacuum herald_endpoint_signals"))
    }

    /// A maintenance statement that keeps failing (here a function renamed away) is retried with a growing delay,
    /// and each warning names the error. Connecting again succeeds every time, and that used to reset the delay:
    /// a warning and a new connection every 100 ms, for as long as the fault lasted.
    @Test func maintenanceThatKeepsFailingBacksOffAndSaysWhy() throws {
        let fixture = try Fixture()
        try fixture.connection.query("ALTER FUNCTION herald_create_log_partitions(timestamptz) RENAME TO herald_create_log_partitions_away")
        let worker = try fixture.startWorker()
        let failure = "table maintenance failed"
        #expect(eventually(timeout: 20) { worker.output.contains(failure) })
        // Upper bound only: a slow machine can make fewer attempts, never more. With the delay doubling from
        // 100 ms, 3 s hold about 5 attempts; with the delay reset on every connection, about 25.
        Thread.sleep(forTimeInterval: 3)
        let warnings = worker.output.components(separatedBy: "\n").filter { $0.contains(failure) }
        #expect(warnings.count >= 2, "it must go on trying")
        #expect(warnings.count <= 8, "\(warnings.count) attempts in 3 s: the delay did not grow")
        #expect(warnings.allSatisfy { $0.contains("herald_create_log_partitions") })
        // Back, with the furthest partition missing: the next attempt works and creates it again.
        let furthest = try fixture.scalar(
            "SELECT partition FROM herald_log_partitions ORDER BY upper_bound DESC LIMIT 1")!
        try fixture.connection.query("DROP TABLE \(furthest)")
        try fixture.connection.query("ALTER FUNCTION herald_create_log_partitions_away(timestamptz) RENAME TO herald_create_log_partitions")
        #expect(eventually(timeout: 30) { worker.output.contains("created webhook_logs partitions ahead") })
        #expect(try fixture.count("SELECT count(*) FROM herald_log_partitions WHERE partition = $1", [furthest]) == 1)
        worker.terminate()
        #expect(worker.waitForExit(timeout: 10))
    }

    /// A role that does not own the table cannot vacuum it: PostgreSQL only warns, and the worker is told so, to
    /// say it once and leave the table to autovacuum. A vacuum already under way is skipped without waiting.
    @Test func vacuumingTheSignalsTableSaysWhenItIsNotPermittedAndNeverWaits() throws {
        let fixture = try Fixture()
        let maintenance = QueueMaintenance(connection: fixture.connection)
        let role = "herald_not_owner_\(UInt32.random(in: 0...UInt32.max))"
        try fixture.connection.query("CREATE ROLE \(role)")
        defer { _ = try? fixture.connection.query("RESET ROLE"); _ = try? fixture.connection.query("DROP ROLE \(role)") }
        try fixture.connection.query("SET ROLE \(role)")
        let refused = try maintenance.vacuumSignals()
        guard case let .notPermitted(message) = refused else {
            Issue.record("expected notPermitted, got \(refused)")
            return
        }
        #expect(message.contains("herald_endpoint_signals"))
        try fixture.connection.query("RESET ROLE")

        // Another vacuum of it under way (autovacuum's; here a lock of the same strength): skipped at once. Were it
        // to wait, lock_timeout would turn the wait into an error.
        let holder = try fixture.database.connect()
        defer { holder.close() }
        try holder.query("BEGIN")
        try holder.query("LOCK TABLE herald_endpoint_signals IN SHARE UPDATE EXCLUSIVE MODE")
        try fixture.connection.query("SET lock_timeout = '2s'")
        #expect(try maintenance.vacuumSignals() == .skipped)
        try holder.query("ROLLBACK")
        #expect(try maintenance.vacuumSignals() == .done)
        // Vacuumed less than 4 s ago: the next worker's turn is skipped.
        #expect(try maintenance.vacuumSignals() == .skipped)
        try fixture.connection.query("RESET lock_timeout")
    }

    @Test func heraldPruneDropsExactlyThePartitionsPastRetention() throws {
        let fixture = try Fixture()
        try minutePartitions(fixture, startingMinutesAgo: 10)
        for minute in -10...5 { try insertLogRow(fixture, minutesFromNow: Double(minute) + 0.01) }
        let partitionsBefore = try fixture.connection.query(
            "SELECT partition, upper_bound FROM herald_log_partitions ORDER BY lower_bound").rows
        let rowTimes = PostgresArray.literal(try fixture.connection.query("SELECT created_at FROM webhook_logs").rows.map { $0[0]! })
        let startedAt = try #require(try fixture.scalar("SELECT now() - interval '5 minutes'"))

        let dryRun = try HeraldProcess.run(["prune", "--older-than", "5m", "--dry-run"],
                                           environment: ["DATABASE_URL": fixture.database.url])
        #expect(dryRun.status == 0)
        #expect(try fixture.count("SELECT count(*) FROM herald_log_partitions") == partitionsBefore.count)
        let pruned = try HeraldProcess.run(["prune", "--older-than", "5m"],
                                           environment: ["DATABASE_URL": fixture.database.url])
        #expect(pruned.status == 0, "\(pruned.output)")
        let endedAt = try #require(try fixture.scalar("SELECT now() - interval '5 minutes'"))

        let remaining = Set(try fixture.connection.query("SELECT partition FROM herald_log_partitions").rows.map { $0[0]! })
        for row in partitionsBefore {
            let (name, upper) = (row[0]!, row[1]!)
            let entirelyOld = try fixture.scalar("SELECT $1::timestamptz <= $2::timestamptz", [upper, startedAt]) == "t"
            let newer = try fixture.scalar("SELECT $1::timestamptz > $2::timestamptz", [upper, endedAt]) == "t"
            if entirelyOld { #expect(!remaining.contains(name), "\(name) is past retention but was kept") }
            if newer { #expect(remaining.contains(name), "\(name) is newer than retention but was dropped") }
        }
        #expect(try fixture.count("SELECT count(*) FROM pg_class WHERE relname = ANY ($1::text[])",
                                  [PostgresArray.literal(partitionsBefore.map { $0[0]! }.filter { !remaining.contains($0) })]) == 0)
        // Every row of a kept partition is still there; rows of dropped ones are gone.
        let expectedRows = try fixture.count("""
            SELECT count(*) FROM unnest($1::timestamptz[]) AS t
             WHERE t >= (SELECT min(lower_bound) FROM herald_log_partitions)
            """, [rowTimes])
        #expect(try fixture.count("SELECT count(*) FROM webhook_logs") == expectedRows)
        #expect(expectedRows > 5 && expectedRows < 16)
        #expect(pruned.output.contains("dropped"))
    }

    @Test func migratingAnUnpartitionedWebhookLogsKeepsEveryRow() throws {
        let database = try TestDatabase.create(migrated: false)
        defer { database.drop() }
        let connection = try database.connect()
        defer { connection.close() }
        // The schema as it was before issue 11 (migrations 001–009), with a history already in it.
        let before = FileManager.default.temporaryDirectory.appendingPathComponent("herald-sql-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: before, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: before) }
        let sql = try TestEnvironment.sqlDirectory()
        for name in try FileManager.default.contentsOfDirectory(atPath: sql.path) where name < "010" {
            try FileManager.default.copyItem(at: sql.appendingPathComponent(name), to: before.appendingPathComponent(name))
        }
        let environment = ["DATABASE_URL": database.url]
        #expect(try HeraldProcess.run(["migrate", "--sql-dir", before.path], environment: environment).status == 0)
        #expect(try connection.query("SELECT relkind FROM pg_class WHERE oid = 'webhook_logs'::regclass").scalar == "r")
        try connection.query("""
            INSERT INTO webhook_logs (delivery_id, event_id, config_id, event_type, attempt, outcome, payload,
                                      response_status, response_body, error, duration_ms, worker, created_at,
                                      lease_token, replay)
            SELECT gen_random_uuid(), gen_random_uuid(), gen_random_uuid(), 'contact.created', 1 + k % 5,
                   (ARRAY['delivered', 'retry', 'failed', 'lost'])[1 + k % 4], '{"n":' || k || '}', 200 + k % 300,
                   'body ' || k, CASE WHEN k % 3 = 0 THEN 'error ' || k END, k % 1000, 'w-' || k % 7,
                   now() - k * interval '10 minutes', CASE WHEN k % 2 = 0 THEN gen_random_uuid() END, k % 3
              FROM generate_series(1, 20000) AS k
            """)
        let fingerprint = """
            SELECT count(*), md5(string_agg(concat_ws('|', id, delivery_id, event_id, config_id, event_type, attempt,
                       outcome, payload, response_status, response_body, error, duration_ms, worker, created_at,
                       lease_token, replay), ',' ORDER BY id))
              FROM webhook_logs
            """
        let original = try connection.query(fingerprint).rows[0]
        #expect(original[0] == "20000")

        let upgrade = try HeraldProcess.run(["migrate", "--sql-dir", sql.path], environment: environment)
        #expect(upgrade.status == 0, "\(upgrade.output)")
        #expect(try connection.query(fingerprint).rows[0] == original)
        #expect(try connection.query("SELECT relkind FROM pg_class WHERE oid = 'webhook_logs'::regclass").scalar == "p")
        #expect(try connection.query("SELECT attached FROM herald_log_partitions WHERE partition = 'webhook_logs_legacy'").scalar == "t")
        // Views over the table follow it, and new rows continue the ids.
        #expect(try connection.query("""
            SELECT EXISTS (SELECT 1 FROM pg_depend d JOIN pg_rewrite w ON w.oid = d.objid
                            WHERE w.ev_class = 'webhook_config_stats'::regclass AND d.refobjid = 'webhook_logs'::regclass)
            """).scalar == "t")
        let next = try connection.query("""
            INSERT INTO webhook_logs (delivery_id, event_id, config_id, event_type, attempt, outcome)
            VALUES (gen_random_uuid(), gen_random_uuid(), gen_random_uuid(), 'contact.created', 1, 'delivered')
            RETURNING id
            """).scalar
        #expect(Int(next ?? "0")! > 20000)

        // Retention reaches into the old table row by row (it is one partition reaching back to the beginning).
        let pruned = try HeraldProcess.run(["prune", "--older-than", "30d"], environment: environment)
        #expect(pruned.status == 0, "\(pruned.output)")
        #expect(try connection.query("SELECT count(*) FROM webhook_logs WHERE created_at < now() - interval '30 days'").scalar == "0")
        #expect(try connection.query("SELECT count(*) FROM webhook_logs").scalar == String(30 * 24 * 6 - 1 + 1))
    }

    @Test func heraldShowPrintsTheExactBodyOfEveryAttempt() throws {
        let fixture = try Fixture()
        let receiver = try TestReceiver { _, index in index < 2 ? .status(500) : .status(200) }
        try fixture.addConfig(url: receiver.url, secret: "s")
        // Strings with the blanks and separators the compaction must keep, escapes, non-ASCII, numbers as written.
        let data = #"{"s": "a, b: c", "q": "quote \" and \\ back", "u": "ünï 🎉", "c": "\u0001\t", "n": [1, 2.50, -0.0, 1e10], "e": {}, "a": [], "k": {"x y": " spaced : , "}}"#
        let event = try fixture.emit(data: data)
        let worker = try fixture.startWorker()
        #expect(try fixture.waitUntilSettled())
        worker.terminate()
        _ = worker.waitForExit(timeout: 10)
        let delivery = try #require(try fixture.scalar("SELECT id FROM webhook_deliveries WHERE event_id = $1", [event]))
        #expect(receiver.requests.count == 3)
        // Nothing of the body is stored per attempt any more...
        #expect(try fixture.count("SELECT count(*) FROM webhook_logs WHERE payload IS NOT NULL") == 0)
        // ...and yet every attempt's body is there, byte for byte what the receiver got.
        let shown = try HeraldProcess.run(["show", delivery, "--json"], environment: ["DATABASE_URL": fixture.database.url])
        #expect(shown.status == 0)
        let document = try #require(try JSONSerialization.jsonObject(with: Data(shown.output.utf8)) as? [String: Any])
        let attempts = try #require(document["attempts"] as? [[String: Any]])
        #expect(attempts.map { $0["body"] as? String } == receiver.requests.map { Optional($0.bodyText) })
        let text = try HeraldProcess.run(["show", delivery], environment: ["DATABASE_URL": fixture.database.url])
        #expect(text.output.contains("body sent by attempt 0.1, 0.2, 0.3 (replay.attempt), exact bytes:\n" + receiver.requests[0].bodyText + "\n"))

        // The SQL rebuild and the worker's Envelope agree on more shapes of data.
        let samples = [#"{}"#, #"[]"#, #"{"a": {"b": [1, {"c": "d, e"}]}}"#, #"{"esc": "\\\" , :\\\\"}"#,
                       #"{"big": 123456789012345678901234567890, "neg": -1.5e-7, "t": true, "f": false, "z": null}"#,
                       #""just a string, with: blanks""#, #"{"nl": "line\nnext", "tab": "\t", "bs": "\b\f\r"}"#]
        for sample in samples {
            let row = try fixture.connection.query("""
                SELECT herald_envelope('deal.updated', timestamptz '2026-01-02 03:04:05.678+00', $1::jsonb),
                       $1::jsonb::text, to_char(timestamptz '2026-01-02 03:04:05.678+00' AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
                """, [sample]).rows[0]
            let envelope = Envelope(eventType: "deal.updated", timestamp: row[2]!, dataJSON: row[1]!)
            #expect(row[0] == String(decoding: envelope.encoded(), as: UTF8.self), "\(sample)")
        }
    }
}
