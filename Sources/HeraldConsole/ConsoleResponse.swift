/// One HTTP response from the console, before a server writes it.
public struct ConsoleResponse: Sendable {
    public var status: Int
    /// `(name, value)` pairs in order; `Set-Cookie` may repeat.
    public var headers: [(String, String)]
    public var body: [UInt8]

    public init(status: Int, headers: [(String, String)] = [], body: [UInt8] = []) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    static func page(_ html: HTML, status: Int = 200) -> ConsoleResponse {
        ConsoleResponse(status: status, headers: [("Content-Type", "text/html; charset=utf-8")],
                        body: Array(html.text.utf8))
    }

    public static func text(_ text: String, status: Int, headers: [(String, String)] = []) -> ConsoleResponse {
        ConsoleResponse(status: status, headers: [("Content-Type", "text/plain; charset=utf-8")] + headers,
                        body: Array((text + "\n").utf8))
    }

    /// `303 See Other`: after a POST, the browser GETs `location` (so a reload does not repeat the action).
    public static func redirect(_ location: String, headers: [(String, String)] = []) -> ConsoleResponse {
        ConsoleResponse(status: 303, headers: [("Location", location)] + headers)
    }

    public func value(of header: String) -> String? {
        headers.last { $0.0.lowercased() == header.lowercased() }?.1
    }

    /// What every response carries: nothing from the console may be framed, cached, sniffed or run as script.
    /// Styles are inline (`style-src 'unsafe-inline'`), which is safe because nothing the console prints from
    /// the database can open a tag or an attribute (`HTML` escapes it).
    public static let securityHeaders: [(String, String)] = [
        ("Content-Security-Policy",
         "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; "
            + "frame-ancestors 'none'; base-uri 'none'"),
        ("X-Content-Type-Options", "nosniff"),
        ("X-Frame-Options", "DENY"),
        ("Referrer-Policy", "same-origin"),
        ("Cache-Control", "no-store"),
    ]
}
