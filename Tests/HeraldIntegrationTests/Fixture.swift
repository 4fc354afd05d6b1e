import Foundation
import Synchronization
import HeraldPostgres
import HeraldTestSupport
import Testing

/// A database of the test's own, with helpers to add configs, emit events and run workers against it.
final class Fixture {
    let database: TestDatabase
    let connection: PostgresConnection
    private var workers: [HeraldProcess] = []

    /// Worker settings that make tests fast: short timeouts and backoffs, loopback allowed, quick polling.
    static let fastWorker: [String: String] = [
        "HERALD_ALLOWED_NETWORKS": "127.0.0.0/8,::1/128",
        "HERALD_TIMEOUT_MS": "1000",
        "HERALD_BACKOFF_BASE_MS": "100",
        "HERALD_BACKOFF_MAX_MS": "1000",
        "HERALD_POLL_MS": "50",
        "HERALD_LEASE_MS": "3000",
        "HERALD_MAX_ATTEMPTS": "5",
        "HERALD_METRICS_ADDR": "off",
    ]

    init() throws {
        database = try TestDatabase.create()
        connection = try database.connect()
    }

    deinit {
        for worker in workers { worker.kill() }
        connection.close()
        database.drop()
    }

    /// Unnamed configs added so far: names are unique per organization (sql/009), so each gets its own.
    private var unnamed = 0

    /// Adds a config; without a name: "endpoint", then "endpoint 2", "endpoint 3", …
    @discardableResult
    func addConfig(name: String? = nil, url: String, events: String = "{*}", secret: String? = nil,
                   organization: String? = nil, active: Bool = true, maxAttempts: Int? = nil) throws -> String {
        try connection.query("""
            INSERT INTO webhook_configs (name, url, events, secret, organization_id, is_active, max_attempts)
            VALUES ($1, $2, $3::text[], $4, $5::uuid, $6, $7::integer) RETURNING id
            """, [name ?? nextName(), url, events, secret, organization, active ? "true" : "false", maxAttempts.map(String.init)]).scalar!
    }

    private func nextName() -> String {
        unnamed += 1
        return unnamed == 1 ? "endpoint" : "endpoint \(unnamed)"
    }

    /// Emits an event the way an application does: one plain INSERT.
    @discardableResult
    func emit(_ type: String = "contact.created", data: String = #"{"id": "42"}"#, organization: String? = nil) throws -> String {
        try connection.query(
            "INSERT INTO webhook_events (event_type, organization_id, data) VALUES ($1, $2::uuid, $3::jsonb) RETURNING id",
            [type, organization, data]).scalar!
    }

    func startWorker(_ overrides: [String: String] = [:], arguments: [String] = [], launcher: [String] = []) throws
        -> HeraldProcess
    {
        var environment = Fixture.fastWorker
        environment["DATABASE_URL"] = database.url
        for (key, value) in overrides { environment[key] = value }
        let worker = try HeraldProcess(["work"] + arguments, environment: environment, launcher: launcher)
        workers.append(worker)
        return worker
    }

    func scalar(_ sql: String, _ parameters: [String?] = []) throws -> String? {
        try connection.query(sql, parameters).scalar
    }

    func count(_ sql: String, _ parameters: [String?] = []) throws -> Int {
        Int(try scalar(sql, parameters) ?? "0") ?? 0
    }

    /// Waits until every delivery is finished (delivered or failed); false on timeout.
    func waitUntilSettled(timeout: Double = 30) throws -> Bool {
        try eventually(timeout: timeout) {
            try count("SELECT count(*) FROM webhook_deliveries WHERE status = 'pending'") == 0
        }
    }

    func logs(of delivery: String) throws -> [[String: String?]] {
        try connection.query("""
            SELECT attempt, outcome, response_status, error, body AS payload, response_body, duration_ms
              FROM webhook_attempts WHERE delivery_id = $1 ORDER BY attempt, id
            """, [delivery]).namedRows
    }
}

/// Runs a command and returns its output (for independent checks with openssl, python3, node).
func runTool(_ executable: String, _ arguments: [String], input: [UInt8]? = nil) throws -> String {
    let result = try ChildProcess.run(executable, arguments, input: input)
    guard result.status == 0 else {
        throw ReceiverError("\(executable) \(arguments.joined(separator: " ")) exited \(result.status): \(result.output)")
    }
    return result.output.trimmingCharacters(in: .whitespacesAndNewlines)
}

func freeLoopbackPort() throws -> Int {
    let receiver = try TestReceiver()
    let port = receiver.port
    receiver.stop()
    return port
}

func connectLoopback(_ port: Int) throws -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = UInt16(port).bigEndian
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    return withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    } == 0
}

/// A PostgreSQL cluster of a test's own (scripts/pg), for tests that stop or restart PostgreSQL: doing that to
/// the shared one would disturb tests running in parallel. Migrated; stopped and removed on `stop()`.
struct OwnCluster {
    let url: String
    let directory: URL
    let script: String

    init() throws {
        script = try TestEnvironment.projectRoot().appendingPathComponent("scripts/pg").path
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("herald-own-\(UUID().uuidString.prefix(8))")
        let start = try runTool("bash", [script, "start", "--dir", directory.path, "--fast"])
        guard let line = start.split(separator: "\n").first(where: { $0.hasPrefix("DATABASE_URL=") }) else {
            throw ReceiverError("scripts/pg start printed no DATABASE_URL: \(start)")
        }
        url = String(line.dropFirst("DATABASE_URL=".count))
        let migrated = try HeraldProcess.run(["migrate", "--database-url", url])
        guard migrated.status == 0 else { throw ReceiverError("migrate failed: \(migrated.output)") }
    }

    func restart() throws { _ = try runTool("bash", [script, "restart", "--dir", directory.path]) }
    func pause() throws { _ = try runTool("bash", [script, "stop", "--dir", directory.path]) }
    func resume() throws {
        _ = try runTool("bash", [script, "start", "--dir", directory.path, "--fast", "--port", String(URL(string: url)!.port!)])
    }

    func stop() {
        _ = try? runTool("bash", [script, "stop", "--dir", directory.path])
        try? FileManager.default.removeItem(at: directory)
    }
}

/// A receiver's responder that holds every request for a while and remembers the most it ever held at once: what
/// a test of an in-flight cap looks at.
final class PeakConcurrency: Sendable {
    private let current = Atomic<Int>(0)
    private let highest = Atomic<Int>(0)

    var peak: Int { highest.load(ordering: .relaxed) }

    func responder(holding seconds: Double) -> @Sendable (TestReceiver.Request, Int) -> TestReceiver.Reply {
        { [self] _, _ in
            let now = current.add(1, ordering: .relaxed).newValue
            _ = highest.max(now, ordering: .relaxed)
            Thread.sleep(forTimeInterval: seconds)
            current.subtract(1, ordering: .relaxed)
            return .status(200)
        }
    }
}
