/// When to try a failed delivery again: exponential backoff (×4 per attempt) with ±20 % jitter, capped.
///
/// With the defaults (10 attempts, 5 s base, 10 h cap) the waits after attempts 1…9 are about
/// 5 s, 20 s, 80 s, 5 m 20 s, 21 m, 1 h 25 m, 5 h 41 m, 10 h, 10 h: roughly 28 hours from the first attempt to
/// the last, close to what Svix and Stripe give an endpoint to recover. Jitter spreads the retries of a burst
/// that failed together so they do not return as a burst.
public struct RetryPolicy: Sendable, Equatable {
    /// Attempts in all, the first included. Default 10.
    public var maxAttempts: Int
    /// Wait after the first failed attempt. Default 5 s.
    public var baseDelay: Duration
    /// No wait is longer than this. Default 10 h.
    public var maxDelay: Duration
    /// Growth per attempt. Default 4.
    public var multiplier: Double
    /// Relative spread: 0.2 means each wait is drawn from ±20 % of its nominal value. Default 0.2.
    public var jitter: Double

    public init(maxAttempts: Int = 10, baseDelay: Duration = .seconds(5), maxDelay: Duration = .seconds(36_000),
                multiplier: Double = 4, jitter: Double = 0.2) {
        self.maxAttempts = maxAttempts
        self.baseDelay = baseDelay
        self.maxDelay = maxDelay
        self.multiplier = multiplier
        self.jitter = jitter
    }

    /// The nominal (jitter-free) wait after `attempt` (1-based) failed.
    public func nominalDelay(afterAttempt attempt: Int) -> Duration {
        let base = baseDelay.milliseconds
        let cap = maxDelay.milliseconds
        var delay = base
        var step = 1
        while step < attempt && delay < cap {
            delay *= multiplier
            step += 1
        }
        return .milliseconds(Int64(min(delay, cap)))
    }

    /// The wait after `attempt` failed, with jitter drawn from `random` (a value in 0..<1), never above the cap.
    /// A `Retry-After` from the receiver (429/503) replaces the computed wait, clamped to [1 s, maxDelay].
    public func delay(afterAttempt attempt: Int, retryAfter: Duration? = nil, random: Double) -> Duration {
        if let retryAfter {
            let requested = retryAfter.milliseconds
            return .milliseconds(Int64(min(max(requested, 1000), maxDelay.milliseconds)))
        }
        let nominal = nominalDelay(afterAttempt: attempt).milliseconds
        let factor = 1 + jitter * (2 * random - 1)
        return .milliseconds(Int64(min(nominal * factor, maxDelay.milliseconds).rounded()))
    }

    /// Nominal waits after attempts 1…maxAttempts-1, for documentation and `herald work` start-up output.
    public var schedule: [Duration] {
        guard maxAttempts > 1 else { return [] }
        return (1..<maxAttempts).map { nominalDelay(afterAttempt: $0) }
    }
}

extension Duration {
    /// Whole and fractional milliseconds as a Double.
    public var milliseconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) * 1000 + Double(attoseconds) / 1e15
    }

    /// A short human form: `250ms`, `5s`, `5m20s`, `1h25m`, `2d`.
    public var humanReadable: String {
        let ms = Int64(milliseconds.rounded())
        if ms < 1000 { return "\(ms)ms" }
        let seconds = ms / 1000
        if seconds < 60 { return ms % 1000 == 0 ? "\(seconds)s" : String(format2(Double(ms) / 1000)) + "s" }
        if seconds < 3600 { return seconds % 60 == 0 ? "\(seconds / 60)m" : "\(seconds / 60)m\(seconds % 60)s" }
        if seconds < 86_400 {
            let minutes = (seconds % 3600) / 60
            return minutes == 0 ? "\(seconds / 3600)h" : "\(seconds / 3600)h\(minutes)m"
        }
        let hours = (seconds % 86_400) / 3600
        return hours == 0 ? "\(seconds / 86_400)d" : "\(seconds / 86_400)d\(hours)h"
    }
}

private func format2(_ value: Double) -> String {
    let hundredths = Int((value * 100).rounded())
    let fraction = hundredths % 100
    return "\(hundredths / 100)." + (fraction < 10 ? "0\(fraction)" : "\(fraction)")
}
