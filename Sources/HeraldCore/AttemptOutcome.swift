/// What Herald concludes from one attempt: the pure decision at the centre of the delivery state machine.
///
///     pending ──claim──▶ leased ──2xx──────────────────────────▶ delivered
///                          │──failure, attempts left──▶ pending (due after backoff)
///                          │──failure, no attempts left / config disabled──▶ failed
///                          └──lease expired (worker lost)──▶ pending (due now) or failed   [herald_rescue]
public enum AttemptOutcome: Sendable, Equatable {
    case delivered
    case retry(after: Duration)
    case failed

    /// The value written to `webhook_logs.outcome` and passed to `herald_complete`.
    public var label: String {
        switch self {
        case .delivered: "delivered"
        case .retry: "retry"
        case .failed: "failed"
        }
    }

    /// Decides the outcome of `attempt` (1-based).
    ///
    /// - Parameters:
    ///   - responseStatus: the HTTP status, or nil when no response arrived (timeout, refused, TLS, DNS…).
    ///   - retryAfter: the receiver's `Retry-After`, honoured on 429 and 503 only.
    ///   - maxAttempts: the config's override or the worker's default.
    ///   - random: a value in 0..<1 for jitter (injected so tests are deterministic).
    public static func decide(attempt: Int, responseStatus: Int?, retryAfter: Duration?, maxAttempts: Int,
                              policy: RetryPolicy, random: Double) -> AttemptOutcome {
        if let status = responseStatus, (200..<300).contains(status) { return .delivered }
        // 410 Gone means "never again": retrying would only hammer it (the config is disabled as well).
        if attempt >= maxAttempts || responseStatus == 410 { return .failed }
        let honoured = (responseStatus == 429 || responseStatus == 503) ? retryAfter : nil
        return .retry(after: policy.delay(afterAttempt: attempt, retryAfter: honoured, random: random))
    }
}

/// Parses an HTTP `Retry-After` value: delay-seconds, or an HTTP-date relative to `now` (Unix seconds).
public enum RetryAfter {
    /// The receiver controls this text: every number is bounded before arithmetic, so no value can trap.
    public static func parse(_ value: String, now: Double) -> Duration? {
        let trimmed = value.trimmingSpaces
        let year: Int64 = 365 * 86_400
        if let seconds = Int64(trimmed), seconds >= 0 { return .seconds(min(seconds, year)) }
        guard let date = HTTPDate.parse(trimmed) else { return nil }
        return .milliseconds(Int64(min(max(0, date - now), Double(year)) * 1000))
    }
}

/// IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the only HTTP-date form senders must produce (RFC 9110).
enum HTTPDate {
    static func parse(_ text: String) -> Double? {
        let parts = text.split(separator: " ")
        guard parts.count == 6, parts[5] == "GMT", let day = Int(parts[1]), (1...31).contains(day),
              let year = Int(parts[3]), (1970...9999).contains(year) else {
            return nil
        }
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        guard let monthIndex = months.firstIndex(of: String(parts[2])) else { return nil }
        let clock = parts[4].split(separator: ":").compactMap { Int($0) }
        guard clock.count == 3, (0...23).contains(clock[0]), (0...59).contains(clock[1]), (0...60).contains(clock[2])
        else { return nil }
        return Double(daysFromCivil(year: year, month: monthIndex + 1, day: day)) * 86_400
            + Double(clock[0] * 3600 + clock[1] * 60 + clock[2])
    }

    /// Days since 1970-01-01 (Howard Hinnant's algorithm).
    static func daysFromCivil(year: Int, month: Int, day: Int) -> Int {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let mp = (month + 9) % 12
        let doy = (153 * mp + 2) / 5 + day - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }
}

extension String {
    var trimmingSpaces: String {
        var text = Substring(self)
        while text.first == " " || text.first == "\t" { text.removeFirst() }
        while text.last == " " || text.last == "\t" { text.removeLast() }
        return String(text)
    }
}
