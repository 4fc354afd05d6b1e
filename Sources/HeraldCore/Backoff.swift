/// A retry delay that doubles after each failure up to a ceiling, and starts from the first delay again once
/// something worked. One rule for the dispatcher's reconnects and for the worker's listener, heartbeat and
/// maintenance threads, which each retry on a connection of their own.
public struct Backoff: Sendable, Equatable {
    public let initial: Duration
    public let maximum: Duration
    /// The delay `next()` returns.
    public private(set) var current: Duration

    public init(initial: Duration = .milliseconds(100), maximum: Duration) {
        self.initial = initial
        self.maximum = maximum
        current = initial
    }

    /// The delay to wait after a failure; the one after it is twice as long, up to `maximum`.
    public mutating func next() -> Duration {
        let delay = current
        current = min(current * 2, maximum)
        return delay
    }

    /// Something worked: the next failure waits `initial` again.
    public mutating func reset() {
        current = initial
    }
}
