import Foundation
import HeraldPostgres
import HeraldTestSupport
import Testing

/// `herald work` end to end: real PostgreSQL, real HTTP receivers on 127.0.0.1, the built binary.
@Suite struct DeliveryTests {
    @Test func deliversTheDocumentedRequestToSubscribersOnly() throws {
        let fixture = try Fixture()
        let subscribed = try TestReceiver()
        let otherOrganization = try TestReceiver()
        let inactive = try TestReceiver()
        let unsubscribed = try TestReceiver()
        let org = UUID().uuidString.lowercased()
        let secret = "whsec-test-ünïcode-secret"
        try fixture.addConfig(name: "subscribed", url: subscribed.url + "/webhooks", events: "{contact.created}",
                              secret: secret, organization: org)
        try fixture.addConfig(name: "other org", url: otherOrganization.url, events: "{*}",
                              organization: UUID().uuidString)
        try fixture.addConfig(name: "inactive", url: inactive.url, events: "{*}", organization: org, active: false)
        try fixture.addConfig(name: "unsubscribed", url: unsubscribed.url, events: "{deal.created}", organization: org)
        let data = #"{"id": "c-1", "first_name": "Zoë \"Z\" O'Neil", "notes": "line1\nline2\ttab \\ back", "tags": ["a", "b"], "score": 42, "vip": true, "manager": null, "nested": {"deep": {"x": -7}}, "emoji": "🎉"}"#
        let event = try fixture.emit("contact.created", data: data, organization: org)
        let worker = try fixture.startWorker()

        #expect(try fixture.waitUntilSettled())
        #expect(subscribed.requests.count == 1)
        let request = try #require(subscribed.requests.first)
        #expect(request.method == "POST")
        #expect(request.path == "/webhooks")
        #expect(request.headers["content-type"] == "application/json")
        #expect(request.headers["x-webhook-event"] == "contact.created")
        #expect(request.headers["user-agent"]?.hasPrefix("Herald/") == true)
        let occurredAt = try #require(try fixture.scalar(
            "SELECT to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') FROM webhook_events WHERE id = $1", [event]))
        #expect(request.headers["x-webhook-timestamp"] == occurredAt)
        let deliveryID = try #require(try fixture.scalar("SELECT id FROM webhook_deliveries WHERE event_id = $1", [event]))
        #expect(request.headers["x-webhook-id"] == deliveryID)

        // The exact body: compact, documented field order, data as the producer wrote it.
        let expectedBody = #"{"event":"contact.created","timestamp":"\#(occurredAt)","data":{"id":"c-1","vip":true,"tags":["a","b"],"emoji":"🎉","notes":"line1\nline2\ttab \\ back","score":42,"nested":{"deep":{"x":-7}},"manager":null,"first_name":"Zoë \"Z\" O'Neil"}}"#
        #expect(request.bodyText == expectedBody)
        // What the documented Express receiver does: JSON.stringify(JSON.parse(body)) must give the same bytes.
        let restringified = try runTool("node", ["-e", "let s='';process.stdin.on('data',d=>s+=d).on('end',()=>process.stdout.write(JSON.stringify(JSON.parse(s))))"], input: request.body)
        #expect(restringified == request.bodyText)

        // The signature, checked by two independent HMAC implementations.
        let signature = try #require(request.headers["x-webhook-signature"])
        #expect(signature.count == 64 && signature == signature.lowercased())
        let openssl = try runTool("openssl", ["dgst", "-sha256", "-hmac", secret, "-r"], input: request.body)
        #expect(openssl.split(separator: " ").first.map(String.init) == signature)
        let python = try runTool("python3", ["-c", "import hmac,hashlib,sys; print(hmac.new(sys.argv[1].encode(), sys.stdin.buffer.read(), hashlib.sha256).hexdigest())", secret], input: request.body)
        #expect(python == signature)

        // The attempt is logged with the exact payload.
        let logs = try fixture.logs(of: deliveryID)
        #expect(logs.count == 1)
        #expect(logs.first?["outcome"] == "delivered")
        #expect(logs.first?["response_status"] == "200")
        #expect(logs.first?["payload"] == expectedBody)
        #expect(logs.first?["response_body"] == "ok")

        // Nobody else got anything, and no delivery rows exist for them.
        #expect(otherOrganization.requests.isEmpty && inactive.requests.isEmpty && unsubscribed.requests.isEmpty)
        #expect(try fixture.count("SELECT count(*) FROM webhook_deliveries") == 1)
        worker.terminate()
        #expect(worker.waitForExit(timeout: 10))
        #expect(worker.terminationStatus == 0)
        #expect(!worker.output.contains(secret))
    }

    @Test func unsignedWhenNoSecret() throws {
        let fixture = try Fixture()
        let receiver = try TestReceiver()
        try fixture.addConfig(url: receiver.url)
        try fixture.emit()
        _ = try fixture.startWorker()
        #expect(try fixture.waitUntilSettled())
        #expect(receiver.requests.count == 1)
        #expect(receiver.requests.first?.headers["x-webhook-signature"] == nil)
    }

    @Test func retriesAFailureAndATimeoutThenDelivers() throws {
        let fixture = try Fixture()
        let receiver = try TestReceiver { _, index in
            switch index {
            case 0: .status(500, body: "boom")
            case 1: .hang(seconds: 3)
            default: .status(200, body: "fine")
            }
        }
        try fixture.addConfig(url: receiver.url)
        let event = try fixture.emit()
        _ = try fixture.startWorker()
        #expect(try fixture.waitUntilSettled())
        let delivery = try #require(try fixture.scalar("SELECT id FROM webhook_deliveries WHERE event_id = $1", [event]))
        #expect(try fixture.scalar("SELECT status || '/' || attempts FROM webhook_deliveries WHERE id = $1", [delivery]) == "delivered/3")
        let logs = try fixture.logs(of: delivery)
        #expect(logs.count == 3)
        #expect(logs.map { $0["outcome"] ?? nil } == ["retry", "retry", "delivered"])
        #expect(logs.map { $0["response_status"] ?? nil } == ["500", nil, "200"])
        #expect(logs[0]["error"]??.contains("HTTP 500") == true)
        #expect(logs[0]["response_body"] == "boom")
        #expect(logs[1]["error"]??.contains("timeout after 1000 ms") == true)
        #expect(logs[2]["error"] == .some(nil))
        // The same body every time, and each attempt later than the one before, by at least the backoff.
        let requests = receiver.requests
        #expect(requests.count == 3)
        #expect(Set(requests.map(\.bodyText)).count == 1)
        #expect(Set(requests.map { $0.headers["x-webhook-id"] }).count == 1)
        #expect(requests.map { $0.headers["x-webhook-attempt"] } == ["1", "2", "3"])
        #expect(requests[1].receivedAt.timeIntervalSince(requests[0].receivedAt) >= 0.08)
        #expect(requests[2].receivedAt.timeIntervalSince(requests[1].receivedAt) >= 1.0)  // includes the 1 s timeout
        let times = try fixture.connection.query(
            "SELECT created_at FROM webhook_logs WHERE delivery_id = $1 ORDER BY attempt", [delivery]).rows.map { $0[0]! }
        #expect(times == times.sorted() && Set(times).count == 3)
    }

    @Test func failsAfterExactlyMaxAttempts() throws {
        let fixture = try Fixture()
        let receiver = try TestReceiver { _, _ in .status(503, body: "down") }
        try fixture.addConfig(url: receiver.url, maxAttempts: 3)  // the config overrides the worker's 5
        let event = try fixture.emit()
        _ = try fixture.startWorker()
        #expect(try fixture.waitUntilSettled())
        let row = try fixture.connection.query(
            "SELECT id, status, attempts, last_response_status, completed_at IS NOT NULL FROM webhook_deliveries WHERE event_id = $1",
            [event]).rows[0]
        #expect(row[1] == "failed" && row[2] == "3" && row[3] == "503" && row[4] == "t")
        let logs = try fixture.logs(of: row[0]!)
        #expect(logs.map { $0["outcome"] ?? nil } == ["retry", "retry", "failed"])
        // Give a stray fourth attempt the chance to happen, then check it did not.
        Thread.sleep(forTimeInterval: 0.5)
        #expect(receiver.requests.count == 3)
    }

    @Test func honoursRetryAfter() throws {
        let fixture = try Fixture()
        let receiver = try TestReceiver { _, index in
            index == 0 ? .status(429, body: "slow down", headers: ["Retry-After: 1"]) : .status(200)
        }
        try fixture.addConfig(url: receiver.url)
        try fixture.emit()
        _ = try fixture.startWorker(["HERALD_BACKOFF_BASE_MS": "10"])
        #expect(try fixture.waitUntilSettled())
        let requests = receiver.requests
        #expect(requests.count == 2)
        if requests.count == 2 {
            #expect(requests[1].receivedAt.timeIntervalSince(requests[0].receivedAt) >= 0.95)
        }
    }

    @Test func redirectIsAFailureAndNotFollowed() throws {
        let fixture = try Fixture()
        let target = try TestReceiver()
        let redirecting = try TestReceiver { _, _ in .status(302, body: "", headers: ["Location: \(target.url)/"]) }
        let config = try fixture.addConfig(url: redirecting.url, maxAttempts: 1)
        try fixture.emit()
        _ = try fixture.startWorker()
        #expect(try fixture.waitUntilSettled())
        #expect(target.requests.isEmpty)
        #expect(try fixture.scalar("SELECT status || ' ' || last_response_status FROM webhook_deliveries WHERE config_id = $1", [config]) == "failed 302")
    }

    @Test func addressPolicyRefusesLoopbackUnlessAllowed() throws {
        let fixture = try Fixture()
        let receiver = try TestReceiver()
        try fixture.addConfig(name: "ip", url: receiver.url, maxAttempts: 1)
        try fixture.addConfig(name: "name", url: "http://localhost:\(receiver.port)/", maxAttempts: 1)
        try fixture.emit()
        let strict = try fixture.startWorker(["HERALD_ALLOWED_NETWORKS": ""])
        #expect(try fixture.waitUntilSettled())
        #expect(receiver.requests.isEmpty)
        let errors = try fixture.connection.query("SELECT status, last_error FROM webhook_deliveries").rows
        #expect(errors.count == 2)
        for row in errors {
            #expect(row[0] == "failed")
            #expect(row[1]?.contains("is a loopback address; refused by the address policy") == true, "\(String(describing: row[1]))")
        }
        #expect(try fixture.count("SELECT count(*) FROM webhook_logs WHERE error LIKE 'refused: %'") == 2)
        strict.terminate()
        #expect(strict.waitForExit(timeout: 10))

        // Allowed explicitly: the same kind of delivery goes through.
        try fixture.connection.query("DELETE FROM webhook_events")
        try fixture.emit()
        _ = try fixture.startWorker(["HERALD_ALLOWED_NETWORKS": "127.0.0.0/8,::1/128"])
        #expect(try fixture.waitUntilSettled())
        #expect(receiver.requests.count == 2)
        #expect(try fixture.count("SELECT count(*) FROM webhook_deliveries WHERE status = 'delivered'") == 2)
    }

    @Test func badConfigurationIsRefusedAtStartWithAClearMessage() throws {
        let fixture = try Fixture()
        let cases: [([String: String], String)] = [
            (["HERALD_CONCURRENCY": "lots"], "HERALD_CONCURRENCY=lots is not valid"),
            (["HERALD_ALLOWED_NETWORKS": "10.0.0.0/8,nope"], "'nope' in HERALD_ALLOWED_NETWORKS is not a network"),
            (["HERALD_TIMEOUT_MS": "20000", "HERALD_LEASE_MS": "30000"], "must be at least twice HERALD_TIMEOUT_MS"),
        ]
        for (environment, message) in cases {
            let worker = try fixture.startWorker(environment)
            #expect(worker.waitForExit(timeout: 10))
            #expect(worker.terminationStatus != 0)
            #expect(worker.output.contains(message), "\(worker.output)")
        }
    }
}

/// Receivers that misbehave: each attempt still ends in a recorded, defined outcome.
@Suite struct BrokenReceiverTests {
    @Test func resetsAndTruncatedResponsesAreRetryableFailures() throws {
        let fixture = try Fixture()
        let receiver = try TestReceiver { _, index in
            switch index {
            case 0: .reset
            case 1: .truncated
            default: .status(200)
            }
        }
        try fixture.addConfig(url: receiver.url)
        let event = try fixture.emit()
        _ = try fixture.startWorker()
        #expect(try fixture.waitUntilSettled())
        let delivery = try #require(try fixture.scalar("SELECT id FROM webhook_deliveries WHERE event_id = $1", [event]))
        let logs = try fixture.logs(of: delivery)
        #expect(logs.map { $0["outcome"] ?? nil } == ["retry", "retry", "delivered"])
        #expect(logs[0]["error"]??.isEmpty == false)
        #expect(logs[1]["error"]??.isEmpty == false)
    }

    @Test func hugeAndBinaryResponseBodiesAreCappedAndStoredSafely() throws {
        let fixture = try Fixture()
        let receiver = try TestReceiver { _, index in
            index == 0 ? .largeBody(500, size: 5_000_000, byte: 0x00) : .largeBody(200, size: 200_000, byte: 0xFF)
        }
        try fixture.addConfig(url: receiver.url)
        let event = try fixture.emit()
        _ = try fixture.startWorker()
        #expect(try fixture.waitUntilSettled())
        let delivery = try #require(try fixture.scalar("SELECT id FROM webhook_deliveries WHERE event_id = $1", [event]))
        let rows = try fixture.connection.query(
            "SELECT outcome, response_status, char_length(response_body), response_body ~ '^\u{FFFD}+$' FROM webhook_logs WHERE delivery_id = $1 ORDER BY attempt",
            [delivery]).rows
        #expect(rows.count == 2)
        // 64 KiB kept of each; NUL and invalid UTF-8 bytes are stored as U+FFFD.
        #expect(rows.map { $0[0] } == ["retry", "delivered"])
        #expect(rows.map { $0[1] } == ["500", "200"])
        #expect(rows.map { $0[2] } == ["65536", "65536"])
        #expect(rows.map { $0[3] } == ["t", "t"])
    }
}

/// Interoperability: the `standardwebhooks` library from PyPI verifies a real delivery.
@Suite struct StandardWebhooksInteropTests {
    @Test func standardWebhooksLibraryVerifiesARealDeliveryAndRejectsATamperedOne() throws {
        let python = try TestEnvironment.require("HERALD_TEST_PYTHON")
        let fixture = try Fixture()
        let receiver = try TestReceiver()
        let secret = "interop-secret-ü"
        try fixture.addConfig(url: receiver.url, secret: secret)
        try fixture.emit(data: #"{"id": "c-9", "n": 1}"#)
        _ = try fixture.startWorker()
        #expect(try fixture.waitUntilSettled())
        let request = try #require(receiver.requests.first)
        #expect(request.headers["webhook-id"] == request.headers["x-webhook-id"])
        #expect(request.headers["webhook-signature"]?.hasPrefix("v1,") == true)
        let headers = String(decoding: try JSONSerialization.data(withJSONObject: [
            "webhook-id": request.headers["webhook-id"]!, "webhook-timestamp": request.headers["webhook-timestamp"]!,
            "webhook-signature": request.headers["webhook-signature"]!,
        ]), as: UTF8.self)
        let script = """
            import base64, sys, json
            from standardwebhooks.webhooks import Webhook
            wh = Webhook('whsec_' + base64.b64encode(sys.argv[1].encode()).decode())
            wh.verify(sys.stdin.buffer.read(), json.loads(sys.argv[2]))
            print('verified')
            """
        let verified = try ChildProcess.run(python, ["-c", script, secret, headers], input: request.body)
        #expect(verified.status == 0 && verified.output.contains("verified"), "\(verified.output)")
        var tampered = request.body
        tampered[tampered.count - 3] = UInt8(ascii: "9")
        let rejected = try ChildProcess.run(python, ["-c", script, secret, headers], input: tampered)
        #expect(rejected.status != 0)
        #expect(rejected.output.contains("WebhookVerificationError"), "\(rejected.output)")
    }
}

extension StandardWebhooksInteropTests {
    @Test func duringARotationBothSecretsVerify() throws {
        let python = try TestEnvironment.require("HERALD_TEST_PYTHON")
        let fixture = try Fixture()
        let receiver = try TestReceiver()
        let config = try fixture.addConfig(name: "rotating", url: receiver.url, secret: "old-secret")
        let rotated = try HeraldProcess.run(["config", "rotate-secret", "rotating", "--keep-previous", "1h"],
                                            environment: ["DATABASE_URL": fixture.database.url])
        #expect(rotated.status == 0, "\(rotated.output)")
        let newSecret = try #require(try fixture.scalar("SELECT secret FROM webhook_configs WHERE id = $1", [config]))
        #expect(newSecret != "old-secret" && rotated.output.contains(newSecret))
        #expect(!rotated.output.contains("old-secret"))
        try fixture.emit()
        _ = try fixture.startWorker()
        #expect(try fixture.waitUntilSettled())
        let request = try #require(receiver.requests.first)
        let signatures = try #require(request.headers["webhook-signature"]).split(separator: " ")
        #expect(signatures.count == 2 && signatures.allSatisfy { $0.hasPrefix("v1,") })
        #expect(request.headers["x-webhook-signature"] == hmacHex(secret: newSecret, body: request.body))
        let headers = String(decoding: try JSONSerialization.data(withJSONObject: [
            "webhook-id": request.headers["webhook-id"]!, "webhook-timestamp": request.headers["webhook-timestamp"]!,
            "webhook-signature": request.headers["webhook-signature"]!,
        ]), as: UTF8.self)
        let script = """
            import base64, sys, json
            from standardwebhooks.webhooks import Webhook
            Webhook('whsec_' + base64.b64encode(sys.argv[1].encode()).decode()).verify(sys.stdin.buffer.read(), json.loads(sys.argv[2]))
            print('verified')
            """
        for secret in ["old-secret", newSecret] {
            let result = try ChildProcess.run(python, ["-c", script, secret, headers], input: request.body)
            #expect(result.status == 0 && result.output.contains("verified"), "\(secret): \(result.output)")
        }
        let stranger = try ChildProcess.run(python, ["-c", script, "someone-else", headers], input: request.body)
        #expect(stranger.status != 0)
    }
}
