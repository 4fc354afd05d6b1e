import Foundation
import HeraldPostgres
import HeraldTestSupport
import Testing

/// `/metrics` moves by the right amounts during a run; `/healthz` follows the database.
@Suite struct MetricsTests {
    func scrape(_ port: Int, _ path: String) throws -> (status: String, body: String) {
        let result = try ChildProcess.run("curl", ["-s", "-w", "\n%{http_code}", "http://127.0.0.1:\(port)\(path)"])
        let lines = result.output.split(separator: "\n", omittingEmptySubsequences: false)
        return (String(lines.last ?? ""), lines.dropLast().joined(separator: "\n"))
    }

    /// The value of one sample line, e.g. `herald_attempts_total{outcome="delivered",status_class="2xx"}`.
    func value(_ metrics: String, _ series: String) -> Double {
        for line in metrics.split(separator: "\n") where line.hasPrefix(series + " ") {
            return Double(line.split(separator: " ").last ?? "") ?? -1
        }
        return 0
    }

    @Test func metricsCountAttemptsAndHealthzFollowsTheDatabase() throws {
        // A cluster of its own: this test stops PostgreSQL.
        let cluster = try OwnCluster()
        defer { cluster.stop() }
        let url = cluster.url
        let connection = try PostgresConnection(url)
        let receiver = try TestReceiver { request, _ in request.bodyText.contains("fail") ? .status(500) : .status(200) }
        try connection.query("INSERT INTO webhook_configs (name, url, events, max_attempts) VALUES ('m', $1, '{*}', 1)", [receiver.url])
        let port = try freeLoopbackPort()
        var environment = Fixture.fastWorker
        environment["DATABASE_URL"] = url
        environment["HERALD_METRICS_ADDR"] = "127.0.0.1:\(port)"
        let worker = try HeraldProcess(["work"], environment: environment)
        defer { worker.kill() }
        #expect(eventually(timeout: 15) { (try? scrape(port, "/healthz").status) == "200" }, "\(worker.output)")
        let before = try scrape(port, "/metrics").body
        let deliveredSeries = #"herald_attempts_total{outcome="delivered",status_class="2xx"}"#
        let failedSeries = #"herald_attempts_total{outcome="failed",status_class="5xx"}"#

        for index in 0..<5 {
            try connection.query("INSERT INTO webhook_events (event_type, data) VALUES ('contact.created', $1::jsonb)",
                                 [index < 3 ? #"{"n": "ok"}"# : #"{"n": "fail"}"#])
        }
        #expect(try eventually {
            try connection.query("SELECT count(*) FROM webhook_deliveries WHERE status = 'pending'").scalar == "0"
        })
        let after = try scrape(port, "/metrics").body
        #expect(value(after, deliveredSeries) - value(before, deliveredSeries) == 3, "\(after)")
        #expect(value(after, failedSeries) - value(before, failedSeries) == 2)
        #expect(value(after, "herald_attempt_duration_seconds_count") == 5)
        #expect(value(after, "herald_deliveries_in_flight") == 0)
        #expect(after.contains("herald_claim_batch_size_bucket"))
        #expect(after.contains("# TYPE herald_attempts_total counter"))

        // PostgreSQL goes away: /healthz says so; it comes back: healthy again.
        try cluster.pause()
        #expect(eventually(timeout: 20) { (try? scrape(port, "/healthz").status) == "503" })
        try cluster.resume()
        #expect(eventually(timeout: 30) { (try? scrape(port, "/healthz").status) == "200" }, "\(worker.output)")
        #expect(value(try scrape(port, "/metrics").body, "herald_reconnects_total") >= 1)
        #expect(try scrape(port, "/nope").status == "404")
    }
}
