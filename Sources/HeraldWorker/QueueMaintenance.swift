import Foundation
import HeraldCore
import HeraldPostgres

/// The upkeep of Herald's tables that must never hold up a delivery: `webhook_logs` partitions created ahead and
/// dropped past retention (sql/012), and the health figures a database administrator watches (sql/013).
///
/// Used by the worker's maintenance thread, on a connection of its own (dropping a partition waits for every
/// transaction older than it), and by `herald prune` and `herald stats`.
public struct QueueMaintenance {
    public let connection: PostgresConnection

    /// The pruners' advisory lock (sql/006): one pruner at a time, workers and `herald prune` alike.
    static let prunerLock = "7220136354046182"

    public init(connection: PostgresConnection) {
        self.connection = connection
    }

    /// Creates the `webhook_logs` partitions missing up to the horizon (a week ahead by default); returns how many.
    /// 0 as well when another session is creating them at this moment.
    @discardableResult
    public func createLogPartitions() throws -> Int {
        Int(try connection.query("SELECT herald_create_log_partitions()").scalar ?? "0") ?? 0
    }

    /// A `webhook_logs` partition that retention removes: every row in it is older than the retention age.
    public struct ExpiredPartition: Sendable, Equatable {
        public var name: String
        /// From the table statistics: about how many attempt rows it holds.
        public var rows: Int
        /// Detached already (a pruner stopped between detaching and dropping it): only the DROP is left.
        public var attached: Bool
        /// A `DETACH … CONCURRENTLY` of it was interrupted: it is finished with `DETACH … FINALIZE`.
        public var detaching: Bool
    }

    /// The partitions entirely older than `age`, oldest first, and any left detached by an interrupted prune.
    public func expiredLogPartitions(olderThan age: Duration) throws -> [ExpiredPartition] {
        try connection.query("""
            SELECT partition, rows_estimate, attached, detaching FROM herald_expired_log_partitions($1::interval)
            """, [Self.interval(age)]).rows.map { row in
            ExpiredPartition(name: row[0]!, rows: Int(row[1] ?? "0") ?? 0, attached: row[2] == "t",
                             detaching: row[3] == "t")
        }
    }

    /// Drops the partitions past `age`: each is detached CONCURRENTLY (inserts into `webhook_logs` and queries on
    /// it go on; PostgreSQL waits for the transactions that could still see it) and then dropped.
    ///
    /// - Parameter wait: wait for another pruner to finish (`herald prune`); otherwise return nil at once when one
    ///   is busy (the workers).
    /// - Returns: what was dropped, or nil when another pruner held the lock.
    public func dropExpiredLogPartitions(olderThan age: Duration, wait: Bool) throws -> [ExpiredPartition]? {
        if wait {
            try connection.query("SELECT pg_advisory_lock(\(Self.prunerLock))")
        } else if try connection.query("SELECT pg_try_advisory_lock(\(Self.prunerLock))").scalar != "t" {
            return nil
        }
        defer { _ = try? connection.query("SELECT pg_advisory_unlock(\(Self.prunerLock))") }
        var dropped: [ExpiredPartition] = []
        for partition in try expiredLogPartitions(olderThan: age) {
            let name = Self.quoted(partition.name)
            if partition.detaching {
                try connection.query("ALTER TABLE webhook_logs DETACH PARTITION \(name) FINALIZE")
            } else if partition.attached {
                try connection.query("ALTER TABLE webhook_logs DETACH PARTITION \(name) CONCURRENTLY")
            }
            try connection.query("DROP TABLE \(name)")
            dropped.append(partition)
        }
        return dropped
    }

    /// One retention batch of finished deliveries and old events (`herald_prune`, sql/012), skipped when another
    /// session is pruning; returns the rows deleted. `sweep` also looks for old events without any delivery, which
    /// reads every old event still waiting on a pending delivery: not for every batch.
    public func pruneBatch(olderThan age: Duration, batch: Int, sweep: Bool) throws -> Int {
        Int(try connection.query(
            "SELECT deliveries + logs + events FROM herald_prune($1::interval, $2, false, true, $3)",
            [Self.interval(age), String(batch), sweep ? "true" : "false"]).scalar ?? "0") ?? 0
    }

    /// What a vacuum of the signals table came to.
    public enum SignalsVacuum: Sendable, Equatable {
        /// Vacuumed.
        case done
        /// Not now: vacuumed by someone less than 4 s ago, or being vacuumed (autovacuum), so it is skipped
        /// without waiting (`SKIP_LOCKED`, SQLSTATE 55P03).
        case skipped
        /// PostgreSQL refused: this role may not vacuum the table (only its owner, the database's owner, a
        /// superuser, or on PostgreSQL 17 a role granted MAINTAIN may). It will not pass by itself.
        case notPermitted(String)
        /// Done, with another warning (e.g. a long transaction holding back what vacuum may remove).
        case warned(String)
    }

    /// Vacuums `herald_endpoint_signals`, the table of wake-ups that every claim, write and fan-out touches: a few
    /// hundred live rows at most, and about 1,000 inserted and deleted a second in the 3,000 events/s soak.
    /// Autovacuum visits a database at most once per `autovacuum_naptime` (a server setting, 1 minute by default),
    /// which let it grow to 28 MiB and 100,000 dead rows there (docs/PERFORMANCE.md). Skipped when it was vacuumed
    /// less than 4 s ago (by another worker or autovacuum) and when a vacuum of it is under way; never truncates,
    /// since truncating takes a lock that every claim and fan-out would queue behind.
    public func vacuumSignals() throws -> SignalsVacuum {
        let recent = try connection.query("""
            SELECT coalesce(greatest(last_vacuum, last_autovacuum) > now() - interval '4 seconds', false)
              FROM pg_stat_user_tables WHERE relid = 'herald_endpoint_signals'::regclass
            """).scalar
        if recent == "t" { return .skipped }
        _ = connection.takeNotices()
        try connection.query("VACUUM (SKIP_LOCKED, TRUNCATE false) herald_endpoint_signals")
        let notices = connection.takeNotices()
        if notices.contains(where: { $0.sqlState == "55P03" }) { return .skipped }
        // PostgreSQL 15 says "skipping … --- only table or database owner can vacuum it" (01000), 16 and later
        // "permission denied to vacuum …, skipping it".
        if let refusal = notices.first(where: {
            $0.message.contains("owner can vacuum") || $0.message.contains("permission denied")
        }) {
            return .notPermitted(refusal.message)
        }
        if let other = notices.first { return .warned(other.message) }
        return .done
    }

    /// One of Herald's hot tables (`herald_queue_health()`); `webhook_logs` summed over its partitions.
    public struct TableHealth: Sendable {
        public var table: String
        public var liveRows: Int
        public var deadRows: Int
        public var bytes: Int
    }

    /// The oldest transaction, prepared transaction or replication slot holding back vacuum
    /// (`herald_xmin_horizon()`).
    public struct Horizon: Sendable {
        public var holder: String
        public var xidAge: Int
        /// How long it has been open; nil for a replication slot.
        public var seconds: Double?
        public var detail: String
    }

    public func tableHealth() throws -> [TableHealth] {
        try connection.query("SELECT table_name, live_rows, dead_rows, bytes FROM herald_queue_health()").rows.map {
            TableHealth(table: $0[0]!, liveRows: Int($0[1] ?? "0") ?? 0, deadRows: Int($0[2] ?? "0") ?? 0,
                        bytes: Int($0[3] ?? "0") ?? 0)
        }
    }

    public func xminHorizon() throws -> Horizon? {
        try connection.query("SELECT holder, xid_age, seconds, detail FROM herald_xmin_horizon()").rows.first.map {
            Horizon(holder: $0[0] ?? "?", xidAge: Int($0[1] ?? "0") ?? 0, seconds: $0[2].flatMap(Double.init),
                    detail: $0[3] ?? "")
        }
    }

    /// How far ahead `webhook_logs` has partitions, in seconds from now (negative: rows have nowhere to go).
    public func logPartitionsAheadSeconds() throws -> Double {
        Double(try connection.query("""
            SELECT coalesce(extract(epoch FROM max(upper_bound) - now()), 0) FROM herald_log_partitions WHERE attached
            """).scalar ?? "0") ?? 0
    }

    static func interval(_ duration: Duration) -> String {
        "\(Int64(duration.milliseconds)) milliseconds"
    }

    static func quoted(_ identifier: String) -> String {
        "\"" + identifier.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }
}
