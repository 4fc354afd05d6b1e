import Foundation

/// Applies the numbered SQL files in `sql/` in order, once each, and records them in `herald_migrations`.
///
/// Safe to run from several processes at once: a session-level advisory lock serialises them, and each file runs
/// in its own transaction together with its bookkeeping row, so a failed file leaves nothing half-applied.
public struct Migrator {
    /// One `NNN_name.sql` file.
    public struct Migration: Sendable, Equatable {
        public var version: Int
        public var name: String
        public var sql: String
    }

    /// Arbitrary but fixed: the advisory lock key every Herald process uses for migrations.
    static let lockKey = "7220136354046181"

    public let migrations: [Migration]

    public init(migrations: [Migration]) {
        self.migrations = migrations.sorted { $0.version < $1.version }
    }

    /// Loads `NNN_name.sql` files from `directory`.
    public init(directory: URL) throws {
        let names = try FileManager.default.contentsOfDirectory(atPath: directory.path)
        var migrations: [Migration] = []
        for name in names where name.hasSuffix(".sql") {
            let stem = name.dropLast(4)
            guard let underscore = stem.firstIndex(of: "_"), let version = Int(stem[..<underscore]) else {
                throw PostgresError(kind: .client,
                                    message: "migration file \(name) is not named NNN_description.sql")
            }
            let sql = try String(contentsOf: directory.appendingPathComponent(name), encoding: .utf8)
            if let clash = migrations.first(where: { $0.version == version }) {
                throw PostgresError(kind: .client,
                                    message: "migrations \(clash.name) and \(name) share version \(version)")
            }
            migrations.append(Migration(version: version, name: String(stem), sql: sql))
        }
        guard !migrations.isEmpty else {
            throw PostgresError(kind: .client, message: "no NNN_name.sql migrations in \(directory.path)")
        }
        self.init(migrations: migrations)
    }

    /// Finds the `sql/` folder: `HERALD_SQL_DIR`, then next to (or above) the executable, as in a checkout or
    /// under `/usr/share/herald/sql` in the container image, then `./sql`.
    public static func locateDirectory(explicit: String? = nil) throws -> URL {
        if let explicit, !explicit.isEmpty {
            return URL(fileURLWithPath: explicit, isDirectory: true)
        }
        var candidates: [URL] = []
        var folder = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
            .deletingLastPathComponent()
        for _ in 0..<6 {
            candidates.append(folder.appendingPathComponent("sql", isDirectory: true))
            folder.deleteLastPathComponent()
        }
        candidates.append(URL(fileURLWithPath: "/usr/share/herald/sql", isDirectory: true))
        candidates.append(URL(fileURLWithPath: FileManager.default.currentDirectoryPath)
            .appendingPathComponent("sql", isDirectory: true))
        for candidate in candidates
        where FileManager.default.fileExists(atPath: candidate.appendingPathComponent("001_event_catalogue.sql").path) {
            return candidate
        }
        throw PostgresError(
            kind: .client,
            message: "could not find Herald's sql/ folder near the executable, in /usr/share/herald/sql or in ./sql; set HERALD_SQL_DIR or pass --sql-dir")
    }

    /// Applies what is missing; returns the migrations applied by this call (empty when up to date).
    @discardableResult
    public func migrate(_ connection: PostgresConnection) throws -> [Migration] {
        try connection.query("SELECT pg_advisory_lock($1)", [Self.lockKey])
        defer { _ = try? connection.query("SELECT pg_advisory_unlock($1)", [Self.lockKey]) }
        try connection.query("""
            CREATE TABLE IF NOT EXISTS herald_migrations (
                version    integer PRIMARY KEY,
                name       text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )
            """)
        try connection.query("ALTER TABLE herald_migrations ADD COLUMN IF NOT EXISTS checksum text")
        let applied = Set(try connection.query("SELECT version FROM herald_migrations").rows.compactMap {
            $0[0].flatMap { Int($0) }
        })
        var done: [Migration] = []
        for migration in migrations where !applied.contains(migration.version) {
            do {
                try connection.transaction { connection in
                    try connection.executeScript(migration.sql)
                    try connection.query(
                        "INSERT INTO herald_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                        [String(migration.version), migration.name, migration.checksum])
                }
            } catch var error as PostgresError {
                error.message = "migration \(migration.name) failed: \(error.message)"
                throw error
            }
            done.append(migration)
        }
        return done
    }

    /// Migrations whose file changed after the database applied it: the database keeps the old version, and
    /// only a new, numbered migration can change it.
    public func changedSinceApplied(_ connection: PostgresConnection) throws -> [Migration] {
        let recorded = try connection.query(
            "SELECT version, checksum FROM herald_migrations WHERE checksum IS NOT NULL").rows
        let checksums = Dictionary(uniqueKeysWithValues: recorded.compactMap { row -> (Int, String)? in
            guard let version = row[0].flatMap({ Int($0) }), let checksum = row[1] else { return nil }
            return (version, checksum)
        })
        return migrations.filter { migration in
            checksums[migration.version].map { $0 != migration.checksum } ?? false
        }
    }
}

extension Migrator.Migration {
    /// FNV-1a (64 bit) of the file's text: enough to notice an edited migration, not a security measure.
    public var checksum: String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in sql.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01B3
        }
        let digits = String(hash, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }
}
