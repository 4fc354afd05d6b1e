import Foundation
import HeraldPostgres
import HeraldTestSupport
import Synchronization
import Testing

/// Ordered delivery per key (sql/007): a key's deliveries one at a time, in event order; other keys in parallel.
@Suite struct OrderingTests {
    /// What a receiver saw per key: the highest event it accepted (200) and any event that came too early.
    final class OrderLedger: Sendable {
        private let state = Mutex<(accepted: [String: Int], violations: [String], acceptedCount: Int)>(([:], [], 0))

        /// Called by the receiver for each request: `n` may arrive only after `n - 1` was answered 200.
        func arrived(key: String, n: Int, willAccept: Bool) {
            state.withLock { s in
                let last = s.accepted[key] ?? -1
                if n > last + 1 { s.violations.append("\(key): event \(n) arrived before \(n - 1) was accepted") }
                if willAccept && n > last {
                    s.accepted[key] = n
                    s.acceptedCount += 1
                }
            }
        }

        var violations: [String] { state.withLock { $0.violations } }
        var accepted: [String: Int] { state.withLock { $0.accepted } }
    }

    static func keyAndNumber(_ request: TestReceiver.Request) -> (String, Int)? {
        guard let envelope = try? JSONSerialization.jsonObject(with: Data(request.body)) as? [String: Any],
              let data = envelope["data"] as? [String: Any], let key = data["key"] as? String,
              let n = data["n"] as? Int else { return nil }
        return (key, n)
    }

    /// 100 keys × 30 events, inserted interleaved; two workers; a receiver that fails 30 % of requests and takes
    /// 0–20 ms. For every key the receiver never sees event n+1 before it answered 200 to event n, and every event
    /// is accepted in the end.
    @Test func eachKeyArrivesInOrderThroughFailuresWithTwoWorkers() throws {
        let fixture = try Fixture()
        let ledger = OrderLedger()
        let receiver = try TestReceiver { request, _ in
            guard let (key, n) = OrderingTests.keyAndNumber(request) else { return .status(400) }
            let accept = Double.random(in: 0..<1) >= 0.3
            ledger.arrived(key: key, n: n, willAccept: accept)
            Thread.sleep(forTimeInterval: Double.random(in: 0...0.02))
            return .status(accept ? 200 : 500)
        }
        let config = try fixture.addConfig(url: receiver.url, maxAttempts: 100)
        try fixture.connection.query("UPDATE webhook_configs SET ordering = 'key' WHERE id = $1", [config])
        // Interleaved: n-major, so consecutive rows belong to different keys.
        try fixture.connection.query("""
            INSERT INTO webhook_events (event_type, data, ordering_key)
            SELECT 'contact.updated', json_build_object('key', 'contact:' || k, 'n', n)::jsonb, 'contact:' || k
              FROM generate_series(0, 29) n, generate_series(0, 99) k
             ORDER BY n, k
            """)
        let settings = ["HERALD_BACKOFF_BASE_MS": "50", "HERALD_BACKOFF_MAX_MS": "200", "HERALD_CIRCUIT_THRESHOLD": "1000"]
        _ = try fixture.startWorker(settings)
        _ = try fixture.startWorker(settings)
        #expect(try fixture.waitUntilSettled(timeout: 120))
        #expect(ledger.violations.isEmpty, "\(ledger.violations.prefix(5))")
        #expect(ledger.accepted.count == 100 && ledger.accepted.values.allSatisfy { $0 == 29 })
        #expect(try fixture.count("SELECT count(*) FROM webhook_deliveries WHERE status = 'delivered'") == 3000)
        #expect(try fixture.count("SELECT count(*) FROM webhook_ordering_blocked") == 0)
    }

    /// A head that fails for good does not block its key: the failure is visible, and the next event goes.
    @Test func aHeadThatFailsForGoodReleasesItsKey() throws {
        let fixture = try Fixture()
        let receiver = try TestReceiver { request, _ in
            OrderingTests.keyAndNumber(request)?.1 == 0 ? .status(500) : .status(200)
        }
        let config = try fixture.addConfig(url: receiver.url, maxAttempts: 2)
        try fixture.connection.query("UPDATE webhook_configs SET ordering = 'key' WHERE id = $1", [config])
        for n in 0..<3 {
            try fixture.connection.query("""
                INSERT INTO webhook_events (event_type, data, ordering_key) VALUES ('deal.stage.changed', $1::jsonb, 'deal:7')
                """, [#"{"key": "deal:7", "n": \#(n)}"#])
        }
        // Before any worker runs, all three wait (the first claim makes the oldest the head).
        #expect(try fixture.scalar("SELECT waiting FROM webhook_ordering_blocked") == "3")
        _ = try fixture.startWorker()
        #expect(try fixture.waitUntilSettled())
        let order = receiver.requests.compactMap { OrderingTests.keyAndNumber($0)?.1 }
        #expect(order == [0, 0, 1, 2])
        #expect(try fixture.scalar("""
            SELECT string_agg(d.status, ',' ORDER BY e.event_seq) FROM webhook_deliveries d JOIN webhook_events e ON e.id = d.event_id
            """) == "failed,delivered,delivered")
        let shown = try HeraldProcess.run(["deliveries", "--status", "failed"], environment: ["DATABASE_URL": fixture.database.url])
        #expect(shown.output.contains("failed"))
    }

    /// A worker killed while it holds a key's head: the key resumes after the rescue, still in order.
    @Test func aKeyResumesInOrderAfterTheWorkerHoldingItsHeadIsKilled() throws {
        let fixture = try Fixture()
        let ledger = OrderLedger()
        let hang = Atomic<Bool>(true)
        let receiver = try TestReceiver { request, _ in
            guard let (key, n) = OrderingTests.keyAndNumber(request) else { return .status(400) }
            if n == 0 && hang.load(ordering: .relaxed) {
                ledger.arrived(key: key, n: n, willAccept: false)
                return .hang(seconds: 5)
            }
            ledger.arrived(key: key, n: n, willAccept: true)
            return .status(200)
        }
        let config = try fixture.addConfig(url: receiver.url, maxAttempts: 10)
        try fixture.connection.query("UPDATE webhook_configs SET ordering = 'key' WHERE id = $1", [config])
        try fixture.connection.query("""
            INSERT INTO webhook_events (event_type, data, ordering_key)
            SELECT 'contact.updated', json_build_object('key', 'contact:1', 'n', n)::jsonb, 'contact:1'
              FROM generate_series(0, 9) n ORDER BY n
            """)
        let first = try fixture.startWorker(["HERALD_TIMEOUT_MS": "4000", "HERALD_LEASE_MS": "8000"])
        #expect(eventually { receiver.requests.count == 1 })
        first.kill()
        _ = first.waitForExit(timeout: 5)
        hang.store(false, ordering: .relaxed)
        // Nothing else of the key was sent while its head was held.
        #expect(receiver.requests.count == 1)
        _ = try fixture.startWorker()
        #expect(try fixture.waitUntilSettled(timeout: 30))
        #expect(ledger.violations.isEmpty, "\(ledger.violations)")
        #expect(ledger.accepted["contact:1"] == 9)
        #expect(try fixture.count("SELECT count(*) FROM webhook_logs WHERE outcome = 'lost'") == 1)
    }

    /// An unordered config beside an ordered one is not held back: its deliveries go with full concurrency while
    /// the ordered config's single key goes one at a time.
    @Test func anUnorderedConfigBesideAnOrderedOneIsNotSlowedDown() throws {
        let fixture = try Fixture()
        let unorderedInFlight = PeakConcurrency()
        let slowOrdered = try TestReceiver { _, _ in .delayed(seconds: 0.2, status: 200) }
        // Held 1 s, so that 20 connections have time to open on a loaded machine (and under the 5 s timeout below).
        let unordered = try TestReceiver(responder: unorderedInFlight.responder(holding: 1.0))
        let ordered = try fixture.addConfig(name: "ordered", url: slowOrdered.url)
        try fixture.connection.query("UPDATE webhook_configs SET ordering = 'key' WHERE id = $1", [ordered])
        try fixture.addConfig(name: "unordered", url: unordered.url)
        try fixture.connection.query("""
            INSERT INTO webhook_events (event_type, data, ordering_key)
            SELECT 'contact.updated', json_build_object('n', n)::jsonb, 'contact:1' FROM generate_series(0, 39) n ORDER BY n
            """)
        _ = try fixture.startWorker(["HERALD_TIMEOUT_MS": "5000", "HERALD_LEASE_MS": "10000"])
        // All 40 unordered deliveries are sent at once (1 s each) while the ordered key has sent a few.
        #expect(eventually(timeout: 10) { unordered.requests.count == 40 })
        #expect(slowOrdered.requests.count < 40)
        #expect(unorderedInFlight.peak >= 20)
        // The unordered config's deliveries carry no ordering state at all.
        #expect(try fixture.count("""
            SELECT count(*) FROM webhook_deliveries d JOIN webhook_configs c ON c.id = d.config_id
             WHERE c.name = 'unordered' AND (d.ordering_key IS NOT NULL OR d.ordering_blocked)
            """) == 0)
        #expect(try fixture.waitUntilSettled(timeout: 30))
        // The ordered key went strictly one at a time, in order.
        let order = slowOrdered.requests.compactMap { request -> Int? in
            ((try? JSONSerialization.jsonObject(with: Data(request.body))) as? [String: Any])
                .flatMap { $0["data"] as? [String: Any] }?["n"] as? Int
        }
        #expect(order == Array(0..<40))
    }

    /// A replay is sent when replayed, outside the order: it does not wait for the key's current head, which is
    /// waiting for a retry, and that head does not wait for it.
    @Test func aReplayNeitherWaitsForNorBlocksItsKey() throws {
        let fixture = try Fixture()
        let receiver = try TestReceiver { request, _ in
            OrderingTests.keyAndNumber(request)?.1 == 1 ? .status(500) : .status(200)
        }
        let config = try fixture.addConfig(url: receiver.url, maxAttempts: 100)
        try fixture.connection.query("UPDATE webhook_configs SET ordering = 'key' WHERE id = $1", [config])
        func emit(_ n: Int) throws {
            try fixture.connection.query("""
                INSERT INTO webhook_events (event_type, data, ordering_key) VALUES ('contact.updated', $1::jsonb, 'k')
                """, [#"{"key": "k", "n": \#(n)}"#])
        }
        try emit(0)
        // Retries of event 1 wait a minute: it stays the key's head, and event 2 waits behind it.
        _ = try fixture.startWorker(["HERALD_BACKOFF_BASE_MS": "60000", "HERALD_BACKOFF_MAX_MS": "60000"])
        #expect(try fixture.waitUntilSettled())
        let first = try fixture.scalar("SELECT id FROM webhook_deliveries")!
        try emit(1)
        try emit(2)
        #expect(eventually { receiver.requests.count == 2 })
        #expect(try fixture.scalar("SELECT waiting FROM webhook_ordering_blocked") == "1")
        // Replayed while the head waits: sent at once.
        #expect(try fixture.scalar("SELECT herald_replay(ARRAY[$1]::uuid[])", [first]) == "1")
        #expect(eventually { receiver.requests.count == 3 })
        #expect(OrderingTests.keyAndNumber(receiver.requests[2])?.1 == 0)
        #expect(try eventually { try fixture.scalar("SELECT status FROM webhook_deliveries WHERE id = $1", [first]) == "delivered" })
        // And it changed nothing for the key: event 2 still waits for event 1.
        #expect(try fixture.scalar("SELECT waiting FROM webhook_ordering_blocked") == "1")
    }
}
