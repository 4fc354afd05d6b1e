import Foundation
import HeraldCore
import HeraldPostgres
import HeraldTestSupport
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Issue 12: each way to break Herald that a review found, closed, through the built binary and real PostgreSQL.
@Suite struct SecurityTests {
    static let orgA = "aaaaaaaa-0000-4000-8000-000000000001"
    static let orgB = "bbbbbbbb-0000-4000-8000-000000000002"

    func herald(_ fixture: Fixture, _ arguments: String...) throws -> (status: Int32, output: String) {
        try HeraldProcess.run(arguments, environment: ["DATABASE_URL": fixture.database.url])
    }

    /// The server's message of a statement that must fail.
    func rejection(_ fixture: Fixture, _ sql: String) -> String? {
        do {
            try fixture.connection.query(sql)
            return nil
        } catch let error as PostgresError {
            return error.message
        } catch {
            return "\(error)"
        }
    }

    // MARK: 1. Tenant isolation when a config moves

    @Test func aConfigMovedToAnotherOrganizationNeverReceivesTheOldOrganizationsEvents() throws {
        let fixture = try Fixture()
        let oldEndpoint = try TestReceiver()
        let newEndpoint = try TestReceiver()
        let config = try fixture.addConfig(name: "moving", url: oldEndpoint.url, organization: Self.orgA)
        // Queued while no worker runs.
        try fixture.emit(data: #"{"secret_of": "org A"}"#, organization: Self.orgA)
        let queued = try #require(try fixture.scalar("SELECT id FROM webhook_deliveries"))

        let moved = try herald(fixture, "config", "update", "moving", "--org", Self.orgB, "--url", newEndpoint.url)
        #expect(moved.status == 0, "\(moved.output)")
        let row = try fixture.connection.query(
            "SELECT status, last_error, lease_token FROM webhook_deliveries WHERE id = $1", [queued]).rows[0]
        #expect(row[0] == "failed")
        #expect(row[1]?.contains("moved from organization \(Self.orgA) to \(Self.orgB)") == true, "\(row)")
        #expect(row[2] == nil)
        let logged = try fixture.logs(of: queued)
        #expect(logged.count == 1 && logged[0]["outcome"] == "failed" && logged[0]["payload"] == .some(nil))

        // A worker now sends organization B's event to the new endpoint, and nothing of organization A's.
        try fixture.emit(data: #"{"belongs_to": "org B"}"#, organization: Self.orgB)
        _ = try fixture.startWorker()
        #expect(try fixture.waitUntilSettled())
        #expect(eventually { newEndpoint.requests.count >= 1 })
        #expect(newEndpoint.requests.count == 1)
        #expect(newEndpoint.requests.allSatisfy { !$0.bodyText.contains("org A") })
        #expect(oldEndpoint.requests.isEmpty)
        #expect(try fixture.scalar("SELECT status FROM webhook_deliveries WHERE id = $1", [queued]) == "failed")
        _ = config
    }

    @Test func replayRefusesAndBulkReplaySkipsDeliveriesOfAnotherOrganization() throws {
        let fixture = try Fixture()
        let oldEndpoint = try TestReceiver()
        let newEndpoint = try TestReceiver()
        try fixture.addConfig(name: "moving", url: oldEndpoint.url, organization: Self.orgA)
        try fixture.emit(data: #"{"secret_of": "org A"}"#, organization: Self.orgA)
        _ = try fixture.startWorker()
        #expect(try fixture.waitUntilSettled())
        let delivered = try #require(try fixture.scalar("SELECT id FROM webhook_deliveries WHERE status = 'delivered'"))
        #expect(oldEndpoint.requests.count == 1)

        #expect(try herald(fixture, "config", "update", "moving", "--org", Self.orgB, "--url", newEndpoint.url).status == 0)
        let one = try herald(fixture, "replay", delivered)
        #expect(one.status != 0)
        #expect(one.output.contains("another organization"), "\(one.output)")
        let bulk = try herald(fixture, "replay", "--status", "delivered", "--config", "moving")
        #expect(bulk.status == 0 && bulk.output.contains("replayed 0 deliveries"), "\(bulk.output)")
        #expect(rejection(fixture, "SELECT herald_replay(ARRAY['\(delivered)']::uuid[])")?
            .contains("belongs to another organization") == true)
        #expect(try fixture.scalar("SELECT herald_replay_matching(p_status => 'delivered')") == "0")

        // Something of organization B goes through, so the worker has had its chance to send the old event.
        try fixture.emit(data: #"{"belongs_to": "org B"}"#, organization: Self.orgB)
        #expect(try fixture.waitUntilSettled())
        #expect(eventually { newEndpoint.requests.count >= 1 })
        #expect(newEndpoint.requests.count == 1)
        #expect(newEndpoint.requests.allSatisfy { !$0.bodyText.contains("org A") })
        #expect(try fixture.scalar("SELECT status || ' ' || replay_count FROM webhook_deliveries WHERE id = $1",
                                   [delivered]) == "delivered 0")
    }

    @Test func narrowingEventsFailsQueuedDeliveriesOfTypesNoLongerSubscribed() throws {
        let fixture = try Fixture()
        let receiver = try TestReceiver()
        try fixture.addConfig(name: "narrowing", url: receiver.url, events: "{*}")
        let kept = try fixture.emit("contact.created")
        let dropped = try fixture.emit("deal.stage.changed")
        #expect(try herald(fixture, "config", "update", "narrowing", "--events", "contact.created").status == 0)
        #expect(try fixture.scalar("SELECT status FROM webhook_deliveries WHERE event_id = $1", [kept]) == "pending")
        let row = try fixture.connection.query(
            "SELECT id, status, last_error FROM webhook_deliveries WHERE event_id = $1", [dropped]).rows[0]
        #expect(row[1] == "failed")
        #expect(row[2]?.contains("no longer subscribes to deal.stage.changed") == true)
        let replayed = try herald(fixture, "replay", row[0]!)
        #expect(replayed.status != 0 && replayed.output.contains("no longer subscribes"), "\(replayed.output)")

        _ = try fixture.startWorker()
        #expect(try fixture.waitUntilSettled())
        #expect(eventually { receiver.requests.count >= 1 })
        #expect(receiver.requests.map { $0.headers["x-webhook-event"] } == ["contact.created"])
    }

    // MARK: 3. The outbox cannot be changed behind the deliveries' back

    @Test func eventsAreImmutableOnceTheyHaveDeliveriesAndTheLimitIsOnTheJSONText() throws {
        let fixture = try Fixture()
        try fixture.addConfig(url: "https://example.com/hooks")
        let event = try fixture.emit()
        for assignment in ["data = '{\"id\": \"43\"}'", "data = '[1,2]'", "event_type = 'deal.created'",
                           "organization_id = '\(Self.orgB)'", "occurred_at = now() - interval '1 day'"] {
            let message = rejection(fixture, "UPDATE webhook_events SET \(assignment) WHERE id = '\(event)'")
            #expect(message?.contains("cannot be changed: it already has deliveries") == true, "\(assignment): \(message ?? "accepted")")
        }
        #expect(try fixture.scalar("SELECT data::text FROM webhook_events WHERE id = $1", [event]) == #"{"id": "42"}"#)

        // Without deliveries an event may still be corrected, but only into a valid one.
        try fixture.connection.query("DELETE FROM webhook_configs")
        let lonely = try fixture.emit()
        #expect(rejection(fixture, "UPDATE webhook_events SET data = '[1,2]' WHERE id = '\(lonely)'")?
            .contains("must be a JSON object") == true)
        try fixture.connection.query("UPDATE webhook_events SET data = '{\"id\": \"44\"}' WHERE id = '\(lonely)'")

        // A 3 MB value that PostgreSQL holds compressed (pg_column_size ≈ 35 KB) is still 3 MB of JSON.
        try fixture.connection.query(
            "CREATE TABLE compressed AS SELECT jsonb_build_object('x', repeat('a', 3000000)) AS data")
        #expect(try fixture.count("SELECT pg_column_size(data) FROM compressed") < 262_144)
        let tooLarge = rejection(fixture,
                                 "INSERT INTO webhook_events (event_type, data) SELECT 'contact.created', data FROM compressed")
        #expect(tooLarge?.contains("is too large: 3000009 bytes") == true, "\(tooLarge ?? "accepted")")
        #expect(rejection(fixture, "UPDATE webhook_events SET data = (SELECT data FROM compressed) WHERE id = '\(lonely)'")?
            .contains("is too large") == true)
    }

    // MARK: 4. Configuration values that would break every batch

    @Test func outOfRangeDurationsAreRefusedAtStartNamingTheVariable() throws {
        let fixture = try Fixture()
        let cases: [([String: String], [String], String)] = [
            (["HERALD_DISABLE_AFTER": "3000000d"], [], "HERALD_DISABLE_AFTER=3000000d is out of range"),
            ([:], ["--disable-after", "3000000d"], "HERALD_DISABLE_AFTER=3000000d is out of range"),
            (["HERALD_RETENTION": "100000w"], [], "HERALD_RETENTION=100000w is out of range"),
            (["HERALD_DISABLE_AFTER": "0s"], [], "HERALD_DISABLE_AFTER=0s is out of range"),
            (["HERALD_BACKOFF_MAX_MS": "999999999999"], [], "HERALD_BACKOFF_MAX_MS=999999999999 is not valid"),
        ]
        for (environment, arguments, message) in cases {
            var merged = Fixture.fastWorker
            merged["DATABASE_URL"] = fixture.database.url
            for (key, value) in environment { merged[key] = value }
            let result = try HeraldProcess.run(["work"] + arguments, environment: merged, timeout: 20)
            #expect(result.status != 0)
            #expect(result.output.contains(message), "\(result.output)")
        }
    }

    // MARK: 2. Terminal escape injection

    @Test func nothingTheCLIPrintsFromTheDatabaseCanDriveTheTerminal() throws {
        let fixture = try Fixture()
        let hostile = "ok\u{1B}]0;pwned\u{07}\u{1B}[2J\u{9B}31m\u{7F}\r"
        let receiver = try TestReceiver { _, _ in .status(200, body: hostile) }
        try fixture.addConfig(name: "evil\u{1B}[2Jname", url: receiver.url)
        try fixture.emit(data: #"{"note": "\u001b[31mred\u009b"}"#)
        _ = try fixture.startWorker()
        #expect(try fixture.waitUntilSettled())
        let delivery = try #require(try fixture.scalar("SELECT id FROM webhook_deliveries"))
        try fixture.connection.query("UPDATE webhook_deliveries SET last_error = $1", [hostile])

        func unsafe(_ text: String) -> [Unicode.Scalar] {
            text.unicodeScalars.filter { TerminalText.isUnsafe($0) }
        }
        let tested = try herald(fixture, "test", "evil\u{1B}[2Jname")
        #expect(tested.status == 0, "\(tested.output)")
        for result in [try herald(fixture, "show", delivery), try herald(fixture, "logs"), try herald(fixture, "deliveries"),
                       try herald(fixture, "config", "list"), try herald(fixture, "config", "show", "evil\u{1B}[2Jname"),
                       try herald(fixture, "stats"), tested] {
            #expect(unsafe(result.output).isEmpty, "\(result.output.debugDescription)")
        }
        let shown = try herald(fixture, "show", delivery).output
        #expect(shown.contains(#"ok\u{1B}]0;pwned\u{7}\u{1B}[2J\u{9B}31m\u{7F}"#), "\(shown)")

        // --json: escaped as JSON escapes them; a parser gets the original characters back.
        for arguments in [["logs", "--json"], ["deliveries", "--json"], ["show", delivery, "--json"],
                          ["config", "list", "--json"], ["stats", "--json"]] {
            let result = try HeraldProcess.run(arguments, environment: ["DATABASE_URL": fixture.database.url])
            #expect(result.status == 0)
            #expect(unsafe(result.output).isEmpty, "\(arguments): \(result.output.debugDescription)")
            for line in result.output.split(separator: "\n") where line.hasPrefix("{") {
                #expect((try? JSONSerialization.jsonObject(with: Data(line.utf8))) != nil, "\(line)")
            }
        }
        let logLine = try #require(try HeraldProcess.run(["logs", "--json"], environment: ["DATABASE_URL": fixture.database.url])
            .output.split(separator: "\n").first)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(logLine.utf8)) as? [String: Any])
        #expect(object["response_body"] as? String == hostile)

        // A database error quoting a hostile value is neutralized too.
        let failure = try herald(fixture, "emit", "contact.created", "--data", #"{"a": "\u001b[2J"}"#, "--org", "not-a-uuid\u{1B}[2J")
        #expect(failure.status != 0 && unsafe(failure.output).isEmpty, "\(failure.output.debugDescription)")
    }

    // MARK: 6. Secrets off the command line

    @Test func secretsComeFromAFileOrStandardInput() throws {
        let fixture = try Fixture()
        let binary = try TestEnvironment.heraldBinary()
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("herald-secret-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let file = folder.appendingPathComponent("secret").path
        try Data("from-a-file\n".utf8).write(to: URL(fileURLWithPath: file))
        func run(_ arguments: [String], input: String? = nil) throws -> (status: Int32, output: String) {
            try ChildProcess.run(binary, arguments + ["--database-url", fixture.database.url], input: input.map { Array($0.utf8) })
        }
        func secret() throws -> String? { try fixture.scalar("SELECT secret FROM webhook_configs WHERE name = 'filed'") }

        let created = try run(["config", "create", "--name", "filed", "--url", "https://example.com/h", "--events", "*",
                               "--secret-file", file])
        #expect(created.status == 0, "\(created.output)")
        #expect(try secret() == "from-a-file")
        #expect(!created.output.contains("from-a-file"))

        let updated = try run(["config", "update", "filed", "--secret-file", "-"], input: "from stdin \n\n")
        #expect(updated.status == 0, "\(updated.output)")
        #expect(try secret() == "from stdin \n", "one trailing newline stripped, nothing else")

        try Data("rotated-in\r\n".utf8).write(to: URL(fileURLWithPath: file))
        let rotated = try run(["config", "rotate-secret", "filed", "--secret-file", file])
        #expect(rotated.status == 0, "\(rotated.output)")
        #expect(try secret() == "rotated-in")
        #expect(try fixture.scalar("SELECT previous_secret FROM webhook_configs WHERE name = 'filed'") == "from stdin \n")
        #expect(!rotated.output.contains("rotated-in"))

        let missing = try run(["config", "update", "filed", "--secret-file", folder.appendingPathComponent("nope").path])
        #expect(missing.status != 0 && missing.output.contains("cannot read it"), "\(missing.output)")
        let empty = try run(["config", "update", "filed", "--secret-file", "-"], input: "\n")
        #expect(empty.status != 0 && empty.output.contains("holds no secret"), "\(empty.output)")
        let both = try run(["config", "update", "filed", "--secret-file", file, "--secret", "x"])
        #expect(both.status != 0)
        #expect(try secret() == "rotated-in")
    }

    // MARK: 7. The metrics listener cannot be hung

    func scrape(_ port: Int, _ path: String, maxTime: Int = 10) throws -> (status: String, body: String) {
        let result = try ChildProcess.run("curl", ["-s", "--max-time", String(maxTime), "-w", "\n%{http_code}",
                                                   "http://127.0.0.1:\(port)\(path)"])
        let lines = result.output.split(separator: "\n", omittingEmptySubsequences: false)
        return (String(lines.last ?? ""), lines.dropLast().joined(separator: "\n"))
    }

    /// The value of one sample line, e.g. `herald_circuits_open`; nil when the series is absent.
    func value(_ metrics: String, _ series: String) -> Double? {
        for line in metrics.split(separator: "\n") where line.hasPrefix(series + " ") {
            return Double(line.split(separator: " ").last ?? "")
        }
        return nil
    }

    /// A connected socket to the listener; `request` is sent and the answer never read.
    func holdConnection(_ port: Int, sending request: String? = nil) -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var size: Int32 = 4096
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        _ = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        if let request { _ = request.withCString { send(fd, $0, strlen($0), Int32(MSG_NOSIGNAL)) } }
        return fd
    }

    @Test func healthzAnswersWhileSilentClientsAndSlowReadersHoldConnections() throws {
        let fixture = try Fixture()
        try fixture.connection.query("""
            INSERT INTO webhook_configs (name, url, events)
            SELECT 'c' || i, 'https://example.com/hooks/' || i, '{*}' FROM generate_series(1, 2000) i
            """)
        // Every circuit open: the per-config series the old listener listed for each config are all present.
        try fixture.connection.query("UPDATE webhook_configs SET circuit_open_until = now() + interval '1 hour'")
        let port = try freeLoopbackPort()
        let worker = try fixture.startWorker(["HERALD_METRICS_ADDR": "127.0.0.1:\(port)"])
        // Running: healthy, and the first backlog sample (every circuit) taken.
        #expect(eventually(timeout: 20) {
            (try? scrape(port, "/healthz").status) == "200"
                && (try? scrape(port, "/metrics").body.contains("herald_circuit_open{")) == true
        }, "\(worker.output)")
        var held: [Int32] = []
        defer { held.forEach { close($0) } }
        for _ in 0..<30 { held.append(holdConnection(port)) }
        for _ in 0..<5 { held.append(holdConnection(port, sending: "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")) }
        let health = try scrape(port, "/healthz", maxTime: 10)
        #expect(health.status == "200", "\(worker.output)")
        let metrics = try scrape(port, "/metrics", maxTime: 10)
        #expect(metrics.status == "200")
        // Bounded: at most 100 per-config series, and the total of open circuits.
        #expect(metrics.body.split(separator: "\n").filter { $0.hasPrefix("herald_circuit_open{") }.count == 100)
        #expect(value(metrics.body, "herald_circuits_open") == 2000, "\(metrics.body.suffix(2000))")
    }

    @Test func circuitGaugeListsOpenCircuitsOnlyAndDropsThemWhenTheyClose() throws {
        let fixture = try Fixture()
        let open = try fixture.addConfig(name: "open", url: "https://example.com/a")
        let closed = try fixture.addConfig(name: "closed", url: "https://example.com/b")
        try fixture.connection.query(
            "UPDATE webhook_configs SET circuit_open_until = now() + interval '1 hour' WHERE id = $1", [open])
        let port = try freeLoopbackPort()
        let worker = try fixture.startWorker(["HERALD_METRICS_ADDR": "127.0.0.1:\(port)"])
        let openSeries = #"herald_circuit_open{config_id="\#(open)"}"#
        #expect(eventually(timeout: 20) { (try? scrape(port, "/metrics")).flatMap { value($0.body, openSeries) } == 1 },
                "\(worker.output)")
        let body = try scrape(port, "/metrics").body
        #expect(!body.contains(closed), "a closed circuit is listed")
        #expect(value(body, "herald_circuits_open") == 1)

        try fixture.connection.query("UPDATE webhook_configs SET circuit_open_until = NULL WHERE id = $1", [open])
        #expect(eventually(timeout: 20) {
            (try? scrape(port, "/metrics").body).map { !$0.contains(open) && value($0, "herald_circuits_open") == 0 } == true
        })
    }

    @Test func theListenerSurvivesRunningOutOfFileDescriptors() throws {
        let fixture = try Fixture()
        let port = try freeLoopbackPort()
        var environment = ProcessInfo.processInfo.environment
        for (key, value) in Fixture.fastWorker { environment[key] = value }
        environment["DATABASE_URL"] = fixture.database.url
        environment["HERALD_METRICS_ADDR"] = "127.0.0.1:\(port)"
        environment["HERALD_SQL_DIR"] = try TestEnvironment.sqlDirectory().path
        let log = FileManager.default.temporaryDirectory.appendingPathComponent("herald-emfile-\(UUID().uuidString).log")
        defer { try? FileManager.default.removeItem(at: log) }
        // 64 descriptors in all: the 100 connections below exhaust them, so accept fails with EMFILE.
        let worker = try ChildProcess(executable: "prlimit", arguments: ["--nofile=64:64", try TestEnvironment.heraldBinary(), "work"],
                                      environment: environment, outputPath: log.path)
        defer {
            worker.signal(SIGKILL)
            _ = worker.waitForExit(timeout: 10)
        }
        #expect(eventually(timeout: 20) { (try? scrape(port, "/healthz").status) == "200" })
        var held: [Int32] = []
        for _ in 0..<100 { held.append(holdConnection(port)) }
        // Some of them sit in the kernel's backlog, not accepted: the listener ran out of descriptors.
        Thread.sleep(forTimeInterval: 0.5)
        held.forEach { close($0) }
        #expect(eventually(timeout: 20) { (try? scrape(port, "/healthz", maxTime: 3).status) == "200" },
                "\((try? String(contentsOf: log, encoding: .utf8)) ?? "")")
        #expect(worker.isRunning)
    }
}
