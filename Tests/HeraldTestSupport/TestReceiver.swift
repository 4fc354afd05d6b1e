import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A real HTTP/1.1 server on 127.0.0.1 for tests: it records every request and answers as the test scripts it
/// (a status, a hang past the client's timeout, a reset, a body cut short).
///
/// Blocking sockets and a thread per connection: simple, and real enough that Herald's libcurl engine cannot
/// tell it from a production receiver.
public final class TestReceiver: Sendable {
    public struct Request: Sendable {
        public var method: String
        public var path: String
        /// Header names lower-cased.
        public var headers: [String: String]
        public var body: [UInt8]
        public var receivedAt: Date
        public var bodyText: String { String(decoding: body, as: UTF8.self) }
    }

    public enum Reply: Sendable {
        case status(Int, body: String = "ok", headers: [String] = [])
        /// Read the request, then say nothing for this long (past the client's timeout), then close.
        case hang(seconds: Double)
        /// Answer with `status` after `seconds`.
        case delayed(seconds: Double, status: Int)
        /// Send a status line and headers promising a body, then one byte every `interval` seconds, forever.
        case trickle(interval: Double)
        /// Close the connection with a TCP reset, without answering.
        case reset
        /// Send headers promising more body than is sent, then close.
        case truncated
        /// Send a status line and headers with a body of `size` bytes of `byte`.
        case largeBody(Int, size: Int, byte: UInt8)
    }

    public let port: Int
    private let listener: Int32
    private let state = Mutex<[Request]>([])
    private let responder: @Sendable (Request, Int) -> Reply
    private let closed = Atomic<Bool>(false)

    /// - Parameter responder: given a request and its 0-based index, what to answer. Default: 200 "ok".
    public init(responder: @escaping @Sendable (Request, Int) -> Reply = { _, _ in .status(200) }) throws {
        self.responder = responder
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw ReceiverError("socket() failed") }
        var yes: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, listen(fd, 1024) == 0 else {
            close(fd)
            throw ReceiverError("bind/listen on 127.0.0.1 failed")
        }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        port = Int(UInt16(bigEndian: address.sin_port))
        listener = fd
        let thread = Thread { [self] in self.acceptLoop() }
        thread.start()
    }

    deinit { stop() }

    public var url: String { "http://127.0.0.1:\(port)" }

    public var requests: [Request] { state.withLock { $0 } }

    public func stop() {
        if closed.exchange(true, ordering: .relaxed) { return }
        shutdown(listener, Int32(SHUT_RDWR))
        close(listener)
    }

    private func acceptLoop() {
        while !closed.load(ordering: .relaxed) {
            let client = accept(listener, nil, nil)
            if client < 0 {
                if errno == EINTR { continue }
                return
            }
            var yes: Int32 = 1
            setsockopt(client, Int32(IPPROTO_TCP), TCP_NODELAY, &yes, socklen_t(MemoryLayout<Int32>.size))
            let thread = Thread { [self] in self.serve(client) }
            thread.start()
        }
    }

    private func serve(_ fd: Int32) {
        var buffer: [UInt8] = []
        defer { close(fd) }
        while true {
            guard let request = readRequest(fd, &buffer) else { return }
            let index = state.withLock { requests -> Int in
                requests.append(request)
                return requests.count - 1
            }
            switch responder(request, index) {
            case let .status(code, body, headers):
                var head = "HTTP/1.1 \(code) Status\r\nContent-Length: \(body.utf8.count)\r\n"
                for header in headers { head += header + "\r\n" }
                if !writeAll(fd, Array((head + "\r\n" + body).utf8)) { return }
            case let .hang(seconds):
                Thread.sleep(forTimeInterval: seconds)
                return
            case let .delayed(seconds, code):
                Thread.sleep(forTimeInterval: seconds)
                if !writeAll(fd, Array("HTTP/1.1 \(code) Status\r\nContent-Length: 2\r\n\r\nok".utf8)) { return }
            case let .trickle(interval):
                if !writeAll(fd, Array("HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n".utf8)) { return }
                while writeAll(fd, [UInt8(ascii: "x")]) { Thread.sleep(forTimeInterval: interval) }
                return
            case .reset:
                var linger = linger(l_onoff: 1, l_linger: 0)
                setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<linger>.size))
                return
            case .truncated:
                _ = writeAll(fd, Array("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\npartial".utf8))
                return
            case let .largeBody(code, size, byte):
                let head = "HTTP/1.1 \(code) Status\r\nContent-Length: \(size)\r\n\r\n"
                if !writeAll(fd, Array(head.utf8)) { return }
                let chunk = [UInt8](repeating: byte, count: 65_536)
                var sent = 0
                while sent < size {
                    let n = min(chunk.count, size - sent)
                    if !writeAll(fd, Array(chunk[0..<n])) { return }
                    sent += n
                }
            }
        }
    }

    private func readRequest(_ fd: Int32, _ buffer: inout [UInt8]) -> Request? {
        let separator: [UInt8] = [13, 10, 13, 10]
        var headerEnd: Int?
        while true {
            if let end = find(separator, in: buffer) {
                headerEnd = end
                break
            }
            if !readMore(fd, &buffer) { return nil }
        }
        let head = String(decoding: buffer[0..<headerEnd!], as: UTF8.self)
        var lines = head.components(separatedBy: "\r\n")
        let requestLine = lines.removeFirst().split(separator: " ")
        var headers: [String: String] = [:]
        for line in lines {
            guard let colon = line.firstIndex(of: ":") else { continue }
            let name = line[..<colon].lowercased()
            let value = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            headers[name] = value
        }
        let length = Int(headers["content-length"] ?? "0") ?? 0
        let bodyStart = headerEnd! + 4
        while buffer.count < bodyStart + length {
            if !readMore(fd, &buffer) { return nil }
        }
        let body = Array(buffer[bodyStart..<(bodyStart + length)])
        buffer.removeFirst(bodyStart + length)
        return Request(method: requestLine.first.map(String.init) ?? "",
                       path: requestLine.count > 1 ? String(requestLine[1]) : "",
                       headers: headers, body: body, receivedAt: Date())
    }

    private func readMore(_ fd: Int32, _ buffer: inout [UInt8]) -> Bool {
        var chunk = [UInt8](repeating: 0, count: 65_536)
        let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        guard n > 0 else { return false }
        buffer.append(contentsOf: chunk[0..<n])
        return true
    }

    private func writeAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return false }
            offset += n
        }
        return true
    }

    private func find(_ needle: [UInt8], in haystack: [UInt8]) -> Int? {
        guard haystack.count >= needle.count else { return nil }
        for start in 0...(haystack.count - needle.count) where haystack[start] == needle[0] {
            if Array(haystack[start..<(start + needle.count)]) == needle { return start }
        }
        return nil
    }
}

public struct ReceiverError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
