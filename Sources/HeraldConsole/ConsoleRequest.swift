/// One HTTP request as the console sees it, whatever server read it off the wire.
///
/// Keeping the console's rules (authentication, the same-origin check, routing, pages) on this plain value
/// rather than on a server library's types lets the server be swapped and lets the rules be tested without a
/// socket.
public struct ConsoleRequest: Sendable {
    public var method: String
    /// The path without the query string, percent-decoding not applied (ids and fixed words only).
    public var path: String
    /// The query string's parameters, decoded.
    public var query: [String: String]
    /// Header names lower-cased; a repeated header keeps its last value.
    public var headers: [String: String]
    public var body: [UInt8]

    public init(method: String, target: String, headers: [(String, String)], body: [UInt8] = []) {
        self.method = method.uppercased()
        let parts = target.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false)
        path = parts.first.map(String.init) ?? "/"
        query = parts.count > 1 ? FormData.decode(String(parts[1])) : [:]
        var lowered: [String: String] = [:]
        for (name, value) in headers { lowered[name.lowercased()] = value }
        self.headers = lowered
        self.body = body
    }

    /// The URL-encoded form in the body of a POST.
    public var form: [String: String] {
        guard headers["content-type"]?.lowercased().hasPrefix("application/x-www-form-urlencoded") ?? true else { return [:] }
        return FormData.decode(String(decoding: body, as: UTF8.self))
    }

    /// Whether the client is a browser asking for a page (it gets a redirect to the login page rather than 401).
    public var wantsHTML: Bool { headers["accept"]?.lowercased().contains("text/html") ?? false }

    /// The value of the named cookie.
    public func cookie(_ name: String) -> String? {
        guard let header = headers["cookie"] else { return nil }
        for pair in header.split(separator: ";") {
            let trimmed = pair.drop(while: { $0 == " " })
            if trimmed.hasPrefix(name + "=") { return String(trimmed.dropFirst(name.count + 1)) }
        }
        return nil
    }
}
