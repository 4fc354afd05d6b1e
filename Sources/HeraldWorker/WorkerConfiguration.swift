import Foundation
import HeraldCore

/// Everything `herald work` can be told, with its defaults; read from the environment, then overridden by flags.
public struct WorkerConfiguration: Sendable {
    /// `DATABASE_URL`: a `postgresql://…` URL or a libpq `key=value` string.
    public var databaseURL: String
    /// `HERALD_CONCURRENCY`: deliveries in flight in this process. Default 1024: real receivers answer in
    /// 50–500 ms, and at 200 ms a request in flight is at most 5 deliveries a second, so two workers reach 4,000/s
    /// only with about 800 each (measured: 2 × 512 gave 3,700–4,100/s, 2 × 1024 4,400–4,500/s). One in flight costs
    /// about 40 KiB (54 MiB peak RSS at 1,024) and one socket (`OpenFileLimit` raises the soft limit to fit); the
    /// per-endpoint limit still applies.
    public var concurrency: Int = 1024
    /// The most one claim asks for. Bounds the rows one claim statement locks and returns; a full claim is
    /// followed by another at once, so this caps the cost of a statement, not the throughput.
    public var claimBatch: Int = 128
    /// `HERALD_TIMEOUT_MS`: the whole attempt, DNS to last response byte. Default 5 s, as documented.
    public var timeout: Duration = .milliseconds(5000)
    /// `HERALD_MAX_ATTEMPTS`, `HERALD_BACKOFF_BASE_MS`, `HERALD_BACKOFF_MAX_MS`.
    public var retryPolicy = RetryPolicy()
    /// `HERALD_ALLOWED_NETWORKS`: non-public networks that may still be delivered to. Default none.
    public var allowedNetworks: [IPNetwork] = []
    /// `HERALD_CA_FILE`: PEM bundle of CAs to trust instead of the system's.
    public var caFile: String?
    /// `HERALD_POLL_MS`: how often to look for due deliveries when no NOTIFY arrives (retries coming due).
    /// Default 500 ms.
    public var pollInterval: Duration = .milliseconds(500)
    /// `HERALD_LEASE_MS`: how long a claim is held before another worker may take the delivery over.
    /// Default: 6 × timeout, at least 30 s — far beyond any attempt, so a slow attempt is never sent twice at once.
    public var lease: Duration?
    /// `HERALD_WORKER_ID`: recorded in `leased_by` and `webhook_logs.worker`. Default `hostname:pid`.
    public var workerID: String
    /// True when `HERALD_WORKER_ID` was given: then a restart releases the leases its earlier run left behind.
    public var workerIDIsStable = false
    /// How often the heartbeat thread writes `herald_worker_heartbeats`.
    public var heartbeatInterval: Duration = .seconds(5)
    /// A worker whose heartbeat is older than this (3 heartbeats) is taken for dead: its leases are rescued.
    public var staleHeartbeat: Duration { heartbeatInterval * 3 }
    /// `HERALD_ENDPOINT_CONCURRENCY`: requests in flight to one endpoint across all workers, unless the config
    /// sets `max_in_flight`. Default 50.
    public var endpointConcurrency: Int = 50
    /// `HERALD_CIRCUIT_THRESHOLD`: failed attempts in a row that open an endpoint's circuit. Default 10.
    public var circuitThreshold: Int = 10
    /// `HERALD_CIRCUIT_COOLDOWN_MS`: first cool-down of an open circuit; doubles each time, up to 1 h. Default 30 s.
    public var circuitCooldown: Duration = .seconds(30)
    /// `HERALD_DISABLE_AFTER`: a config whose every attempt failed for this long is disabled. Default 5 days.
    public var disableAfter: Duration = .seconds(5 * 86_400)
    /// `HERALD_RETENTION`: when set (e.g. `30d`), the worker prunes what finished longer ago than this, a batch at a
    /// time (only one worker at a time does). Default: off; `herald prune` from cron does the same.
    public var retention: Duration?
    /// Sample the due backlog per endpoint every 5 s for the metrics (on when metrics are served).
    public var sampleBacklog = false

    public init(databaseURL: String) {
        self.databaseURL = databaseURL
        workerID = "\(ProcessInfo.processInfo.hostName):\(ProcessInfo.processInfo.processIdentifier)"
    }

    /// The settings the protocol functions take.
    public var health: DeliveryStore.HealthSettings {
        .init(endpointConcurrency: endpointConcurrency, circuitThreshold: circuitThreshold,
              circuitCooldown: circuitCooldown, disableAfter: disableAfter, defaultMaxAttempts: retryPolicy.maxAttempts)
    }

    public var effectiveLease: Duration {
        lease ?? max(.seconds(30), timeout * 6)
    }

    /// What every command says when it has no database to talk to: `herald work` and the CLI alike.
    public static let missingDatabase = """
        no database: set DATABASE_URL (scripts/run prints the export line for the embedded PostgreSQL; \
        `scripts/pg url` prints its URL again) or pass --database-url postgresql://user:password@host:port/database
        """

    /// Reads `HERALD_*` and `DATABASE_URL`; the error names the variable that is wrong and what would be right.
    public static func fromEnvironment(_ environment: [String: String] = ProcessInfo.processInfo.environment)
        throws(ConfigurationError) -> WorkerConfiguration
    {
        guard let url = environment["DATABASE_URL"], !url.isEmpty else {
            throw ConfigurationError(missingDatabase)
        }
        var configuration = WorkerConfiguration(databaseURL: url)
        func integer(_ name: String, _ range: ClosedRange<Int>) throws(ConfigurationError) -> Int? {
            guard let text = environment[name], !text.isEmpty else { return nil }
            guard let value = Int(text), range.contains(value) else {
                throw ConfigurationError("\(name)=\(text) is not valid: expected a whole number from \(range.lowerBound) to \(range.upperBound)")
            }
            return value
        }
        if let value = try integer("HERALD_CONCURRENCY", 1...10_000) { configuration.concurrency = value }
        if let value = try integer("HERALD_TIMEOUT_MS", 1...600_000) { configuration.timeout = .milliseconds(value) }
        if let value = try integer("HERALD_MAX_ATTEMPTS", 1...100) { configuration.retryPolicy.maxAttempts = value }
        if let value = try integer("HERALD_BACKOFF_BASE_MS", 1...86_400_000) {
            configuration.retryPolicy.baseDelay = .milliseconds(value)
        }
        if let value = try integer("HERALD_BACKOFF_MAX_MS", 1...604_800_000) {
            configuration.retryPolicy.maxDelay = .milliseconds(value)
        }
        if let value = try integer("HERALD_POLL_MS", 10...60_000) { configuration.pollInterval = .milliseconds(value) }
        if let value = try integer("HERALD_LEASE_MS", 1000...86_400_000) { configuration.lease = .milliseconds(value) }
        if let list = environment["HERALD_ALLOWED_NETWORKS"] {
            configuration.allowedNetworks = try AddressPolicy.parseNetworks(list)
        }
        if let file = environment["HERALD_CA_FILE"], !file.isEmpty { configuration.caFile = file }
        if let id = environment["HERALD_WORKER_ID"], !id.isEmpty {
            // Stored in every lease and log row, and printed by the CLI: short and printable.
            guard id.utf8.count <= 200, !id.unicodeScalars.contains(where: { $0.properties.generalCategory == .control })
            else {
                throw ConfigurationError("HERALD_WORKER_ID is not valid: expected at most 200 bytes without control characters")
            }
            configuration.workerID = id
            configuration.workerIDIsStable = true
        }
        if let value = try integer("HERALD_ENDPOINT_CONCURRENCY", 1...10_000) { configuration.endpointConcurrency = value }
        if let value = try integer("HERALD_CIRCUIT_THRESHOLD", 1...10_000) { configuration.circuitThreshold = value }
        if let value = try integer("HERALD_CIRCUIT_COOLDOWN_MS", 10...86_400_000) {
            configuration.circuitCooldown = .milliseconds(value)
        }
        if let text = environment["HERALD_RETENTION"], !text.isEmpty, text != "off" {
            configuration.retention = try duration("HERALD_RETENTION", text, Bounds.retention, orOff: true)
        }
        if let text = environment["HERALD_DISABLE_AFTER"], !text.isEmpty {
            configuration.disableAfter = try duration("HERALD_DISABLE_AFTER", text, Bounds.disableAfter)
        }
        return configuration
    }

    /// The ranges every duration given as text must fall in. PostgreSQL computes `now() - value` with them, and
    /// its timestamps end at 4713 BC: `HERALD_DISABLE_AFTER=3000000d` made every batch with a failure fail with
    /// "timestamp out of range". The upper bounds are far above any sensible setting and far below that edge.
    enum Bounds {
        static let disableAfter: ClosedRange<Duration> = .seconds(1) ... .seconds(365 * 86_400)
        static let retention: ClosedRange<Duration> = .seconds(1) ... .seconds(100 * 365 * 86_400)
    }

    /// Parses `text` as a duration (`30s`, `7d`) inside `range`; the error names the variable and the range.
    private static func duration(_ name: String, _ text: String, _ range: ClosedRange<Duration>, orOff: Bool = false)
        throws(ConfigurationError) -> Duration
    {
        guard let value = DurationText.parse(text) else {
            throw ConfigurationError(DurationText.explain(name, text, datesAllowed: false) + (orOff ? ", or off" : ""))
        }
        guard range.contains(value) else {
            throw ConfigurationError(
                "\(name)=\(text) is out of range: expected from \(range.lowerBound.humanReadable) to \(range.upperBound.humanReadable)"
                    + (orOff ? ", or off" : ""))
        }
        return value
    }

    /// Checks combinations no single variable can: the lease must outlast an attempt by far.
    public func validate() throws(ConfigurationError) {
        if effectiveLease < timeout * 2 {
            throw ConfigurationError(
                "HERALD_LEASE_MS (\(effectiveLease.humanReadable)) must be at least twice HERALD_TIMEOUT_MS (\(timeout.humanReadable)), or slow attempts would be sent twice at once")
        }
        if retryPolicy.maxDelay < retryPolicy.baseDelay {
            throw ConfigurationError("HERALD_BACKOFF_MAX_MS must not be below HERALD_BACKOFF_BASE_MS")
        }
    }

    /// The effective configuration as `key=value` lines, with the database password masked.
    public var summary: [(String, String)] {
        [
            ("database", Redaction.maskConnectionString(databaseURL)),
            ("worker", workerID),
            ("concurrency", String(concurrency)),
            ("claim_batch", String(claimBatch)),
            ("timeout", timeout.humanReadable),
            ("lease", effectiveLease.humanReadable),
            ("poll", pollInterval.humanReadable),
            ("max_attempts", String(retryPolicy.maxAttempts)),
            ("backoff", "base \(retryPolicy.baseDelay.humanReadable), max \(retryPolicy.maxDelay.humanReadable), ×\(Int(retryPolicy.multiplier)), jitter ±\(Int(retryPolicy.jitter * 100))%"),
            ("schedule", retryPolicy.schedule.map(\.humanReadable).joined(separator: ", ")),
            ("allowed_networks", allowedNetworks.isEmpty ? "none (public addresses only)"
                : allowedNetworks.map(\.description).joined(separator: ",")),
            ("ca_file", caFile ?? "system"),
            ("endpoint_concurrency", String(endpointConcurrency)),
            ("circuit", "opens after \(circuitThreshold) failures in a row, cool-down from \(circuitCooldown.humanReadable)"),
            ("disable_after", disableAfter.humanReadable),
            ("retention", retention.map(\.humanReadable) ?? "off"),
        ]
    }
}
