import Foundation
import HeraldPostgres

/// What `scripts/test` sets up for the test suite: a throwaway PostgreSQL, the built binary, the sql folder.
public enum TestEnvironment {
    public static func require(_ name: String) throws -> String {
        guard let value = ProcessInfo.processInfo.environment[name], !value.isEmpty else {
            throw ReceiverError("\(name) is not set: run the tests with scripts/test, which starts PostgreSQL and sets it")
        }
        return value
    }

    /// The server-level URL (database `herald`), from `scripts/pg start`.
    public static func serverURL() throws -> String { try require("HERALD_TEST_DATABASE_URL") }

    public static func heraldBinary() throws -> String { try require("HERALD_BIN") }

    public static func sqlDirectory() throws -> URL { URL(fileURLWithPath: try require("HERALD_SQL_DIR")) }

    public static func projectRoot() throws -> URL { try sqlDirectory().deletingLastPathComponent() }
}

/// A database of its own for one test, so tests can run in parallel without seeing each other's rows.
///
/// Created from `herald_template` (migrated once by `scripts/test`), or empty when a test migrates it itself.
public struct TestDatabase: Sendable {
    public let name: String
    public let url: String

    public static func create(migrated: Bool = true) throws -> TestDatabase {
        let server = try TestEnvironment.serverURL()
        let name = "t_" + UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "").prefix(16)
        let admin = try PostgresConnection(server)
        // CREATE DATABASE … TEMPLATE fails if another session is copying the same template at that moment.
        var lastError: (any Error)?
        for _ in 0..<20 {
            do {
                try admin.query("CREATE DATABASE \(name) TEMPLATE \(migrated ? "herald_template" : "template0")")
                lastError = nil
                break
            } catch {
                lastError = error
                Thread.sleep(forTimeInterval: 0.1)
            }
        }
        if let lastError { throw lastError }
        return TestDatabase(name: String(name), url: replaceDatabase(in: server, with: String(name)))
    }

    public func connect() throws -> PostgresConnection { try PostgresConnection(url) }

    /// Drops the database (terminating sessions a killed worker may have left).
    public func drop() {
        guard let admin = try? PostgresConnection(try TestEnvironment.serverURL()) else { return }
        _ = try? admin.query("DROP DATABASE IF EXISTS \(name) WITH (FORCE)")
    }

    static func replaceDatabase(in url: String, with database: String) -> String {
        guard let slash = url.lastIndex(of: "/") else { return url }
        let tail = url[url.index(after: slash)...]
        let query = tail.firstIndex(of: "?").map { String(tail[$0...]) } ?? ""
        return String(url[...slash]) + database + query
    }
}

/// Polls `condition` until it holds or `timeout` passes; returns whether it held. Tests assert on the result.
public func eventually(timeout: Double = 20, interval: Double = 0.05, _ condition: () throws -> Bool) rethrows -> Bool {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        if try condition() { return true }
        Thread.sleep(forTimeInterval: interval)
    }
    return try condition()
}
