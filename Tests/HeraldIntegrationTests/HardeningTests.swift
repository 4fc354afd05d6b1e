import Foundation
import HeraldPostgres
import HeraldTestSupport
import Synchronization
import Testing

/// Secrets stay secret, and the chaos test holds at a small size.
@Suite struct HardeningTests {
    @Test func secretNeverAppearsInOutputLogsOrDatabaseHistory() throws {
        let fixture = try Fixture()
        let secret = "S3cr3t-canary-\(UUID().uuidString)"
        let receiver = try TestReceiver { _, index in index == 0 ? .status(500, body: "no") : .status(200) }
        let config = try fixture.addConfig(name: "guarded", url: receiver.url, secret: secret)
        try fixture.emit()
        let worker = try fixture.startWorker(["HERALD_LOG_LEVEL": "trace"])
        #expect(try fixture.waitUntilSettled())
        worker.terminate()
        #expect(worker.waitForExit(timeout: 10))
        var outputs = [worker.output]
        let environment = ["DATABASE_URL": fixture.database.url]
        for arguments in [["config", "list"], ["config", "list", "--json"], ["config", "show", config],
                          ["config", "show", config, "--json"], ["logs"], ["logs", "--json"], ["deliveries", "--json"],
                          ["stats", "--json"], ["show", try fixture.scalar("SELECT id FROM webhook_deliveries")!],
                          ["show", try fixture.scalar("SELECT id FROM webhook_deliveries")!, "--json"]] {
            let result = try HeraldProcess.run(arguments, environment: environment)
            #expect(result.status == 0, "\(arguments): \(result.output)")
            outputs.append(result.output)
        }
        for output in outputs {
            #expect(!output.contains(secret))
        }
        #expect(outputs.joined().contains("guarded"))
        #expect(try fixture.count("SELECT count(*) FROM webhook_logs l WHERE l::text LIKE '%' || $1 || '%'", [secret]) == 0)
        #expect(try fixture.count("SELECT count(*) FROM webhook_logs") == 2)
        // The worker's start-up line shows the database URL with its password masked.
        let password = try #require(URL(string: fixture.database.url)?.password)
        #expect(!worker.output.contains(password))
        #expect(worker.output.contains(":***@"))
    }

    @Test func chaosAtSmallSizeLosesNothing() throws {
        let root = try TestEnvironment.projectRoot()
        let result = try ChildProcess.run("python3", [root.appendingPathComponent("scripts/chaos.py").path, "--quick"],
                                          timeout: 300)
        #expect(result.status == 0, "\(result.output)")
        #expect(result.output.contains("lost            0"))
        #expect(result.output.contains("RESULT          PASS"))
    }
}

/// Endpoints that say they are gone, and TLS endpoints Herald should not trust.
@Suite struct EndpointTests {
    @Test func goneEndpointIsDisabledWithAReasonAndNotRetried() throws {
        let fixture = try Fixture()
        let receiver = try TestReceiver { _, _ in .status(410, body: "gone") }
        let config = try fixture.addConfig(name: "retired", url: receiver.url)
        try fixture.emit()
        _ = try fixture.startWorker()
        #expect(try fixture.waitUntilSettled())
        #expect(receiver.requests.count == 1)
        #expect(try fixture.scalar("SELECT status || ' ' || attempts FROM webhook_deliveries") == "failed 1")
        let row = try fixture.connection.query(
            "SELECT is_active, disabled_reason, disabled_at IS NOT NULL FROM webhook_configs WHERE id = $1", [config]).rows[0]
        #expect(row[0] == "f" && row[1]?.contains("410 Gone") == true && row[2] == "t")
        // No new deliveries for it; enabling it again clears the reason.
        try fixture.emit()
        #expect(try fixture.count("SELECT count(*) FROM webhook_deliveries") == 1)
        let shown = try HeraldProcess.run(["config", "show", "retired"], environment: ["DATABASE_URL": fixture.database.url])
        #expect(shown.output.contains("410 Gone"))
        try fixture.connection.query("UPDATE webhook_configs SET is_active = true WHERE id = $1", [config])
        #expect(try fixture.scalar("SELECT disabled_reason IS NULL FROM webhook_configs WHERE id = $1", [config]) == "t")
    }

    @Test func untrustedCertificateFailsClearlyAndACAFileFixesIt() throws {
        let fixture = try Fixture()
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("tls-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let cert = folder.appendingPathComponent("cert.pem").path
        let key = folder.appendingPathComponent("key.pem").path
        _ = try runTool("openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"])
        let port = try freeLoopbackPort()
        let server = try ChildProcess(
            executable: "python3",
            arguments: ["-c", """
                import http.server, ssl, sys
                class H(http.server.BaseHTTPRequestHandler):
                    protocol_version = 'HTTP/1.1'
                    def do_POST(self):
                        self.rfile.read(int(self.headers['Content-Length']))
                        self.send_response(200); self.send_header('Content-Length', '2'); self.end_headers(); self.wfile.write(b'ok')
                    def log_message(self, *a): pass
                s = http.server.HTTPServer(('127.0.0.1', int(sys.argv[1])), H)
                c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); c.load_cert_chain(sys.argv[2], sys.argv[3])
                s.socket = c.wrap_socket(s.socket, server_side=True)
                s.serve_forever()
                """, String(port), cert, key],
            environment: ProcessInfo.processInfo.environment, outputPath: folder.appendingPathComponent("server.log").path)
        defer { server.signal(SIGKILL); _ = server.waitForExit(timeout: 5) }
        #expect(eventually(timeout: 10) { (try? connectLoopback(port)) == true })

        try fixture.addConfig(name: "tls", url: "https://127.0.0.1:\(port)/hook", maxAttempts: 1)
        try fixture.emit()
        let strict = try fixture.startWorker()
        #expect(try fixture.waitUntilSettled())
        let error = try fixture.scalar("SELECT last_error FROM webhook_deliveries")
        #expect(error?.hasPrefix("TLS error:") == true, "\(String(describing: error))")
        strict.terminate()
        #expect(strict.waitForExit(timeout: 10))

        try fixture.connection.query("DELETE FROM webhook_events")
        try fixture.emit()
        _ = try fixture.startWorker(["HERALD_CA_FILE": cert])
        #expect(try fixture.waitUntilSettled())
        #expect(try fixture.scalar("SELECT status FROM webhook_deliveries") == "delivered")
    }
}

/// Hostile receivers and unusual but valid input: each has a defined, tested behaviour.
@Suite struct HostileInputTests {
    @Test func tricklingReceiverIsCutAtTheTotalTimeout() throws {
        let fixture = try Fixture()
        let receiver = try TestReceiver { _, index in index == 0 ? .trickle(interval: 0.05) : .status(200) }
        try fixture.addConfig(url: receiver.url)
        try fixture.emit()
        _ = try fixture.startWorker(["HERALD_TIMEOUT_MS": "700"])
        #expect(try fixture.waitUntilSettled())
        let logs = try fixture.connection.query("SELECT outcome, error, duration_ms FROM webhook_logs ORDER BY id").rows
        #expect(logs.count == 2)
        #expect(logs.first?[0] == "retry")
        #expect(logs.first?[1]?.contains("timeout after 700 ms") == true, "\(logs)")
        // Cut at the total timeout, not later (generous bound: the attempt is not timed, only bounded).
        #expect(Int(logs.first?[2] ?? "0")! < 5000)
    }

    @Test func ipv6LoopbackLiteralIsRefusedByThePolicy() throws {
        let fixture = try Fixture()
        try fixture.addConfig(url: "http://[::1]:9/hook", maxAttempts: 1)
        try fixture.emit()
        _ = try fixture.startWorker(["HERALD_ALLOWED_NETWORKS": "127.0.0.0/8"])
        #expect(try fixture.waitUntilSettled())
        #expect(try fixture.scalar("SELECT last_error FROM webhook_deliveries")?.contains("::1 is a loopback address") == true)
    }

    @Test func internationalisedHostNamesAreAcceptedAsConfigs() throws {
        let fixture = try Fixture()
        try fixture.addConfig(url: "https://bücher.example/webhooks")
        let created = try HeraldProcess.run(["config", "create", "--name", "idn", "--url", "https://例え.テスト/hook",
                                             "--events", "*"], environment: ["DATABASE_URL": fixture.database.url])
        #expect(created.status == 0, "\(created.output)")
        #expect(try fixture.count("SELECT count(*) FROM webhook_configs") == 2)
    }

    @Test func deeplyNestedDataIsDeliveredIntact() throws {
        let fixture = try Fixture()
        let receiver = try TestReceiver()
        try fixture.addConfig(url: receiver.url)
        let depth = 2000
        let data = String(repeating: #"{"a": "#, count: depth) + "1" + String(repeating: "}", count: depth)
        try fixture.emit(data: data)
        _ = try fixture.startWorker()
        #expect(try fixture.waitUntilSettled())
        let body = try #require(receiver.requests.first?.bodyText)
        #expect(body.hasSuffix(String(repeating: #"{"a":"#, count: 3) + "1" + String(repeating: "}", count: depth + 1)))
    }

    @Test func configPointingAtAPrivateAddressWarnsAtCreation() throws {
        let fixture = try Fixture()
        let created = try HeraldProcess.run(["config", "create", "--name", "internal", "--url", "http://localhost:8080/hook",
                                             "--events", "*"], environment: ["DATABASE_URL": fixture.database.url])
        #expect(created.status == 0)
        #expect(created.output.contains("warning: localhost resolves to"), "\(created.output)")
        #expect(created.output.contains("a loopback address"))
        let public_ = try HeraldProcess.run(["config", "create", "--name", "ip", "--url", "https://8.8.8.8/hook",
                                             "--events", "*"], environment: ["DATABASE_URL": fixture.database.url])
        #expect(!public_.output.contains("resolves to"))
    }
}

@Suite struct LoggingTests {
    @Test func jsonLogsAreOneObjectPerLineWithDottedKeys() throws {
        let fixture = try Fixture()
        let receiver = try TestReceiver { _, _ in .status(500) }
        try fixture.addConfig(url: receiver.url, secret: "json-log-secret", maxAttempts: 1)
        try fixture.emit()
        let worker = try fixture.startWorker(["HERALD_LOG_FORMAT": "json"])
        #expect(try fixture.waitUntilSettled())
        worker.terminate()
        #expect(worker.waitForExit(timeout: 10))
        let lines = worker.output.split(separator: "\n")
        #expect(lines.count >= 3)
        var sawAttempt = false
        for line in lines {
            let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], "\(line)")
            #expect(object["time"] != nil && object["level"] != nil && object["message"] != nil)
            if object["message"] as? String == "attempt finished" {
                sawAttempt = true
                #expect(object["delivery.id"] != nil && object["config.id"] != nil && object["event.type"] != nil)
            }
        }
        #expect(sawAttempt)
        #expect(!worker.output.contains("json-log-secret"))
        let bad = try fixture.startWorker(["HERALD_LOG_FORMAT": "xml"])
        #expect(bad.waitForExit(timeout: 10) && bad.terminationStatus != 0)
        #expect(bad.output.contains("HERALD_LOG_FORMAT=xml is not a format"))
    }
}

/// Endpoint health and fairness: a failing or slow endpoint is paused or capped, never hammered, and others go on.
@Suite struct EndpointHealthTests {
    @Test func circuitOpensPausesThenAProbeClosesIt() throws {
        let fixture = try Fixture()
        let healthy = Mutex(false)
        // The first request once the endpoint is healthy again is held for 2 s, so the test can look at what
        // else is in flight meanwhile.
        let probeIndex = Mutex<Int?>(nil)
        let receiver = try TestReceiver { _, index in
            guard healthy.withLock({ $0 }) else { return .status(503) }
            let isProbe = probeIndex.withLock { probe in
                if probe == nil { probe = index }
                return probe == index
            }
            return isProbe ? .delayed(seconds: 2, status: 200) : .status(200)
        }
        let config = try fixture.addConfig(name: "flaky", url: receiver.url, maxAttempts: 100)
        for _ in 0..<10 { try fixture.emit() }
        // A cool-down well past the 0.8 s looked at below, and a request timeout past the probe's 2 s hold, so
        // neither window depends on how quickly a loaded machine gets to each check.
        _ = try fixture.startWorker(["HERALD_CIRCUIT_THRESHOLD": "3", "HERALD_CIRCUIT_COOLDOWN_MS": "4000",
                                     "HERALD_BACKOFF_BASE_MS": "20", "HERALD_BACKOFF_MAX_MS": "50",
                                     "HERALD_TIMEOUT_MS": "5000", "HERALD_LEASE_MS": "10000"])
        #expect(try eventually {
            try fixture.scalar("SELECT circuit_open_until > now() FROM webhook_configs WHERE id = $1", [config]) == "t"
        })
        // While open: retries come due within 50 ms, yet nothing is sent.
        let before = receiver.requests.count
        Thread.sleep(forTimeInterval: 0.8)
        #expect(receiver.requests.count == before, "requests while the circuit was open")
        #expect(try fixture.count("SELECT consecutive_failures FROM webhook_configs") >= 3)
        #expect(try fixture.count("SELECT count(*) FROM webhook_deliveries WHERE status = 'failed'") == 0)

        healthy.withLock { $0 = true }
        // After the pause a single probe goes out: while it is held, nothing else is in flight or sent.
        #expect(eventually(timeout: 30) { probeIndex.withLock { $0 } != nil })
        let probe = try #require(probeIndex.withLock { $0 })
        #expect(try fixture.count("SELECT count(*) FROM webhook_deliveries WHERE lease_token IS NOT NULL") == 1)
        #expect(receiver.requests.count == probe + 1, "requests sent beside the probe")
        #expect(try fixture.waitUntilSettled(timeout: 30))
        #expect(try fixture.count("SELECT count(*) FROM webhook_deliveries WHERE status = 'delivered'") == 10)
        let health = try fixture.connection.query(
            "SELECT consecutive_failures, circuit_open_until, failing_since, is_active FROM webhook_configs").rows[0]
        #expect(health == ["0", nil, nil, "t"])
        #expect(receiver.requests.count - before >= 10)
    }

    @Test func slowEndpointIsCappedAndOthersKeepFlowing() throws {
        let fixture = try Fixture()
        // The cap is on requests at once, as the receiver sees them (a lease whose answer came back but is not
        // written yet no longer counts: sql/016).
        let slowInFlight = PeakConcurrency()
        let slow = try TestReceiver(responder: slowInFlight.responder(holding: 0.4))
        let fast = try TestReceiver()
        let slowConfig = try fixture.addConfig(name: "slow", url: slow.url, events: "{contact.created}")
        try fixture.connection.query("UPDATE webhook_configs SET max_in_flight = 3 WHERE id = $1", [slowConfig])
        let fastConfig = try fixture.addConfig(name: "fast", url: fast.url, events: "{contact.created}")
        for _ in 0..<30 { try fixture.emit() }
        _ = try fixture.startWorker(["HERALD_CONCURRENCY": "64"])
        let fastDone = try eventually(timeout: 20) {
            try fixture.count("SELECT count(*) FROM webhook_deliveries WHERE config_id = $1 AND status = 'delivered'",
                              [fastConfig]) == 30
        }
        #expect(fastDone)
        // The fast endpoint finished while the slow one was still working through its backlog, 3 at a time.
        #expect(try fixture.count("SELECT count(*) FROM webhook_deliveries WHERE config_id = $1 AND status = 'pending'", [slowConfig]) > 0)
        #expect(try fixture.waitUntilSettled(timeout: 30))
        #expect(slowInFlight.peak == 3, "most requests at once at the slow endpoint: \(slowInFlight.peak)")
    }

    @Test func endpointFailingForTooLongIsDisabledWithAReason() throws {
        let fixture = try Fixture()
        let receiver = try TestReceiver { _, _ in .status(500) }
        let config = try fixture.addConfig(name: "dead", url: receiver.url, maxAttempts: 100)
        for _ in 0..<3 { try fixture.emit() }
        _ = try fixture.startWorker(["HERALD_DISABLE_AFTER": "1s", "HERALD_CIRCUIT_THRESHOLD": "1000",
                                     "HERALD_BACKOFF_BASE_MS": "100", "HERALD_BACKOFF_MAX_MS": "200"])
        #expect(try eventually(timeout: 20) {
            try fixture.scalar("SELECT is_active FROM webhook_configs WHERE id = $1", [config]) == "f"
        })
        let reason = try fixture.scalar("SELECT disabled_reason FROM webhook_configs WHERE id = $1", [config])
        #expect(reason?.contains("every attempt failed since") == true, "\(String(describing: reason))")
        // Its queued deliveries end visibly (failed, replayable), none is lost.
        #expect(try fixture.waitUntilSettled(timeout: 20))
        #expect(try fixture.count("SELECT count(*) FROM webhook_deliveries WHERE status = 'failed'") == 3)
    }
}

