import ArgumentParser
import Foundation
import HeraldCore
import HeraldPostgres
import HeraldWorker

struct Migrate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create or upgrade Herald's tables (idempotent; safe to run from several processes at once).",
        discussion: "Applies the numbered files in sql/ that the database has not seen, each in its own transaction, and records them in herald_migrations.")

    @OptionGroup var database: DatabaseOptions

    @Option(name: .customLong("sql-dir"), help: "Folder of NNN_name.sql migrations (default: $HERALD_SQL_DIR, else found next to the executable).")
    var sqlDirectory: String?

    @Option(name: .customLong("log-partition-interval"),
            help: "Width of webhook_logs partitions created from now on: 1d (the default), 1h, 15m, … down to 1m; the granularity of retention.")
    var logPartitionInterval: String?

    func validate() throws {
        if let logPartitionInterval {
            guard let width = DurationText.parse(logPartitionInterval), width >= .seconds(60), width <= .seconds(86_400),
                  Int64(width.milliseconds) % 60_000 == 0, 86_400_000 % Int64(width.milliseconds) == 0 else {
                throw CommandFailure("--log-partition-interval '\(logPartitionInterval)' must be whole minutes from 1m to 1d that divide a day (1m, 5m, 15m, 1h, 6h, 1d, …)")
            }
        }
    }

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
        // webhook_logs is partitioned by time (sql/012): partitions ahead, topped up by the workers too.
        if let logPartitionInterval, let width = DurationText.parse(logPartitionInterval) {
            try connection.query("SELECT herald_set_log_partition_interval($1::interval)",
                                 ["\(Int64(width.milliseconds) / 1000) seconds"])
            print("webhook_logs partitions from now on: \(logPartitionInterval) each")
        }
        if try connection.query("SELECT to_regproc('herald_create_log_partitions') IS NOT NULL").scalar == "t" {
            let created = try QueueMaintenance(connection: connection).createLogPartitions()
            if created > 0 { print("created \(created) webhook_logs partitions ahead") }
        }
    }
}
