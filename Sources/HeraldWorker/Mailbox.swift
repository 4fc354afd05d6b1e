import Foundation

/// Where the worker's threads leave work for the dispatcher thread: finished attempts (from the HTTP engine),
/// wake-ups (from the LISTEN thread) and the stop request (from the signal handler).
///
/// `@unchecked Sendable` is safe: every stored property is read and written only while `condition` is locked.
final class Mailbox: @unchecked Sendable {
    struct Delivery {
        var records: [AttemptRecord]
        var woken: Bool
        var stopRequested: Bool
    }

    private let condition = NSCondition()
    private var records: [AttemptRecord] = []
    private var woken = false
    private var stopRequested = false
    /// The stop has been handed to the dispatcher once; after that it no longer cuts waits short (the dispatcher
    /// keeps waiting for the last results without spinning).
    private var stopDelivered = false

    func post(_ record: AttemptRecord) {
        condition.lock()
        records.append(record)
        // broadcast, not signal: the heartbeat thread sleeps on this condition too (waitForStop), and a signal
        // that woke it instead of the dispatcher left a result unseen until the dispatcher's next deadline.
        condition.broadcast()
        condition.unlock()
    }

    func wake() {
        condition.lock()
        woken = true
        condition.broadcast()
        condition.unlock()
    }

    func requestStop() {
        condition.lock()
        stopRequested = true
        condition.broadcast()
        condition.unlock()
    }

    var isStopRequested: Bool {
        condition.lock()
        defer { condition.unlock() }
        return stopRequested
    }

    /// Sleeps up to `timeout`, returning early when the stop is requested (for threads other than the dispatcher).
    func waitForStop(upTo timeout: Duration) {
        condition.lock()
        defer { condition.unlock() }
        let deadline = Date(timeIntervalSinceNow: timeout.milliseconds / 1000)
        while !stopRequested {
            if !condition.wait(until: deadline) { break }
        }
    }

    /// Returns at once when something is waiting, else waits up to `timeout` for something to arrive.
    func take(waitingUpTo timeout: Duration) -> Delivery {
        condition.lock()
        defer { condition.unlock() }
        let pendingStop = stopRequested && !stopDelivered
        if records.isEmpty && !woken && !pendingStop && timeout > .zero {
            let deadline = Date(timeIntervalSinceNow: timeout.milliseconds / 1000)
            while records.isEmpty && !woken && !(stopRequested && !stopDelivered) {
                if !condition.wait(until: deadline) { break }
            }
        }
        if stopRequested { stopDelivered = true }
        let delivery = Delivery(records: records, woken: woken, stopRequested: stopRequested)
        records.removeAll(keepingCapacity: true)
        woken = false
        return delivery
    }
}
