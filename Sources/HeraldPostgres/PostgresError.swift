/// Every failure that comes out of Herald's libpq wrapper.
///
/// It carries the server's SQLSTATE and message (plus detail and hint when the server sent them) so callers can
/// branch on the code and people can act on the text. The connection string is never part of it.
///
/// - Important: `description` (what `"\(error)"` and loggers print) is the primary message and the SQLSTATE
///   only. The server's DETAIL ("Failing row contains (…)", "Key (…)=(…)") and HINT can quote row values:
///   payloads, URLs, secrets. They are in `debugDescription` (`String(reflecting: error)`), for a person
///   debugging on purpose, as postgres-nio's `PSQLError` does.
public struct PostgresError: Error, CustomStringConvertible, CustomDebugStringConvertible, Sendable {
    /// What kind of step failed.
    public enum Kind: Sendable, Equatable {
        /// Could not connect, or the connection broke: retry after reconnecting.
        case connection
        /// The server rejected a statement (see `sqlState`).
        case query
        /// Herald misused the API or got a result it did not expect.
        case client
    }

    public var kind: Kind
    /// The five-character SQLSTATE, e.g. `23514` for a check violation, when the server sent one.
    public var sqlState: String?
    public var message: String
    public var detail: String?
    public var hint: String?

    public init(kind: Kind, sqlState: String? = nil, message: String, detail: String? = nil, hint: String? = nil) {
        self.kind = kind
        self.sqlState = sqlState
        self.message = message
        self.detail = detail
        self.hint = hint
    }

    /// True when the statement may succeed on a new connection: the connection broke, the server is shutting
    /// down or starting up (SQLSTATE classes 08 and 57P), a statement timeout (57014), or the server became a
    /// read-only standby after a failover (25006).
    public var isConnectionProblem: Bool {
        if kind == .connection { return true }
        guard let state = sqlState else { return false }
        return state.hasPrefix("08") || state.hasPrefix("57P") || state == "57014" || state == "25006"
    }

    /// The message and SQLSTATE, never the server's DETAIL or HINT: safe to log.
    public var description: String {
        var text = message
        if let sqlState { text += " [SQLSTATE \(sqlState)]" }
        return text
    }

    /// Everything the server sent, DETAIL and HINT included: may quote row values, so never logged by Herald.
    public var debugDescription: String {
        var text = message
        if let detail, !detail.isEmpty { text += " (\(detail))" }
        if let hint, !hint.isEmpty { text += " — hint: \(hint)" }
        if let sqlState { text += " [SQLSTATE \(sqlState)]" }
        return text
    }
}
