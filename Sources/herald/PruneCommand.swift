import ArgumentParser
import Foundation
import HeraldCore
import HeraldPostgres

struct Prune: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Delete finished deliveries, attempt logs and events older than an age, in small batches.",
        discussion: """
            Pending deliveries (and their events) are never deleted. Each batch is its own short transaction.
            In psql: SELECT * FROM herald_prune(interval '30 days');
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
        let call = "SELECT deliveries, logs, events FROM herald_prune($1::interval, $2, $3, false)"
        if dryRun {
            let row = try connection.query(call, [interval, String(batch), "true"]).rows[0]
            print("would delete \(row[0] ?? "0") deliveries, \(row[1] ?? "0") log rows and \(row[2] ?? "0") events older than \(olderThan)")
            return
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
