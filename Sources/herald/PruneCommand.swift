import ArgumentParser
import Foundation
import HeraldCore
import HeraldPostgres
import HeraldWorker

struct Prune: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Remove attempt logs, finished deliveries and events older than an age.",
        discussion: """
            Attempt logs go by whole partitions of webhook_logs (detached concurrently, then dropped): a partition \
            goes once all of it is older than the age, so logs are kept up to one partition interval longer \
            (`herald migrate --log-partition-interval`). Finished deliveries and their events are deleted in small \
            batches, each its own short transaction; pending deliveries (and their events) are never deleted.
            In psql: SELECT * FROM herald_drop_log_partitions(interval '30 days'); \
            SELECT * FROM herald_prune(interval '30 days');
            """)
    @OptionGroup var database: DatabaseOptions
    @Option(name: .customLong("older-than"), help: "Age, e.g. 30d, 12h, 2w.") var olderThan: String
    @Option(help: "Rows of each kind per batch.") var batch: Int = 1000
    @Flag(name: .customLong("dry-run"), help: "Count what would be deleted; change nothing.") var dryRun = false

    func validate() throws {
        guard let age = DurationText.parse(olderThan), age > .zero else {
            throw CommandFailure(DurationText.explain("--older-than", olderThan, datesAllowed: false))
        }
        if !(1...100_000).contains(batch) { throw CommandFailure("--batch must be between 1 and 100000") }
    }

    func run() throws {
        let age = DurationText.parse(olderThan)!
        let interval = "\(Int64(age.milliseconds)) milliseconds"
        let connection = try database.connect()
        let maintenance = QueueMaintenance(connection: connection)
        let call = "SELECT deliveries, logs, events FROM herald_prune($1::interval, $2, $3, false)"
        if dryRun {
            let row = try connection.query(call, [interval, String(batch), "true"]).rows[0]
            let partitions = try maintenance.expiredLogPartitions(olderThan: age)
            print("would delete \(row[0] ?? "0") deliveries, about \(row[1] ?? "0") log rows and \(row[2] ?? "0") events older than \(olderThan)")
            print("webhook_logs partitions past it: \(partitions.isEmpty ? "none" : partitions.map(\.name).joined(separator: ", "))")
            return
        }
        // Whole partitions first: the lock waits for a worker that is pruning, then detaches each one CONCURRENTLY.
        let dropped = try maintenance.dropExpiredLogPartitions(olderThan: age, wait: true) ?? []
        if !dropped.isEmpty {
            print("dropped \(dropped.count) webhook_logs partitions (about \(dropped.reduce(0) { $0 + $1.rows }) rows): \(dropped.map(\.name).joined(separator: ", "))")
        }
        let progress = isatty(STDERR_FILENO) == 1
        var totals = [0, 0, 0]
        while true {
            // The workers' pruner lock (sql/006): wait for a batch they are running instead of deleting beside it.
            // One transaction per batch, so a worker waits at most one batch for us either.
            try connection.query("BEGIN")
            try connection.query("SELECT pg_advisory_xact_lock(7220136354046182)")
            let row = try connection.query(call, [interval, String(batch), "false"]).rows[0].map { Int($0 ?? "0") ?? 0 }
            try connection.query("COMMIT")
            for index in 0..<3 { totals[index] += row[index] }
            if progress {
                FileHandle.standardError.write(Data(
                    "\rpruned \(totals[0]) deliveries, \(totals[1]) log rows, \(totals[2]) events".utf8))
            }
            if row.allSatisfy({ $0 == 0 }) { break }
        }
        if progress { FileHandle.standardError.write(Data("\n".utf8)) }
        print("deleted \(totals[0]) deliveries, \(totals[1]) log rows and \(totals[2]) events older than \(olderThan)")
    }
}
