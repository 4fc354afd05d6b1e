import Foundation
import HeraldCore
import Prometheus

#if canImport(Glibc)
import Glibc
#endif

/// The worker's tiny HTTP listener: `GET /metrics` (Prometheus text format) and `GET /healthz` (200 while the
/// database connection works, 503 otherwise).
///
/// An orchestrator restarts the worker when `/healthz` does not answer, so no client may be able to hold the
/// listener: one thread runs a `poll` loop over non-blocking sockets and serves every connection at once. Each
/// connection gets `connectionDeadline` from accept to its last byte sent, then it is closed; at most
/// `maxConnections` are open, and the oldest makes room for a new one; every `accept` error (EMFILE included) is
/// survived by pausing accepts for a moment. Hand-written rather than SwiftNIO or Hummingbird: two fixed GET
/// routes on loopback do not justify the build time those add.
final class MetricsServer: Sendable {
    /// The longest a connection may take, from accept to its last byte sent.
    static let connectionDeadline: Duration = .seconds(5)
    static let maxConnections = 128
    /// A request line longer than this is refused (scrapers send a few dozen bytes).
    static let maxRequestBytes = 8192
    /// `/metrics` is bounded at its source (per-config series are capped); this guards against anything else.
    static let maxResponseBytes = 4 << 20
    /// How long accepting pauses after an `accept` error such as EMFILE (out of file descriptors).
    static let acceptPause: Duration = .milliseconds(100)

    let port: Int
    private let listener: Int32
    private let registry: PrometheusCollectorRegistry
    private let isHealthy: @Sendable () -> Bool

    /// Binds `address` (`host:port`, IPv4); throws a message naming the address when it cannot.
    init(address: String, registry: PrometheusCollectorRegistry, isHealthy: @escaping @Sendable () -> Bool) throws {
        let parts = address.split(separator: ":")
        guard parts.count == 2, let port = UInt16(parts[1]) else {
            throw CommandFailure("HERALD_METRICS_ADDR=\(address) is not host:port (e.g. 127.0.0.1:9464), or off")
        }
        do {
            let socket = try ListeningSocket(host: String(parts[0]), port: port, nonBlocking: true)
            self.port = socket.port
            listener = socket.descriptor
        } catch .notIPv4 {
            throw CommandFailure("HERALD_METRICS_ADDR=\(address): '\(parts[0])' is not an IPv4 address")
        } catch let .system(code) {
            throw CommandFailure("cannot listen on \(address) for /metrics (errno \(code)); set HERALD_METRICS_ADDR to a free port or off")
        }
        self.registry = registry
        self.isHealthy = isHealthy
        let thread = Thread { [self] in self.serve() }
        thread.name = "herald-metrics"
        thread.start()
    }

    /// One client connection: reading its request line, then writing the whole response.
    private struct Connection {
        let fd: Int32
        let deadline: ContinuousClock.Instant
        var request: [UInt8] = []
        var response: [UInt8]? = nil
        var sent = 0
    }

    private func serve() {
        var connections: [Connection] = []
        var acceptPausedUntil: ContinuousClock.Instant? = nil
        while true {
            let now = ContinuousClock.now
            // Close what ran out of time.
            connections.removeAll { connection in
                guard connection.deadline <= now else { return false }
                close(connection.fd)
                return true
            }
            if let until = acceptPausedUntil, until <= now { acceptPausedUntil = nil }

            var descriptors = connections.map {
                pollfd(fd: $0.fd, events: Int16($0.response == nil ? POLLIN : POLLOUT), revents: 0)
            }
            let listening = acceptPausedUntil == nil
            if listening { descriptors.append(pollfd(fd: listener, events: Int16(POLLIN), revents: 0)) }
            var wake = connections.map(\.deadline).min() ?? now + .seconds(1)
            if let until = acceptPausedUntil { wake = min(wake, until) }
            let timeout = max(1, min(1000, Int32((wake - now).milliseconds.rounded(.up))))
            let ready = poll(&descriptors, nfds_t(descriptors.count), timeout)
            if ready <= 0 { continue }  // timeout, or EINTR: deadlines are checked at the top

            var finished = Set<Int>()
            for index in connections.indices where descriptors[index].revents != 0 {
                if !step(&connections[index], events: descriptors[index].revents) { finished.insert(index) }
            }
            for index in finished.sorted(by: >) {
                close(connections[index].fd)
                connections.remove(at: index)
            }
            if listening, let last = descriptors.last, last.revents != 0 {
                acceptPausedUntil = acceptAll(into: &connections)
            }
        }
    }

    /// Accepts every pending connection. Returns when accepting should resume if an error calls for a pause.
    private func acceptAll(into connections: inout [Connection]) -> ContinuousClock.Instant? {
        for _ in 0..<Self.maxConnections {
            // (accept4 is not exported by Swift's Glibc module: set the flags right after.)
            let client = accept(listener, nil, nil)
            if client < 0 {
                switch errno {
                case EAGAIN, EWOULDBLOCK: return nil
                case EINTR, ECONNABORTED, EPROTO: continue
                default:
                    // EMFILE, ENFILE, ENOBUFS, ENOMEM, or anything else: the listener stays readable, so pause
                    // instead of spinning; connections that finish meanwhile free descriptors.
                    return .now + Self.acceptPause
                }
            }
            _ = fcntl(client, F_SETFD, FD_CLOEXEC)
            _ = fcntl(client, F_SETFL, fcntl(client, F_GETFL) | O_NONBLOCK)
            if connections.count >= Self.maxConnections {
                // Full: the oldest connection makes room (it has had the longest to send its request).
                close(connections.removeFirst().fd)
            }
            connections.append(Connection(fd: client, deadline: .now + Self.connectionDeadline))
        }
        return nil
    }

    /// Reads or writes what the socket allows; false when the connection is done (answered, closed, or broken).
    private func step(_ connection: inout Connection, events: Int16) -> Bool {
        if connection.response == nil {
            var buffer = [UInt8](repeating: 0, count: 2048)
            let count = buffer.withUnsafeMutableBytes { recv(connection.fd, $0.baseAddress, $0.count, 0) }
            if count < 0 { return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR }
            if count == 0 { return false }
            connection.request.append(contentsOf: buffer[0..<count])
            guard let end = connection.request.firstIndex(of: UInt8(ascii: "\n")) else {
                if connection.request.count > Self.maxRequestBytes {
                    connection.response = Self.encode(("414 URI Too Long", "text/plain", Array("request line too long\n".utf8)))
                } else {
                    return true
                }
                return write(&connection)
            }
            let line = String(decoding: connection.request[..<end], as: UTF8.self)
                .trimmingCharacters(in: .whitespacesAndNewlines)
            connection.response = Self.encode(respond(to: line))
        }
        return write(&connection)
    }

    private func write(_ connection: inout Connection) -> Bool {
        guard let response = connection.response else { return true }
        while connection.sent < response.count {
            let count = response.withUnsafeBytes {
                send(connection.fd, $0.baseAddress! + connection.sent, $0.count - connection.sent,
                     Int32(MSG_NOSIGNAL) | Int32(MSG_DONTWAIT))
            }
            if count < 0 { return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR }
            connection.sent += count
        }
        return false
    }

    private static func encode(_ reply: (String, String, [UInt8])) -> [UInt8] {
        let (status, type, body) = reply
        var response = Array(
            "HTTP/1.1 \(status)\r\nContent-Type: \(type)\r\nContent-Length: \(body.count)\r\nConnection: close\r\n\r\n".utf8)
        response.append(contentsOf: body)
        return response
    }

    private func respond(to requestLine: String) -> (String, String, [UInt8]) {
        let parts = requestLine.split(separator: " ")
        guard parts.count >= 2, parts[0] == "GET" else { return ("405 Method Not Allowed", "text/plain", Array("GET only\n".utf8)) }
        switch parts[1] {
        case "/metrics":
            let body = registry.emitToBuffer()
            guard body.count <= Self.maxResponseBytes else {
                return ("500 Internal Server Error", "text/plain",
                        Array("/metrics output is over \(Self.maxResponseBytes) bytes; not sent\n".utf8))
            }
            return ("200 OK", "text/plain; version=0.0.4", body)
        case "/healthz":
            return isHealthy() ? ("200 OK", "text/plain", Array("ok\n".utf8))
                : ("503 Service Unavailable", "text/plain", Array("database unavailable\n".utf8))
        default:
            return ("404 Not Found", "text/plain", Array("try /metrics or /healthz\n".utf8))
        }
    }
}
