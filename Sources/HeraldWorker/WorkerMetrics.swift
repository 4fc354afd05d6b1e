import Foundation
import Metrics

/// What a worker reports through swift-metrics; `herald work` backs it with Prometheus (`/metrics`).
///
/// Names follow Prometheus conventions. Per-attempt metrics are updated on the HTTP engine's thread; the backlog
/// gauges are sampled by the dispatcher every few seconds, not per request.
struct WorkerMetrics: Sendable {
    let inFlight = Gauge(label: "herald_deliveries_in_flight")
    let claimBatch = Recorder(label: "herald_claim_batch_size", aggregate: true)
    let attemptDuration = Metrics.Timer(label: "herald_attempt_duration_seconds")
    let reconnects = Counter(label: "herald_reconnects_total")
    let dueBacklog = Gauge(label: "herald_due_backlog")
    let oldestDue = Gauge(label: "herald_oldest_due_seconds")
    private let circuits = CircuitGauges()

    /// Counts one attempt by outcome (delivered, retry, failed, refused) and status class (2xx … 5xx, none).
    func attempt(outcome: String, status: Int?) {
        let statusClass = status.map { "\($0 / 100)xx" } ?? "none"
        Counter(label: "herald_attempts_total", dimensions: [("outcome", outcome), ("status_class", statusClass)])
            .increment()
    }

    /// One endpoint's circuit, as last sampled: `herald_circuit_open{config_id}` lists open circuits only.
    func circuit(config: String, open: Bool) {
        circuits.update(config: config, open: open, now: .now)
    }
}

/// `herald_circuit_open{config_id}` (1 per open circuit, at most `seriesLimit` series) and `herald_circuits_open`
/// (how many are open in all).
///
/// With thousands of configs, one series per config (0 for closed) made `/metrics` grow with the table, and a
/// large response is what let slow scrapers hold the listener. A closed circuit's series is removed; a config
/// that stops being reported (deleted) is dropped after `staleAfter`.
final class CircuitGauges: @unchecked Sendable {
    // @unchecked: every stored property is read and written only while `lock` is held.
    static let seriesLimit = 100
    static let staleAfter: Duration = .seconds(60)

    private let lock = NSLock()
    private var open: [String: ContinuousClock.Instant] = [:]
    private var series: [String: Gauge] = [:]
    private var lastSweep = ContinuousClock.now
    private let total = Gauge(label: "herald_circuits_open")

    func update(config: String, open isOpen: Bool, now: ContinuousClock.Instant) {
        lock.lock()
        defer { lock.unlock() }
        if isOpen {
            open[config] = now
            if series[config] == nil, series.count < Self.seriesLimit {
                let gauge = Gauge(label: "herald_circuit_open", dimensions: [("config_id", config)])
                gauge.record(1)
                series[config] = gauge
            }
        } else if open.removeValue(forKey: config) != nil {
            series.removeValue(forKey: config)?.destroy()
        }
        if now - lastSweep >= .seconds(1) {
            lastSweep = now
            for (config, seen) in open where now - seen > Self.staleAfter {
                open.removeValue(forKey: config)
                series.removeValue(forKey: config)?.destroy()
            }
        }
        total.record(open.count)
    }
}
