import Foundation
import Prometheus

#if canImport(Glibc)
import Glibc
#endif

/// The worker's tiny HTTP listener: `GET /metrics` (Prometheus text format) and `GET /healthz` (200 while the
/// database connection works, 503 otherwise). One thread, one request per connection: scrapers need no more.
final class MetricsServer: Sendable {
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
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var yes: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
        var socketAddress = sockaddr_in()
        socketAddress.sin_family = sa_family_t(AF_INET)
        socketAddress.sin_port = port.bigEndian
        guard inet_pton(AF_INET, String(parts[0]), &socketAddress.sin_addr) == 1 else {
            close(fd)
            throw CommandFailure("HERALD_METRICS_ADDR=\(address): '\(parts[0])' is not an IPv4 address")
        }
        let bound = withUnsafePointer(to: &socketAddress) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, listen(fd, 64) == 0 else {
            close(fd)
            throw CommandFailure("cannot listen on \(address) for /metrics (errno \(errno)); set HERALD_METRICS_ADDR to a free port or off")
        }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &socketAddress) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        self.port = Int(UInt16(bigEndian: socketAddress.sin_port))
        listener = fd
        self.registry = registry
        self.isHealthy = isHealthy
        let thread = Thread { [self] in self.serve() }
        thread.name = "herald-metrics"
        thread.start()
    }

    private func serve() {
        while true {
            let client = accept(listener, nil, nil)
            if client < 0 {
                if errno == EINTR { continue }
                return
            }
            var timeout = timeval(tv_sec: 2, tv_usec: 0)
            setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            var buffer = [UInt8](repeating: 0, count: 2048)
            let count = buffer.withUnsafeMutableBytes { recv(client, $0.baseAddress, $0.count, 0) }
            let requestLine = count > 0 ? String(decoding: buffer[0..<count], as: UTF8.self)
                .split(separator: "\r\n").first.map(String.init) ?? "" : ""
            let (status, type, body) = respond(to: requestLine)
            var response = Array("HTTP/1.1 \(status)\r\nContent-Type: \(type)\r\nContent-Length: \(body.count)\r\nConnection: close\r\n\r\n".utf8)
            response.append(contentsOf: body)
            _ = response.withUnsafeBytes { send(client, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            close(client)
        }
    }

    private func respond(to requestLine: String) -> (String, String, [UInt8]) {
        let parts = requestLine.split(separator: " ")
        guard parts.count >= 2, parts[0] == "GET" else { return ("405 Method Not Allowed", "text/plain", Array("GET only\n".utf8)) }
        switch parts[1] {
        case "/metrics":
            return ("200 OK", "text/plain; version=0.0.4", registry.emitToBuffer())
        case "/healthz":
            return isHealthy() ? ("200 OK", "text/plain", Array("ok\n".utf8))
                : ("503 Service Unavailable", "text/plain", Array("database unavailable\n".utf8))
        default:
            return ("404 Not Found", "text/plain", Array("try /metrics or /healthz\n".utf8))
        }
    }
}
