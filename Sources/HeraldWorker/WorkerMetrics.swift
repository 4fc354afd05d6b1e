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

    /// Counts one attempt by outcome (delivered, retry, failed, refused) and status class (2xx … 5xx, none).
    func attempt(outcome: String, status: Int?) {
        let statusClass = status.map { "\($0 / 100)xx" } ?? "none"
        Counter(label: "herald_attempts_total", dimensions: [("outcome", outcome), ("status_class", statusClass)])
            .increment()
    }

    func circuit(config: String, open: Bool) {
        Gauge(label: "herald_circuit_open", dimensions: [("config_id", config)]).record(open ? 1 : 0)
    }
}
