import HeraldCore

#if canImport(Glibc)
import Glibc
#endif

extension IPAddress {
    /// The address in a C `sockaddr` (IPv4 or IPv6); nil for any other family. Lives here, not in the pure core,
    /// because it reads a C struct: the HTTP engine's connect check and the CLI's config-time warning share it.
    public init?(socketAddress address: UnsafePointer<sockaddr>, family: Int32) {
        switch family {
        case AF_INET:
            let raw = address.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee.sin_addr.s_addr }
            self = .v4(UInt32(bigEndian: raw))
        case AF_INET6:
            var in6 = address.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { $0.pointee.sin6_addr }
            self = withUnsafeBytes(of: &in6) { IPAddress(v6Bytes: Array($0)) }
        default:
            return nil
        }
    }
}
