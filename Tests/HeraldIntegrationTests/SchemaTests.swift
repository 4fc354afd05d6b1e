import Foundation
import HeraldCore
import HeraldPostgres
import HeraldTestSupport
import Testing

/// The schema against a real PostgreSQL: migrations, catalogue, validation messages and fan-out rules.
@Suite struct SchemaTests {
    @Test func migrationsApplyTwiceAndConcurrently() throws {
        let database = try TestDatabase.create(migrated: false)
        defer { database.drop() }
        // Two processes at once: the advisory lock must serialise them.
        let first = try HeraldProcess(["migrate", "--database-url", database.url])
        let second = try HeraldProcess(["migrate", "--database-url", database.url])
        #expect(first.waitForExit(timeout: 60) && second.waitForExit(timeout: 60))
        #expect(first.terminationStatus == 0, "\(first.output)")
        #expect(second.terminationStatus == 0, "\(second.output)")
        #expect((first.output + second.output).contains("applied 004_worker_protocol"))
        let again = try HeraldProcess.run(["migrate", "--database-url", database.url])
        #expect(again.status == 0)
        #expect(again.output.contains("database is up to date"))
        let connection = try database.connect()
        let versions = try connection.query("SELECT version FROM herald_migrations ORDER BY version").rows.map { $0[0]! }
        let files = try FileManager.default.contentsOfDirectory(atPath: TestEnvironment.sqlDirectory().path)
            .filter { $0.hasSuffix(".sql") }
        #expect(versions.count == files.count)
        #expect(versions == versions.sorted { Int($0)! < Int($1)! })
    }

    @Test func migrateReportsAMissingDatabaseClearly() throws {
        let result = try HeraldProcess.run(["migrate"])
        #expect(result.status != 0)
        #expect(result.output.contains("no database: set DATABASE_URL"), "\(result.output)")
        #expect(result.output.contains("scripts/run") && result.output.contains("or pass --database-url"), "\(result.output)")
    }

    @Test func catalogueHoldsExactlyTheEighteenTypes() throws {
        let database = try TestDatabase.create()
        defer { database.drop() }
        let rows = try database.connect().query("SELECT name, category FROM webhook_event_types ORDER BY name").rows
        #expect(rows.count == 18)
        #expect(Set(rows.map { $0[0]! }) == EventCatalog.names)
        for type in EventCatalog.all {
            #expect(rows.contains { $0[0] == type.name && $0[1] == type.category })
        }
    }

    @Test func configRejectionsNameTheProblem() throws {
        let database = try TestDatabase.create()
        defer { database.drop() }
        let connection = try database.connect()
        let cases: [(name: String, url: String, events: String, expected: String)] = [
            ("x", "https://example.com/h", "{contact.created,nope.nothing}", "unknown event type(s): 'nope.nothing'"),
            ("x", "https://example.com/h", "{}", "must list at least one event type"),
            ("x", "ftp://example.com/h", "{contact.created}", "must be an absolute http:// or https:// URL"),
            ("x", "/relative/path", "{contact.created}", "must be an absolute http:// or https:// URL"),
            ("x", "https:///nohost", "{contact.created}", "has no host"),
            ("x", "https://user:pw@example.com/h", "{contact.created}", "must not carry credentials"),
            ("x", "https://exa mple.com/h", "{contact.created}", "must not contain spaces"),
            ("  ", "https://example.com/h", "{contact.created}", "name must not be empty"),
        ]
        for item in cases {
            do {
                try connection.query("INSERT INTO webhook_configs (name, url, events) VALUES ($1, $2, $3::text[])",
                                     [item.name, item.url, item.events])
                Issue.record("accepted \(item)")
            } catch let error as PostgresError {
                #expect(error.sqlState == "23514", "\(error)")
                #expect(error.message.contains(item.expected), "\(error.message)")
            }
        }
        // Updates are checked too.
        let id = try connection.query("INSERT INTO webhook_configs (name, url, events) VALUES ('ok', 'https://example.com/h', '{*}') RETURNING id").scalar!
        #expect(throws: PostgresError.self) {
            try connection.query("UPDATE webhook_configs SET events = '{}' WHERE id = $1", [id])
        }
        #expect(try connection.query("SELECT count(*) FROM webhook_configs").scalar == "1")
    }

    @Test func eventRejectionsNameTheProblem() throws {
        let database = try TestDatabase.create()
        defer { database.drop() }
        let connection = try database.connect()
        let cases: [(type: String, data: String, expected: String)] = [
            ("contact.deleted", "{}", "unknown webhook event type 'contact.deleted'"),
            ("contact.created", "[1, 2]", "must be a JSON object, got a JSON array"),
            ("contact.created", "\"text\"", "must be a JSON object, got a JSON string"),
            ("contact.created", "42", "must be a JSON object, got a JSON number"),
        ]
        for item in cases {
            do {
                try connection.query("INSERT INTO webhook_events (event_type, data) VALUES ($1, $2::jsonb)",
                                     [item.type, item.data])
                Issue.record("accepted \(item)")
            } catch let error as PostgresError {
                #expect(error.message.contains(item.expected), "\(error.message)")
                #expect(error.sqlState != nil)
            }
        }
        let big = "{\"blob\": \"" + String(repeating: "x", count: 300_000) + "\"}"
        do {
            try connection.query("INSERT INTO webhook_events (event_type, data) VALUES ('contact.created', $1::jsonb)", [big])
            Issue.record("accepted 300 KB of data")
        } catch let error as PostgresError {
            #expect(error.message.contains("too large"), "\(error.message)")
            #expect(error.sqlState == "54000")
        }
        #expect(try connection.query("SELECT count(*) FROM webhook_events").scalar == "0")
    }

    @Test func fanOutFollowsTypeOrganizationAndActiveRules() throws {
        let database = try TestDatabase.create()
        defer { database.drop() }
        let connection = try database.connect()
        let orgA = UUID().uuidString.lowercased()
        let orgB = UUID().uuidString.lowercased()
        func config(_ name: String, org: String?, events: String, active: Bool = true) throws -> String {
            try connection.query(
                "INSERT INTO webhook_configs (name, url, events, organization_id, is_active) VALUES ($1, 'https://example.com/h', $2::text[], $3::uuid, $4) RETURNING id",
                [name, events, org, active ? "true" : "false"]).scalar!
        }
        let exactA = try config("exact A", org: orgA, events: "{contact.created,deal.created}")
        let allA = try config("all A", org: orgA, events: "{*}")
        _ = try config("inactive A", org: orgA, events: "{*}", active: false)
        let otherTypeA = try config("other type A", org: orgA, events: "{message.sent}")
        let exactB = try config("exact B", org: orgB, events: "{contact.created}")
        let noOrg = try config("no org", org: nil, events: "{contact.created}")

        func deliveries(of eventType: String, org: String?) throws -> Set<String> {
            let event = try connection.query(
                "INSERT INTO webhook_events (event_type, organization_id, data) VALUES ($1, $2::uuid, '{}') RETURNING id",
                [eventType, org]).scalar!
            return Set(try connection.query("SELECT config_id FROM webhook_deliveries WHERE event_id = $1", [event])
                .rows.map { $0[0]! })
        }
        #expect(try deliveries(of: "contact.created", org: orgA) == [exactA, allA])
        #expect(try deliveries(of: "message.sent", org: orgA) == [allA, otherTypeA])
        #expect(try deliveries(of: "contact.created", org: orgB) == [exactB])
        #expect(try deliveries(of: "contact.created", org: nil) == [noOrg])
        #expect(try deliveries(of: "zoom.recording.completed", org: orgB) == [])

        // One bulk INSERT of 1,000 events: one statement-level trigger run, every delivery created.
        try connection.query("""
            INSERT INTO webhook_events (event_type, organization_id, data)
            SELECT CASE WHEN i % 2 = 0 THEN 'contact.created' ELSE 'deal.created' END,
                   CASE WHEN i % 4 < 2 THEN $1::uuid ELSE $2::uuid END, jsonb_build_object('i', i)
              FROM generate_series(1, 1000) AS i
            """, [orgA, orgB])
        let counts = try connection.query("""
            SELECT c.name, count(*) FROM webhook_deliveries d JOIN webhook_configs c ON c.id = d.config_id
             WHERE d.event_id IN (SELECT id FROM webhook_events WHERE data ? 'i') GROUP BY c.name
            """).rows
        let byName = Dictionary(uniqueKeysWithValues: counts.map { ($0[0]!, Int($0[1]!)!) })
        // org A gets i%4 in {0,1}: 500 events, all contact/deal → exact A and all A get 500 each.
        // org B gets i%4 in {2,3}: 500 events, of which contact.created are i%4 == 2 → 250.
        #expect(byName == ["exact A": 500, "all A": 500, "exact B": 250])
        #expect(try connection.query("SELECT count(*) FROM webhook_deliveries WHERE status <> 'pending' OR attempts <> 0").scalar == "0")
    }

    @Test func libpqWrapperBasics() throws {
        let database = try TestDatabase.create()
        defer { database.drop() }
        // key=value form, as well as the URL form used everywhere else.
        let url = URL(string: database.url)!
        let keyValue = "host=\(url.host!) port=\(url.port!) user=\(url.user!) password=\(url.password!) dbname=\(database.name)"
        let connection = try PostgresConnection(keyValue)
        #expect(try connection.query("SELECT $1::int + $2::int", ["2", "40"]).scalar == "42")
        #expect(try connection.query("SELECT $1::text IS NULL", [nil]).scalar == "t")
        // Parameters are never spliced into SQL.
        #expect(try connection.query("SELECT $1::text", ["'); DROP TABLE webhook_events; --"]).scalar
            == "'); DROP TABLE webhook_events; --")
        do {
            try connection.query("SELECT * FROM no_such_table")
            Issue.record("no error")
        } catch let error as PostgresError {
            #expect(error.sqlState == "42P01")
            #expect(error.kind == .query)
            #expect(error.description.contains("no_such_table"))
        }
        // A transaction that throws leaves nothing behind.
        struct Abort: Error {}
        #expect(throws: Abort.self) {
            try connection.transaction { connection in
                try connection.query("INSERT INTO webhook_configs (name, url, events) VALUES ('t', 'https://e.com/', '{*}')")
                throw Abort()
            }
        }
        #expect(try connection.query("SELECT count(*) FROM webhook_configs").scalar == "0")
        #expect(PostgresArray.literal(["a\"b", nil, "c\\d", "{x,y}"]) == #"{"a\"b",NULL,"c\\d","{x,y}"}"#)
        let roundTrip = try connection.query("SELECT unnest($1::text[])", [PostgresArray.literal(["a\"b", nil, "c\\d", "{x,y}"])])
        #expect(roundTrip.rows.map { $0[0] } == ["a\"b", nil, "c\\d", "{x,y}"])
        do {
            _ = try PostgresConnection("postgresql://herald:wrong-password-xyz@127.0.0.1:\(url.port!)/\(database.name)")
            Issue.record("connected with a wrong password")
        } catch let error as PostgresError {
            #expect(error.kind == .connection)
            #expect(!error.description.contains("wrong-password-xyz"))
        }
    }
}

extension SchemaTests {
    @Test func migrateWarnsWhenAnAppliedMigrationWasEdited() throws {
        let database = try TestDatabase.create(migrated: false)
        defer { database.drop() }
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("sql-\(UUID().uuidString.prefix(8))")
        try FileManager.default.copyItem(at: try TestEnvironment.sqlDirectory(), to: folder)
        defer { try? FileManager.default.removeItem(at: folder) }
        let first = try HeraldProcess.run(["migrate", "--database-url", database.url, "--sql-dir", folder.path])
        #expect(first.status == 0 && !first.output.contains("warning"))
        let file = folder.appendingPathComponent("001_event_catalogue.sql")
        try (try String(contentsOf: file, encoding: .utf8) + "\n-- edited\n").write(to: file, atomically: true, encoding: .utf8)
        let second = try HeraldProcess.run(["migrate", "--database-url", database.url, "--sql-dir", folder.path])
        #expect(second.status == 0)
        #expect(second.output.contains("warning: 001_event_catalogue.sql changed after this database applied it"), "\(second.output)")
    }
}
