import Foundation
import HeraldCore
import HeraldSigning
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The HTTP side of `herald receive`: blocking sockets and a thread per connection on 127.0.0.1, which is all a
/// development receiver needs (each connection can be delayed by `--delay` without holding up the others).
/// Hand-written like `MetricsServer`: one route, loopback only.
final class ReceiveServer: Sendable {
    struct Settings: Sendable {
        /// The HMAC key: the secret's UTF-8 bytes (or, given as `whsec_…`, its base64-decoded bytes).
        var key: [UInt8]?
        var status: Int
        var delay: Duration
        var count: Int?
    }

    /// Requests larger than this are answered 413 and not printed.
    static let maxBodyBytes = 16 << 20
    static let maxHeaderBytes = 64 << 10
    /// Standard Webhooks libraries reject a timestamp further than this from their clock.
    static let timestampTolerance = 300

    let port: Int
    private let listener: Int32
    private let settings: Settings
    /// Requests answered so far; also serializes printing, so two deliveries never interleave.
    private let answered = Mutex<Int>(0)

    /// The HMAC key for a secret as `herald config` stores it, or as a Standard Webhooks `whsec_` secret.
    static func key(for secret: String) -> [UInt8] {
        if secret.hasPrefix("whsec_"), let decoded = Data(base64Encoded: String(secret.dropFirst(6))) {
            return [UInt8](decoded)
        }
        return Array(secret.utf8)
    }

    init(port: Int, settings: Settings) throws {
        self.settings = settings
        do {
            let socket = try ListeningSocket(host: "127.0.0.1", port: UInt16(port))
            self.port = socket.port
            listener = socket.descriptor
        } catch {
            // The host is a literal, so only the system can refuse: say why, and what to do.
            let code = if case let .system(code) = error { code } else { Int32(0) }
            let reason = code == EADDRINUSE ? "it is taken (another herald receive?)" : "errno \(code)"
            throw CommandFailure("cannot listen on 127.0.0.1:\(port): \(reason); choose another with --port")
        }
    }

    /// Accepts connections until the process ends.
    func serve() -> Never {
        while true {
            let client = accept(listener, nil, nil)
            if client < 0 {
                if errno == EMFILE || errno == ENFILE { Thread.sleep(forTimeInterval: 0.1) }
                continue
            }
            let thread = Thread { [self] in self.handle(client) }
            thread.start()
        }
    }

    private struct Request {
        var method: String
        var path: String
        /// Names lower-cased, in the order received.
        var headers: [(String, String)]
        var body: [UInt8]
        var keepAlive: Bool

        func header(_ name: String) -> String? { headers.first { $0.0 == name }?.1 }
    }

    private func handle(_ fd: Int32) {
        defer { close(fd) }
        var buffer: [UInt8] = []
        while true {
            let request: Request
            switch read(fd, &buffer) {
            case .closed: return
            case let .refused(status, reason):
                _ = reply(fd, status: status, body: reason + "\n", keepAlive: false)
                return
            case let .request(parsed): request = parsed
            }
            if settings.delay > .zero {
                Thread.sleep(forTimeInterval: Double(settings.delay.components.seconds)
                             + Double(settings.delay.components.attoseconds) / 1e18)
            }
            let body = (200..<300).contains(settings.status)
                ? "ok\n" : "herald receive answered \(settings.status), as asked with --status\n"
            let sent = reply(fd, status: settings.status, body: body, keepAlive: request.keepAlive)
            let done = answered.withLock { count -> Bool in
                count += 1
                report(request, number: count, sent: sent)
                return settings.count.map { count >= $0 } ?? false
            }
            if done { exit(0) }
            if !sent || !request.keepAlive { return }
        }
    }

    private enum ReadResult {
        case request(Request)
        case refused(Int, String)
        case closed
    }

    private func read(_ fd: Int32, _ buffer: inout [UInt8]) -> ReadResult {
        let separator: [UInt8] = [13, 10, 13, 10]
        var headerEnd: Int
        while true {
            if let end = Self.find(separator, in: buffer) {
                headerEnd = end
                break
            }
            if buffer.count > Self.maxHeaderBytes { return .refused(431, "request headers too large") }
            if !readMore(fd, &buffer) { return .closed }
        }
        let head = String(decoding: buffer[0..<headerEnd], as: UTF8.self)
        var lines = head.components(separatedBy: "\r\n")
        let requestLine = lines.removeFirst().split(separator: " ")
        var headers: [(String, String)] = []
        for line in lines {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers.append((line[..<colon].lowercased(),
                            line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)))
        }
        let find = { (name: String) in headers.first { $0.0 == name }?.1 }
        if find("transfer-encoding") != nil {
            return .refused(411, "chunked bodies are not supported by herald receive; send Content-Length")
        }
        let length = Int(find("content-length") ?? "0") ?? -1
        guard length >= 0 else { return .refused(400, "bad Content-Length") }
        guard length <= Self.maxBodyBytes else { return .refused(413, "body over \(Self.maxBodyBytes) bytes") }
        let bodyStart = headerEnd + 4
        while buffer.count < bodyStart + length {
            if !readMore(fd, &buffer) { return .closed }
        }
        let body = Array(buffer[bodyStart..<(bodyStart + length)])
        buffer.removeFirst(bodyStart + length)
        let version = requestLine.count > 2 ? String(requestLine[2]) : "HTTP/1.0"
        let connection = find("connection")?.lowercased()
        let keepAlive = version == "HTTP/1.1" ? connection != "close" : connection == "keep-alive"
        return .request(Request(method: requestLine.first.map(String.init) ?? "?",
                                path: requestLine.count > 1 ? String(requestLine[1]) : "?",
                                headers: headers, body: body, keepAlive: keepAlive))
    }

    private func readMore(_ fd: Int32, _ buffer: inout [UInt8]) -> Bool {
        var chunk = [UInt8](repeating: 0, count: 65_536)
        let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        guard n > 0 else { return false }
        buffer.append(contentsOf: chunk[0..<n])
        return true
    }

    private func reply(_ fd: Int32, status: Int, body: String, keepAlive: Bool) -> Bool {
        let head = "HTTP/1.1 \(status) \(Self.reason(status))\r\nContent-Type: text/plain\r\n"
            + "Content-Length: \(body.utf8.count)\r\nConnection: \(keepAlive ? "keep-alive" : "close")\r\n\r\n"
        let bytes = Array((head + body).utf8)
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return false }
            offset += n
        }
        return true
    }

    // MARK: Printing

    /// One block per request, printed while holding the counter's lock.
    private func report(_ request: Request, number: Int, sent: Bool) {
        let formatter = DateFormatter()
        formatter.dateFormat = "HH:mm:ss.SSS"
        var lines = ["── #\(number)  \(formatter.string(from: Date()))  \(request.method) \(request.path) ──────────"]
        func field(_ name: String, _ value: String) {
            lines.append(name.padding(toLength: 10, withPad: " ", startingAt: 0) + " " + value)
        }
        if let event = request.header("x-webhook-event") {
            field("event", event)
            field("id", request.header("x-webhook-id") ?? request.header("webhook-id") ?? "(none)")
            field("attempt", request.header("x-webhook-attempt") ?? "(none)")
            if let replay = request.header("x-webhook-replay") { field("replay", replay) }
            if let occurred = request.header("x-webhook-timestamp") { field("occurred", occurred) }
            let checks = verify(request)
            for (index, check) in checks.enumerated() { field(index == 0 ? "signature" : "", check) }
        } else {
            field("note", "not a Herald delivery (no X-Webhook-Event header)")
        }
        let body = Self.pretty(request.body)
        if body.isEmpty {
            field("body", "(empty)")
        } else {
            for (index, line) in body.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
                field(index == 0 ? "body" : "", String(line))
            }
        }
        let delayNote = settings.delay > .zero ? " after \(settings.delay)" : ""
        field("answered", sent ? "\(settings.status)\(delayNote)" : "\(settings.status)\(delayNote), but the client had gone")
        lines.append("")
        print(lines.joined(separator: "\n"))
        fflush(nil)  // nil: every stream (stdout may be a file)
    }

    /// ✓ or ✗ for each signature, with what was wrong.
    private func verify(_ request: Request) -> [String] {
        let hexHeader = request.header("x-webhook-signature")
        let standardHeader = request.header("webhook-signature")
        guard let key = settings.key else {
            if hexHeader == nil && standardHeader == nil { return ["none (the config has no secret: requests are unsigned)"] }
            return ["not checked (pass --secret or --secret-file with the config's secret)"]
        }
        var checks: [String] = []
        let expectedHex = Signer.hex(Signer.hmacSHA256(key: key, message: request.body))
        switch hexHeader {
        case nil:
            checks.append("✗ X-Webhook-Signature missing (the config has no secret?)")
        case let given?:
            checks.append(Signer.constantTimeEquals(Array(given.lowercased().utf8), Array(expectedHex.utf8))
                ? "✓ X-Webhook-Signature (hex HMAC-SHA256 of the body)"
                : "✗ X-Webhook-Signature does not match (another secret, or the body was changed)")
        }
        guard let standard = standardHeader else {
            checks.append("✗ webhook-signature missing")
            return checks
        }
        guard let id = request.header("webhook-id"), let timestampText = request.header("webhook-timestamp"),
              let timestamp = Int(timestampText) else {
            checks.append("✗ webhook-signature: webhook-id or webhook-timestamp missing")
            return checks
        }
        var message = Array("\(id).\(timestamp).".utf8)
        message.append(contentsOf: request.body)
        let expected = Array(Base64.encode(Signer.hmacSHA256(key: key, message: message)).utf8)
        let candidates = standard.split(separator: " ").compactMap { entry -> [UInt8]? in
            entry.hasPrefix("v1,") ? Array(entry.dropFirst(3).utf8) : nil
        }
        let matched = candidates.contains { Signer.constantTimeEquals($0, expected) }
        let age = Int(Date().timeIntervalSince1970) - timestamp
        let many = candidates.count > 1 ? ", one of \(candidates.count) (a secret rotation)" : ""
        if !matched {
            checks.append("✗ webhook-signature does not match (another secret, or the body was changed)")
        } else if abs(age) > Self.timestampTolerance {
            checks.append("✗ webhook-signature matches, but webhook-timestamp is \(age) s from now (Standard Webhooks libraries reject beyond \(Self.timestampTolerance) s)")
        } else {
            checks.append("✓ webhook-signature (Standard Webhooks, timestamp \(age) s old\(many))")
        }
        return checks
    }

    /// JSON indented for reading, in the order and spelling it arrived (no re-encoding); anything else as text.
    static func pretty(_ body: [UInt8]) -> String {
        let shown = body.count > 65_536 ? Array(body.prefix(65_536)) : body
        let more = body.count > shown.count ? "\n… (\(body.count - shown.count) more bytes)" : ""
        guard (try? JSONSerialization.jsonObject(with: Data(shown), options: [.fragmentsAllowed])) != nil else {
            return String(decoding: shown, as: UTF8.self) + more
        }
        var out = ""
        var depth = 0
        var inString = false
        var escaped = false
        let text = String(decoding: shown, as: UTF8.self)
        func newline() { out += "\n" + String(repeating: "  ", count: depth) }
        var previous: Character = " "
        for character in text {
            if inString {
                out.append(character)
                if escaped { escaped = false } else if character == "\\" { escaped = true } else if character == "\"" { inString = false; previous = character }
                continue
            }
            switch character {
            case "\"":
                inString = true
                out.append(character)
            case "{", "[":
                out.append(character)
                depth += 1
                newline()
            case "}", "]":
                depth -= 1
                if previous == "{" || previous == "[" {
                    // Empty container: undo the line break.
                    while out.last == " " || out.last == "\n" { out.removeLast() }
                } else {
                    newline()
                }
                out.append(character)
            case ",":
                out.append(character)
                newline()
            case ":":
                out.append(": ")
            case " ", "\n", "\r", "\t":
                continue
            default:
                out.append(character)
            }
            previous = character
        }
        return out + more
    }

    private static func reason(_ status: Int) -> String {
        switch status {
        case 200: "OK"
        case 201: "Created"
        case 202: "Accepted"
        case 204: "No Content"
        case 400: "Bad Request"
        case 401: "Unauthorized"
        case 403: "Forbidden"
        case 404: "Not Found"
        case 410: "Gone"
        case 411: "Length Required"
        case 413: "Content Too Large"
        case 429: "Too Many Requests"
        case 431: "Request Header Fields Too Large"
        case 500: "Internal Server Error"
        case 502: "Bad Gateway"
        case 503: "Service Unavailable"
        case 504: "Gateway Timeout"
        default: "Status"
        }
    }

    private static func find(_ needle: [UInt8], in haystack: [UInt8]) -> Int? {
        guard haystack.count >= needle.count else { return nil }
        for start in 0...(haystack.count - needle.count) where haystack[start] == needle[0] {
            if Array(haystack[start..<(start + needle.count)]) == needle { return start }
        }
        return nil
    }
}
