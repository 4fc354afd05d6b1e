import Foundation
import HeraldCore
import HeraldHTTP

#if canImport(Glibc)
import Glibc
#endif

/// At config time, says when a URL's host resolves to an address the workers' address policy will refuse.
///
/// Only a warning: the policy is enforced at delivery time, on the address actually connected to, and the
/// operator may allow the network with HERALD_ALLOWED_NETWORKS. Resolution failures say nothing (the host may
/// only resolve where the workers run).
enum AddressWarning {
    static func check(url: String) -> String? {
        guard let components = URLComponents(string: url), var host = components.host, !host.isEmpty else {
            return nil
        }
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        let policy = AddressPolicy(allowedNetworks: (try? AddressPolicy.parseNetworks(
            ProcessInfo.processInfo.environment["HERALD_ALLOWED_NETWORKS"] ?? "")) ?? [])
        for address in resolve(host) where policy.check(address) != .allowed {
            let category = AddressPolicy.nonPublicCategory(of: address) ?? "not a public address"
            return "warning: \(host) resolves to \(address), \(category); the workers will refuse to deliver there unless HERALD_ALLOWED_NETWORKS allows it"
        }
        return nil
    }

    private static func resolve(_ host: String) -> [IPAddress] {
        if let literal = IPAddress(host) { return [literal] }
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, nil, &hints, &list) == 0 else { return [] }
        defer { freeaddrinfo(list) }
        var addresses: [IPAddress] = []
        var entry = list
        while let current = entry {
            if let address = current.pointee.ai_addr,
               let ip = IPAddress(socketAddress: address, family: current.pointee.ai_family) {
                addresses.append(ip)
            }
            entry = current.pointee.ai_next
        }
        return addresses
    }
}
