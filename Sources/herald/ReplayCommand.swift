import ArgumentParser
import Foundation
import HeraldCore
import HeraldPostgres

struct Replay: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Send finished deliveries again: a fresh attempt cycle, same X-Webhook-Id, history kept.",
        discussion: """
            By id:    herald replay 8d0f6f0e-… 1a2b3c4d-…
            In bulk:  herald replay --status failed [--config NAME] [--event-type T] [--since 1d] [--until …] [--dry-run]
            In psql:  SELECT herald_replay(ARRAY['…']::uuid[]);  SELECT herald_replay_matching(p_status => 'failed');
            Delivered deliveries are replayed only when asked for with --status delivered.
            """)
    @OptionGroup var database: DatabaseOptions
    @Argument(help: "Delivery ids to replay.") var deliveries: [String] = []
    @Option(help: "Replay every delivery with this status: failed or delivered.") var status: String?
    @Option(help: "Only this config (id or name).") var config: String?
    @OptionGroup var scope: OrganizationOption
    @Option(name: .customLong("event-type"), help: "Only this event type.") var eventType: String?
    @Option(help: "Only deliveries finished since then (30m, 1h, 7d or an ISO 8601 time).") var since: String?
    @Option(help: "Only deliveries finished before then (a duration ago or an ISO 8601 time).") var until: String?
    @Flag(name: .customLong("dry-run"), help: "List (up to 50) and count what would be replayed; change nothing.") var dryRun = false

    /// How many deliveries a dry run lists; beyond that it only counts.
    static let listed = 50

    static func wouldReplay(_ total: Int) -> String {
        let shown = total > listed ? " (the first \(listed) are listed)" : ""
        return "would replay \(total) \(total == 1 ? "delivery" : "deliveries")\(shown); nothing was changed"
    }

    func validate() throws {
        let filtered = status != nil || config != nil || eventType != nil || since != nil || until != nil
        if !deliveries.isEmpty && filtered {
            throw CommandFailure("give delivery ids or filters (--status …), not both")
        }
        if deliveries.isEmpty && status == nil {
            throw CommandFailure("name deliveries by id, or choose them with --status failed (or --status delivered) and optional filters")
        }
        for id in deliveries { _ = try requireUUID("delivery id", id) }
        if scope.organization != nil && config == nil {
            throw CommandFailure("--org picks the organization of the --config NAME: give --config too")
        }
        if let status, !["failed", "delivered"].contains(status) {
            throw CommandFailure("--status '\(status)' cannot be replayed: use failed or delivered (pending deliveries are already queued)")
        }
        if let eventType, !EventCatalog.contains(eventType) {
            throw CommandFailure("--event-type '\(eventType)' is not a known event type (see webhook_event_types)")
        }
        _ = try timeBound("--since", since)
        _ = try timeBound("--until", until)
    }

    func run() throws {
        let connection = try database.connect()
        if !deliveries.isEmpty {
            let ids = PostgresArray.literal(deliveries.map { $0.lowercased() })
            do {
                let count = try perform {
                    try connection.transaction { connection -> String in
                        let count = try connection.query("SELECT herald_replay($1::uuid[])", [ids]).scalar ?? "0"
                        if dryRun { throw DryRun(count: count) }
                        return count
                    }
                }
                print("replayed \(count) deliveries")
            } catch let dry as DryRun {
                Output.table(try connection.query("""
                    SELECT d.id AS delivery, c.name AS config, e.event_type AS event, d.status, d.attempts,
                           to_char(d.completed_at, 'YYYY-MM-DD HH24:MI:SS') AS finished, d.last_error
                      FROM webhook_deliveries d
                      JOIN webhook_events e ON e.id = d.event_id
                      JOIN webhook_configs c ON c.id = d.config_id
                     WHERE d.id = ANY ($1::uuid[])
                     ORDER BY d.completed_at, d.id
                     LIMIT \(Replay.listed)
                    """, [ids]), json: false, empty: "")
                print(Replay.wouldReplay(Int(dry.count) ?? 0))
            }
            return
        }
        let configID = try config.map { try resolveConfig($0, organization: scope.organization, on: connection) }
        let sinceBound = try timeBound("--since", since)
        // Fixing the upper bound at "now" means a replayed delivery that fails again during this run is not
        // picked up a second time.
        let untilBound = try timeBound("--until", until) ?? connection.query("SELECT now()::text").scalar
        let call = "SELECT herald_replay_matching($1, $2::uuid, $3, $4::timestamptz, $5::timestamptz, $6::integer, $7)"
        let total = Int(try perform {
            try connection.query(call, [status, configID, eventType, sinceBound, untilBound, nil, "true"]).scalar
        } ?? "0") ?? 0
        if dryRun {
            Output.table(try connection.query("""
                SELECT delivery_id AS delivery, config, event_type AS event, attempts,
                       to_char(completed_at, 'YYYY-MM-DD HH24:MI:SS') AS finished, last_error
                  FROM herald_replay_candidates($1, $2::uuid, $3, $4::timestamptz, $5::timestamptz, $6)
                """, [status, configID, eventType, sinceBound, untilBound, String(Replay.listed)]),
                json: false, empty: "")
            print(Replay.wouldReplay(total))
            return
        }
        let progress = isatty(STDERR_FILENO) == 1
        var replayed = 0
        while true {
            let batch = Int(try perform {
                try connection.query(call, [status, configID, eventType, sinceBound, untilBound, "1000", "false"]).scalar
            } ?? "0") ?? 0
            replayed += batch
            if progress {
                FileHandle.standardError.write(Data("\rreplayed \(replayed) of \(total)".utf8))
            }
            if batch < 1000 { break }
        }
        if progress { FileHandle.standardError.write(Data("\n".utf8)) }
        print("replayed \(replayed) deliveries")
    }
}

/// Thrown inside the transaction of a dry run so that it rolls back after the checks ran.
private struct DryRun: Error {
    var count: String
}
