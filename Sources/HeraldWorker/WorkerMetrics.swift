import Foundation
import Metrics

/// What a worker reports through swift-metrics; `herald work` backs it with Prometheus (`/metrics`).
///
/// Names follow Prometheus conventions. Per-attempt metrics are updated on the HTTP engine's thread; the backlog
/// gauges are sampled by the heartbeat thread every few seconds, not per request.
struct WorkerMetrics: Sendable {
    let inFlight = Gauge(label: "herald_deliveries_in_flight")
    let claimBatch = Recorder(label: "herald_claim_batch_size", aggregate: true)
    let attemptDuration = Metrics.Timer(label: "herald_attempt_duration_seconds")
    let reconnects = Counter(label: "herald_reconnects_total")
    let dueBacklog = Gauge(label: "herald_due_backlog")
    let oldestDue = Gauge(label: "herald_oldest_due_seconds")
    /// Ordered delivery: (config, key) pairs with a delivery waiting behind another, and the oldest wait.
    let orderingBlockedKeys = Gauge(label: "herald_ordering_blocked_keys")
    let orderingOldestBlocked = Gauge(label: "herald_ordering_oldest_blocked_seconds")
    /// `herald_circuit_open{config_id}`: open circuits only; `herald_circuits_open`: how many.
    let circuits = BoundedSeries(label: "herald_circuit_open", totalLabel: "herald_circuits_open")
    /// `herald_endpoint_concurrency_limit{config_id}`: the adaptive limit of endpoints below their ceiling only;
    /// `herald_endpoints_limited`: how many. An endpoint at its ceiling (the normal case) has no series.
    let limits = BoundedSeries(label: "herald_endpoint_concurrency_limit", totalLabel: "herald_endpoints_limited")

    /// Queue health (sql/013), sampled by the maintenance thread: the oldest transaction holding back vacuum, and
    /// how far ahead `webhook_logs` has partitions.
    let oldestTransaction = Gauge(label: "herald_oldest_transaction_seconds")
    let oldestTransactionXIDAge = Gauge(label: "herald_oldest_transaction_xid_age")
    let logPartitionsAhead = Gauge(label: "herald_log_partitions_ahead_seconds")

    /// Rows, dead rows and bytes of each hot table (`herald_table_rows{table}`, `herald_table_dead_rows{table}`,
    /// `herald_table_bytes{table}`): five tables, so five series each, however large the installation.
    func recordHealth(tables: [QueueMaintenance.TableHealth], horizon: QueueMaintenance.Horizon?,
                      partitionsAheadSeconds: Double) {
        for table in tables {
            Gauge(label: "herald_table_rows", dimensions: [("table", table.table)]).record(table.liveRows)
            Gauge(label: "herald_table_dead_rows", dimensions: [("table", table.table)]).record(table.deadRows)
            Gauge(label: "herald_table_bytes", dimensions: [("table", table.table)]).record(table.bytes)
        }
        oldestTransaction.record(horizon?.seconds ?? 0)
        oldestTransactionXIDAge.record(horizon?.xidAge ?? 0)
        logPartitionsAhead.record(partitionsAheadSeconds)
    }

    /// Counts one attempt by outcome (delivered, retry, failed, refused) and status class (2xx … 5xx, none).
    func attempt(outcome: String, status: Int?) {
        let statusClass = status.map { "\($0 / 100)xx" } ?? "none"
        Counter(label: "herald_attempts_total", dimensions: [("outcome", outcome), ("status_class", statusClass)])
            .increment()
    }
}

/// Per-endpoint series that only exist while something is wrong (a circuit open, a limit below its ceiling), at
/// most `seriesLimit` of them, plus a total.
///
/// With thousands of configs, one series per config made `/metrics` grow with the table, and a large response is
/// what let slow scrapers hold the listener. Each sample replaces the whole set: an endpoint that recovered, or
/// was deleted, loses its series at the next sample.
final class BoundedSeries: @unchecked Sendable {
    // @unchecked: every stored property is read and written only while `lock` is held.
    static let seriesLimit = 100

    private let label: String
    private let lock = NSLock()
    private var series: [String: Gauge] = [:]
    private let total: Gauge

    init(label: String, totalLabel: String) {
        self.label = label
        total = Gauge(label: totalLabel)
    }

    /// The current values by config id (everything else is gone).
    func replace(with values: [String: Double]) {
        lock.lock()
        defer { lock.unlock() }
        for (config, gauge) in series where values[config] == nil {
            gauge.destroy()
            series.removeValue(forKey: config)
        }
        for (config, value) in values.sorted(by: { $0.key < $1.key }) {
            if let gauge = series[config] {
                gauge.record(value)
            } else if series.count < Self.seriesLimit {
                let gauge = Gauge(label: label, dimensions: [("config_id", config)])
                gauge.record(value)
                series[config] = gauge
            }
        }
        total.record(values.count)
    }
}
