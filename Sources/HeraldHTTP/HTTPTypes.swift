/// One webhook request, ready to send: everything is computed by the caller, the engine only transmits it.
public struct HTTPRequest: Sendable {
    public var url: String
    /// Header lines as `Name: value` (the engine adds `Content-Type`, `User-Agent` and an empty `Expect:`).
    public var headers: [String]
    public var body: [UInt8]
    /// The whole attempt: DNS, connect, TLS, request and response.
    public var timeout: Duration

    public init(url: String, headers: [String], body: [UInt8], timeout: Duration) {
        self.url = url
        self.headers = headers
        self.body = body
        self.timeout = timeout
    }
}

/// What came back from one attempt: a status and body when the receiver answered, an `HTTPError` when not.
public struct HTTPResponse: Sendable {
    /// The HTTP status, when a complete response arrived (nil with `error` set otherwise).
    public var status: Int?
    /// The start of the response body, at most the engine's cap.
    public var body: [UInt8]
    public var bodyTruncated: Bool
    /// The raw `Retry-After` header, if any.
    public var retryAfter: String?
    public var error: HTTPError?
    public var duration: Duration

    public init(status: Int?, body: [UInt8], bodyTruncated: Bool, retryAfter: String?, error: HTTPError?,
                duration: Duration) {
        self.status = status
        self.body = body
        self.bodyTruncated = bodyTruncated
        self.retryAfter = retryAfter
        self.error = error
        self.duration = duration
    }

    /// True for a complete 2xx response.
    public var isSuccess: Bool {
        guard error == nil, let status else { return false }
        return (200..<300).contains(status)
    }
}

/// Why an attempt got no (complete) response. Carries curl's code and a message a person can act on.
public struct HTTPError: Error, Sendable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        case timeout
        /// The address policy refused every address the host resolved to.
        case refusedAddress
        case dns
        case connect
        case tls
        /// The receiver closed or broke the connection mid-exchange, or sent something that is not HTTP.
        case connectionLost
        case invalidURL
        case other
    }

    public var kind: Kind
    /// The `CURLcode`, when curl reported the error.
    public var curlCode: Int?
    public var message: String

    public init(kind: Kind, curlCode: Int?, message: String) {
        self.kind = kind
        self.curlCode = curlCode
        self.message = message
    }

    public var description: String { message }
}
