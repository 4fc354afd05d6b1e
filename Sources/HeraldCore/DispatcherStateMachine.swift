/// The decisions of a worker's dispatcher, without any I/O: when to connect, write results, rescue, claim (and
/// how many), wait, and when to exit. (Retention runs on the worker's maintenance thread, never here: a batch
/// that reads a large table must not hold up claims.)
///
/// The dispatcher thread feeds it events (mail arrived, a claim returned n, the connection broke, …) and does
/// what `nextAction` returns. Time is a parameter, so every rule is unit-tested without sleeping
/// (postgres-nio's `ListenStateMachine` is the model).
///
/// The claim rules are what keep a capped endpoint fast without polling it in a loop:
/// - a claim that filled every slot asked for is followed by another at once (more may be waiting);
/// - after results are written, slots are free both here and at their endpoints: claim again at once;
/// - a claim that returned nothing waits for a wake-up (NOTIFY), results, or the poll tick; and a wake-up after an
///   empty claim is answered at most once per `wakeCoalescing`, because while producers insert hundreds of times a
///   second, every insert would otherwise make each worker claim an endpoint that is at its cap, for nothing
///   (measured in the soak: 600 empty claims a second starved the deliveries of database time).
public struct DispatcherStateMachine: Sendable {
    /// The knobs, all from `WorkerConfiguration`.
    public struct Settings: Sendable {
        /// Deliveries in flight in this process.
        public var concurrency: Int
        /// The most one claim asks for: bounds the statement's work and the rows held by one transaction.
        public var claimBatch: Int
        /// How often to claim when nothing wakes the dispatcher (retries coming due).
        public var pollInterval: Duration
        /// How often to claim instead while work has been flowing (a claim returned rows or results were written
        /// within `activeWindow`) and nothing is in flight here. The fan-out NOTIFYs only when an endpoint has no
        /// due signal (sql/018: a NOTIFY serializes commits cluster-wide), so an event can be left with a due
        /// signal that a claim missed by a few milliseconds; this poll finds it soon, not half a second later.
        /// With requests in flight their results bring the next claim instead (which takes every due signal), and
        /// an endpoint at its cap is not polled.
        public var activePollInterval: Duration = .milliseconds(25)
        public var activeWindow: Duration = .seconds(2)
        public var rescueInterval: Duration = .seconds(1)
        /// How often to re-derive endpoint signals from the queue itself (a safety net; see sql/007).
        public var reconcileInterval: Duration = .seconds(60)
        /// After a claim that returned nothing, wake-ups are answered at most this often (see the type's comment).
        public var wakeCoalescing: Duration = .milliseconds(25)
        /// Whether to release leases left under this worker's id by an earlier incarnation (stable ids only).
        public var releaseOwnLeasesAtStart: Bool = false
        public var initialReconnectDelay: Duration = .milliseconds(100)
        public var maxReconnectDelay: Duration = .seconds(5)
        /// How long to wait before writing again results whose rows someone else held.
        public var busyRetryDelay: Duration = .milliseconds(200)
        /// How long the first finished result may wait for others to share its write, unless half of what is in
        /// flight has finished already. Writing each result as it lands made batches of one or two at a fast
        /// endpoint, each a transaction of its own.
        public var writeCoalescing: Duration = .milliseconds(2)

        public init(concurrency: Int, claimBatch: Int, pollInterval: Duration) {
            self.concurrency = concurrency
            self.claimBatch = claimBatch
            self.pollInterval = pollInterval
        }
    }

    /// What the dispatcher should do next.
    public enum Action: Sendable, Equatable {
        case connect
        /// Write the results waiting to be written, then, in the same transaction, claim up to `claimLimit` (nil:
        /// no claim). The claim sees the slots the write freed, and the two cost one commit.
        case write(claimLimit: Int?)
        /// Release leases this worker id held before a restart (once per process, after the first connect).
        case releaseOwnLeases
        case rescue
        case reconcile
        case claim(limit: Int)
        /// Wait for mail (results, a wake-up, the stop) until `deadline`.
        case wait(until: ContinuousClock.Instant)
        case exit
    }

    public private(set) var settings: Settings
    public private(set) var inFlight = 0
    public private(set) var unwritten = 0
    public private(set) var connected = false
    public private(set) var draining = false
    /// How long until the next connection attempt, after a failed one (doubling up to `maxReconnectDelay`).
    public private(set) var retryIn: Duration = .zero

    private var woken = true
    private var claimAgain = true
    private var lastClaimWasEmpty = false
    private var lastClaim: ContinuousClock.Instant
    private var lastBusy: ContinuousClock.Instant?
    private var nextConnect: ContinuousClock.Instant
    private var reconnect: Backoff
    private var nextRescue: ContinuousClock.Instant
    private var nextReconcile: ContinuousClock.Instant
    private var nextWrite: ContinuousClock.Instant
    private var firstUnwrittenAt: ContinuousClock.Instant?
    private var ownLeasesReleased = false
    private var failedConnectsWhileDraining = 0

    public init(settings: Settings, now: ContinuousClock.Instant) {
        self.settings = settings
        lastClaim = now
        nextConnect = now
        reconnect = Backoff(initial: settings.initialReconnectDelay, maximum: settings.maxReconnectDelay)
        nextRescue = now
        nextReconcile = now
        nextWrite = now
        ownLeasesReleased = !settings.releaseOwnLeasesAtStart
    }

    // MARK: Events

    /// Results arrived from the HTTP engine, and/or a wake-up, and/or the stop request.
    public mutating func mailArrived(results: Int, woken: Bool, stopRequested: Bool, now: ContinuousClock.Instant) {
        if results > 0 && unwritten == 0 { firstUnwrittenAt = now }
        inFlight -= results
        unwritten += results
        if woken { self.woken = true }
        if stopRequested { draining = true }
    }

    public mutating func connected(now: ContinuousClock.Instant) {
        connected = true
        reconnect.reset()
        failedConnectsWhileDraining = 0
        woken = true
        nextWrite = now
    }

    public mutating func connectFailed(now: ContinuousClock.Instant) {
        connected = false
        retryIn = reconnect.next()
        nextConnect = now + retryIn
        if draining { failedConnectsWhileDraining += 1 }
    }

    /// A statement failed because the connection is gone: reconnect with backoff.
    public mutating func connectionLost(now: ContinuousClock.Instant) {
        connectFailed(now: now)
    }

    /// `written` results were recorded; `busy` were held by someone else and are still waiting.
    public mutating func wrote(written: Int, busy: Int, now: ContinuousClock.Instant) {
        unwritten -= written
        firstUnwrittenAt = unwritten > 0 ? now : nil
        if busy > 0 { nextWrite = now + settings.busyRetryDelay }
        // Slots are free again, here and at the endpoints: look for work at once.
        if written > 0 {
            claimAgain = true
            lastBusy = now
        }
    }

    /// Results that could not be recorded at all (dropped after being logged): their leases will expire.
    public mutating func dropped(_ count: Int) {
        unwritten -= count
        if unwritten == 0 { firstUnwrittenAt = nil }
    }

    public mutating func claimed(_ count: Int, limit: Int, now: ContinuousClock.Instant) {
        inFlight += count
        lastClaim = now
        lastClaimWasEmpty = count == 0
        if count > 0 { lastBusy = now }
        woken = false
        // Full: more may be waiting. Short or empty: the rest waits for results, a wake-up or the poll.
        claimAgain = count == limit
    }

    public mutating func rescued(now: ContinuousClock.Instant) {
        nextRescue = now + settings.rescueInterval
    }

    public mutating func releasedOwnLeases() {
        ownLeasesReleased = true
    }

    public mutating func reconciled(now: ContinuousClock.Instant) {
        nextReconcile = now + settings.reconcileInterval
    }

    // MARK: The decision

    public func nextAction(now: ContinuousClock.Instant) -> Action {
        if draining && inFlight == 0 {
            if unwritten == 0 { return .exit }
            // Results that cannot be written (the database stays away) are given up after a few tries: their
            // leases expire and other workers retry them.
            if !connected && failedConnectsWhileDraining >= 5 { return .exit }
        }
        guard connected else {
            if now >= nextConnect { return .connect }
            return .wait(until: nextConnect)
        }
        if unwritten > 0 && now >= writeDue {
            let free = settings.concurrency - inFlight
            return .write(claimLimit: !draining && ownLeasesReleased && free > 0 ? min(free, settings.claimBatch) : nil)
        }
        if draining {
            return .wait(until: unwritten > 0 ? writeDue : now + settings.pollInterval)
        }
        if !ownLeasesReleased { return .releaseOwnLeases }
        if now >= nextRescue { return .rescue }
        if now >= nextReconcile { return .reconcile }

        let free = settings.concurrency - inFlight
        let poll = pollInterval(now: now)
        let pollDue = now >= lastClaim + poll
        let wakeDue = woken && (!lastClaimWasEmpty || now >= lastClaim + settings.wakeCoalescing)
        if free > 0 && (wakeDue || claimAgain || pollDue) {
            return .claim(limit: min(free, settings.claimBatch))
        }
        var deadline = min(nextRescue, nextReconcile)
        if free > 0 { deadline = min(deadline, lastClaim + poll) }
        if free > 0 && woken { deadline = min(deadline, lastClaim + settings.wakeCoalescing) }
        if unwritten > 0 { deadline = min(deadline, writeDue) }
        return .wait(until: deadline)
    }

    /// The poll interval in force: the short one while work has been flowing and nothing is in flight (see
    /// `activePollInterval`).
    private func pollInterval(now: ContinuousClock.Instant) -> Duration {
        if inFlight == 0, let busy = lastBusy, now < busy + settings.activeWindow {
            return min(settings.activePollInterval, settings.pollInterval)
        }
        return settings.pollInterval
    }

    /// When the waiting results should be written: at once when half of what was in flight has come back (or
    /// all of it, or when stopping), else after the coalescing window; never before a busy retry's delay.
    private var writeDue: ContinuousClock.Instant {
        let coalesced = unwritten >= inFlight || draining
            ? nextWrite : max(nextWrite, (firstUnwrittenAt ?? nextWrite) + settings.writeCoalescing)
        return coalesced
    }
}
