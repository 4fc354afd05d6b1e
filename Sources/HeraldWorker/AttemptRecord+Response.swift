import Foundation
import HeraldCore
import HeraldHTTP

extension AttemptRecord {
    /// What one HTTP exchange means for the delivery: the outcome (delivered, retry after a delay, failed),
    /// what to store of the response, and whether the receiver looked overloaded. Pure: the clock and the
    /// jitter are parameters.
    ///
    /// - Parameters:
    ///   - maxAttempts: the limit the claim returned for this delivery.
    ///   - now: Unix seconds, for an HTTP-date `Retry-After`.
    init(delivery: ClaimedDelivery, response: HTTPResponse, maxAttempts: Int, policy: RetryPolicy,
         now: Double, random: Double) {
        // Only 429 and 503 may ask for a delay; nothing else is even parsed.
        let retryAfter = (response.status == 429 || response.status == 503)
            ? response.retryAfter.flatMap { RetryAfter.parse($0, now: now) } : nil
        // A status that came with a transport error (e.g. the body broke off) is not a complete answer.
        let status = response.error == nil ? response.status : nil
        let outcome = AttemptOutcome.decide(
            attempt: delivery.attempt, responseStatus: status, retryAfter: retryAfter, maxAttempts: maxAttempts,
            policy: policy, random: random)
        self.init(
            delivery: delivery, outcome: outcome, responseStatus: response.status,
            responseBody: storableText(response.body),
            error: response.error?.message ?? (response.isSuccess ? nil : "HTTP \(response.status ?? 0) is not a 2xx response"),
            durationMilliseconds: Int(response.duration.milliseconds),
            // Signs of a receiver that is overloaded rather than broken: ease off (adaptive limit), don't switch off.
            overloaded: response.error?.kind == .timeout || status == 429 || status == 503)
    }
}
