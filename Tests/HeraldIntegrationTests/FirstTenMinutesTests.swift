import Foundation
import HeraldCore
import HeraldPostgres
import HeraldTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Issue 15: each trap a newcomer fell into, closed, through the built binary, real PostgreSQL and real
/// receivers on 127.0.0.1.
@Suite struct FirstTenMinutesTests {
    static let orgA = "aaaaaaaa-0000-4000-8000-00000000000a"
    static let orgB = "bbbbbbbb-0000-4000-8000-00000000000b"

    func herald(_ fixture: Fixture, _ arguments: String...) throws -> (status: Int32, output: String) {
        try HeraldProcess.run(arguments, environment: ["DATABASE_URL": fixture.database.url])
    }

    // MARK: emit says why an event fanned out to nothing

    @Test func emitSaysWhyAnEventFannedOutToNoDeliveries() throws {
        let fixture = try Fixture()
        let receiver = try TestReceiver()
        try fixture.addConfig(name: "no-org", url: receiver.url, events: "{contact.created}")

        // The README's INSERT carries an organization; the CLI's config has none.
        let otherOrg = try herald(fixture, "emit", "contact.created", "--org", Self.orgA)
        #expect(otherOrg.status == 0)
        #expect(otherOrg.output.contains("fanned out to 0 deliveries"), "\(otherOrg.output)")
        #expect(otherOrg.output.contains("no config of organization \(Self.orgA) subscribes to contact.created"),
                "\(otherOrg.output)")
        #expect(otherOrg.output.contains("emit without --org"), "\(otherOrg.output)")

        // Not subscribed.
        let unsubscribed = try herald(fixture, "emit", "deal.created")
        #expect(unsubscribed.output.contains("no config of organization none subscribes to deal.created (its configs: 'no-org'"),
                "\(unsubscribed.output)")

        // Every subscriber disabled.
        #expect(try herald(fixture, "config", "disable", "no-org").status == 0)
        let disabled = try herald(fixture, "emit", "contact.created")
        #expect(disabled.output.contains("is disabled: 'no-org'"), "\(disabled.output)")

        // A delivery made: no explanation.
        #expect(try herald(fixture, "config", "enable", "no-org").status == 0)
        let fine = try herald(fixture, "emit", "contact.created")
        #expect(fine.output.contains("fanned out to 1 deliveries") && !fine.output.contains("why"), "\(fine.output)")

        // The README's SQL in psql: the same reason, as a NOTICE.
        _ = fixture.connection.takeNotices()
        try fixture.emit("contact.created", organization: Self.orgB)
        let notices = fixture.connection.takeNotices().map(\.message)
        #expect(notices.contains { $0.contains("fanned out to 0 deliveries: no config of organization \(Self.orgB)") },
                "\(notices)")
    }

    // MARK: unique names per organization, --org on look-ups

    @Test func configNamesAreUniquePerOrganizationAndLookUpsAcceptOrg() throws {
        let fixture = try Fixture()
        let url = "http://127.0.0.1:9/"
        #expect(try herald(fixture, "config", "create", "--name", "crm", "--url", url, "--events", "*").status == 0)
        let twice = try herald(fixture, "config", "create", "--name", "crm", "--url", url, "--events", "*")
        #expect(twice.status != 0)
        #expect(twice.output.contains("a config of that name already exists in this organization"), "\(twice.output)")
        // The same name in two other organizations is fine.
        #expect(try herald(fixture, "config", "create", "--name", "crm", "--url", url, "--events", "*", "--org", Self.orgA).status == 0)
        #expect(try herald(fixture, "config", "create", "--name", "crm", "--url", url, "--events", "*", "--org", Self.orgB).status == 0)
        #expect(try fixture.count("SELECT count(*) FROM webhook_configs WHERE name = 'crm'") == 3)
        // psql too: the constraint holds whoever writes.
        #expect(throws: PostgresError.self) {
            try fixture.addConfig(name: "crm", url: url, organization: Self.orgA)
        }

        let ambiguous = try herald(fixture, "config", "show", "crm")
        #expect(ambiguous.status != 0)
        #expect(ambiguous.output.contains("pass --org ORG"), "\(ambiguous.output)")
        let shown = try herald(fixture, "config", "show", "crm", "--org", Self.orgA)
        #expect(shown.status == 0, "\(shown.output)")
        #expect(shown.output.contains(Self.orgA), "\(shown.output)")
        #expect(try herald(fixture, "config", "disable", "crm", "--org", Self.orgB).status == 0)
        #expect(try fixture.scalar("SELECT is_active FROM webhook_configs WHERE organization_id = $1", [Self.orgB]) == "f")
        #expect(try fixture.scalar("SELECT is_active FROM webhook_configs WHERE organization_id = $1", [Self.orgA]) == "t")
        let logs = try herald(fixture, "logs", "--config", "crm", "--org", Self.orgA)
        #expect(logs.status == 0 && logs.output.contains("no attempts match"), "\(logs.output)")
        let missing = try herald(fixture, "config", "show", "crm", "--org", "cccccccc-0000-4000-8000-00000000000c")
        #expect(missing.output.contains("in organization cccccccc"), "\(missing.output)")
    }

    @Test func theMigrationRenamesExistingDuplicatesAndSaysSo() throws {
        let database = try TestDatabase.create(migrated: false)
        defer { database.drop() }
        // The database as it was before sql/009: migrations 001–008 only.
        let before = FileManager.default.temporaryDirectory.appendingPathComponent("herald-sql-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: before, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: before) }
        let sql = try TestEnvironment.sqlDirectory()
        for name in try FileManager.default.contentsOfDirectory(atPath: sql.path)
        where name.hasSuffix(".sql") && (Int(name.prefix(3)) ?? 999) <= 8 {
            try FileManager.default.copyItem(at: sql.appendingPathComponent(name), to: before.appendingPathComponent(name))
        }
        let old = try HeraldProcess.run(["migrate", "--database-url", database.url, "--sql-dir", before.path])
        #expect(old.status == 0, "\(old.output)")
        let connection = try database.connect()
        for (name, organization) in [("crm", nil), ("crm", nil), ("crm", nil), ("crm (2)", nil), ("crm", Self.orgA),
                                     ("crm", Self.orgA), ("solo", nil)] as [(String, String?)] {
            try connection.query("""
                INSERT INTO webhook_configs (name, url, events, organization_id) VALUES ($1, 'https://example.com/', '{*}', $2::uuid)
                """, [name, organization])
            try connection.query("SELECT pg_sleep(0.002)")  // distinct created_at: the oldest keeps its name
        }

        let migrated = try HeraldProcess.run(["migrate", "--database-url", database.url])
        #expect(migrated.status == 0, "\(migrated.output)")
        #expect(migrated.output.contains("applied 009_first_ten_minutes"), "\(migrated.output)")
        let renames = migrated.output.split(separator: "\n").filter { $0.hasPrefix("notice: renamed webhook config") }
        #expect(renames.count == 3, "\(migrated.output)")
        #expect(migrated.output.contains("(organization none) from 'crm' to 'crm (3)'"), "\(migrated.output)")
        #expect(migrated.output.contains("(organization none) from 'crm' to 'crm (4)'"), "\(migrated.output)")
        #expect(migrated.output.contains("(organization \(Self.orgA)) from 'crm' to 'crm (2)'"), "\(migrated.output)")
        let names = try connection.query("""
            SELECT coalesce(organization_id::text, 'none') || '/' || name FROM webhook_configs ORDER BY created_at
            """).rows.map { $0[0]! }
        #expect(names == ["none/crm", "none/crm (3)", "none/crm (4)", "none/crm (2)", "\(Self.orgA)/crm",
                          "\(Self.orgA)/crm (2)", "none/solo"])
    }

    // MARK: show prints errors in full; retry now

    @Test func showPrintsTheWholeErrorAndRetryMakesAWaitingDeliveryDueNow() throws {
        let fixture = try Fixture()
        let receiver = try TestReceiver()
        try fixture.addConfig(name: "local", url: receiver.url)
        try fixture.emit()
        let delivery = try #require(try fixture.scalar("SELECT id FROM webhook_deliveries"))

        // A worker that refuses loopback, with a long backoff: the delivery waits an hour after its first attempt.
        let refusing = try fixture.startWorker(["HERALD_ALLOWED_NETWORKS": "", "HERALD_BACKOFF_BASE_MS": "3600000",
                                                "HERALD_BACKOFF_MAX_MS": "36000000"])
        #expect(try eventually { try fixture.count("SELECT count(*) FROM webhook_logs") == 1 })
        refusing.terminate()
        #expect(refusing.waitForExit(timeout: 30))
        #expect(receiver.requests.isEmpty)

        for command in [["show", delivery], ["logs"], ["deliveries"]] {
            let result = try HeraldProcess.run(command, environment: ["DATABASE_URL": fixture.database.url])
            #expect(result.output.contains("refused by the address policy (allow it with HERALD_ALLOWED_NETWORKS)"),
                    "herald \(command[0]):\n\(result.output)")
        }
        #expect(try herald(fixture, "replay", delivery).output.contains("still pending"))

        // Allowed now, but the delivery still waits out its hour: `herald retry` makes it due.
        _ = try fixture.startWorker()
        let retried = try herald(fixture, "retry", delivery)
        #expect(retried.status == 0, "\(retried.output)")
        #expect(retried.output.contains("1 delivery is due now"), "\(retried.output)")
        #expect(try fixture.waitUntilSettled())
        #expect(receiver.requests.count == 1)
        #expect(try fixture.scalar("SELECT status FROM webhook_deliveries") == "delivered")

        // Nothing left to retry: it says why.
        let again = try herald(fixture, "retry", delivery)
        #expect(again.output.contains("0 deliveries are due now") && again.output.contains("delivered already"),
                "\(again.output)")
        let byConfig = try herald(fixture, "retry", "--config", "local")
        #expect(byConfig.status == 0 && byConfig.output.contains("0 deliveries are due now"), "\(byConfig.output)")
    }

    // MARK: replay --dry-run lists

    @Test func replayDryRunListsUpToFiftyThenCounts() throws {
        let fixture = try Fixture()
        try fixture.addConfig(name: "down", url: "http://127.0.0.1:9/")
        try fixture.connection.query("""
            INSERT INTO webhook_events (event_type, data) SELECT 'contact.created', jsonb_build_object('n', n)
              FROM generate_series(1, 60) n
            """)
        try fixture.connection.query("UPDATE webhook_deliveries SET status = 'failed', completed_at = now(), last_error = 'HTTP 500'")
        let dry = try herald(fixture, "replay", "--status", "failed", "--dry-run")
        #expect(dry.status == 0, "\(dry.output)")
        let listed = dry.output.split(separator: "\n").filter { UUID(uuidString: String($0.prefix(36))) != nil }
        #expect(listed.count == 50, "\(dry.output)")
        #expect(dry.output.contains("would replay 60 deliveries (the first 50 are listed)"), "\(dry.output)")
        #expect(try fixture.count("SELECT count(*) FROM webhook_deliveries WHERE status = 'failed'") == 60)

        let one = try #require(try fixture.scalar("SELECT id FROM webhook_deliveries LIMIT 1"))
        let byID = try herald(fixture, "replay", one, "--dry-run")
        #expect(byID.output.contains(one) && byID.output.contains("would replay 1 delivery"), "\(byID.output)")
        #expect(try fixture.count("SELECT count(*) FROM webhook_deliveries WHERE status = 'failed'") == 60)
    }

    // MARK: labels, missing database, event types

    @Test func configShowPrintsEveryLabelWhole() throws {
        let fixture = try Fixture()
        try fixture.addConfig(name: "rotating", url: "https://example.com/", secret: "old")
        #expect(try herald(fixture, "config", "rotate-secret", "rotating", "--keep-previous", "1h").status == 0)
        let shown = try herald(fixture, "config", "show", "rotating")
        #expect(shown.output.contains("previous_secret_valid  until "), "\(shown.output)")
        #expect(!shown.output.contains("previous_secret_v "), "\(shown.output)")
    }

    @Test func everyCommandSaysTheSameThingWithoutADatabase() throws {
        let cli = try HeraldProcess.run(["logs"])
        let worker = try HeraldProcess.run(["work"])
        #expect(cli.status != 0 && worker.status != 0)
        let line = { (output: String) in output.split(separator: "\n").first { $0.contains("no database") }.map(String.init) }
        let fromCLI = try #require(line(cli.output), "\(cli.output)")
        #expect(line(worker.output) == fromCLI, "\(worker.output)")
        #expect(fromCLI.contains("scripts/run") && fromCLI.contains("scripts/pg url") && fromCLI.contains("--database-url"))
    }

    @Test func eventTypesListsTheCatalogueAndConfigCreateHelpPointsToIt() throws {
        let listed = try HeraldProcess.run(["event-types"])
        #expect(listed.status == 0)
        for type in EventCatalog.all { #expect(listed.output.contains(type.name + " "), "\(type.name)") }
        let rows = try HeraldProcess.run(["event-types", "--json"]).output.split(separator: "\n")
        #expect(rows.count == 18)
        // The database's catalogue agrees.
        let fixture = try Fixture()
        let names = try fixture.connection.query("SELECT name, description FROM webhook_event_types ORDER BY name").rows
        #expect(names.map { $0[0]! } == EventCatalog.all.map(\.name).sorted())
        for row in names { #expect(EventCatalog.all.first { $0.name == row[0]! }?.description == row[1]!) }
        let help = try HeraldProcess.run(["config", "create", "--help"])
        let flat = help.output.split(whereSeparator: \.isWhitespace).joined(separator: " ")
        #expect(flat.contains("herald event-types lists them"), "\(help.output)")
    }

    // MARK: herald receive

    /// `herald receive --port 0 …` started; returns it and its URL.
    func startReceiver(_ arguments: [String]) throws -> (HeraldProcess, String) {
        let process = try HeraldProcess(["receive", "--port", "0"] + arguments)
        var url: String?
        _ = eventually {
            url = process.output.split(separator: " ").first { $0.hasPrefix("http://127.0.0.1:") }.map(String.init)
            return url != nil
        }
        return (process, try #require(url, "\(process.output)"))
    }

    @Test func receiveShowsWrongSignaturesAndRehearsesFailures() throws {
        let fixture = try Fixture()
        // The receiver knows another secret: both signatures ✗.
        let (wrong, wrongURL) = try startReceiver(["--secret", "not-the-secret"])
        try fixture.addConfig(name: "wrong", url: wrongURL, secret: "the-secret")
        // This one answers 500: Herald retries, and the logs say so.
        let secretFile = FileManager.default.temporaryDirectory.appendingPathComponent("secret-\(UUID().uuidString)")
        try Data("the-secret\n".utf8).write(to: secretFile)
        defer { try? FileManager.default.removeItem(at: secretFile) }
        let (failing, failingURL) = try startReceiver(["--secret-file", secretFile.path, "--status", "500"])
        try fixture.addConfig(name: "failing", url: failingURL, secret: "the-secret", maxAttempts: 2)
        try fixture.emit(data: #"{"id": "c-42"}"#)
        _ = try fixture.startWorker()
        #expect(try fixture.waitUntilSettled())

        #expect(eventually { wrong.output.contains("answered") }, "\(wrong.output)")
        #expect(wrong.output.contains("✗ X-Webhook-Signature does not match"), "\(wrong.output)")
        #expect(wrong.output.contains("✗ webhook-signature does not match"), "\(wrong.output)")

        #expect(eventually { failing.output.components(separatedBy: "answered   500").count == 3 }, "\(failing.output)")
        #expect(failing.output.contains("attempt    2"), "\(failing.output)")
        #expect(failing.output.components(separatedBy: "✓ X-Webhook-Signature").count == 3, "\(failing.output)")
        #expect(failing.output.components(separatedBy: "✓ webhook-signature").count == 3, "\(failing.output)")
        let logs = try herald(fixture, "logs", "--config", "failing")
        #expect(logs.output.contains("retry") && logs.output.contains("failed") && logs.output.contains("500"),
                "\(logs.output)")

        // Unsigned, and a request that is not a delivery at all.
        let (plain, plainURL) = try startReceiver(["--count", "1"])
        _ = try runTool("curl", ["-s", "-o", "/dev/null", "-d", "{}", "-H", "X-Webhook-Event: contact.created", plainURL])
        #expect(plain.waitForExit(timeout: 10))
        #expect(plain.terminationStatus == 0)
        #expect(plain.output.contains("none (the config has no secret: requests are unsigned)"), "\(plain.output)")
    }

    @Test func showMarksReplays() throws {
        let fixture = try Fixture()
        let receiver = try TestReceiver()
        try fixture.addConfig(name: "twice", url: receiver.url)
        try fixture.emit()
        _ = try fixture.startWorker()
        #expect(try fixture.waitUntilSettled())
        let delivery = try #require(try fixture.scalar("SELECT id FROM webhook_deliveries"))
        #expect(try herald(fixture, "replay", delivery).status == 0)
        #expect(try fixture.waitUntilSettled())
        let shown = try herald(fixture, "show", delivery)
        #expect(shown.output.contains("replayed 1×"), "\(shown.output)")
        #expect(shown.output.contains("REPLAY  ATTEMPT"), "\(shown.output)")
        #expect(shown.output.contains("each replay numbers its attempts from 1 again"), "\(shown.output)")
        let logs = try herald(fixture, "logs", "--delivery", delivery)
        #expect(logs.output.contains("REPLAY"), "\(logs.output)")
    }
}
