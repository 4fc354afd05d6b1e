import HeraldCore
import HeraldPostgres

/// A delivery this worker holds a lease on, with everything needed to send it.
public struct ClaimedDelivery: Sendable {
    public var deliveryID: String
    public var leaseToken: String
    public var attempt: Int
    public var eventID: String
    public var eventType: String
    public var occurredAt: String
    public var dataJSON: String
    public var configID: String
    public var url: String
    public var secret: String?
    public var maxAttempts: Int?
    public var configActive: Bool
    /// The config's previous secret while a rotation is under way.
    public var previousSecret: String?
    /// How many times the delivery was replayed (0: never), sent as `X-Webhook-Replay` and logged with the attempt.
    public var replay: Int = 0
}

/// The outcome of one attempt, as `herald_complete` records it.
public struct AttemptRecord: Sendable {
    public var delivery: ClaimedDelivery
    public var outcome: AttemptOutcome
    public var responseStatus: Int?
    public var responseBody: String?
    public var error: String?
    public var durationMilliseconds: Int
    /// The receiver looked overloaded (timeout, 429, 503): feeds the endpoint's adaptive in-flight limit.
    public var overloaded: Bool = false
}

/// The worker's side of the claim/lease protocol (sql/004_worker_protocol.sql): three prepared statements on one
/// connection, nothing else. Owned by the worker's dispatcher thread.
public final class DeliveryStore {
    public let connection: PostgresConnection
    private let workerID: String
    private let health: HealthSettings

    /// The endpoint-health knobs the protocol functions take (see `WorkerConfiguration`).
    public struct HealthSettings: Sendable {
        public var endpointConcurrency: Int
        public var circuitThreshold: Int
        public var circuitCooldown: Duration
        public var disableAfter: Duration
        /// The worker's HERALD_MAX_ATTEMPTS: recorded on a delivery at its first claim when neither it nor its
        /// config sets a limit, so every worker and the rescue agree on it.
        public var defaultMaxAttempts: Int

        public init(endpointConcurrency: Int = 50, circuitThreshold: Int = 10, circuitCooldown: Duration = .seconds(30),
                    disableAfter: Duration = .seconds(5 * 86_400), defaultMaxAttempts: Int = 10) {
            self.endpointConcurrency = endpointConcurrency
            self.circuitThreshold = circuitThreshold
            self.circuitCooldown = circuitCooldown
            self.disableAfter = disableAfter
            self.defaultMaxAttempts = defaultMaxAttempts
        }
    }

    public init(connection: PostgresConnection, workerID: String, health: HealthSettings = HealthSettings()) {
        self.connection = connection
        self.workerID = workerID
        self.health = health
    }

    /// Leases up to `limit` due deliveries for `lease`.
    /// - Parameter answered: attempts of this worker that were answered but are not written yet. Their requests
    ///   are finished, so they do not count against their endpoint's cap (sql/016); matched by lease token.
    public func claim(limit: Int, lease: Duration, answered: [ClaimedDelivery] = []) throws -> [ClaimedDelivery] {
        let result = try connection.execute(
            prepared: "herald_claim",
            """
            SELECT * FROM herald_claim($1, $2::interval, $3, $4, $5, $6, $7::interval, $8::interval, $9::uuid[],
                                       $10::uuid[])
            """,
            [String(limit), "\(Int64(lease.milliseconds)) milliseconds", workerID, String(health.endpointConcurrency),
             String(health.circuitThreshold), String(health.defaultMaxAttempts),
             "\(Int64(health.circuitCooldown.milliseconds)) milliseconds",
             "\(Int64(health.disableAfter.milliseconds)) milliseconds",
             PostgresArray.literal(answered.map(\.deliveryID)), PostgresArray.literal(answered.map(\.leaseToken))])
        return result.rows.map { row in
            ClaimedDelivery(
                deliveryID: row[0]!, leaseToken: row[1]!, attempt: Int(row[2]!)!, eventID: row[3]!,
                eventType: row[4]!, occurredAt: row[5]!, dataJSON: row[6]!, configID: row[7]!, url: row[8]!,
                secret: row[9], maxAttempts: row[10].flatMap { Int($0) }, configActive: row[11] == "t",
                previousSecret: row[12], replay: row[13].flatMap { Int($0) } ?? 0)
        }
    }

    /// Writes many outcomes in one statement, without ever waiting for a lock.
    /// - Returns: how many outcomes were applied (the others had lost their lease and are only logged), and the
    ///   delivery ids someone else held at that moment (a replay, a rescue, a config delete): write those again.
    public func complete(_ records: [AttemptRecord]) throws -> (applied: Int, busy: Set<String>) {
        guard !records.isEmpty else { return (0, []) }
        let delayMilliseconds: [Int64?] = records.map { record in
            if case let .retry(after) = record.outcome { return Int64(after.milliseconds) }
            return nil
        }
        let result = try connection.execute(
            prepared: "herald_complete",
            """
            SELECT applied, busy FROM herald_complete($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::text[],
                $6::integer[], $7::text[], $8::bigint[], $9::integer[], $10::text[], $11::text[], $12::integer[],
                $13::text[], $14, $15::boolean[], $16::integer[])
            """,
            [
                PostgresArray.literal(records.map(\.delivery.deliveryID)),
                PostgresArray.literal(records.map(\.delivery.leaseToken)),
                PostgresArray.literal(records.map(\.delivery.eventID)),
                PostgresArray.literal(records.map(\.delivery.configID)),
                PostgresArray.literal(records.map(\.delivery.eventType)),
                PostgresArray.literal(records.map(\.delivery.attempt)),
                PostgresArray.literal(records.map(\.outcome.label)),
                PostgresArray.literal(delayMilliseconds),
                PostgresArray.literal(records.map(\.responseStatus)),
                PostgresArray.literal(records.map(\.responseBody)),
                PostgresArray.literal(records.map(\.error)),
                PostgresArray.literal(records.map(\.durationMilliseconds)),
                // The body is not stored: it is rebuilt from the event, byte for byte (sql/012, webhook_attempts).
                PostgresArray.literal(records.map { _ in String?.none }),
                workerID,
                PostgresArray.literal(records.map { $0.overloaded ? "t" : "f" }),
                PostgresArray.literal(records.map(\.delivery.replay)),
            ])
        guard let row = result.rows.first else { return (0, []) }
        let busy = Set(PostgresArray.parseUUIDs(row[1] ?? "{}"))
        return (Int(row[0] ?? "0") ?? 0, busy)
    }

    /// Records that this worker is alive (`herald_workers`), with its load.
    public func heartbeat(inFlight: Int, concurrency: Int, starting: Bool) throws {
        try connection.execute(
            prepared: "herald_heartbeat",
            """
            INSERT INTO herald_worker_heartbeats (worker, in_flight, concurrency) VALUES ($1, $2, $3)
            ON CONFLICT (worker) DO UPDATE
               SET last_seen_at = now(), in_flight = EXCLUDED.in_flight, concurrency = EXCLUDED.concurrency,
                   started_at = CASE WHEN $4 THEN now() ELSE herald_worker_heartbeats.started_at END
            """, [workerID, String(inFlight), String(concurrency), starting ? "true" : "false"])
    }

    /// Per endpoint with due work: due deliveries, the oldest one's age in seconds, whether its circuit is open,
    /// and its adaptive limit when below the ceiling. Only endpoints with a backlog are visited (a loose index
    /// scan, see `herald_backlog`), so sampling costs the same with 100 configs or 100,000.
    public func backlog() throws -> [(config: String, due: Int, oldestSeconds: Double, circuitOpen: Bool)] {
        try connection.execute(
            prepared: "herald_backlog",
            "SELECT config_id, due, oldest_due_seconds, circuit_open FROM herald_backlog()", []
        ).rows.map { row in
            (row[0]!, Int(row[1]!)!, Double(row[2]!)!, row[3] == "t")
        }
    }

    /// Endpoints whose circuit is open or whose adaptive limit is below its ceiling: what `/metrics` lists per
    /// endpoint. Read from a partial index, so it stays small with 100,000 configs.
    public func endpointsUnderPressure() throws -> [(config: String, circuitOpen: Bool, limit: Double?)] {
        try connection.execute(
            prepared: "herald_pressure",
            "SELECT config_id, circuit_open, concurrency_limit FROM herald_endpoints_under_pressure()", []
        ).rows.map { row in (row[0]!, row[1] == "t", row[2].flatMap(Double.init)) }
    }

    /// Ordered delivery: how many (config, key) pairs have deliveries waiting behind another, and the oldest
    /// wait in seconds (`webhook_ordering_blocked`).
    public func orderingBlocked() throws -> (keys: Int, oldestSeconds: Double) {
        let row = try connection.execute(
            prepared: "herald_ordering_blocked",
            "SELECT count(*), coalesce(max(oldest_waiting_seconds), 0) FROM webhook_ordering_blocked", []
        ).rows[0]
        return (Int(row[0] ?? "0") ?? 0, Double(row[1] ?? "0") ?? 0)
    }

    /// Takes back leases that expired, and those of workers whose heartbeat is older than `staleAfter` (never
    /// this worker's own); with `releasingOwnLeases`, every lease held under this worker's id (a restart with a
    /// stable `HERALD_WORKER_ID`). Returns how many.
    @discardableResult
    public func rescue(limit: Int = 1000, staleAfter: Duration = .seconds(15), releasingOwnLeases: Bool = false) throws -> Int {
        let result = try connection.execute(
            prepared: "herald_rescue", "SELECT herald_rescue($1, $2, $3::interval, $4, $5)",
            [String(health.defaultMaxAttempts), String(limit), "\(Int64(staleAfter.milliseconds)) milliseconds",
             releasingOwnLeases ? workerID : nil, workerID])
        return Int(result.scalar ?? "0") ?? 0
    }

    /// Re-derives the endpoint signals from the queue (sql/007): the safety net behind the claim's wake-ups.
    @discardableResult
    public func reconcileSignals() throws -> Int {
        Int(try connection.execute(prepared: "herald_reconcile", "SELECT herald_reconcile_signals()", []).scalar ?? "0") ?? 0
    }
}
