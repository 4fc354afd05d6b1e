import Foundation
import HeraldTestSupport
import Testing

/// `herald console` against a real PostgreSQL with real deliveries: its security rules, its escaping of what
/// receivers answer, and its actions, each checked in the database.
@Suite struct ConsoleTests {
    /// A failing endpoint (500 with `body`), a healthy one, and one event delivered to both by a real worker.
    struct Scene {
        let fixture: Fixture
        let receiver: TestReceiver
        let failing: String
        let healthy: String
        let failedDelivery: String
    }

    static let hostileBody = "<script>alert('owned')</script><img src=x onerror=alert(2)>\u{1B}]0;pwned\u{07}\u{1B}[2J"

    func scene(failingName: String = "Billing hooks") throws -> Scene {
        let fixture = try Fixture()
        let receiver = try TestReceiver { request, _ in
            request.path == "/fail" ? .status(500, body: ConsoleTests.hostileBody) : .status(200)
        }
        let failing = try fixture.addConfig(name: failingName, url: receiver.url + "/fail", secret: "s3cret-value")
        let healthy = try fixture.addConfig(name: "CRM sync", url: receiver.url + "/ok")
        try fixture.emit("contact.created", data: #"{"id": "c-42"}"#)
        _ = try fixture.startWorker(["HERALD_MAX_ATTEMPTS": "2"])
        #expect(try fixture.waitUntilSettled())
        let delivery = try #require(try fixture.scalar(
            "SELECT id FROM webhook_deliveries WHERE config_id = $1 AND status = 'failed'", [failing]))
        return Scene(fixture: fixture, receiver: receiver, failing: failing, healthy: healthy, failedDelivery: delivery)
    }

    @Test func requestsWithoutASessionGetNoData() throws {
        let scene = try scene()
        let console = try ConsoleServer(scene.fixture)
        let paths = ["/", "/endpoints", "/endpoints/\(scene.failing)", "/deliveries/\(scene.failedDelivery)",
                     "/search?q=\(scene.failedDelivery)", "/search?q=contact.created"]
        for path in paths {
            let browser = try console.request("GET", path, headers: ["Accept: text/html,application/xhtml+xml"])
            #expect(browser.status == 303 && browser.header("location") == "/login", "\(path): \(browser.status)")
            let script = try console.request("GET", path)
            #expect(script.status == 401, "\(path): \(script.status)")
            let wrongToken = try console.request("GET", path, headers: ["Authorization: Bearer \(String(repeating: "0", count: 64))"])
            #expect(wrongToken.status == 401)
            let forgedCookie = try console.request("GET", path, headers: ["Cookie: herald_console_session=\(console.token)"])
            #expect(forgedCookie.status == 401)
            for reply in [browser, script, wrongToken, forgedCookie] {
                #expect(!reply.body.contains("Billing hooks") && !reply.body.contains("c-42") && !reply.body.contains("/fail"))
            }
        }
        // Actions without a session change nothing.
        for path in ["/endpoints/\(scene.failing)/disable", "/deliveries/\(scene.failedDelivery)/replay"] {
            let reply = try console.request("POST", path, headers: [console.sameOrigin], form: [])
            #expect(reply.status == 401)
        }
        #expect(try scene.fixture.scalar("SELECT is_active FROM webhook_configs WHERE id = $1", [scene.failing]) == "t")
        #expect(try scene.fixture.scalar("SELECT replay_count FROM webhook_deliveries WHERE id = $1", [scene.failedDelivery]) == "0")
        // The login page itself shows nothing from the database.
        let login = try console.request("GET", "/login")
        #expect(login.status == 200 && login.body.contains("name=\"token\"") && !login.body.contains("Billing"))
    }

    @Test func bearerTokenIsAcceptedForPagesAndActions() throws {
        let scene = try scene()
        let console = try ConsoleServer(scene.fixture)
        let overview = try console.bearer("GET", "/")
        #expect(overview.status == 200 && overview.body.contains("Billing hooks") && overview.body.contains("<svg"))
        let delivery = try console.bearer("GET", "/deliveries/\(scene.failedDelivery)")
        #expect(delivery.status == 200 && delivery.body.contains("HTTP 500"))
        let disabled = try console.bearer("POST", "/endpoints/\(scene.failing)/disable", form: [])
        #expect(disabled.status == 303)
        #expect(try scene.fixture.scalar("SELECT is_active FROM webhook_configs WHERE id = $1", [scene.failing]) == "f")
    }

    @Test func loginSetsAnHttpOnlyStrictSessionCookieAndLogoutEndsIt() throws {
        let scene = try scene()
        let console = try ConsoleServer(scene.fixture)
        let wrong = try console.request("POST", "/login", headers: [console.sameOrigin], form: [("token", "not-the-token")])
        #expect(wrong.status == 401 && wrong.cookies.isEmpty)
        let right = try console.request("POST", "/login", headers: [console.sameOrigin], form: [("token", console.token)])
        #expect(right.status == 303 && right.header("location") == "/")
        let cookie = try #require(right.cookies.first)
        let attributes = Set(cookie.split(separator: ";").map { $0.trimmingCharacters(in: .whitespaces) })
        #expect(attributes.contains("HttpOnly") && attributes.contains("SameSite=Strict") && attributes.contains("Path=/"))
        #expect(!attributes.contains("Secure"), "plain http on loopback: a Secure cookie would never come back")
        let session = String(cookie.split(separator: ";")[0])
        #expect(try console.request("GET", "/", headers: ["Cookie: \(session)"]).status == 200)

        let browser = try console.logIn()
        #expect(try console.post(browser, "/logout").status == 303)
        #expect(try console.get(browser, "/").status == 303, "the session ended with the log-out")

        // Behind a TLS proxy, the cookie is Secure.
        let proxied = try ConsoleServer(scene.fixture, environment: ["HERALD_CONSOLE_BEHIND_PROXY": "1"])
        let behind = try proxied.request("POST", "/login", headers: [proxied.sameOrigin], form: [("token", proxied.token)])
        #expect(behind.cookies.first?.contains("; Secure") == true)
    }

    @Test func consoleServesTLSWithSecureCookiesAndRefusesUnsafeAddresses() throws {
        let scene = try scene()
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("console-tls-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let cert = directory.appendingPathComponent("cert.pem").path
        let key = directory.appendingPathComponent("key.pem").path
        _ = try runTool("openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                                    "-days", "1", "-subj", "/CN=127.0.0.1"])
        let console = try ConsoleServer(scene.fixture, environment: [
            "HERALD_CONSOLE_TLS_CERT": cert, "HERALD_CONSOLE_TLS_KEY": key,
            "HERALD_CONSOLE_TOKEN": "a-token-of-the-operators-choice",
        ], tls: true)
        #expect(console.process.output.contains("console: https://127.0.0.1:"))
        #expect(!console.process.output.contains("console token:"), "a token from the environment is never printed")
        let login = try console.request("POST", "/login", headers: [console.sameOrigin], form: [("token", console.token)])
        #expect(login.status == 303 && login.cookies.first?.contains("; Secure") == true)
        #expect(try console.bearer("GET", "/endpoints").body.contains("Billing hooks"))

        let token = ["HERALD_CONSOLE_TOKEN": "a-token-of-the-operators-choice"]
        let cases: [([String: String], String)] = [
            ([:], "needs HERALD_CONSOLE_TOKEN"),
            (token, "needs TLS"),
            (["HERALD_CONSOLE_TOKEN": "short"], "at least 16"),
        ]
        for (environment, message) in cases {
            var settings = ["DATABASE_URL": scene.fixture.database.url, "HERALD_CONSOLE_ADDR": "0.0.0.0:0"]
            for (name, value) in environment { settings[name] = value }
            let result = try HeraldProcess.run(["console"], environment: settings)
            #expect(result.status == 1 && result.output.contains(message), "\(environment): \(result.output)")
        }
    }

    @Test func crossSitePostsAreRefused() throws {
        let scene = try scene()
        let console = try ConsoleServer(scene.fixture)
        let browser = try console.logIn()
        let path = "/endpoints/\(scene.failing)/disable"
        #expect(try console.post(browser, path, origin: "https://evil.example").status == 403)
        let noOrigin = try console.request("POST", path, headers: ["Cookie: \(browser.cookie)"], form: [("_form", browser.formToken)])
        #expect(noOrigin.status == 403)
        let crossSite = try console.request("POST", path, headers: [
            "Cookie: \(browser.cookie)", console.sameOrigin, "Sec-Fetch-Site: cross-site",
        ], form: [("_form", browser.formToken)])
        #expect(crossSite.status == 403)
        let noFormToken = try console.request("POST", path, headers: ["Cookie: \(browser.cookie)", console.sameOrigin], form: [])
        #expect(noFormToken.status == 403)
        let otherSessionsToken = try console.logIn()
        #expect(try console.post(Browser(cookie: browser.cookie, formToken: otherSessionsToken.formToken), path).status == 403)
        #expect(try console.request("POST", "/login", headers: ["Origin: https://evil.example"],
                                    form: [("token", console.token)]).status == 403, "login CSRF")
        #expect(try scene.fixture.scalar("SELECT is_active FROM webhook_configs WHERE id = $1", [scene.failing]) == "t")
        // The same request from the console's own page goes through.
        #expect(try console.post(browser, path).status == 303)
        #expect(try scene.fixture.scalar("SELECT is_active FROM webhook_configs WHERE id = $1", [scene.failing]) == "f")
    }

    typealias Browser = ConsoleServer.Browser

    @Test func readOnlyModeHidesAndRefusesActions() throws {
        let scene = try scene()
        let console = try ConsoleServer(scene.fixture, environment: ["HERALD_CONSOLE_READONLY": "1"])
        let browser = try console.logIn()
        for path in ["/endpoints/\(scene.failing)", "/deliveries/\(scene.failedDelivery)"] {
            let page = try console.get(browser, path)
            #expect(page.status == 200 && page.body.contains("read-only"))
            #expect(!page.body.contains("action=\"/endpoints/") && !page.body.contains("action=\"/deliveries/"))
        }
        for path in ["/endpoints/\(scene.failing)/disable", "/endpoints/\(scene.failing)/test",
                     "/endpoints/\(scene.failing)/replay-failed", "/deliveries/\(scene.failedDelivery)/replay"] {
            #expect(try console.post(browser, path, [("since", "1h"), ("confirm", "1")]).status == 403, "\(path)")
            #expect(try console.bearer("POST", path, form: []).status == 403, "\(path) with the bearer token")
        }
        #expect(try scene.fixture.scalar("SELECT is_active FROM webhook_configs WHERE id = $1", [scene.failing]) == "t")
        #expect(try scene.fixture.scalar("SELECT replay_count FROM webhook_deliveries WHERE id = $1", [scene.failedDelivery]) == "0")
        #expect(try scene.fixture.count("SELECT count(*) FROM webhook_events WHERE event_type = 'webhook.test'") == 0)
    }

    @Test func hostileResponseBodiesAndNamesAreEscaped() throws {
        let scene = try scene(failingName: "<b onmouseover=alert(1)>Billing</b>")
        let console = try ConsoleServer(scene.fixture)
        #expect(try scene.fixture.scalar("SELECT response_body FROM webhook_logs WHERE delivery_id = $1 LIMIT 1",
                                         [scene.failedDelivery]) == ConsoleTests.hostileBody)
        for path in ["/", "/endpoints", "/endpoints/\(scene.failing)", "/deliveries/\(scene.failedDelivery)",
                     "/search?q=contact.created"] {
            let page = try console.bearer("GET", path)
            #expect(page.status == 200, "\(path)")
            #expect(!page.body.contains("<script>") && !page.body.contains("<img") && !page.body.contains("<b onmouseover"), "\(path)")
            #expect(!page.body.unicodeScalars.contains { $0.value == 0x1B || $0.value == 0x07 }, "\(path) passes control characters")
            #expect(page.body.contains("&lt;b onmouseover=alert(1)&gt;Billing&lt;/b&gt;"), "\(path)")
        }
        let delivery = try console.bearer("GET", "/deliveries/\(scene.failedDelivery)").body
        #expect(delivery.contains("&lt;script&gt;alert(&#39;owned&#39;)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt;\\u{1B}]0;pwned\\u{7}"))
        // The secret never reaches a page; the headers say where it would be.
        #expect(!delivery.contains("s3cret-value") && delivery.contains("X-Webhook-Signature: ‹"))
        #expect(try console.bearer("GET", "/").header("content-security-policy")?.contains("default-src 'none'") == true)
    }

    @Test func deliveryPageShowsTheExactBodySentAndTheTimeline() throws {
        let scene = try scene()
        let console = try ConsoleServer(scene.fixture)
        let page = try console.bearer("GET", "/deliveries/\(scene.failedDelivery)").body
        let sent = try #require(try scene.fixture.scalar(
            "SELECT body FROM webhook_attempts WHERE delivery_id = $1 AND body IS NOT NULL LIMIT 1", [scene.failedDelivery]))
        #expect(sent.hasPrefix(#"{"event":"contact.created","timestamp":""#))
        #expect(page.contains(sent.replacingOccurrences(of: "\"", with: "&quot;")))
        #expect(page.contains("Attempt 1") && page.contains("Attempt 2") && page.contains("HTTP 500"))
        #expect(page.contains("X-Webhook-Id: \(scene.failedDelivery)") && page.contains("Headers (rebuilt)"))
        #expect(page.contains("Failed") && page.contains("Replay this delivery"))
    }

    @Test func actionsWorkFromTheBrowserAndShowTheirOutcome() throws {
        let scene = try scene()
        let console = try ConsoleServer(scene.fixture)
        let browser = try console.logIn()

        // Test event: the healthy endpoint accepts it, and the endpoint page says so.
        let test = try console.post(browser, "/endpoints/\(scene.healthy)/test")
        #expect(test.status == 303)
        let verdictPage = try console.get(browser, try #require(test.header("location")))
        #expect(verdictPage.body.contains("Test event accepted: HTTP 200"), "\(verdictPage.body)")
        let failingTest = try console.post(browser, "/endpoints/\(scene.failing)/test")
        #expect(try console.get(browser, try #require(failingTest.header("location"))).body.contains("Test event not accepted: HTTP 500"))

        // Replay failed since 1 h: the dry run counts first and changes nothing.
        let failedBefore = try scene.fixture.count(
            "SELECT count(*) FROM webhook_deliveries WHERE config_id = $1 AND status = 'failed' AND replay_count = 0", [scene.failing])
        #expect(failedBefore == 2, "the event and the failed test event")
        let dryRun = try console.post(browser, "/endpoints/\(scene.failing)/replay-failed", [("since", "1h")])
        #expect(dryRun.status == 200 && dryRun.body.contains("Dry run: \(failedBefore) failed deliveries"))
        #expect(try scene.fixture.count("SELECT count(*) FROM webhook_deliveries WHERE replay_count > 0") == 0)
        let since = try #require(dryRun.body.range(of: #"name="since" value=""#).map { String(dryRun.body[$0.upperBound...].prefix { $0 != "\"" }) })
        let until = try #require(dryRun.body.range(of: #"name="until" value=""#).map { String(dryRun.body[$0.upperBound...].prefix { $0 != "\"" }) })
        let confirmed = try console.post(browser, "/endpoints/\(scene.failing)/replay-failed",
                                         [("since", since), ("until", until), ("confirm", "1")])
        #expect(confirmed.status == 303 && confirmed.header("location")?.contains("done=replayed&count=\(failedBefore)") == true)
        #expect(try scene.fixture.count("SELECT count(*) FROM webhook_deliveries WHERE config_id = $1 AND replay_count = 1",
                                        [scene.failing]) == failedBefore)

        // Disable and enable.
        #expect(try console.post(browser, "/endpoints/\(scene.healthy)/disable").status == 303)
        #expect(try scene.fixture.scalar("SELECT is_active FROM webhook_configs WHERE id = $1", [scene.healthy]) == "f")
        #expect(try console.post(browser, "/endpoints/\(scene.healthy)/enable").status == 303)
        #expect(try scene.fixture.scalar("SELECT is_active FROM webhook_configs WHERE id = $1", [scene.healthy]) == "t")

        // Search finds a delivery by id, an event's deliveries, a type's deliveries.
        #expect(try console.get(browser, "/search?q=\(scene.failedDelivery.uppercased())").header("location") == "/deliveries/\(scene.failedDelivery)")
        let event = try #require(try scene.fixture.scalar("SELECT event_id FROM webhook_deliveries WHERE id = $1", [scene.failedDelivery]))
        let ofEvent = try console.get(browser, "/search?q=\(event)").body
        #expect(ofEvent.contains("Billing hooks") && ofEvent.contains("CRM sync"))
        #expect(try console.get(browser, "/search?q=contact.created").body.contains(String(scene.failedDelivery.prefix(8))))
    }
}
