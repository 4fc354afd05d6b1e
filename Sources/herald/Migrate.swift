import ArgumentParser
import Foundation
import HeraldPostgres

struct Migrate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create or upgrade Herald's tables (idempotent; safe to run from several processes at once).",
        discussion: "Applies the numbered files in sql/ that the database has not seen, each in its own transaction, and records them in herald_migrations.")

    @OptionGroup var database: DatabaseOptions

    @Option(name: .customLong("sql-dir"), help: "Folder of NNN_name.sql migrations (default: $HERALD_SQL_DIR, else found next to the executable).")
    var sqlDirectory: String?

    func run() throws {
        let directory = try Migrator.locateDirectory(
            explicit: sqlDirectory ?? ProcessInfo.processInfo.environment["HERALD_SQL_DIR"])
        let migrator = try Migrator(directory: directory)
        let connection = try database.connect()
        let applied = try migrator.migrate(connection)
        // What a migration said with RAISE NOTICE (SQLSTATE 00000), e.g. the configs sql/009 renamed; not the
        // server's own chatter ("relation already exists, skipping").
        for notice in connection.takeNotices() where notice.sqlState == "00000" {
            print("notice: \(notice.message)")
        }
        for migration in try migrator.changedSinceApplied(connection) {
            print("warning: \(migration.name).sql changed after this database applied it; the database keeps the old version (add a new numbered migration instead of editing an applied one)")
        }
        if applied.isEmpty {
            print("database is up to date (\(migrator.migrations.count) migrations)")
        } else {
            for migration in applied { print("applied \(migration.name)") }
        }
    }
}
