import Foundation
import HeraldCore
import HeraldHTTP
import HeraldPostgres
import HeraldSigning
import Logging
import Synchronization

/// One `herald work` process: claims due deliveries, sends them, records every attempt.
///
/// Three threads, none of them Swift's cooperative pool, because libpq and libcurl calls block:
/// - the dispatcher (the thread that calls `run`) owns the main database connection: it writes finished attempts
///   in batches, rescues expired leases, and claims as many due deliveries as there are free slots;
/// - the HTTP engine thread (`CurlEngine`) sends requests and hands results back through the `Mailbox`;
/// - the listener thread LISTENs on its own connection and wakes the dispatcher when events arrive.
public final class Worker: Sendable {
    public let configuration: WorkerConfiguration
    private let logger: Logger
    private let engine: CurlEngine
    private let mailbox = Mailbox()
    private let metrics = WorkerMetrics()
    private let healthy = Atomic<Bool>(false)

    /// True while the worker's database connection works (what `/healthz` reports).
    public var isHealthy: Bool { healthy.load(ordering: .relaxed) }

    public init(configuration: WorkerConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
        var http = CurlEngine.Configuration()
        http.addressPolicy = AddressPolicy(allowedNetworks: configuration.allowedNetworks)
        http.caFile = configuration.caFile
        engine = CurlEngine(configuration: http)
    }

    /// Asks the worker to stop claiming, finish what is in flight, write the results and return from `run`.
    public func stop() {
        mailbox.requestStop()
    }

    /// Runs until `stop()`; returns once in-flight attempts are finished and recorded (or could not be).
    public func run() {
        let listener = Thread { [self] in self.listen() }
        listener.name = "herald-listen"
        listener.start()
        dispatch()
        engine.shutdown()
    }

    // MARK: Dispatcher

    private func dispatch() {
        var store: DeliveryStore?
        var unwritten: [AttemptRecord] = []
        var inFlight = 0
        var draining = false
        var lastClaimWasFull = false
        var lastClaim = ContinuousClock.now - .seconds(3600)
        var lastRescue = ContinuousClock.now - .seconds(3600)
        var lastHeartbeat = ContinuousClock.now - .seconds(3600)
        var lastPrune = ContinuousClock.now
        var firstHeartbeat = true
        var reconnectDelay = Duration.milliseconds(100)
        var nextConnectAttempt = ContinuousClock.now
        let lease = configuration.effectiveLease

        while true {
            let free = configuration.concurrency - inFlight
            let busy = lastClaimWasFull && free > 0 && !draining && store != nil
            let mail = mailbox.take(waitingUpTo: busy ? .zero : configuration.pollInterval)
            inFlight -= mail.records.count
            unwritten.append(contentsOf: mail.records)
            if mail.stopRequested && !draining {
                draining = true
                logger.info("stopping: no new claims; waiting for attempts in flight",
                            metadata: ["deliveries.in_flight": "\(inFlight)"])
            }
            if draining && inFlight == 0 && (unwritten.isEmpty || store == nil && reconnectDelay >= .seconds(5)) {
                if !unwritten.isEmpty {
                    logger.error("could not record attempts before exiting; their leases will expire and they will be retried",
                                 metadata: ["attempts": "\(unwritten.count)"])
                }
                break
            }

            if store == nil {
                guard ContinuousClock.now >= nextConnectAttempt else { continue }
                do {
                    let connection = try PostgresConnection(
                        PostgresConnection.withNetworkTimeouts(configuration.databaseURL))
                    store = DeliveryStore(
                        connection: connection, workerID: configuration.workerID,
                        health: .init(endpointConcurrency: configuration.endpointConcurrency,
                                      circuitThreshold: configuration.circuitThreshold,
                                      circuitCooldown: configuration.circuitCooldown,
                                      disableAfter: configuration.disableAfter))
                    if reconnectDelay > .milliseconds(100) { logger.notice("reconnected to PostgreSQL") }
                    reconnectDelay = .milliseconds(100)
                } catch {
                    healthy.store(false, ordering: .relaxed)
                    logger.warning("PostgreSQL unavailable; retrying",
                                   metadata: ["error": "\(error)", "retry_in": "\(reconnectDelay.humanReadable)"])
                    nextConnectAttempt = ContinuousClock.now + reconnectDelay
                    reconnectDelay = min(reconnectDelay * 2, .seconds(5))
                    continue
                }
            }

            do {
                guard let current = store else { continue }
                defer { metrics.inFlight.record(inFlight) }
                // In chunks: one statement carrying thousands of payloads and response bodies could pass
                // PostgreSQL's 1 GB limit for a value. A chunk is removed only once it is written.
                while !unwritten.isEmpty {
                    let chunk = Array(unwritten.prefix(500))
                    let applied = try current.complete(chunk)
                    if applied < chunk.count {
                        logger.warning("results arrived after their lease expired; logged but not applied",
                                       metadata: ["attempts.stale": "\(chunk.count - applied)"])
                    }
                    unwritten.removeFirst(chunk.count)
                }
                if draining { continue }

                let now = ContinuousClock.now
                if now - lastHeartbeat >= .seconds(5) {
                    lastHeartbeat = now
                    try current.heartbeat(inFlight: inFlight, concurrency: configuration.concurrency,
                                          starting: firstHeartbeat)
                    firstHeartbeat = false
                    if configuration.sampleBacklog {
                        let endpoints = try current.backlog()
                        metrics.dueBacklog.record(endpoints.reduce(0) { $0 + $1.due })
                        metrics.oldestDue.record(endpoints.map(\.oldestSeconds).max() ?? 0)
                        for endpoint in endpoints { metrics.circuit(config: endpoint.config, open: endpoint.circuitOpen) }
                    }
                }
                if let retention = configuration.retention,
                   now - lastPrune >= min(.seconds(10), retention / 2) {
                    lastPrune = now
                    // One batch per tick keeps the dispatcher's pause short; if it deleted anything, more may be
                    // waiting, so the next tick comes at once.
                    if try current.prune(olderThan: retention, batch: 2000) > 0 {
                        lastPrune = now - .seconds(3600)
                    }
                }
                if now - lastRescue >= .seconds(1) {
                    lastRescue = now
                    let rescued = try current.rescue(defaultMaxAttempts: configuration.retryPolicy.maxAttempts)
                    if rescued > 0 {
                        logger.warning("took back deliveries whose lease expired (a worker was lost)",
                                       metadata: ["deliveries": "\(rescued)"])
                    }
                }

                let slots = configuration.concurrency - inFlight
                if slots > 0 && (mail.woken || lastClaimWasFull || now - lastClaim >= configuration.pollInterval) {
                    lastClaim = now
                    let claimed = try current.claim(limit: slots, lease: lease)
                    healthy.store(true, ordering: .relaxed)
                    metrics.claimBatch.record(claimed.count)
                    lastClaimWasFull = claimed.count == slots
                    inFlight += claimed.count
                    for delivery in claimed { send(delivery) }
                } else if slots == 0 {
                    lastClaimWasFull = true
                }
            } catch let error as PostgresError where error.isConnectionProblem {
                logger.warning("lost the PostgreSQL connection; reconnecting", metadata: ["error": "\(error)"])
                healthy.store(false, ordering: .relaxed)
                metrics.reconnects.increment()
                store?.connection.close()
                store = nil
                nextConnectAttempt = ContinuousClock.now + reconnectDelay
                reconnectDelay = min(reconnectDelay * 2, .seconds(5))
            } catch let error as PostgresError where error.sqlState == "40P01" || error.sqlState == "40001" {
                // A deadlock or serialization failure rolled the batch back: nothing was written, so write it again.
                logger.notice("database asked to retry a batch", metadata: ["error": "\(error)"])
            } catch {
                // Not a connection problem: a bug or a schema mismatch. Drop the batch rather than loop on it; the
                // deliveries' leases expire and they are retried, so nothing is lost.
                logger.error("database statement failed", metadata: ["error": "\(error)"])
                unwritten.removeAll()
                Thread.sleep(forTimeInterval: 1)
            }
        }
        store?.connection.close()
    }

    // MARK: One attempt

    private func send(_ delivery: ClaimedDelivery) {
        let maxAttempts = delivery.maxAttempts ?? configuration.retryPolicy.maxAttempts
        guard delivery.configActive else {
            // Disabled after the event fanned out: do not send, but leave a visible, replayable record.
            mailbox.post(AttemptRecord(delivery: delivery, outcome: .failed, responseStatus: nil, responseBody: nil,
                                       error: "not sent: webhook config \(delivery.configID) is disabled",
                                       durationMilliseconds: 0, payload: nil))
            return
        }
        let body = Envelope(eventType: delivery.eventType, timestamp: delivery.occurredAt,
                            dataJSON: delivery.dataJSON).encoded()
        var headers = [
            "X-Webhook-Event: \(delivery.eventType)",
            "X-Webhook-Timestamp: \(delivery.occurredAt)",
            "X-Webhook-Id: \(delivery.deliveryID)",
            "X-Webhook-Attempt: \(delivery.attempt)",
        ]
        // Standard Webhooks headers, so any of its verification libraries works; the timestamp is this attempt's.
        let now = Int(Date().timeIntervalSince1970)
        headers.append("webhook-id: \(delivery.deliveryID)")
        headers.append("webhook-timestamp: \(now)")
        if let secret = delivery.secret {
            headers.append("X-Webhook-Signature: \(Signer.signatureHex(secret: secret, body: body))")
            // During a rotation both signatures go out, space-separated, as Standard Webhooks specifies; the
            // documented X-Webhook-Signature always uses the current secret.
            var signatures = [Signer.standardWebhooksSignature(
                secret: secret, id: delivery.deliveryID, timestamp: now, body: body)]
            if let previous = delivery.previousSecret {
                signatures.append(Signer.standardWebhooksSignature(
                    secret: previous, id: delivery.deliveryID, timestamp: now, body: body))
            }
            headers.append("webhook-signature: " + signatures.joined(separator: " "))
        }
        let request = HTTPRequest(url: delivery.url, headers: headers, body: body, timeout: configuration.timeout)
        let policy = configuration.retryPolicy
        let mailbox = self.mailbox
        let logger = self.logger
        let metrics = self.metrics
        engine.submit(request) { response in
            // Only 429 and 503 may ask for a delay; nothing else is even parsed.
            let retryAfter = (response.status == 429 || response.status == 503) ? response.retryAfter.flatMap {
                RetryAfter.parse($0, now: Date().timeIntervalSince1970)
            } : nil
            // A status that came with a transport error (e.g. the body broke off) is not a complete answer.
            let outcome = AttemptOutcome.decide(
                attempt: delivery.attempt, responseStatus: response.error == nil ? response.status : nil,
                retryAfter: retryAfter, maxAttempts: maxAttempts, policy: policy, random: Double.random(in: 0..<1))
            let error: String? = response.error?.message
                ?? (response.isSuccess ? nil : "HTTP \(response.status ?? 0) is not a 2xx response")
            metrics.attempt(outcome: response.error?.kind == .refusedAddress ? "refused" : outcome.label,
                            status: response.error == nil ? response.status : nil)
            metrics.attemptDuration.recordNanoseconds(Int64(response.duration.milliseconds * 1_000_000))
            var level: Logger.Level = .debug
            if case .failed = outcome { level = .warning }
            logger.log(level: level, "attempt finished", metadata: [
                "delivery.id": "\(delivery.deliveryID)", "config.id": "\(delivery.configID)",
                "event.type": "\(delivery.eventType)", "attempt": "\(delivery.attempt)",
                "outcome": "\(outcome.label)", "http.status": "\(response.status.map(String.init) ?? "-")",
                "duration_ms": "\(Int(response.duration.milliseconds))",
            ])
            mailbox.post(AttemptRecord(
                delivery: delivery, outcome: outcome,
                responseStatus: response.status, responseBody: storableText(response.body),
                error: error, durationMilliseconds: Int(response.duration.milliseconds),
                payload: String(decoding: body, as: UTF8.self)))
        }
    }

    // MARK: Listener

    /// LISTENs on its own connection (a session that PgBouncer's transaction mode would break: point it at
    /// PostgreSQL directly) and wakes the dispatcher on every notification.
    private func listen() {
        var delay = Duration.milliseconds(100)
        while !mailbox.isStopRequested {
            do {
                let connection = try PostgresConnection(PostgresConnection.withNetworkTimeouts(configuration.databaseURL))
                try connection.query("LISTEN herald_deliveries")
                delay = .milliseconds(100)
                mailbox.wake()  // anything inserted while we were not listening
                while !mailbox.isStopRequested {
                    if !(try connection.waitForNotifications(timeoutMilliseconds: 250)).isEmpty { mailbox.wake() }
                }
                connection.close()
            } catch {
                logger.debug("LISTEN connection unavailable; retrying", metadata: ["error": "\(error)"])
                Thread.sleep(forTimeInterval: delay.milliseconds / 1000)
                delay = min(delay * 2, .seconds(5))
            }
        }
    }
}

/// Response bytes as text PostgreSQL can store: invalid UTF-8 becomes U+FFFD, and so does NUL, which `text`
/// cannot hold.
func storableText(_ bytes: [UInt8]) -> String? {
    if bytes.isEmpty { return nil }
    let text = String(decoding: bytes, as: UTF8.self)
    return text.contains("\0") ? text.replacingOccurrences(of: "\0", with: "\u{FFFD}") : text
}
