internal import CLibPQ

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One libpq connection: the only place Herald touches `PGconn`.
///
/// Not thread-safe by design: each worker thread owns its connections, which matches libpq's own rule (one
/// thread per `PGconn` at a time). Values are always sent as parameters (`PQexecParams`), never spliced into SQL.
public final class PostgresConnection {
    private var handle: OpaquePointer?
    /// Names of statements prepared on this session (see `execute(prepared:…)`).
    private var prepared: Set<String> = []
    /// NOTICEs the server sent, kept until `takeNotices()` (libpq calls the receiver on this connection's thread).
    private let notices = NoticeBuffer()

    /// Connects using a `postgresql://user:pass@host:port/db?…` URL or a `key=value …` string, as libpq accepts.
    ///
    /// - Throws: `PostgresError` of kind `.connection`, whose message never contains the password.
    public init(_ connectionString: String) throws {
        let conn = PQconnectdb(connectionString)
        guard let conn, PQstatus(conn) == CONNECTION_OK else {
            let message = conn.map { String(cString: PQerrorMessage($0)) } ?? "out of memory"
            PQfinish(conn)
            throw PostgresError(kind: .connection, message: "could not connect to PostgreSQL: \(message.trimmed)")
        }
        handle = conn
        // NOTICEs (e.g. "relation already exists, skipping") are kept for `takeNotices()` instead of libpq
        // printing them to stderr. The buffer lives as long as this object, which outlives the PGconn.
        PQsetNoticeReceiver(conn, { context, result in
            guard let context, let result else { return }
            let buffer = Unmanaged<NoticeBuffer>.fromOpaque(context).takeUnretainedValue()
            func field(_ code: Int32) -> String? { PQresultErrorField(result, code).map { String(cString: $0) } }
            buffer.append(Notice(sqlState: field(CLibPQ_DIAG_SQLSTATE) ?? "",
                                 message: field(CLibPQ_DIAG_MESSAGE_PRIMARY) ?? ""))
        }, Unmanaged.passUnretained(notices).toOpaque())
    }

    /// A NOTICE (or WARNING) the server sent during a statement.
    public struct Notice: Sendable, Equatable {
        /// `00000` for a plain `RAISE NOTICE`; e.g. `42P07` for "relation already exists, skipping".
        public var sqlState: String
        public var message: String
    }

    /// The notices received since the last call, oldest first (at most the last 1,000).
    public func takeNotices() -> [Notice] { notices.take() }

    deinit { close() }

    /// `connectionString` with TCP keepalives and a TCP user timeout added where it does not set them, so a
    /// silently dropped network path fails a call within about 30 s instead of blocking it for hours.
    public static func withNetworkTimeouts(_ connectionString: String) -> String {
        let settings = [("keepalives", "1"), ("keepalives_idle", "10"), ("keepalives_interval", "5"),
                        ("keepalives_count", "3"), ("tcp_user_timeout", "30000")]
        let missing = settings.filter { !connectionString.contains($0.0 + "=") && !connectionString.contains($0.0 + " =") }
        guard !missing.isEmpty else { return connectionString }
        if connectionString.contains("://") {
            let separator = connectionString.contains("?") ? "&" : "?"
            return connectionString + separator + missing.map { "\($0.0)=\($0.1)" }.joined(separator: "&")
        }
        return connectionString + " " + missing.map { "\($0.0)=\($0.1)" }.joined(separator: " ")
    }

    /// Closes the connection; later calls throw a `.connection` error.
    public func close() {
        if let handle { PQfinish(handle) }
        handle = nil
        prepared.removeAll()
    }

    /// True while libpq believes the connection is usable.
    public var isOpen: Bool {
        guard let handle else { return false }
        return PQstatus(handle) == CONNECTION_OK
    }

    /// The server's process id for this session (useful to kill it in tests).
    public var backendPID: Int32 {
        guard let handle else { return 0 }
        return PQbackendPID(handle)
    }

    /// Runs one statement with positional parameters (`$1`, `$2`, …) in text format; `nil` is SQL NULL.
    @discardableResult
    public func query(_ sql: String, _ parameters: [String?] = []) throws -> PostgresResult {
        let conn = try liveHandle()
        let result = withCStrings(parameters) { values in
            PQexecParams(conn, sql, Int32(parameters.count), nil, values, nil, nil, 0)
        }
        return try check(result)
    }

    /// Runs a statement prepared once per session under `name`: the server parses and plans it once.
    @discardableResult
    public func execute(prepared name: String, _ sql: String, _ parameters: [String?]) throws -> PostgresResult {
        let conn = try liveHandle()
        if !prepared.contains(name) {
            _ = try check(PQprepare(conn, name, sql, Int32(parameters.count), nil))
            prepared.insert(name)
        }
        let result = withCStrings(parameters) { values in
            PQexecPrepared(conn, name, Int32(parameters.count), values, nil, nil, 0)
        }
        return try check(result)
    }

    /// Runs a script of several statements with no parameters (migrations). Uses the simple query protocol.
    public func executeScript(_ sql: String) throws {
        let conn = try liveHandle()
        _ = try check(PQexec(conn, sql))
    }

    /// Runs `body` in a transaction: COMMIT when it returns, ROLLBACK when it throws.
    public func transaction<T>(_ body: (PostgresConnection) throws -> T) throws -> T {
        try query("BEGIN")
        do {
            let value = try body(self)
            try query("COMMIT")
            return value
        } catch {
            if isOpen { _ = try? query("ROLLBACK") }
            throw error
        }
    }

    // MARK: LISTEN / NOTIFY

    /// A notification received on a channel this session LISTENs to.
    public struct Notification: Sendable {
        public var channel: String
        public var payload: String
    }

    /// Waits up to `timeoutMilliseconds` for notifications (`poll` on the socket, as PostgreSQL's testlibpq2.c
    /// does) and returns those that arrived; an empty array on timeout.
    ///
    /// - Throws: `.connection` when the connection broke while waiting.
    public func waitForNotifications(timeoutMilliseconds: Int32) throws -> [Notification] {
        let conn = try liveHandle()
        var received = drainNotifications(conn)
        if !received.isEmpty { return received }
        let socket = PQsocket(conn)
        guard socket >= 0 else { throw brokenConnection(conn) }
        var descriptor = pollfd(fd: socket, events: Int16(POLLIN), revents: 0)
        let ready = poll(&descriptor, 1, timeoutMilliseconds)
        if ready < 0 && errno != EINTR {
            throw PostgresError(kind: .connection, message: "poll on the PostgreSQL socket failed (errno \(errno))")
        }
        if ready > 0 {
            if PQconsumeInput(conn) == 0 { throw brokenConnection(conn) }
            received = drainNotifications(conn)
        }
        if PQstatus(conn) != CONNECTION_OK { throw brokenConnection(conn) }
        return received
    }

    private func drainNotifications(_ conn: OpaquePointer) -> [Notification] {
        var received: [Notification] = []
        while let notify = PQnotifies(conn) {
            received.append(Notification(
                channel: String(cString: notify.pointee.relname),
                payload: String(cString: notify.pointee.extra)))
            PQfreemem(notify)
        }
        return received
    }

    // MARK: Internals

    private func liveHandle() throws -> OpaquePointer {
        guard let handle else {
            throw PostgresError(kind: .connection, message: "the PostgreSQL connection is closed")
        }
        return handle
    }

    private func brokenConnection(_ conn: OpaquePointer) -> PostgresError {
        PostgresError(kind: .connection,
                      message: "lost the PostgreSQL connection: \(String(cString: PQerrorMessage(conn)).trimmed)")
    }

    private func check(_ result: OpaquePointer?) throws -> PostgresResult {
        guard let conn = handle else {
            PQclear(result)
            throw PostgresError(kind: .connection, message: "the PostgreSQL connection is closed")
        }
        guard let result else {
            throw PostgresError(kind: .connection, message: String(cString: PQerrorMessage(conn)).trimmed)
        }
        switch PQresultStatus(result) {
        case PGRES_COMMAND_OK, PGRES_TUPLES_OK, PGRES_EMPTY_QUERY:
            return PostgresResult(taking: result)
        default:
            let error = PostgresError(
                kind: PQstatus(conn) == CONNECTION_OK ? .query : .connection,
                sqlState: field(result, CLibPQ_DIAG_SQLSTATE),
                message: field(result, CLibPQ_DIAG_MESSAGE_PRIMARY) ?? String(cString: PQresultErrorMessage(result)).trimmed,
                detail: field(result, CLibPQ_DIAG_MESSAGE_DETAIL),
                hint: field(result, CLibPQ_DIAG_MESSAGE_HINT))
            PQclear(result)
            if error.isConnectionProblem { prepared.removeAll() }
            throw error
        }
    }

    private func field(_ result: OpaquePointer, _ code: Int32) -> String? {
        guard let value = PQresultErrorField(result, code) else { return nil }
        return String(cString: value)
    }
}

/// Where the notice receiver puts what the server says; only touched on the connection's own thread.
private final class NoticeBuffer {
    private var items: [PostgresConnection.Notice] = []

    func append(_ notice: PostgresConnection.Notice) {
        if items.count >= 1000 { items.removeFirst() }
        items.append(notice)
    }

    func take() -> [PostgresConnection.Notice] {
        defer { items.removeAll() }
        return items
    }
}

/// Calls `body` with a C array of NUL-terminated copies of `strings` (`nil` stays a NULL pointer); the copies
/// live exactly as long as the call, which is what libpq requires of parameter arrays.
private func withCStrings<R>(_ strings: [String?], _ body: ([UnsafePointer<CChar>?]) -> R) -> R {
    let copies: [UnsafeMutablePointer<CChar>?] = strings.map { $0.flatMap { strdup($0) } }
    defer { copies.forEach { free($0) } }
    return body(copies.map { $0.map { UnsafePointer($0) } })
}

extension String {
    var trimmed: String {
        var text = Substring(self)
        while let last = text.last, last.isWhitespace { text.removeLast() }
        return String(text)
    }
}
