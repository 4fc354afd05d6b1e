import HeraldCore
import Testing

/// The dispatcher's decisions, driven event by event with a clock the test moves by hand.
@Suite struct DispatcherStateMachineTests {
    let start = ContinuousClock.now

    func machine(concurrency: Int = 10, claimBatch: Int = 4, poll: Duration = .milliseconds(500),
                 configure: (inout DispatcherStateMachine.Settings) -> Void = { _ in }) -> DispatcherStateMachine {
        var settings = DispatcherStateMachine.Settings(concurrency: concurrency, claimBatch: claimBatch, pollInterval: poll)
        settings.rescueInterval = .seconds(1)
        settings.reconcileInterval = .seconds(60)
        configure(&settings)
        return DispatcherStateMachine(settings: settings, now: start)
    }

    /// Connects, then runs the start-up chores (rescue, reconcile) so the next decision is about claiming.
    func connected(_ m: inout DispatcherStateMachine, at now: ContinuousClock.Instant) {
        #expect(m.nextAction(now: now) == .connect)
        m.connected(now: now)
        #expect(m.nextAction(now: now) == .rescue)
        m.rescued(now: now)
        #expect(m.nextAction(now: now) == .reconcile)
        m.reconciled(now: now)
    }

    @Test func claimsAtOnceAfterAFullClaimAndAsksForAtMostTheBatch() {
        var m = machine()
        connected(&m, at: start)
        #expect(m.nextAction(now: start) == .claim(limit: 4))
        m.claimed(4, limit: 4, now: start)
        // Full: more may be waiting, so claim again without waiting for the poll.
        #expect(m.nextAction(now: start) == .claim(limit: 4))
        m.claimed(4, limit: 4, now: start)
        #expect(m.nextAction(now: start) == .claim(limit: 2))
        m.claimed(2, limit: 2, now: start)
        // Every slot is taken: wait (for results or the rescue tick), never claim.
        #expect(m.inFlight == 10)
        guard case .wait = m.nextAction(now: start) else {
            Issue.record("expected a wait at full concurrency")
            return
        }
    }

    @Test func wakeUpsAfterAnEmptyClaimAreCoalescedButResultsStillClaimAtOnce() {
        var m = machine(concurrency: 10, claimBatch: 10)
        connected(&m, at: start)
        m.claimed(5, limit: 10, now: start)
        // After a claim that found work, a wake-up (new events) claims at once.
        m.mailArrived(results: 0, woken: true, stopRequested: false, now: start)
        #expect(m.nextAction(now: start) == .claim(limit: 5))
        m.claimed(0, limit: 5, now: start)
        // After an empty claim (the endpoint at its cap), wake-ups from a stream of inserts wait 25 ms.
        let soon = start + .milliseconds(1)
        m.mailArrived(results: 0, woken: true, stopRequested: false, now: soon)
        #expect(m.nextAction(now: soon) == .wait(until: start + .milliseconds(25)))
        m.mailArrived(results: 0, woken: true, stopRequested: false, now: start + .milliseconds(10))
        #expect(m.nextAction(now: start + .milliseconds(10)) == .wait(until: start + .milliseconds(25)))
        #expect(m.nextAction(now: start + .milliseconds(25)) == .claim(limit: 5))
        // Results free slots: written and claimed in one go, without waiting.
        m.claimed(0, limit: 5, now: start + .milliseconds(25))
        m.mailArrived(results: 2, woken: true, stopRequested: false, now: start + .milliseconds(26))
        m.wrote(written: 2, busy: 0, now: start + .milliseconds(26))
        #expect(m.nextAction(now: start + .milliseconds(26)) == .claim(limit: 7))
    }

    @Test func aClaimCutByAnEndpointCapIsRetriedAsSoonAsResultsFreeSlots() {
        var m = machine(concurrency: 10, claimBatch: 10)
        connected(&m, at: start)
        #expect(m.nextAction(now: start) == .claim(limit: 10))
        // The endpoint's cap allowed 3 of the 10 asked for.
        m.claimed(3, limit: 10, now: start)
        let soon = start + .milliseconds(1)
        // No claim until something changes: the endpoint is at its cap, polling it would be a busy loop.
        #expect(m.nextAction(now: soon) == .wait(until: start + .milliseconds(500)))
        // Two of the three come back: write them and, in the same transaction, claim the 9 free slots at once,
        // long before the 500 ms poll.
        m.mailArrived(results: 2, woken: false, stopRequested: false, now: soon)
        #expect(m.nextAction(now: soon) == .write(claimLimit: 9))
        m.wrote(written: 2, busy: 0, now: soon)
        m.claimed(2, limit: 9, now: soon)
        #expect(m.inFlight == 3)
    }

    @Test func anEmptyClaimWaitsForAWakeUpOrThePoll() {
        var m = machine(poll: .milliseconds(500))
        connected(&m, at: start)
        m.claimed(0, limit: 4, now: start)
        #expect(m.nextAction(now: start + .milliseconds(100)) == .wait(until: start + .milliseconds(500)))
        // NOTIFY: claim now.
        m.mailArrived(results: 0, woken: true, stopRequested: false, now: start)
        #expect(m.nextAction(now: start + .milliseconds(100)) == .claim(limit: 4))
        m.claimed(0, limit: 4, now: start + .milliseconds(100))
        // Otherwise the poll tick, for retries coming due.
        #expect(m.nextAction(now: start + .milliseconds(600)) == .claim(limit: 4))
    }

    @Test func pollsOftenWhileWorkFlowsAndAtThePollIntervalOnceIdle() {
        var m = machine(poll: .milliseconds(500)) { $0.rescueInterval = .seconds(60) }
        connected(&m, at: start)
        m.claimed(2, limit: 4, now: start)
        // Requests in flight: their results bring the next claim, no short poll.
        #expect(m.nextAction(now: start + .milliseconds(10)) == .wait(until: start + .milliseconds(500)))
        m.mailArrived(results: 2, woken: false, stopRequested: false, now: start)
        #expect(m.nextAction(now: start) == .write(claimLimit: 4))
        m.wrote(written: 2, busy: 0, now: start)
        m.claimed(0, limit: 4, now: start)
        // Work was flowing and nothing is in flight: the next poll comes after the short interval (a due signal
        // that no NOTIFY announced).
        #expect(m.nextAction(now: start + .milliseconds(10)) == .wait(until: start + .milliseconds(25)))
        #expect(m.nextAction(now: start + .milliseconds(25)) == .claim(limit: 4))
        m.claimed(0, limit: 4, now: start + .milliseconds(25))
        #expect(m.nextAction(now: start + .milliseconds(50)) == .claim(limit: 4))
        m.claimed(0, limit: 4, now: start + .milliseconds(50))
        // Two seconds after the last claim that returned rows, back to the poll interval.
        let later = start + .milliseconds(2100)
        m.claimed(0, limit: 4, now: later)
        #expect(m.nextAction(now: later + .milliseconds(100)) == .wait(until: later + .milliseconds(500)))
    }

    /// The rule the worker's listener, heartbeat and maintenance threads retry by (the dispatcher's reconnects too).
    @Test func backoffDoublesToItsCeilingAndStartsAgainAfterASuccess() {
        var backoff = Backoff(maximum: .seconds(30))
        var delays: [Duration] = []
        for _ in 0..<11 { delays.append(backoff.next()) }
        #expect(delays == [.milliseconds(100), .milliseconds(200), .milliseconds(400), .milliseconds(800),
                           .milliseconds(1600), .milliseconds(3200), .milliseconds(6400), .milliseconds(12800),
                           .milliseconds(25600), .seconds(30), .seconds(30)])
        backoff.reset()
        #expect(backoff.next() == .milliseconds(100))
        #expect(backoff.next() == .milliseconds(200))
    }

    @Test func reconnectsWithDoublingBackoffCappedAtFiveSeconds() {
        var m = machine()
        var now = start
        var delays: [Duration] = []
        for _ in 0..<8 {
            #expect(m.nextAction(now: now) == .connect)
            m.connectFailed(now: now)
            delays.append(m.retryIn)
            // Not before the delay is over.
            #expect(m.nextAction(now: now + m.retryIn - .milliseconds(1)) == .wait(until: now + m.retryIn))
            now = now + m.retryIn
        }
        #expect(delays == [.milliseconds(100), .milliseconds(200), .milliseconds(400), .milliseconds(800),
                           .milliseconds(1600), .milliseconds(3200), .seconds(5), .seconds(5)])
        m.connected(now: now)
        // A working connection resets the backoff.
        m.connectionLost(now: now)
        #expect(m.retryIn == .milliseconds(100))
    }

    @Test func aFirstResultWaitsBrieflyForOthersUnlessHalfAreBack() {
        var m = machine(concurrency: 12, claimBatch: 12)
        connected(&m, at: start)
        // Ten of the twelve asked for (an endpoint's cap cut the claim): no claim until results come back.
        m.claimed(10, limit: 12, now: start)
        m.mailArrived(results: 1, woken: false, stopRequested: false, now: start)
        // One of ten: it waits up to 2 ms for company.
        #expect(m.nextAction(now: start) == .wait(until: start + .milliseconds(2)))
        #expect(m.nextAction(now: start + .milliseconds(2)) == .write(claimLimit: 3))
        // Five of ten back (half of what is out): no waiting.
        m.mailArrived(results: 4, woken: false, stopRequested: false, now: start + .milliseconds(1))
        #expect(m.nextAction(now: start + .milliseconds(1)) == .write(claimLimit: 7))
    }

    @Test func stopDrainsInFlightWritesResultsThenExits() {
        var m = machine()
        connected(&m, at: start)
        m.claimed(4, limit: 4, now: start)
        m.mailArrived(results: 1, woken: true, stopRequested: true, now: start)
        #expect(m.draining)
        // Results are still written, but nothing new is claimed, even with a wake-up pending.
        #expect(m.nextAction(now: start) == .write(claimLimit: nil))
        m.wrote(written: 1, busy: 0, now: start)
        guard case .wait = m.nextAction(now: start) else {
            Issue.record("expected to wait for the 3 attempts in flight")
            return
        }
        m.mailArrived(results: 3, woken: false, stopRequested: false, now: start)
        #expect(m.nextAction(now: start) == .write(claimLimit: nil))
        m.wrote(written: 3, busy: 0, now: start)
        #expect(m.nextAction(now: start) == .exit)
    }

    @Test func drainingGivesUpOnResultsOnlyAfterSeveralFailedReconnects() {
        var m = machine()
        connected(&m, at: start)
        m.claimed(2, limit: 4, now: start)
        m.mailArrived(results: 2, woken: false, stopRequested: true, now: start)
        m.connectionLost(now: start)
        var now = start
        var attempts = 0
        while m.nextAction(now: now) != .exit {
            if m.nextAction(now: now) == .connect {
                attempts += 1
                m.connectFailed(now: now)
            }
            now = now + .seconds(5)
            if attempts > 20 { break }
        }
        #expect(attempts == 4)
        #expect(m.unwritten == 2)
    }

    @Test func busyResultsAreWrittenAgainAfterAShortDelayNotInALoop() {
        // The short poll while work flows would claim at +25 ms (nothing is in flight); this test is about writes.
        var m = machine { $0.activePollInterval = .milliseconds(500) }
        connected(&m, at: start)
        m.claimed(2, limit: 4, now: start)
        m.mailArrived(results: 2, woken: false, stopRequested: false, now: start)
        #expect(m.nextAction(now: start) == .write(claimLimit: 4))
        // One was written (and the claim went ahead in the same transaction); the busy one waits its turn.
        m.wrote(written: 1, busy: 1, now: start)
        m.claimed(0, limit: 4, now: start)
        #expect(m.unwritten == 1)
        #expect(m.nextAction(now: start + .milliseconds(50)) == .wait(until: start + .milliseconds(200)))
        #expect(m.nextAction(now: start + .milliseconds(200)) == .write(claimLimit: 4))
    }

    @Test func rescueRunsOnItsOwnScheduleBetweenClaims() {
        var m = machine()
        connected(&m, at: start)
        m.claimed(0, limit: 4, now: start)
        #expect(m.nextAction(now: start + .seconds(1)) == .rescue)
        m.rescued(now: start + .seconds(1))
        #expect(m.nextAction(now: start + .seconds(10)) == .rescue)
        m.rescued(now: start + .seconds(10))
        #expect(m.nextAction(now: start + .seconds(10)) == .claim(limit: 4))
    }

    @Test func aStableWorkerIdReleasesItsOldLeasesBeforeItsFirstClaim() {
        var m = machine { $0.releaseOwnLeasesAtStart = true }
        #expect(m.nextAction(now: start) == .connect)
        m.connected(now: start)
        #expect(m.nextAction(now: start) == .releaseOwnLeases)
        m.releasedOwnLeases()
        #expect(m.nextAction(now: start) == .rescue)
    }
}
