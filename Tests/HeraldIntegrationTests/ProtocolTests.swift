import Foundation
import HeraldPostgres
import HeraldTestSupport
import Testing

/// The claim/lease protocol in SQL (sql/004_worker_protocol.sql), driven statement by statement.
@Suite struct ProtocolTests {
    @Test func claimsAreExclusiveLeasedAndFenced() throws {
        let fixture = try Fixture()
        try fixture.addConfig(url: "https://example.com/hook")
        for _ in 0..<10 { try fixture.emit() }
        let a = try fixture.database.connect()
        let b = try fixture.database.connect()
        // Two claims at once: one decides the endpoint, the other skips it without waiting (so the in-flight count
        // each sees is exact); once the first commits, the second takes the rest. Never the same row twice.
        try a.query("BEGIN")
        let first = try a.query("SELECT delivery_id FROM herald_claim(6, '1 minute', 'a')").rows.map { $0[0]! }
        #expect(try b.query("SELECT count(*) FROM herald_claim(6, '1 minute', 'b')").scalar == "0")
        try a.query("COMMIT")
        let second = try b.query("SELECT delivery_id FROM herald_claim(6, '1 minute', 'b')").rows.map { $0[0]! }
        #expect(first.count == 6 && second.count == 4)
        #expect(Set(first).isDisjoint(with: second))
        // Leased rows are not due: nothing left to claim.
        #expect(try b.query("SELECT count(*) FROM herald_claim(10, '1 minute', 'b')").scalar == "0")
        #expect(try fixture.count("SELECT count(*) FROM webhook_deliveries WHERE attempts = 1 AND lease_token IS NOT NULL") == 10)

        // Expire one lease; rescue logs the lost attempt and makes it due; a new claim gets a new token.
        let victim = first[0]
        let oldToken = try fixture.scalar("SELECT lease_token FROM webhook_deliveries WHERE id = $1", [victim])!
        try fixture.connection.query("UPDATE webhook_deliveries SET next_attempt_at = now() - interval '1 second' WHERE id = $1", [victim])
        #expect(try fixture.scalar("SELECT herald_rescue(5, 100)") == "1")
        let reclaimed = try b.query("SELECT delivery_id, lease_token, attempt FROM herald_claim(10, '1 minute', 'b')").rows
        #expect(reclaimed.count == 1 && reclaimed[0][0] == victim && reclaimed[0][1] != oldToken && reclaimed[0][2] == "2")

        // The old holder's late result is fenced out (another claim holds the delivery now): it is only logged, in
        // place of the 'lost' row (one row per attempt, keyed by its lease). The new holder's is applied.
        func complete(_ token: String, outcome: String, status: String) throws -> String? {
            let ids = try fixture.connection.query("SELECT event_id, config_id FROM webhook_deliveries WHERE id = $1", [victim]).rows[0]
            return try fixture.scalar("""
                SELECT applied FROM herald_complete(ARRAY[$1]::uuid[], ARRAY[$2]::uuid[], ARRAY[$3]::uuid[], ARRAY[$4]::uuid[],
                    ARRAY['contact.created'], ARRAY[1], ARRAY[$5], ARRAY[NULL]::bigint[], ARRAY[$6]::integer[],
                    ARRAY[NULL]::text[], ARRAY[NULL]::text[], ARRAY[5], ARRAY['{}'], 'test')
                """, [victim, token, ids[0], ids[1], outcome, status])
        }
        #expect(try complete(oldToken, outcome: "failed", status: "500") == "0")
        #expect(try fixture.scalar("SELECT status FROM webhook_deliveries WHERE id = $1", [victim]) == "pending")
        #expect(try complete(reclaimed[0][1]!, outcome: "delivered", status: "200") == "1")
        #expect(try fixture.scalar("SELECT status || ' ' || last_response_status FROM webhook_deliveries WHERE id = $1", [victim]) == "delivered 200")
        #expect(try fixture.scalar("SELECT string_agg(outcome, ',' ORDER BY id) FROM webhook_logs WHERE delivery_id = $1", [victim]) == "failed,delivered")
    }

    @Test func rescueFailsADeliveryWhoseLastAttemptWasLost() throws {
        let fixture = try Fixture()
        try fixture.addConfig(url: "https://example.com/hook", maxAttempts: 1)
        try fixture.emit()
        #expect(try fixture.count("SELECT count(*) FROM herald_claim(10, '1 minute', 'gone')") == 1)
        try fixture.connection.query("UPDATE webhook_deliveries SET next_attempt_at = now() - interval '1 second'")
        #expect(try fixture.scalar("SELECT herald_rescue(5, 100)") == "1")
        #expect(try fixture.scalar("SELECT status || ' ' || attempts FROM webhook_deliveries") == "failed 1")
        #expect(try fixture.scalar("SELECT outcome FROM webhook_logs") == "lost")
        #expect(try fixture.count("SELECT count(*) FROM herald_claim(10, '1 minute', 'b')") == 0)
    }
}

extension ProtocolTests {
    @Test func firstAttemptsAndRetriesShareAClaim() throws {
        let fixture = try Fixture()
        try fixture.addConfig(url: "https://example.com/hook")
        for _ in 0..<10 { try fixture.emit() }
        // Half of them are old retries that came due long ago; FIFO alone would pick only those.
        try fixture.connection.query("""
            UPDATE webhook_deliveries SET attempts = 3, next_attempt_at = now() - interval '1 hour'
             WHERE id IN (SELECT id FROM webhook_deliveries ORDER BY id LIMIT 5)
            """)
        let claimed = try fixture.connection.query("SELECT attempt FROM herald_claim(4, '1 minute', 'w')").rows.map { $0[0]! }
        #expect(claimed.sorted() == ["1", "1", "4", "4"])
    }
}
