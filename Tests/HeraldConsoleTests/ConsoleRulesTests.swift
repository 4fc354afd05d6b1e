@testable import HeraldConsole
import Synchronization
import Testing

/// A clock the test moves by hand.
final class ManualClock: Sendable {
    private let instant = Mutex(ContinuousClock.now)
    func now() -> ContinuousClock.Instant { instant.withLock { $0 } }
    func advance(_ duration: Duration) { instant.withLock { $0 += duration } }
}

/// The console's rules without a server or a database: escaping, configuration, origin check, forms.
@Suite struct ConsoleRulesTests {
    @Test func interpolatedTextIsEscapedAndControlCharactersAreShownNotObeyed() {
        let hostile = "<script>alert('x')</script>\u{1B}]0;owned\u{07}\"&"
        let html: HTML = "<td>\(hostile)</td>"
        #expect(html.text == #"<td>&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;\u{1B}]0;owned\u{7}&quot;&amp;</td>"#)
        let markup: HTML = "<b>bold</b>"
        #expect(("<p>\(markup)</p>" as HTML).text == "<p><b>bold</b></p>")
        let missing: String? = nil
        #expect(("<i>\(missing, or: "none")</i>" as HTML).text == "<i>none</i>")
    }

    @Test func loopbackGeneratesATokenAndOtherAddressesNeedTokenAndTLS() throws {
        let local = try ConsoleConfiguration.fromEnvironment([:])
        #expect(local.host == "127.0.0.1" && local.port == 8400 && local.tokenWasGenerated && local.token.count == 64)
        #expect(!local.secureCookies)

        #expect(throws: ConsoleConfigurationError.self) {
            try ConsoleConfiguration.fromEnvironment(["HERALD_CONSOLE_ADDR": "0.0.0.0:8400"])
        }
        let token = String(repeating: "t", count: 32)
        #expect(throws: ConsoleConfigurationError.self) {
            try ConsoleConfiguration.fromEnvironment(["HERALD_CONSOLE_ADDR": "0.0.0.0:8400", "HERALD_CONSOLE_TOKEN": token])
        }
        let proxied = try ConsoleConfiguration.fromEnvironment([
            "HERALD_CONSOLE_ADDR": "0.0.0.0:8400", "HERALD_CONSOLE_TOKEN": token, "HERALD_CONSOLE_BEHIND_PROXY": "1",
        ])
        #expect(proxied.secureCookies && !proxied.tokenWasGenerated)
        #expect(throws: ConsoleConfigurationError.self) {
            try ConsoleConfiguration.fromEnvironment(["HERALD_CONSOLE_TOKEN": "short"])
        }
        #expect(throws: ConsoleConfigurationError.self) {
            try ConsoleConfiguration.fromEnvironment(["HERALD_CONSOLE_TLS_CERT": "/tmp/cert.pem"])
        }
        let v6 = try ConsoleConfiguration.fromEnvironment(["HERALD_CONSOLE_ADDR": "[::1]:9000"])
        #expect(v6.host == "::1" && v6.port == 9000 && v6.isLoopback)
    }

    @Test func onlyPostsFromTheConsolesOwnOriginPass() {
        let app = ConsoleApp(configuration: ConsoleConfiguration(), databaseURL: "postgresql://unused")
        func request(_ headers: [(String, String)]) -> ConsoleRequest {
            ConsoleRequest(method: "POST", target: "/endpoints/x/disable", headers: headers)
        }
        #expect(app.sameOrigin(request([("Host", "127.0.0.1:8400"), ("Origin", "http://127.0.0.1:8400")])))
        #expect(app.sameOrigin(request([("Host", "127.0.0.1:8400"), ("Referer", "http://127.0.0.1:8400/endpoints")])))
        #expect(!app.sameOrigin(request([("Host", "127.0.0.1:8400"), ("Origin", "https://evil.example")])))
        #expect(!app.sameOrigin(request([("Host", "127.0.0.1:8400"), ("Origin", "null")])))
        #expect(!app.sameOrigin(request([("Host", "127.0.0.1:8400")])))
        #expect(!app.sameOrigin(request([("Host", "127.0.0.1:8400"), ("Origin", "http://127.0.0.1:8400"),
                                         ("Sec-Fetch-Site", "cross-site")])))
    }

    @Test func formsAndQueriesDecodeAsBrowsersEncodeThem() {
        let request = ConsoleRequest(
            method: "post", target: "/search?q=contact.created&x=a%20b",
            headers: [("Content-Type", "application/x-www-form-urlencoded"), ("Cookie", "a=1; herald_console_session=abc")],
            body: Array("token=p%2Bq+r&_form=f".utf8))
        #expect(request.method == "POST" && request.path == "/search")
        #expect(request.query == ["q": "contact.created", "x": "a b"])
        #expect(request.form == ["token": "p+q r", "_form": "f"])
        #expect(request.cookie("herald_console_session") == "abc")
    }

    @Test func wrongTokensAreThrottledAndSessionsExpire() {
        let clock = ManualClock()
        let store = SessionStore(clock: { clock.now() })
        for _ in 0..<SessionStore.failuresPerMinute {
            #expect(!store.check("a-wrong-token-guess", against: "the-right-token-0123"))
        }
        #expect(!store.check("the-right-token-0123", against: "the-right-token-0123"), "refused while throttled")
        clock.advance(.seconds(61))
        #expect(store.check("the-right-token-0123", against: "the-right-token-0123"))

        let id = store.open()
        #expect(store.session(id) != nil && store.session("not-" + id) == nil)
        clock.advance(SessionStore.lifetime + .seconds(1))
        #expect(store.session(id) == nil)
    }

    @Test func chartAxisUsesRoundNumbers() {
        #expect([0, 1, 3, 7, 12, 180, 2001].map(AttemptsChart.niceCeiling) == [1, 1, 5, 10, 20, 200, 5000])
    }
}
