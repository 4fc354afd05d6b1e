import Foundation
import HeraldTestSupport
import Testing

/// The console in a real browser: headless Chromium (Debian's chromium and chromium-driver, driven by selenium
/// from PyPI) logs in, reads the overview, opens the failing endpoint, a failed delivery, and replays it, against
/// real PostgreSQL, a real worker and real receivers. Screenshots at 1280×800 and 390×844 are kept in
/// .build/console-screenshots (the test prints the folder).
@Suite struct ConsoleBrowserTests {
    @Test func logInFollowAFailedDeliveryAndReplayIt() throws {
        let fixture = try Fixture()
        let receiver = try TestReceiver { request, _ in
            request.path == "/fail"
                ? .status(500, body: #"{"error": "maintenance <b>window</b>", "retry": false}"#) : .status(200)
        }
        let failing = try fixture.addConfig(name: "Billing hooks", url: receiver.url + "/fail", secret: "s3cret")
        try fixture.addConfig(name: "CRM sync", url: receiver.url + "/ok", events: "{contact.created,deal.stage.changed}")
        try fixture.addConfig(name: "Search indexer", url: receiver.url + "/ok", organization: "4f1c2d3e-9a8b-4c7d-8e6f-5a4b3c2d1e0f")
        for n in 1...6 {
            try fixture.emit("contact.created", data: #"{"id": "c-\#(n)", "first_name": "Ada"}"#)
        }
        try fixture.emit("deal.stage.changed", data: #"{"id": "d-1", "stage": "won"}"#)
        _ = try fixture.startWorker(["HERALD_MAX_ATTEMPTS": "3", "HERALD_CIRCUIT_THRESHOLD": "100"])
        // Enough failed deliveries to follow; the rest may still be retrying (the browser does not wait for them).
        #expect(try eventually(timeout: 60) {
            try fixture.count("SELECT count(*) FROM webhook_deliveries WHERE config_id = $1 AND status = 'failed'", [failing]) >= 3
        })

        let console = try ConsoleServer(fixture)
        let python = try TestEnvironment.require("HERALD_TEST_PYTHON")
        let root = try TestEnvironment.projectRoot()
        let screenshots = root.appendingPathComponent(".build/console-screenshots").path
        let output = try runTool(python, [root.appendingPathComponent("scripts/console-browser.py").path,
                                          "--url", console.base, "--token", console.token,
                                          "--endpoint", "Billing hooks", "--out", screenshots])
        print("console screenshots: \(screenshots)")
        let result = try #require(try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any])
        let replayed = try #require(result["replayed"] as? String)
        #expect((result["screenshots"] as? [String])?.count == 14)
        #expect(try fixture.scalar("SELECT config_id::text FROM webhook_deliveries WHERE id = $1", [replayed]) == failing)
        #expect(try fixture.scalar("SELECT replay_count FROM webhook_deliveries WHERE id = $1", [replayed]) == "1")
        #expect(try fixture.count("SELECT count(*) FROM webhook_deliveries WHERE replay_count > 0") == 1,
                "the bulk replay's dry run and its cancel changed nothing")
    }
}
