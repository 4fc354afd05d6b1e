import Foundation

/// An IPv4 TCP socket bound and listening: what `/metrics` and `herald receive` both serve from.
struct ListeningSocket {
    /// Why binding failed: the address was not an IPv4 literal, or the system said no (the errno).
    enum Failure: Error {
        case notIPv4
        case system(errno: Int32)
    }

    let descriptor: Int32
    /// The port bound: the one asked for, or the one the system chose for port 0.
    let port: Int

    /// Binds `host:port` (close-on-exec; non-blocking when asked) and listens with a backlog of 128.
    init(host: String, port: UInt16, nonBlocking: Bool = false) throws(Failure) {
        var type = Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
        if nonBlocking { type |= Int32(SOCK_NONBLOCK.rawValue) }
        let fd = socket(AF_INET, type, 0)
        guard fd >= 0 else { throw .system(errno: errno) }
        var yes: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        guard inet_pton(AF_INET, host, &address.sin_addr) == 1 else {
            close(fd)
            throw .notIPv4
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, listen(fd, 128) == 0 else {
            let error = errno
            close(fd)
            throw .system(errno: error)
        }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        descriptor = fd
        self.port = Int(UInt16(bigEndian: address.sin_port))
    }
}
