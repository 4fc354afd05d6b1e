import Foundation
import HeraldPostgres

/// The console's rules: who may see what, which requests may change anything, and which page answers.
///
/// Every request passes through `handle`, in this order: the login routes; then authentication (a Bearer token
/// for scripts, else the session cookie of a browser that logged in); then, for a POST from a browser, the
/// same-origin check and the session's form token; then read-only mode; then the route. A request that fails a
/// check gets no data: browsers asking for a page are sent to the login page, others get 401; a cross-site or
/// token-less POST gets 403. Runs on a request thread: the pages call PostgreSQL (blocking libpq).
public final class ConsoleApp: Sendable {
    public let configuration: ConsoleConfiguration
    public let sessions: SessionStore
    let pool: ConnectionPool

    /// The session cookie's name.
    public static let cookie = "herald_console_session"

    public init(configuration: ConsoleConfiguration, databaseURL: String) {
        self.configuration = configuration
        sessions = SessionStore()
        pool = ConnectionPool(url: databaseURL)
    }

    public func handle(_ request: ConsoleRequest) -> ConsoleResponse {
        var response: ConsoleResponse
        do {
            response = try route(request)
        } catch let error as PostgresError {
            // The message only (never DETAIL, which may quote row values); escaped like everything else.
            response = .page(Layout.page("Error", .none, nil, Layout.card(
                "The database refused or failed", "<p>\(error.description)</p>")), status: 500)
        } catch {
            response = .page(Layout.page("Error", .none, nil, Layout.card("Error", "<p>\(String(describing: error))</p>")),
                             status: 500)
        }
        response.headers += ConsoleResponse.securityHeaders
        return response
    }

    /// Who is asking: a script with the token, or a browser with a live session.
    enum Caller {
        case bearer
        case browser(sessionID: String, SessionStore.Session)
    }

    func route(_ request: ConsoleRequest) throws -> ConsoleResponse {
        switch (request.method, request.path) {
        case ("GET", "/login"), ("HEAD", "/login"):
            if sessions.session(request.cookie(ConsoleApp.cookie)) != nil { return .redirect("/") }
            return .page(LoginPage.render(failed: false, configuration: configuration))
        case ("POST", "/login"):
            return login(request)
        default:
            break
        }
        guard let caller = authenticate(request) else {
            if request.headers["authorization"] == nil && request.wantsHTML { return .redirect("/login") }
            return .text("authentication required: log in at /login, or send Authorization: Bearer TOKEN", status: 401,
                         headers: [("WWW-Authenticate", "Bearer realm=\"herald console\"")])
        }
        let viewer: Layout.Viewer
        switch caller {
        case .bearer:
            viewer = Layout.Viewer(formToken: "", readOnly: configuration.readOnly, loggedInWithCookie: false)
        case .browser(_, let session):
            viewer = Layout.Viewer(formToken: session.formToken, readOnly: configuration.readOnly, loggedInWithCookie: true)
        }
        if request.method == "POST" {
            if case .browser(let id, let session) = caller {
                guard sameOrigin(request) else {
                    return .text("refused: a cross-site request cannot change anything here", status: 403)
                }
                guard let given = request.form["_form"], sessions.same(given, session.formToken) else {
                    return .text("refused: the form token is missing or stale; reload the page and try again", status: 403)
                }
                if request.path == "/logout" {
                    sessions.close(id)
                    return .redirect("/login", headers: [("Set-Cookie", cookie(value: "", maxAge: 0))])
                }
            } else if request.path == "/logout" {
                return .redirect("/login")
            }
            if configuration.readOnly {
                return .text("refused: this console is read-only (HERALD_CONSOLE_READONLY=1)", status: 403)
            }
            return try pool.withConnection { try Actions.perform(request, $0, viewer) }
        }
        guard request.method == "GET" || request.method == "HEAD" else {
            return .text("method not allowed", status: 405, headers: [("Allow", "GET, POST")])
        }
        return try pool.withConnection { connection in try pages(request, connection, viewer) }
    }

    func pages(_ request: ConsoleRequest, _ connection: PostgresConnection, _ viewer: Layout.Viewer) throws
        -> ConsoleResponse
    {
        let parts = request.path.split(separator: "/").map(String.init)
        switch parts.count {
        case 0:
            return .page(try OverviewPage.render(connection, viewer))
        case 1 where parts[0] == "endpoints":
            return .page(try EndpointsPage.render(connection, viewer, organization: request.query["org"]))
        case 2 where parts[0] == "endpoints" && UUID(uuidString: parts[1]) != nil:
            let outcome = EndpointPage.Outcome(
                done: request.query["done"], count: request.query["count"],
                testDelivery: request.query["test"].flatMap { UUID(uuidString: $0) != nil ? $0.lowercased() : nil })
            guard let page = try EndpointPage.render(connection, viewer, id: parts[1].lowercased(),
                                                     status: request.query["status"], outcome: outcome) else {
                return notFound("No webhook config has the id \(parts[1]).")
            }
            return .page(page)
        case 2 where parts[0] == "deliveries" && UUID(uuidString: parts[1]) != nil:
            guard let page = try DeliveryPage.render(connection, viewer, id: parts[1].lowercased(),
                                                     replayed: request.query["done"] == "replayed") else {
                return notFound("No delivery has the id \(parts[1]) (it may have been pruned; webhook_logs keeps its attempts).")
            }
            return .page(page)
        case 1 where parts[0] == "search":
            switch try SearchPage.render(connection, viewer, query: request.query["q"] ?? "") {
            case .page(let html): return .page(html)
            case .redirect(let location): return .redirect(location)
            }
        default:
            return notFound("There is no page at this address.")
        }
    }

    func notFound(_ message: String) -> ConsoleResponse {
        .page(Layout.page("Not found", .none, nil, Layout.card("Not found", "<p>\(message)</p><p><a href=\"/\">Overview</a></p>")),
              status: 404)
    }

    func login(_ request: ConsoleRequest) -> ConsoleResponse {
        guard sameOrigin(request) else {
            return .text("refused: a cross-site request cannot log in here", status: 403)
        }
        guard let token = request.form["token"], sessions.check(token, against: configuration.token) else {
            return .page(LoginPage.render(failed: true, configuration: configuration), status: 401)
        }
        let id = sessions.open()
        return .redirect("/", headers: [("Set-Cookie", cookie(value: id, maxAge: Int(SessionStore.lifetime.components.seconds)))])
    }

    /// `HttpOnly` (no script can read it), `SameSite=Strict` (no other site's page sends it), `Secure` when
    /// browsers come over https.
    func cookie(value: String, maxAge: Int) -> String {
        "\(ConsoleApp.cookie)=\(value); Path=/; Max-Age=\(maxAge); HttpOnly; SameSite=Strict"
            + (configuration.secureCookies ? "; Secure" : "")
    }

    func authenticate(_ request: ConsoleRequest) -> Caller? {
        if let authorization = request.headers["authorization"] {
            guard authorization.lowercased().hasPrefix("bearer ") else { return nil }
            let token = authorization.dropFirst("bearer ".count).trimmingCharacters(in: .whitespaces)
            return sessions.check(token, against: configuration.token) ? .bearer : nil
        }
        guard let id = request.cookie(ConsoleApp.cookie), let session = sessions.session(id) else { return nil }
        return .browser(sessionID: id, session)
    }

    /// The request comes from a page of this console: `Sec-Fetch-Site` (when the browser sends it) is
    /// `same-origin`, and `Origin` (else `Referer`) names the host the request was sent to. A request with
    /// neither is refused: every current browser sends `Origin` with a POST.
    func sameOrigin(_ request: ConsoleRequest) -> Bool {
        if let site = request.headers["sec-fetch-site"], site != "same-origin" && site != "none" { return false }
        let forwarded = configuration.behindProxy ? request.headers["x-forwarded-host"] : nil
        guard let host = (forwarded ?? request.headers["host"])?.lowercased(), !host.isEmpty else { return false }
        guard let source = request.headers["origin"] ?? request.headers["referer"], source != "null" else { return false }
        return ConsoleApp.authority(of: source)?.lowercased() == host
    }

    /// `https://host:8400/path` → `host:8400`.
    static func authority(of url: String) -> String? {
        guard let scheme = url.range(of: "://") else { return nil }
        let rest = url[scheme.upperBound...]
        return String(rest.prefix { $0 != "/" && $0 != "?" && $0 != "#" })
    }
}
