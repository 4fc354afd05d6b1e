import HeraldCore
import Testing

@Suite struct RetryPolicyTests {
    @Test func defaultScheduleGrowsFourfoldToTheCap() {
        let policy = RetryPolicy()
        #expect(policy.schedule.map(\.humanReadable) == ["5s", "20s", "1m20s", "5m20s", "21m20s", "1h25m", "5h41m", "10h", "10h"])
        let total = policy.schedule.reduce(Duration.zero, +)
        #expect(total > .seconds(27 * 3600) && total < .seconds(29 * 3600))
    }

    @Test func jitterStaysWithinTwentyPercent() {
        let policy = RetryPolicy()
        #expect(policy.delay(afterAttempt: 2, random: 0) == .milliseconds(16_000))
        #expect(policy.delay(afterAttempt: 2, random: 0.5) == .milliseconds(20_000))
        #expect(policy.delay(afterAttempt: 2, random: 0.999_999) <= .milliseconds(24_000))
        #expect(policy.delay(afterAttempt: 20, random: 0.999) <= policy.maxDelay)
    }

    @Test func retryAfterReplacesTheComputedWaitWithinBounds() {
        let policy = RetryPolicy(maxDelay: .seconds(3600))
        #expect(policy.delay(afterAttempt: 1, retryAfter: .seconds(120), random: 0.5) == .seconds(120))
        #expect(policy.delay(afterAttempt: 1, retryAfter: .seconds(86_400), random: 0.5) == .seconds(3600))
        #expect(policy.delay(afterAttempt: 1, retryAfter: .zero, random: 0.5) == .seconds(1))
    }

    @Test func outcomes() {
        let policy = RetryPolicy(maxAttempts: 3, baseDelay: .seconds(1))
        #expect(AttemptOutcome.decide(attempt: 1, responseStatus: 204, retryAfter: nil, maxAttempts: 3, policy: policy,
                                      random: 0.5) == .delivered)
        #expect(AttemptOutcome.decide(attempt: 1, responseStatus: 500, retryAfter: nil, maxAttempts: 3, policy: policy,
                                      random: 0.5) == .retry(after: .seconds(1)))
        #expect(AttemptOutcome.decide(attempt: 2, responseStatus: nil, retryAfter: nil, maxAttempts: 3, policy: policy,
                                      random: 0.5) == .retry(after: .seconds(4)))
        #expect(AttemptOutcome.decide(attempt: 3, responseStatus: 500, retryAfter: nil, maxAttempts: 3, policy: policy,
                                      random: 0.5) == .failed)
        #expect(AttemptOutcome.decide(attempt: 1, responseStatus: 301, retryAfter: nil, maxAttempts: 3, policy: policy,
                                      random: 0.5) == .retry(after: .seconds(1)))
        // Retry-After counts on 429 and 503 only.
        #expect(AttemptOutcome.decide(attempt: 1, responseStatus: 429, retryAfter: .seconds(30), maxAttempts: 3,
                                      policy: policy, random: 0.5) == .retry(after: .seconds(30)))
        #expect(AttemptOutcome.decide(attempt: 1, responseStatus: 500, retryAfter: .seconds(30), maxAttempts: 3,
                                      policy: policy, random: 0.5) == .retry(after: .seconds(1)))
    }

    @Test func parsesRetryAfter() {
        #expect(RetryAfter.parse("120", now: 0) == .seconds(120))
        // 784111777 is Sun, 06 Nov 1994 08:49:37 GMT.
        #expect(RetryAfter.parse("Sun, 06 Nov 1994 08:49:37 GMT", now: 784_111_777 - 60) == .seconds(60))
        #expect(RetryAfter.parse("soon", now: 0) == nil)
        #expect(RetryAfter.parse("-5", now: 0) == nil)
        // Hostile values are bounded, never a trap.
        #expect(RetryAfter.parse("Sun, 06 Nov 9999999999 08:49:37 GMT", now: 0) == nil)
        #expect(RetryAfter.parse("Sun, 99999999999 Nov 1994 08:49:37 GMT", now: 0) == nil)
        #expect(RetryAfter.parse("Sun, 06 Nov 1994 999999999999:49:37 GMT", now: 0) == nil)
        #expect(RetryAfter.parse("Fri, 31 Dec 9999 23:59:59 GMT", now: 0) == .seconds(365 * 86_400))
        #expect(RetryAfter.parse("9223372036854775807", now: 0) == .seconds(365 * 86_400))
    }
}
