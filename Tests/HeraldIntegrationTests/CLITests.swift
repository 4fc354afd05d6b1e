import Foundation
import HeraldPostgres
import HeraldTestSupport
import Synchronization
import Testing

/// Every operator subcommand through the built binary, checked against its output and the database.
@Suite struct CLITests {
    func herald(_ fixture: Fixture, _ arguments: String...) throws -> (status: Int32, output: String) {
        try HeraldProcess.run(arguments, environment: ["DATABASE_URL": fixture.database.url])
    }

    @Test func configLifecycle() throws {
        let fixture = try Fixture()
        let created = try herald(fixture, "config", "create", "--name", "CRM sync", "--url", "https://example.com/hooks",
                                 "--events", "contact.created,deal.stage.changed", "--generate-secret", "--max-attempts", "4")
        #expect(created.status == 0, "\(created.output)")
        let secretLine = try #require(created.output.split(separator: "\n").first { $0.hasPrefix("secret: ") })
        let secret = String(secretLine.dropFirst("secret: ".count))
        #expect(secret.count == 64)
        let row = try fixture.connection.query(
            "SELECT id, secret, events::text, max_attempts, is_active FROM webhook_configs WHERE name = 'CRM sync'").rows[0]
        #expect(row[1] == secret && row[2] == "{contact.created,deal.stage.changed}" && row[3] == "4" && row[4] == "t")
        let id = row[0]!

        // The secret is shown once, never by list/show, in text or JSON.
        for arguments in [["config", "list"], ["config", "list", "--json"], ["config", "show", "CRM sync"],
                          ["config", "show", id, "--json"]] {
            let result = try HeraldProcess.run(arguments, environment: ["DATABASE_URL": fixture.database.url])
            #expect(result.status == 0)
            #expect(result.output.contains("CRM sync"))
            #expect(!result.output.contains(secret), "\(arguments) printed the secret")
        }
        let listed = try herald(fixture, "config", "list", "--json")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(listed.output.utf8)) as? [String: Any])
        #expect(object["secret"] as? String == "set")

        #expect(try herald(fixture, "config", "update", "CRM sync", "--url", "https://example.org/new", "--events", "*").status == 0)
        #expect(try fixture.scalar("SELECT url || ' ' || events::text FROM webhook_configs WHERE id = $1", [id]) == "https://example.org/new {*}")
        #expect(try herald(fixture, "config", "disable", id).status == 0)
        #expect(try fixture.scalar("SELECT is_active FROM webhook_configs WHERE id = $1", [id]) == "f")
        #expect(try herald(fixture, "config", "enable", "CRM sync").status == 0)
        #expect(try fixture.scalar("SELECT is_active FROM webhook_configs WHERE id = $1", [id]) == "t")
        let rotated = try herald(fixture, "config", "rotate-secret", id)
        #expect(rotated.status == 0)
        let newSecret = try fixture.scalar("SELECT secret FROM webhook_configs WHERE id = $1", [id])!
        #expect(newSecret != secret && rotated.output.contains(newSecret))
        #expect(try herald(fixture, "config", "update", id, "--no-secret").status == 0)
        #expect(try fixture.scalar("SELECT secret IS NULL FROM webhook_configs WHERE id = $1", [id]) == "t")
        try fixture.emit()
        let deleted = try herald(fixture, "config", "delete", "CRM sync")
        #expect(deleted.status == 0 && deleted.output.contains("and its 1 deliveries"))
        #expect(try fixture.count("SELECT count(*) FROM webhook_configs") == 0)
    }

    @Test func badInputExitsNonZeroWithOneClearLineAndWritesNothing() throws {
        let fixture = try Fixture()
        try fixture.addConfig(name: "known", url: "https://example.com/h")
        let cases: [([String], String)] = [
            (["config", "create", "--name", "x", "--url", "ftp://x", "--events", "*"], "is not an absolute http:// or https:// URL"),
            (["config", "create", "--name", "x", "--url", "https://u:p@x.com/", "--events", "*"], "must not carry credentials"),
            (["config", "create", "--name", "x", "--url", "https://x.com/", "--events", "contact.creatd"], "unknown event type(s) contact.creatd"),
            (["config", "create", "--name", " ", "--url", "https://x.com/", "--events", "*"], "--name must not be empty"),
            (["config", "show", "nope"], "no webhook config with id or name 'nope'"),
            (["emit", "contact.exploded"], "unknown event type 'contact.exploded'"),
            (["emit", "contact.created", "--data", "{not json"], "--data is not valid JSON"),
            (["emit", "contact.created", "--data", "[1,2]"], "--data must be a JSON object"),
            (["emit", "contact.created", "--org", "acme"], "--org 'acme' is not a UUID"),
            (["logs", "--since", "3x"], "--since '3x' is not a duration"),
            (["deliveries", "--status", "lost"], "--status 'lost' is not a delivery status"),
            (["replay"], "name deliveries by id, or choose them with --status failed"),
            (["replay", "--status", "pending"], "--status 'pending' cannot be replayed"),
            (["test", "unknown-config"], "no webhook config with id or name 'unknown-config'"),
        ]
        for (arguments, message) in cases {
            let result = try HeraldProcess.run(arguments, environment: ["DATABASE_URL": fixture.database.url])
            #expect(result.status != 0, "\(arguments) succeeded")
            #expect(result.output.contains(message), "\(arguments): \(result.output)")
            #expect(result.output.split(separator: "\n").count == 1, "\(arguments) printed more than one line: \(result.output)")
        }
        #expect(try fixture.count("SELECT count(*) FROM webhook_configs") == 1)
        #expect(try fixture.count("SELECT count(*) FROM webhook_events") == 0)
    }

    @Test func emitFansOutAndReportsIt() throws {
        let fixture = try Fixture()
        let org = UUID().uuidString.lowercased()
        try fixture.addConfig(name: "a", url: "https://example.com/a", events: "{deal.created}", organization: org)
        try fixture.addConfig(name: "b", url: "https://example.com/b", events: "{*}", organization: org)
        try fixture.addConfig(name: "c", url: "https://example.com/c", events: "{*}")
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("event-\(UUID().uuidString).json")
        try Data(#"{"id": "d-1", "amount": 12}"#.utf8).write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        let result = try herald(fixture, "emit", "deal.created", "--data", "@\(file.path)", "--org", org)
        #expect(result.status == 0)
        #expect(result.output.contains("fanned out to 2 deliveries"))
        #expect(try fixture.scalar("SELECT data->>'amount' FROM webhook_events") == "12")
    }

    @Test func testCommandReportsAcceptanceAndRefusal() throws {
        let fixture = try Fixture()
        let good = try TestReceiver { _, _ in .status(200, body: "welcome") }
        let bad = try TestReceiver { _, _ in .status(500, body: "it broke") }
        let org = UUID().uuidString
        try fixture.addConfig(name: "good", url: good.url, events: "{contact.created}", organization: org)
        try fixture.addConfig(name: "bad", url: bad.url, events: "{*}", secret: "s")
        try fixture.addConfig(name: "bystander", url: good.url, events: "{*}", organization: org)
        _ = try fixture.startWorker()

        let accepted = try herald(fixture, "test", "good")
        #expect(accepted.status == 0, "\(accepted.output)")
        #expect(accepted.output.contains("accepted: HTTP 200"))
        #expect(accepted.output.contains("response: welcome"))
        // Only the named config got it (not the bystander subscribed to * in the same organization).
        #expect(good.requests.count == 1)
        #expect(good.requests.first?.headers["x-webhook-event"] == "webhook.test")

        let refused = try herald(fixture, "test", "bad")
        #expect(refused.status == 1)
        #expect(refused.output.contains("not accepted: HTTP 500"))
        #expect(refused.output.contains("response: it broke"))
        #expect(bad.requests.count == 1)  // one attempt only, no retries for a test
        #expect(bad.requests.first?.headers["x-webhook-signature"] != nil)
        #expect(try fixture.count("SELECT count(*) FROM webhook_logs WHERE event_type = 'webhook.test'") == 2)
    }

    @Test func testCommandSaysSoWhenNoWorkerRuns() throws {
        let fixture = try Fixture()
        try fixture.addConfig(name: "lonely", url: "https://example.com/h")
        let result = try HeraldProcess.run(["test", "lonely", "--wait", "1"], environment: ["DATABASE_URL": fixture.database.url])
        #expect(result.status == 2)
        #expect(result.output.contains("is `herald work` running"))
    }

    @Test func logsDeliveriesAndShowWithFilters() throws {
        let fixture = try Fixture()
        let receiver = try TestReceiver { request, _ in
            request.bodyText.contains("\"fail\"") ? .status(500, body: "nope") : .status(200, body: "yes")
        }
        let main = try fixture.addConfig(name: "main", url: receiver.url, events: "{contact.created,deal.created}", maxAttempts: 2)
        try fixture.addConfig(name: "other", url: receiver.url, events: "{deal.created}")
        try fixture.emit("contact.created", data: #"{"k": "ok"}"#)
        let failingEvent = try fixture.emit("contact.created", data: #"{"k": "fail"}"#)
        try fixture.emit("deal.created", data: #"{"k": "ok"}"#)
        _ = try fixture.startWorker()
        #expect(try fixture.waitUntilSettled())
        let failed = try fixture.scalar("SELECT id FROM webhook_deliveries WHERE event_id = $1", [failingEvent])!

        func jsonLines(_ arguments: String...) throws -> [[String: Any]] {
            let result = try HeraldProcess.run(arguments, environment: ["DATABASE_URL": fixture.database.url])
            #expect(result.status == 0, "\(arguments): \(result.output)")
            return try result.output.split(separator: "\n").map {
                try #require(try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])
            }
        }
        #expect(try jsonLines("deliveries", "--json").count == 4)
        #expect(try jsonLines("deliveries", "--config", "main", "--json").count == 3)
        #expect(try jsonLines("deliveries", "--config", main, "--event-type", "deal.created", "--json").count == 1)
        #expect(try jsonLines("deliveries", "--status", "failed", "--json").map { $0["id"] as? String } == [failed])
        #expect(try jsonLines("deliveries", "--event", failingEvent, "--json").count == 1)
        #expect(try jsonLines("logs", "--json").count == 5)   // 3 good + 2 attempts of the failing one
        #expect(try jsonLines("logs", "--delivery", failed, "--json").map { $0["outcome"] as? String } == ["failed", "retry"])
        #expect(try jsonLines("logs", "--status", "failed", "--json").count == 2)
        #expect(try jsonLines("logs", "--outcome", "delivered", "--json").count == 3)
        #expect(try jsonLines("logs", "--config", "other", "--json").count == 1)
        #expect(try jsonLines("logs", "--since", "1h", "--limit", "2", "--json").count == 2)
        #expect(try jsonLines("logs", "--since", "2000-01-01T00:00:00Z", "--event-type", "deal.created", "--json").count == 2)

        let table = try herald(fixture, "logs", "--delivery", failed)
        #expect(table.output.contains("OUTCOME") && table.output.contains("HTTP 500 is not a 2xx response"))
        let story = try herald(fixture, "show", failed)
        #expect(story.status == 0)
        for fragment in ["failed", "attempts 2/2", "contact.created", "main", "nope", "herald replay \(failed)"] {
            #expect(story.output.contains(fragment), "show lacks \(fragment): \(story.output)")
        }
        let storyJSON = try #require(try JSONSerialization.jsonObject(
            with: Data(try herald(fixture, "show", failed, "--json").output.utf8)) as? [String: Any])
        #expect((storyJSON["attempts"] as? [Any])?.count == 2)
        #expect(try herald(fixture, "show", UUID().uuidString).status != 0)
    }

    @Test func replaySingleBulkDryRunAndErrors() throws {
        let fixture = try Fixture()
        let healthy = Mutex(false)
        let receiver = try TestReceiver { _, _ in healthy.withLock { $0 } ? .status(200) : .status(503) }
        let config = try fixture.addConfig(name: "flaky", url: receiver.url, maxAttempts: 1)
        for _ in 0..<5 { try fixture.emit() }
        try fixture.emit("deal.created")
        let worker = try fixture.startWorker()
        #expect(try fixture.waitUntilSettled())
        #expect(try fixture.count("SELECT count(*) FROM webhook_deliveries WHERE status = 'failed'") == 6)
        let ids = try fixture.connection.query("SELECT id FROM webhook_deliveries ORDER BY id").rows.map { $0[0]! }

        let dry = try herald(fixture, "replay", "--status", "failed", "--event-type", "contact.created", "--dry-run")
        #expect(dry.output.contains("would replay 5 deliveries"))
        #expect(try fixture.count("SELECT count(*) FROM webhook_deliveries WHERE status = 'failed'") == 6)

        healthy.withLock { $0 = true }
        let single = try herald(fixture, "replay", ids[0])
        #expect(single.output.contains("replayed 1 deliveries"))
        #expect(try fixture.waitUntilSettled())
        #expect(try fixture.scalar("SELECT status || ' ' || replay_count FROM webhook_deliveries WHERE id = $1", [ids[0]]) == "delivered 1")
        // Same X-Webhook-Id on the replay, history kept.
        #expect(receiver.requests.filter { $0.headers["x-webhook-id"] == ids[0] }.count == 2)
        #expect(try fixture.count("SELECT count(*) FROM webhook_logs WHERE delivery_id = $1", [ids[0]]) == 2)

        let bulk = try herald(fixture, "replay", "--status", "failed", "--config", config, "--since", "1h")
        #expect(bulk.output.contains("replayed 5 deliveries"), "\(bulk.output)")
        #expect(try fixture.waitUntilSettled())
        #expect(try fixture.count("SELECT count(*) FROM webhook_deliveries WHERE status = 'delivered'") == 6)

        // Errors: unknown id, still pending, and delivered ones only when asked for.
        let unknown = UUID().uuidString.lowercased()
        let missing = try herald(fixture, "replay", unknown)
        #expect(missing.status != 0 && missing.output.contains("no such delivery: \(unknown)"))
        worker.terminate()
        #expect(worker.waitForExit(timeout: 10))
        try fixture.emit()
        let pendingID = try fixture.scalar("SELECT id FROM webhook_deliveries WHERE status = 'pending'")!
        let stillPending = try herald(fixture, "replay", pendingID)
        #expect(stillPending.status != 0 && stillPending.output.contains("still pending"))
        #expect(try herald(fixture, "replay", "--status", "delivered", "--dry-run").output.contains("would replay 6 deliveries"))

        // The SQL functions directly, as an operator in psql would use them.
        #expect(try fixture.scalar("SELECT herald_replay_matching(p_status => 'delivered', p_event_type => 'deal.created')") == "1")
        let stillDelivered = try #require(try fixture.scalar("SELECT id FROM webhook_deliveries WHERE status = 'delivered' LIMIT 1"))
        #expect(try fixture.scalar("SELECT herald_replay(ARRAY[$1]::uuid[])", [stillDelivered]) == "1")
        #expect(throws: PostgresError.self) { try fixture.connection.query("SELECT herald_replay(ARRAY[$1]::uuid[])", [pendingID]) }
    }

    @Test func statsMatchKnownFixtures() throws {
        let fixture = try Fixture()
        let good = try fixture.addConfig(name: "good", url: "https://example.com/g")
        let bad = try fixture.addConfig(name: "bad", url: "https://example.com/b")
        for _ in 0..<4 { try fixture.emit() }  // 8 deliveries
        // Shape the queue by hand: 3 delivered + 1 failed for good/bad, 2 due, 1 retry scheduled, 1 leased.
        try fixture.connection.query("""
            WITH ranked AS (SELECT id, config_id, row_number() OVER (PARTITION BY config_id ORDER BY id) AS n FROM webhook_deliveries)
            UPDATE webhook_deliveries d SET
              status = CASE WHEN r.config_id = $1 AND r.n <= 3 THEN 'delivered' WHEN r.config_id = $2 AND r.n = 1 THEN 'failed' ELSE 'pending' END,
              attempts = CASE WHEN r.config_id = $2 AND r.n = 2 THEN 2 ELSE d.attempts END,
              next_attempt_at = CASE WHEN r.config_id = $2 AND r.n = 2 THEN now() + interval '1 hour'
                                     WHEN r.config_id = $2 AND r.n = 3 THEN now() + interval '30 seconds'
                                     ELSE now() - interval '10 seconds' END,
              lease_token = CASE WHEN r.config_id = $2 AND r.n = 3 THEN gen_random_uuid() END
              FROM ranked r WHERE r.id = d.id
            """, [good, bad])
        try fixture.connection.query("""
            INSERT INTO webhook_logs (delivery_id, event_id, config_id, event_type, attempt, outcome, error)
            SELECT d.id, d.event_id, d.config_id, 'contact.created', 1,
                   CASE WHEN d.config_id = $1 THEN 'delivered' ELSE 'retry' END,
                   CASE WHEN d.config_id = $2 THEN 'HTTP 500 is not a 2xx response' END
              FROM webhook_deliveries d
            """, [good, bad])
        let stats = try fixture.connection.query("SELECT * FROM webhook_delivery_stats").namedRows[0]
        #expect(stats["pending"] == "4" && stats["delivered"] == "3" && stats["failed"] == "1")
        #expect(stats["in_flight"] == "1" && stats["due_now"] == "2" && stats["retries_scheduled"] == "1")
        #expect(Double((stats["oldest_due_seconds"] ?? nil) ?? "0")! >= 10)
        let perConfig = try fixture.connection.query(
            "SELECT name, attempts_24h, delivered_24h, success_rate_pct, last_error FROM webhook_config_stats ORDER BY name").rows
        #expect(perConfig[0] == ["bad", "4", "0", "0.0", "HTTP 500 is not a 2xx response"])
        #expect(perConfig[1] == ["good", "4", "4", "100.0", nil])

        let printed = try herald(fixture, "stats")
        #expect(printed.status == 0)
        #expect(printed.output.contains("due_now             2"))
        let json = try #require(try JSONSerialization.jsonObject(with: Data(try herald(fixture, "stats", "--json").output.utf8)) as? [String: Any])
        #expect((json["deliveries"] as? [String: Any])?["failed"] as? Int == 1)
        #expect((json["configs"] as? [Any])?.count == 2)
    }
}

extension CLITests {
    @Test func pruneRemovesExactlyWhatIsFinishedAndOld() throws {
        let fixture = try Fixture()
        try fixture.addConfig(url: "https://example.com/hook")
        // Events are immutable once fanned out (sql/008): five are inserted 40 days old, one now.
        try fixture.connection.query("""
            INSERT INTO webhook_events (event_type, data, occurred_at)
            SELECT 'contact.created', '{"id": "42"}', now() - (CASE WHEN i <= 5 THEN interval '40 days' ELSE interval '0' END)
              FROM generate_series(1, 6) i
            """)
        let ids = try fixture.connection.query("""
            SELECT d.id, d.event_id FROM webhook_deliveries d JOIN webhook_events e ON e.id = d.event_id
             ORDER BY e.occurred_at, d.id
            """).rows
        // 0,1: delivered 40 days ago · 2: failed 40 days ago · 3: delivered yesterday · 4: pending, event 40 days old ·
        // 5: pending, recent.
        try fixture.connection.query("""
            UPDATE webhook_deliveries SET status = 'delivered', completed_at = now() - interval '40 days',
                   created_at = now() - interval '41 days' WHERE id IN ($1, $2);
            """, [ids[0][0], ids[1][0]])
        try fixture.connection.query("UPDATE webhook_deliveries SET status = 'failed', completed_at = now() - interval '40 days', created_at = now() - interval '41 days' WHERE id = $1", [ids[2][0]])
        try fixture.connection.query("UPDATE webhook_deliveries SET status = 'delivered', completed_at = now() - interval '1 day' WHERE id = $1", [ids[3][0]])
        try fixture.connection.query("""
            INSERT INTO webhook_logs (delivery_id, event_id, config_id, event_type, attempt, outcome, created_at)
            SELECT gen_random_uuid(), gen_random_uuid(), gen_random_uuid(), 'contact.created', 1, 'delivered',
                   now() - (CASE WHEN i <= 5 THEN interval '40 days' ELSE interval '1 hour' END)
              FROM generate_series(1, 8) i
            """)
        let environment = ["DATABASE_URL": fixture.database.url]
        let dry = try HeraldProcess.run(["prune", "--older-than", "30d", "--dry-run"], environment: environment)
        // Log rows: the five in the partition of everything before the installation go row by row (a partition
        // holding rows newer than the age is never dropped whole).
        #expect(dry.output.contains("would delete 3 deliveries, about 5 log rows and 3 events"), "\(dry.output)")
        #expect(try fixture.count("SELECT count(*) FROM webhook_deliveries") == 6)
        let pruned = try HeraldProcess.run(["prune", "--older-than", "30d", "--batch", "2"], environment: environment)
        #expect(pruned.status == 0)
        #expect(pruned.output.contains("deleted 3 deliveries, 5 log rows and 3 events"), "\(pruned.output)")
        let left = Set(try fixture.connection.query("SELECT id FROM webhook_deliveries").rows.map { $0[0]! })
        #expect(left == [ids[3][0]!, ids[4][0]!, ids[5][0]!])
        #expect(try fixture.count("SELECT count(*) FROM webhook_logs") == 3)
        #expect(try fixture.count("SELECT count(*) FROM webhook_events") == 3)
        let bad = try HeraldProcess.run(["prune", "--older-than", "soon"], environment: environment)
        #expect(bad.status != 0 && bad.output.contains("--older-than 'soon' is not a duration"))
    }
}

extension CLITests {
    @Test func workerPrunesPeriodicallyWithRetentionAndKeepsPending() throws {
        let fixture = try Fixture()
        let good = try TestReceiver()
        let bad = try TestReceiver { _, _ in .status(500) }
        try fixture.addConfig(name: "good", url: good.url, events: "{contact.created}")
        let badConfig = try fixture.addConfig(name: "bad", url: bad.url, events: "{deal.created}")
        for _ in 0..<4 { try fixture.emit("contact.created") }
        try fixture.emit("deal.created")
        _ = try fixture.startWorker(["HERALD_RETENTION": "2s", "HERALD_BACKOFF_BASE_MS": "600000",
                                     "HERALD_BACKOFF_MAX_MS": "600000"])
        // Gone, not merely unseen: a delivery is deleted only once finished, so this cannot pass in the moment
        // between the receiver answering and the worker recording the result (which "no row is delivered" did,
        // and the checks below then raced the worker).
        #expect(try eventually(timeout: 30) {
            try fixture.count("SELECT count(*) FROM webhook_deliveries WHERE config_id <> $1", [badConfig]) == 0
                && good.requests.count == 4
        })
        // Their attempts stay until the whole webhook_logs partition holding them is past retention (daily here;
        // LifecycleTests watches workers drop partitions).
        #expect(try fixture.count("SELECT count(*) FROM webhook_logs WHERE config_id <> $1", [badConfig]) == 4)
        // The failing delivery waits for its retry: still there, with its event.
        #expect(try fixture.count("SELECT count(*) FROM webhook_deliveries WHERE config_id = $1 AND status = 'pending'", [badConfig]) == 1)
        #expect(try fixture.count("SELECT count(*) FROM webhook_events") == 1)
    }
}
