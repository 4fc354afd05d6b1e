import Foundation
import HeraldCore
import HeraldHTTP
import HeraldPostgres
import HeraldSigning
import Logging
import Synchronization

/// One `herald work` process: claims due deliveries, sends them, records every attempt.
///
/// Five threads, none of them Swift's cooperative pool, because libpq and libcurl calls block:
/// - the dispatcher (the thread that calls `run`) owns the main database connection and does what
///   `DispatcherStateMachine` decides: write finished attempts in batches, rescue lost leases, claim;
/// - the HTTP engine thread (`CurlEngine`) sends requests and hands results back through the `Mailbox`;
/// - the listener thread LISTENs on its own connection and wakes the dispatcher when events arrive;
/// - the heartbeat thread writes `herald_worker_heartbeats` on its own connection (and samples the backlog for
///   the metrics), so a dispatcher that is slow for any reason is never mistaken for a dead worker;
/// - the maintenance thread keeps `webhook_logs` partitioned ahead, drops partitions past retention, vacuums the
///   signals table every 5 s and samples the tables' health, on a connection of its own, since dropping a
///   partition waits for older transactions.
public final class Worker: Sendable {
    public let configuration: WorkerConfiguration
    private let logger: Logger
    private let engine: CurlEngine
    private let mailbox = Mailbox()
    private let metrics = WorkerMetrics()
    private let healthy = Atomic<Bool>(false)
    private let inFlightNow = Atomic<Int>(0)

    /// True while the worker's database connection works (what `/healthz` reports).
    public var isHealthy: Bool { healthy.load(ordering: .relaxed) }

    public init(configuration: WorkerConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
        var http = CurlEngine.Configuration()
        http.connectionCache = max(http.connectionCache, configuration.concurrency)
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
        let heartbeat = Thread { [self] in self.beat() }
        heartbeat.name = "herald-heartbeat"
        heartbeat.start()
        let maintenance = Thread { [self] in self.maintain() }
        maintenance.name = "herald-maintenance"
        maintenance.start()
        dispatch()
        engine.shutdown()
    }

    // MARK: Dispatcher

    private func dispatch() {
        let clock = ContinuousClock()
        var settings = DispatcherStateMachine.Settings(
            concurrency: configuration.concurrency, claimBatch: configuration.claimBatch,
            pollInterval: configuration.pollInterval)
        settings.releaseOwnLeasesAtStart = configuration.workerIDIsStable
        var machine = DispatcherStateMachine(settings: settings, now: clock.now)
        var store: DeliveryStore?
        var unwritten: [AttemptRecord] = []
        var announcedDrain = false
        var everConnected = false
        let lease = configuration.effectiveLease

        func recordClaim(_ claimed: [ClaimedDelivery], limit: Int) {
            healthy.store(true, ordering: .relaxed)
            metrics.claimBatch.record(claimed.count)
            machine.claimed(claimed.count, limit: limit, now: clock.now)
            inFlightNow.store(machine.inFlight, ordering: .relaxed)
            metrics.inFlight.record(machine.inFlight)
            for delivery in claimed { send(delivery) }
        }

        func received(_ mail: Mailbox.Delivery) {
            guard !mail.records.isEmpty || mail.woken || mail.stopRequested else { return }
            unwritten.append(contentsOf: mail.records)
            machine.mailArrived(results: mail.records.count, woken: mail.woken, stopRequested: mail.stopRequested,
                                now: clock.now)
            inFlightNow.store(machine.inFlight, ordering: .relaxed)
            metrics.inFlight.record(machine.inFlight)
            if machine.draining && !announcedDrain {
                announcedDrain = true
                logger.info("stopping: no new claims; waiting for attempts in flight",
                            metadata: ["deliveries.in_flight": "\(machine.inFlight)"])
            }
        }

        func lose(_ error: PostgresError) {
            logger.warning("lost the PostgreSQL connection; reconnecting", metadata: ["error": "\(error)"])
            healthy.store(false, ordering: .relaxed)
            metrics.reconnects.increment()
            store?.connection.close()
            store = nil
            machine.connectionLost(now: clock.now)
        }

        loop: while true {
            let action = machine.nextAction(now: clock.now)
            do {
                switch action {
                case .exit:
                    if !unwritten.isEmpty {
                        logger.error("could not record attempts before exiting; their leases will expire and they will be retried",
                                     metadata: ["attempts": "\(unwritten.count)"])
                    }
                    break loop

                case let .wait(deadline):
                    received(mailbox.take(waitingUpTo: max(.zero, deadline - clock.now)))

                case .connect:
                    do {
                        store = try connect()
                        if everConnected { logger.notice("reconnected to PostgreSQL") }
                        everConnected = true
                        machine.connected(now: clock.now)
                        healthy.store(true, ordering: .relaxed)
                    } catch {
                        healthy.store(false, ordering: .relaxed)
                        machine.connectFailed(now: clock.now)
                        logger.warning("PostgreSQL unavailable; retrying",
                                       metadata: ["error": "\(error)", "retry_in": "\(machine.retryIn.humanReadable)"])
                    }

                case let .write(claimLimit):
                    guard let current = store else { continue }
                    if let limit = claimLimit, unwritten.count <= 500 {
                        // Answers that arrive while the transaction writes the others are taken before its claim:
                        // they are off the wire, so the claim may reuse their endpoints' slots.
                        var arrived = Mailbox.Delivery(records: [], woken: false, stopRequested: false)
                        defer { received(arrived) }
                        if let (result, claimed) = try completeAndClaim(
                            unwritten, limit: limit, lease: lease, on: current,
                            answeredMeanwhile: {
                                arrived = mailbox.take(waitingUpTo: .zero)
                                return arrived.records
                            }) {
                            // One transaction, one commit: the claim saw the slots the results freed.
                            let written = unwritten.count - result.busy.count
                            unwritten.removeAll { !result.busy.contains($0.delivery.deliveryID) }
                            machine.wrote(written: written, busy: result.busy.count, now: clock.now)
                            logger.trace("wrote and claimed", metadata: [
                                "attempts.written": "\(written)", "attempts.applied": "\(result.applied)",
                                "deliveries.claimed": "\(claimed.count)"])
                            recordClaim(claimed, limit: limit)
                            break
                        }
                    }
                    let (written, busy) = try write(&unwritten, to: current)
                    machine.wrote(written: written, busy: busy, now: clock.now)
                    if let limit = claimLimit {
                        recordClaim(try current.claim(limit: limit, lease: lease, answered: answered(unwritten)),
                                    limit: limit)
                    }

                case .releaseOwnLeases:
                    guard let current = store else { continue }
                    let released = try current.rescue(releasingOwnLeases: true)
                    if released > 0 {
                        logger.notice(
                            "took back leases left by an earlier run under this id, or by workers whose heartbeat stopped",
                            metadata: ["deliveries": "\(released)", "worker": "\(configuration.workerID)"])
                    }
                    machine.releasedOwnLeases()

                case .rescue:
                    guard let current = store else { continue }
                    let rescued = try current.rescue(staleAfter: configuration.staleHeartbeat)
                    if rescued > 0 {
                        logger.warning("took back deliveries from a lost worker (lease expired or heartbeat stale)",
                                       metadata: ["deliveries": "\(rescued)"])
                    }
                    machine.rescued(now: clock.now)

                case .reconcile:
                    guard let current = store else { continue }
                    try current.reconcileSignals()
                    machine.reconciled(now: clock.now)

                case let .claim(limit):
                    guard let current = store else { continue }
                    // Results waiting for company (the write coalescing) are off the wire too.
                    recordClaim(try current.claim(limit: limit, lease: lease, answered: answered(unwritten)), limit: limit)
                }
            } catch let error as PostgresError where error.isConnectionProblem {
                lose(error)
            } catch {
                // Not a connection problem: a bug or a schema mismatch in a statement other than the write (which
                // isolates bad rows itself). Pause instead of looping on it.
                logger.error("database statement failed", metadata: ["error": "\(error)"])
                if case .rescue = action { machine.rescued(now: clock.now) }
                if case .reconcile = action { machine.reconciled(now: clock.now) }
                if case .releaseOwnLeases = action { machine.releasedOwnLeases() }
                if case let .claim(limit) = action { machine.claimed(0, limit: limit, now: clock.now) }
                if case let .write(limit?) = action { machine.claimed(0, limit: limit, now: clock.now) }
                Thread.sleep(forTimeInterval: 1)
            }
        }
        store?.connection.close()
    }

    private func connect() throws -> DeliveryStore {
        let connection = try PostgresConnection(PostgresConnection.withNetworkTimeouts(configuration.databaseURL))
        return DeliveryStore(connection: connection, workerID: configuration.workerID, health: configuration.health)
    }

    /// Writes `records` and claims up to `limit` in one transaction. Returns nil, with nothing changed, when the
    /// database refused the write for a reason other than the connection: the caller then writes record by record.
    /// `answeredMeanwhile` is asked, between the two, for the answers that came back since `records` were taken.
    private func completeAndClaim(_ records: [AttemptRecord], limit: Int, lease: Duration, on store: DeliveryStore,
                                  answeredMeanwhile: () -> [AttemptRecord])
        throws -> ((applied: Int, busy: Set<String>), [ClaimedDelivery])?
    {
        do {
            return try store.connection.transaction { _ in
                let result = try store.complete(records)
                return (result, try store.claim(limit: limit, lease: lease, answered: answered(answeredMeanwhile())))
            }
        } catch let error as PostgresError where !error.isConnectionProblem {
            logger.notice("a batch of results was refused; writing them one chunk at a time",
                          metadata: ["error": "\(error)"])
            return nil
        }
    }

    /// The deliveries of `records` (answers not yet written) whose slots a claim may reuse before they are
    /// written: the delivered ones. A failure or an overload must first reach the endpoint's health (circuit,
    /// adaptive limit, 410) through the write, before its slot goes to another request.
    private func answered(_ records: [AttemptRecord]) -> [ClaimedDelivery] {
        records.compactMap { record in
            if case .delivered = record.outcome { return record.delivery }
            return nil
        }
    }

    /// Writes the waiting results in chunks (one statement carrying thousands of payloads could pass PostgreSQL's
    /// 1 GB limit for a value). Results whose rows someone else holds stay in `unwritten`. A chunk the database
    /// refuses for a reason other than the connection is split until the bad record is found: that one is logged
    /// and dropped (its lease expires and it is retried), every other result is written.
    /// - Returns: how many results were written (or dropped as bad), and how many are busy.
    private func write(_ unwritten: inout [AttemptRecord], to store: DeliveryStore) throws -> (Int, Int) {
        var kept: [AttemptRecord] = []
        var written = 0
        var pending = unwritten[...]
        func attempt(_ chunk: ArraySlice<AttemptRecord>) throws {
            do {
                let result = try store.complete(Array(chunk))
                if result.applied < chunk.count - result.busy.count {
                    logger.notice("results arrived after another worker took their deliveries over; logged, not applied",
                                  metadata: ["attempts.stale": "\(chunk.count - result.busy.count - result.applied)"])
                }
                for record in chunk {
                    if result.busy.contains(record.delivery.deliveryID) { kept.append(record) } else { written += 1 }
                }
            } catch let error as PostgresError where !error.isConnectionProblem && error.sqlState != "40P01"
                && error.sqlState != "40001" {
                if chunk.count == 1, let record = chunk.first {
                    logger.error("could not record an attempt; dropping it (its lease will expire and it is retried)",
                                 metadata: ["delivery.id": "\(record.delivery.deliveryID)", "error": "\(error)"])
                    written += 1
                    return
                }
                let middle = chunk.startIndex + chunk.count / 2
                try attempt(chunk[chunk.startIndex..<middle])
                try attempt(chunk[middle...])
            }
        }
        while !pending.isEmpty {
            let chunk = pending.prefix(500)
            pending = pending.dropFirst(chunk.count)
            do {
                try attempt(chunk)
            } catch {
                // The connection broke (or a deadlock): keep everything not yet written for the next try.
                unwritten = kept + Array(chunk) + Array(pending)
                throw error
            }
        }
        unwritten = kept
        return (written, kept.count)
    }

    // MARK: One attempt

    private func send(_ delivery: ClaimedDelivery) {
        let request = DeliveryRequest(
            deliveryID: delivery.deliveryID, eventType: delivery.eventType, occurredAt: delivery.occurredAt,
            dataJSON: delivery.dataJSON, attempt: delivery.attempt, secret: delivery.secret,
            previousSecret: delivery.previousSecret, unixTime: Int(Date().timeIntervalSince1970),
            replay: delivery.replay)
        let body = request.body
        let maxAttempts = delivery.maxAttempts ?? configuration.retryPolicy.maxAttempts
        let policy = configuration.retryPolicy
        let mailbox = self.mailbox
        let logger = self.logger
        let metrics = self.metrics
        engine.submit(HTTPRequest(url: delivery.url, headers: request.headers, body: body,
                                  timeout: configuration.timeout)) { response in
            let record = AttemptRecord(delivery: delivery, response: response, maxAttempts: maxAttempts,
                                       policy: policy, now: Date().timeIntervalSince1970,
                                       random: Double.random(in: 0..<1))
            metrics.attempt(outcome: response.error?.kind == .refusedAddress ? "refused" : record.outcome.label,
                            status: response.error == nil ? response.status : nil)
            metrics.attemptDuration.recordNanoseconds(Int64(response.duration.milliseconds * 1_000_000))
            var level: Logger.Level = .debug
            if case .failed = record.outcome { level = .warning }
            logger.log(level: level, "attempt finished", metadata: [
                "delivery.id": "\(delivery.deliveryID)", "config.id": "\(delivery.configID)",
                "event.type": "\(delivery.eventType)", "attempt": "\(delivery.attempt)",
                "outcome": "\(record.outcome.label)", "http.status": "\(response.status.map(String.init) ?? "-")",
                "duration_ms": "\(record.durationMilliseconds)",
            ])
            mailbox.post(record)
        }
    }

    // MARK: Heartbeat

    /// Writes this worker's heartbeat every 5 s on a connection of its own, first thing after (re)connecting;
    /// with metrics on, samples the backlog on the same connection.
    private func beat() {
        var backoff = Backoff(maximum: .seconds(5))
        var starting = true
        while !mailbox.isStopRequested {
            do {
                let connection = try PostgresConnection(PostgresConnection.withNetworkTimeouts(configuration.databaseURL))
                defer { connection.close() }
                let store = DeliveryStore(connection: connection, workerID: configuration.workerID,
                                          health: configuration.health)
                // Counting a large backlog is not free (650 ms at 300,000 due, measured in the soak): the sample
                // comes at most every 5 s, and never more often than 20 times its own duration.
                var nextSample = ContinuousClock.now
                while !mailbox.isStopRequested {
                    try store.heartbeat(inFlight: inFlightNow.load(ordering: .relaxed),
                                        concurrency: configuration.concurrency, starting: starting)
                    starting = false
                    if configuration.sampleBacklog && ContinuousClock.now >= nextSample {
                        let sampleStarted = ContinuousClock.now
                        defer {
                            let took = ContinuousClock.now - sampleStarted
                            nextSample = sampleStarted + max(configuration.heartbeatInterval, took * 20)
                        }
                        let endpoints = try store.backlog()
                        metrics.dueBacklog.record(endpoints.reduce(0) { $0 + $1.due })
                        metrics.oldestDue.record(endpoints.map(\.oldestSeconds).max() ?? 0)
                        let ordering = try store.orderingBlocked()
                        metrics.orderingBlockedKeys.record(ordering.keys)
                        metrics.orderingOldestBlocked.record(ordering.oldestSeconds)
                        let pressure = try store.endpointsUnderPressure()
                        metrics.circuits.replace(with: Dictionary(
                            uniqueKeysWithValues: pressure.filter(\.circuitOpen).map { ($0.config, 1.0) }))
                        metrics.limits.replace(with: Dictionary(
                            uniqueKeysWithValues: pressure.compactMap { p in p.limit.map { (p.config, $0) } }))
                    }
                    backoff.reset()  // after a beat that worked (see `maintain`)
                    mailbox.waitForStop(upTo: configuration.heartbeatInterval)
                }
            } catch {
                logger.debug("heartbeat connection unavailable; retrying", metadata: ["error": "\(error)"])
                mailbox.waitForStop(upTo: backoff.next())
            }
        }
    }

    // MARK: Maintenance

    /// Vacuums the signals table every 5 s; creates `webhook_logs` partitions ahead (at start, then every minute);
    /// with HERALD_RETENTION, every 10 s (one worker at a time) drops the log partitions past it and deletes
    /// finished deliveries and their events in batches until none is left; with metrics on, samples the hot
    /// tables' health.
    private func maintain() {
        var backoff = Backoff(maximum: .seconds(30))
        var vacuumSignals = true
        var vacuumWarnedAt: ContinuousClock.Instant?
        while !mailbox.isStopRequested {
            do {
                let connection = try PostgresConnection(PostgresConnection.withNetworkTimeouts(configuration.databaseURL))
                defer { connection.close() }
                let maintenance = QueueMaintenance(connection: connection)
                var partitionedAt: ContinuousClock.Instant?
                var sweptAt: ContinuousClock.Instant?
                var roundAt: ContinuousClock.Instant?
                var moreToPrune = false
                while !mailbox.isStopRequested {
                    // Every 5 s: the signals table (see `vacuumSignals`). Its failure must not stop the round below.
                    if vacuumSignals { vacuumSignals = try self.vacuumSignals(maintenance, lastWarning: &vacuumWarnedAt) }
                    let now = ContinuousClock.now
                    // The rest every 10 s, or at once while retention has more to delete.
                    if moreToPrune || roundAt.map({ now - $0 >= .seconds(10) }) ?? true {
                        roundAt = now
                        if partitionedAt.map({ now - $0 >= .seconds(60) }) ?? true {
                            let created = try maintenance.createLogPartitions()
                            if created > 0 {
                                logger.info("created webhook_logs partitions ahead", metadata: ["partitions": "\(created)"])
                            }
                            partitionedAt = now
                        }
                        if let retention = configuration.retention,
                           let dropped = try maintenance.dropExpiredLogPartitions(olderThan: retention, wait: false),
                           !dropped.isEmpty {
                            logger.info("dropped webhook_logs partitions past retention", metadata: [
                                "partitions": "\(dropped.map(\.name).joined(separator: ","))",
                                "rows": "\(dropped.reduce(0) { $0 + $1.rows })"])
                        }
                        // Batches for at most 10 s, so that partitions are still created and dropped on time while
                        // there is a lot to delete; the next round then starts at once.
                        moreToPrune = false
                        if let retention = configuration.retention {
                            let sweep = sweptAt.map { now - $0 >= .seconds(600) } ?? true
                            let until = ContinuousClock.now + .seconds(10)
                            while !mailbox.isStopRequested,
                                  try maintenance.pruneBatch(olderThan: retention, batch: 2000, sweep: sweep) > 0 {
                                if ContinuousClock.now >= until {
                                    moreToPrune = true
                                    break
                                }
                            }
                            if sweep { sweptAt = now }
                        }
                        if configuration.sampleBacklog {
                            metrics.recordHealth(tables: try maintenance.tableHealth(),
                                                 horizon: try maintenance.xminHorizon(),
                                                 partitionsAheadSeconds: try maintenance.logPartitionsAheadSeconds())
                        }
                    }
                    // Reset only after a whole pass worked: a statement that keeps failing (a function missing,
                    // a permission) would otherwise be retried, and warned about, every 100 ms, because
                    // connecting again succeeds every time.
                    backoff.reset()
                    if !moreToPrune { mailbox.waitForStop(upTo: .seconds(5)) }
                }
            } catch {
                let delay = backoff.next()
                logger.warning("table maintenance failed; retrying", metadata: [
                    "error": "\(error)", "retry_in_ms": "\(Int(delay.milliseconds))"])
                mailbox.waitForStop(upTo: delay)
            }
        }
    }

    /// Vacuums the signals table, whose churn autovacuum's once-a-minute visits do not keep up with at volume
    /// (`QueueMaintenance.vacuumSignals`). Other warnings and failures are logged at most once an hour.
    /// - Returns: false once PostgreSQL refused for good (this role may not vacuum the table): stop trying.
    /// - Throws: only when the connection is lost (the caller reconnects).
    private func vacuumSignals(_ maintenance: QueueMaintenance, lastWarning: inout ContinuousClock.Instant?) throws
        -> Bool
    {
        func warnHourly(_ message: Logger.Message, _ metadata: Logger.Metadata) {
            let now = ContinuousClock.now
            guard lastWarning.map({ now - $0 >= .seconds(3600) }) ?? true else { return }
            lastWarning = now
            logger.warning(message, metadata: metadata)
        }
        do {
            switch try maintenance.vacuumSignals() {
            case .done, .skipped:
                return true
            case let .notPermitted(message):
                logger.warning(
                    "cannot vacuum herald_endpoint_signals; autovacuum alone will (run the workers as the table's owner, the database's owner or a superuser to let them vacuum it between autovacuum's visits)",
                    metadata: ["postgres": "\(message)"])
                return false
            case let .warned(message):
                warnHourly("vacuum of herald_endpoint_signals warned (said at most once an hour)",
                           ["postgres": "\(message)"])
            }
        } catch let error as PostgresError where !error.isConnectionProblem {
            warnHourly("vacuum of herald_endpoint_signals failed (said at most once an hour)", ["error": "\(error)"])
        }
        return true
    }

    // MARK: Listener

    /// LISTENs on its own connection (a session that PgBouncer's transaction mode would break: point it at
    /// PostgreSQL directly) and wakes the dispatcher on every notification.
    private func listen() {
        var backoff = Backoff(maximum: .seconds(5))
        while !mailbox.isStopRequested {
            do {
                let connection = try PostgresConnection(PostgresConnection.withNetworkTimeouts(configuration.databaseURL))
                defer { connection.close() }  // also when waiting fails: a broken socket is not left open
                try connection.query("LISTEN herald_deliveries")
                backoff.reset()
                mailbox.wake()  // anything inserted while we were not listening
                while !mailbox.isStopRequested {
                    if !(try connection.waitForNotifications(timeoutMilliseconds: 250)).isEmpty { mailbox.wake() }
                }
            } catch {
                logger.debug("LISTEN connection unavailable; retrying", metadata: ["error": "\(error)"])
                mailbox.waitForStop(upTo: backoff.next())  // a stop is not held up by the backoff
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
