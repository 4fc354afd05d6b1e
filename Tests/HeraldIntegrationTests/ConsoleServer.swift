import Foundation
import HeraldTestSupport
import Testing

/// `herald console` started against a fixture's database on a free loopback port, and requests to it made with
/// curl (an independent HTTP client: it sends exactly the headers a test gives, and speaks TLS).
final class ConsoleServer {
    let process: HeraldProcess
    let base: String
    let token: String

    /// What came back: the status, the headers (names lower-cased) and the body.
    struct Reply {
        var status: Int
        var headers: [(String, String)]
        var body: String
        func header(_ name: String) -> String? { headers.last { $0.0 == name.lowercased() }?.1 }
        var cookies: [String] { headers.filter { $0.0 == "set-cookie" }.map(\.1) }
    }

    /// A logged-in browser: its session cookie and the form token its pages carry.
    struct Browser {
        var cookie: String
        var formToken: String
    }

    init(_ fixture: Fixture, environment: [String: String] = [:], tls: Bool = false) throws {
        let port = try freeLoopbackPort()
        var settings = ["DATABASE_URL": fixture.database.url, "HERALD_CONSOLE_ADDR": "127.0.0.1:\(port)"]
        for (key, value) in environment { settings[key] = value }
        let process = try HeraldProcess(["console"], environment: settings)
        self.process = process
        let started = eventually(timeout: 30) { process.output.contains("console: ") || !process.isRunning }
        guard started, process.isRunning else {
            throw ReceiverError("herald console did not start:\n\(process.output)")
        }
        base = "\(tls ? "https" : "http")://127.0.0.1:\(port)"
        if let configured = environment["HERALD_CONSOLE_TOKEN"] {
            token = configured
        } else {
            _ = eventually(timeout: 5) { process.output.contains("console token: ") }
            guard let line = process.output.split(separator: "\n").first(where: { $0.hasPrefix("console token: ") }) else {
                throw ReceiverError("herald console printed no token:\n\(process.output)")
            }
            token = String(line.dropFirst("console token: ".count))
        }
    }

    deinit { process.kill() }

    /// One request with curl (`-k`: the TLS test uses a self-signed certificate; the check is of the console).
    func request(_ method: String = "GET", _ path: String, headers: [String] = [], form: [(String, String)]? = nil)
        throws -> Reply
    {
        var arguments = ["-s", "-k", "-i", "--max-time", "30", "-X", method]
        for header in headers { arguments += ["-H", header] }
        if let form {
            for (name, value) in form { arguments += ["--data-urlencode", "\(name)=\(value)"] }
            if form.isEmpty { arguments += ["--data", ""] }
        }
        arguments.append(base + path)
        let output = try runTool("curl", arguments)
        // (runTool trims the output, so a response without a body ends with its last header line.)
        guard output.hasPrefix("HTTP/") else { throw ReceiverError("no HTTP response: \(output)") }
        let split = output.range(of: "\r\n\r\n") ?? output.endIndex..<output.endIndex
        let lines = output[..<split.lowerBound].components(separatedBy: "\r\n")
        let status = Int(lines[0].split(separator: " ")[1]) ?? 0
        let headers = lines.dropFirst().compactMap { line -> (String, String)? in
            guard let colon = line.firstIndex(of: ":") else { return nil }
            return (line[..<colon].lowercased(), line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces))
        }
        return Reply(status: status, headers: headers, body: String(output[split.upperBound...]))
    }

    /// Headers a browser sends with a form POST from the console's own page.
    var sameOrigin: String { "Origin: \(base)" }

    func bearer(_ method: String = "GET", _ path: String, form: [(String, String)]? = nil) throws -> Reply {
        try request(method, path, headers: ["Authorization: Bearer \(token)"], form: form)
    }

    /// Logs in as a browser does and reads the form token from a page.
    func logIn() throws -> Browser {
        let reply = try request("POST", "/login", headers: [sameOrigin, "Accept: text/html"], form: [("token", token)])
        guard reply.status == 303, let setCookie = reply.cookies.first,
              let cookie = setCookie.split(separator: ";").first.map(String.init) else {
            throw ReceiverError("login failed: \(reply.status) \(reply.body)")
        }
        let page = try request("GET", "/", headers: ["Cookie: \(cookie)", "Accept: text/html"])
        guard let formToken = ConsoleServer.formToken(in: page.body) else {
            throw ReceiverError("no form token on the overview page")
        }
        return Browser(cookie: cookie, formToken: formToken)
    }

    /// A POST as the logged-in browser sends it from a console page.
    func post(_ browser: Browser, _ path: String, _ fields: [(String, String)] = [], origin: String? = nil) throws -> Reply {
        try request("POST", path, headers: ["Cookie: \(browser.cookie)", "Origin: \(origin ?? base)", "Accept: text/html"],
                    form: [("_form", browser.formToken)] + fields)
    }

    func get(_ browser: Browser, _ path: String) throws -> Reply {
        try request("GET", path, headers: ["Cookie: \(browser.cookie)", "Accept: text/html"])
    }

    static func formToken(in page: String) -> String? {
        guard let range = page.range(of: #"name="_form" value=""#) else { return nil }
        return String(page[range.upperBound...].prefix { $0 != "\"" })
    }
}
