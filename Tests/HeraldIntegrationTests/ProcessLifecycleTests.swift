import Foundation
import HeraldPostgres
import HeraldTestSupport
import Testing

/// Workers as processes: killed, stopped, several at once, and PostgreSQL restarting under them.
@Suite struct ProcessLifecycleTests {
    @Test func killedWorkersDeliveryIsCompletedByAnotherAfterTheLease() throws {
        let fixture = try Fixture()
        let receiver = try TestReceiver { _, index in index == 0 ? .hang(seconds: 7) : .status(200) }
        try fixture.addConfig(url: receiver.url)
        let event = try fixture.emit()
        // Killed well before its request could time out (which would write a retry and deliver it itself).
        let first = try fixture.startWorker(["HERALD_WORKER_ID": "doomed", "HERALD_TIMEOUT_MS": "5000", "HERALD_LEASE_MS": "10000"])
        #expect(eventually { receiver.requests.count == 1 })
        first.kill()  // SIGKILL, mid-request
        #expect(try fixture.scalar("SELECT leased_by FROM webhook_deliveries WHERE event_id = $1", [event]) == "doomed")

        _ = try fixture.startWorker(["HERALD_WORKER_ID": "rescuer"])
        #expect(try fixture.waitUntilSettled(timeout: 30))
        let row = try fixture.connection.query(
            "SELECT id, status, attempts, lease_token FROM webhook_deliveries WHERE event_id = $1", [event]).rows[0]
        #expect(row[1] == "delivered" && row[2] == "2" && row[3] == nil)
        let logs = try fixture.logs(of: row[0]!)
        #expect(logs.map { $0["outcome"] ?? nil } == ["lost", "delivered"])
        #expect(logs.first?["error"]??.contains("lease held by doomed expired") == true)
        #expect(receiver.requests.count == 2)
        #expect(receiver.requests.map { $0.headers["x-webhook-id"] }.allSatisfy { $0 == row[0] })
    }

    @Test func anOpenFileLimitTooLowForTheConcurrencyLowersItAndSaysSo() throws {
        let fixture = try Fixture()
        let receiver = try TestReceiver { _, _ in .status(200) }
        try fixture.addConfig(url: receiver.url)
        for _ in 0..<5 { try fixture.emit() }
        // Hard limit 300: the default concurrency (1,024) cannot have a socket each.
        let capped = try fixture.startWorker(["HERALD_CONCURRENCY": "1024"], launcher: ["/usr/bin/prlimit", "--nofile=300:300"])
        #expect(try fixture.waitUntilSettled(timeout: 30))
        #expect(try fixture.count("SELECT count(*) FROM webhook_deliveries WHERE status = 'delivered'") == 5)
        #expect(capped.output.contains("the open-file limit is too low for HERALD_CONCURRENCY"), "\(capped.output)")
        #expect(capped.output.contains("concurrency=236 concurrency.asked=1024"), "\(capped.output)")
        capped.kill()
        // Soft limit 100 under a hard limit of 5,000: raised to fit, nothing lowered.
        let raised = try fixture.startWorker(["HERALD_CONCURRENCY": "1024"], launcher: ["/usr/bin/prlimit", "--nofile=100:5000"])
        #expect(eventually { raised.output.contains("starting") })
        let limits = try String(contentsOfFile: "/proc/\(raised.pid)/limits", encoding: .utf8)
        let openFiles = limits.split(separator: "\n").first { $0.hasPrefix("Max open files") }
            .map { $0.split(separator: " ", omittingEmptySubsequences: true) } ?? []
        #expect(openFiles.count >= 5 && openFiles[3] == "1088", "\(limits)")  // 1,024 + 64
        #expect(!raised.output.contains("open-file limit is too low"))
    }

    @Test func sigtermFinishesRequestsInFlightAndExitsZero() throws {
        let fixture = try Fixture()
        let receiver = try TestReceiver { _, _ in .delayed(seconds: 0.8, status: 200) }
        try fixture.addConfig(url: receiver.url)
        for _ in 0..<3 { try fixture.emit() }
        let worker = try fixture.startWorker()
        #expect(eventually { receiver.requests.count == 3 })
        worker.terminate()
        #expect(worker.waitForExit(timeout: 10))
        #expect(worker.terminationStatus == 0, "\(worker.output)")
        // Every request in flight at SIGTERM finished and was recorded before the exit.
        #expect(try fixture.count("SELECT count(*) FROM webhook_deliveries WHERE status = 'delivered' AND lease_token IS NULL") == 3)
        #expect(try fixture.count("SELECT count(*) FROM webhook_logs WHERE outcome = 'delivered'") == 3)
        #expect(worker.output.contains("stopping: no new claims"))
    }

    @Test func threeWorkersDrainFiveThousandDeliveriesExactlyOnce() throws {
        let fixture = try Fixture()
        let receiver = try TestReceiver()
        try fixture.addConfig(url: receiver.url, secret: "s")
        try fixture.connection.query("""
            INSERT INTO webhook_events (event_type, data)
            SELECT 'message.sent', jsonb_build_object('n', i) FROM generate_series(1, 5000) AS i
            """)
        // A long lease: this checks that claims are exclusive, not the rescue, which a worker starved of CPU for
        // a few seconds on a loaded machine would otherwise bring in (a second send, a lost row).
        let workers = try (1...3).map {
            try fixture.startWorker(["HERALD_WORKER_ID": "w\($0)", "HERALD_CONCURRENCY": "32", "HERALD_LEASE_MS": "60000"])
        }
        #expect(try fixture.waitUntilSettled(timeout: 120))
        for worker in workers { worker.terminate() }
        for worker in workers {
            #expect(worker.waitForExit(timeout: 10))
            #expect(worker.terminationStatus == 0)
        }
        #expect(try fixture.count("SELECT count(*) FROM webhook_deliveries WHERE status = 'delivered' AND attempts = 1") == 5000)
        // Each (event, config) seen once by the receiver, and one attempt logged for each.
        let ids = receiver.requests.compactMap { $0.headers["x-webhook-id"] }
        #expect(ids.count == 5000)
        #expect(Set(ids).count == 5000)
        #expect(try fixture.count("SELECT count(*) FROM webhook_logs") == 5000)
        #expect(try fixture.count("SELECT count(DISTINCT delivery_id) FROM webhook_logs") == 5000)
        // The work was shared.
        #expect(try fixture.count("SELECT count(DISTINCT worker) FROM webhook_logs") >= 2)
    }

    @Test func survivesPostgresRestartingUnderIt() throws {
        let cluster = try OwnCluster()
        defer { cluster.stop() }
        let url = cluster.url
        let connection = try PostgresConnection(url)
        let receiver = try TestReceiver()
        try connection.query("INSERT INTO webhook_configs (name, url, events) VALUES ('r', $1, '{*}')", [receiver.url])
        try connection.query("INSERT INTO webhook_events (event_type, data) VALUES ('contact.created', '{\"n\": 1}')")
        var environment = Fixture.fastWorker
        environment["DATABASE_URL"] = url
        let worker = try HeraldProcess(["work"], environment: environment)
        defer { worker.kill() }
        #expect(eventually { receiver.requests.count == 1 })

        try cluster.restart()
        let after = try PostgresConnection(url)
        try after.query("INSERT INTO webhook_events (event_type, data) VALUES ('contact.created', '{\"n\": 2}')")
        #expect(eventually(timeout: 30) { receiver.requests.count == 2 })
        #expect(try eventually { try after.query("SELECT count(*) FROM webhook_deliveries WHERE status = 'delivered'").scalar == "2" })
        #expect(worker.isRunning)
        #expect(worker.output.contains("reconnected to PostgreSQL") || worker.output.contains("lost the PostgreSQL connection"),
                "\(worker.output)")
    }
}

extension ProcessLifecycleTests {
    @Test func survivesPostgresGoingAwayForMoreThanAMinute() throws {
        let cluster = try OwnCluster()
        defer { cluster.stop() }
        let connection = try PostgresConnection(cluster.url)
        let receiver = try TestReceiver()
        try connection.query("INSERT INTO webhook_configs (name, url, events) VALUES ('r', $1, '{*}')", [receiver.url])
        var environment = Fixture.fastWorker
        environment["DATABASE_URL"] = cluster.url
        let worker = try HeraldProcess(["work"], environment: environment)
        defer { worker.kill() }
        try connection.query("INSERT INTO webhook_events (event_type, data) VALUES ('contact.created', '{\"n\": 1}')")
        #expect(eventually { receiver.requests.count == 1 })
        connection.close()

        try cluster.pause()
        Thread.sleep(forTimeInterval: 65)
        #expect(worker.isRunning, "the worker gave up: \(worker.output)")
        try cluster.resume()

        let after = try PostgresConnection(cluster.url)
        try after.query("INSERT INTO webhook_events (event_type, data) VALUES ('contact.created', '{\"n\": 2}')")
        #expect(eventually(timeout: 30) { receiver.requests.count == 2 })
        #expect(try eventually { try after.query("SELECT count(*) FROM webhook_deliveries WHERE status = 'delivered'").scalar == "2" })
        // It kept trying with a capped backoff, and said so.
        #expect(worker.output.contains("PostgreSQL unavailable; retrying"))
        #expect(worker.output.contains("retry_in=5s"))
        #expect(worker.output.contains("reconnected to PostgreSQL"))
    }
}
