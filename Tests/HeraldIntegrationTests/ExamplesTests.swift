import Foundation
import HeraldPostgres
import HeraldTestSupport
import Testing

/// The receiver examples in examples/, run for real against a real worker: they accept signed deliveries and
/// reject a wrong secret and a tampered body.
@Suite struct ExamplesTests {
    struct Example {
        var executable: String
        var script: String
    }

    func check(_ example: Example) throws {
        let root = try TestEnvironment.projectRoot()
        let fixture = try Fixture()
        let port = try freeLoopbackPort()
        let secret = "example-secret-\(UUID().uuidString.prefix(8))"
        var environment = ProcessInfo.processInfo.environment
        environment["PORT"] = String(port)
        environment["WEBHOOK_SECRET"] = secret
        environment["NODE_PATH"] = "/usr/share/nodejs"
        let log = FileManager.default.temporaryDirectory.appendingPathComponent("example-\(UUID().uuidString).log")
        let server = try ChildProcess(executable: example.executable,
                                      arguments: [root.appendingPathComponent(example.script).path],
                                      environment: environment, outputPath: log.path)
        defer {
            server.signal(SIGKILL)
            _ = server.waitForExit(timeout: 5)
            try? FileManager.default.removeItem(at: log)
        }
        #expect(eventually(timeout: 20) { (try? connectLoopback(port)) == true }, "the example did not start")
        let url = "http://127.0.0.1:\(port)/webhooks"
        let good = try fixture.addConfig(name: "right secret", url: url, secret: secret, maxAttempts: 1)
        let wrong = try fixture.addConfig(name: "wrong secret", url: url, secret: "not-the-secret", maxAttempts: 1)
        try fixture.emit("contact.created", data: #"{"id": "c-1", "first_name": "Zoë", "note": "quote \" and \\ backslash"}"#)
        _ = try fixture.startWorker()
        #expect(try fixture.waitUntilSettled())
        #expect(try fixture.scalar("SELECT status || ' ' || last_response_status FROM webhook_deliveries WHERE config_id = $1", [good]) == "delivered 200")
        #expect(try fixture.scalar("SELECT status || ' ' || last_response_status FROM webhook_deliveries WHERE config_id = $1", [wrong]) == "failed 401")

        // The accepted body, one byte changed, sent again with its genuine signature headers: rejected.
        let payload = try #require(try fixture.scalar(
            "SELECT body FROM webhook_attempts WHERE config_id = $1 AND outcome = 'delivered'", [good]))
        let tampered = payload.replacingOccurrences(of: "c-1", with: "c-2")
        let id = try #require(try fixture.scalar("SELECT id FROM webhook_deliveries WHERE config_id = $1", [good]))
        let signature = HeraldTestSupport.hmacHex(secret: secret, body: Array(payload.utf8))
        let status = try ChildProcess.run("curl", [
            "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", url, "-H", "Content-Type: application/json",
            "-H", "X-Webhook-Signature: \(signature)", "-H", "X-Webhook-Id: \(id)",
            "-H", "webhook-id: \(id)", "-H", "webhook-timestamp: \(Int(Date().timeIntervalSince1970))",
            "-H", "webhook-signature: v1,AAAA", "--data-binary", tampered,
        ])
        #expect(status.output == "401", "tampered body answered \(status.output)")
        let output = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
        #expect(output.contains("accepted contact.created"), "\(output)")
        #expect(output.contains("rejected"), "\(output)")
    }

    @Test func expressReceiverVerifiesRealDeliveries() throws {
        try check(Example(executable: "node", script: "examples/express/server.js"))
    }

    @Test func flaskReceiverVerifiesRealDeliveries() throws {
        try check(Example(executable: try TestEnvironment.require("HERALD_TEST_PYTHON"), script: "examples/flask/app.py"))
    }

    @Test func standardWebhooksReceiverVerifiesRealDeliveries() throws {
        try check(Example(executable: try TestEnvironment.require("HERALD_TEST_PYTHON"),
                          script: "examples/standard-webhooks/app.py"))
    }
}
