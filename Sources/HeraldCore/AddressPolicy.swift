/// An IPv4 or IPv6 address, parsed and compared without any C networking calls.
public enum IPAddress: Sendable, Hashable, CustomStringConvertible {
    case v4(UInt32)
    case v6(UInt64, UInt64)   // high and low 64 bits, network order

    /// Parses dotted-quad IPv4 or RFC 4291 IPv6 text (with `::` and an optional trailing IPv4 part).
    /// Zone ids (`fe80::1%eth0`) and brackets are not accepted.
    public init?(_ text: String) {
        if text.contains(":") {
            guard let bytes = IPAddress.parseV6(text) else { return nil }
            self.init(v6Bytes: bytes)
        } else {
            guard let value = IPAddress.parseV4(Substring(text)) else { return nil }
            self = .v4(value)
        }
    }

    public init(v6Bytes b: [UInt8]) {
        var high: UInt64 = 0
        var low: UInt64 = 0
        for i in 0..<8 { high = high << 8 | UInt64(b[i]) }
        for i in 8..<16 { low = low << 8 | UInt64(b[i]) }
        self = .v6(high, low)
    }

    public var bitWidth: Int {
        if case .v4 = self { return 32 }
        return 128
    }

    /// The IPv4 address carried inside an IPv4-mapped (`::ffff:a.b.c.d`), NAT64 (`64:ff9b::a.b.c.d`) or 6to4
    /// (`2002:AABB:CCDD::`) IPv6 address: these reach an IPv4 host, so that host is what the policy judges.
    public var embeddedIPv4: IPAddress? {
        guard case let .v6(high, low) = self else { return nil }
        if high == 0 && low >> 32 == 0xFFFF { return .v4(UInt32(truncatingIfNeeded: low)) }
        if high == 0x0064_FF9B_0000_0000 && low >> 32 == 0 { return .v4(UInt32(truncatingIfNeeded: low)) }
        if high >> 48 == 0x2002 { return .v4(UInt32(truncatingIfNeeded: high >> 16)) }
        return nil
    }

    public var description: String {
        switch self {
        case let .v4(value):
            return "\(value >> 24).\(value >> 16 & 0xFF).\(value >> 8 & 0xFF).\(value & 0xFF)"
        case let .v6(high, low):
            let groups = (0..<4).map { UInt16(truncatingIfNeeded: high >> (48 - 16 * UInt64($0))) }
                + (0..<4).map { UInt16(truncatingIfNeeded: low >> (48 - 16 * UInt64($0))) }
            // Compress the longest run of two or more zero groups, as RFC 5952 asks.
            var best = (start: -1, length: 0)
            var index = 0
            while index < 8 {
                if groups[index] == 0 {
                    var end = index
                    while end < 8 && groups[end] == 0 { end += 1 }
                    if end - index > best.length && end - index >= 2 { best = (index, end - index) }
                    index = end
                } else {
                    index += 1
                }
            }
            func hex(_ range: Range<Int>) -> String {
                groups[range].map { String($0, radix: 16) }.joined(separator: ":")
            }
            if best.start < 0 { return hex(0..<8) }
            return hex(0..<best.start) + "::" + hex((best.start + best.length)..<8)
        }
    }

    private static func parseV4(_ text: Substring) -> UInt32? {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var value: UInt32 = 0
        for part in parts {
            // Leading zeros are refused: "010" means octal to some resolvers and decimal to others.
            guard !part.isEmpty, part.count <= 3, part.allSatisfy(\.isASCIIDigit),
                  part == "0" || part.first != "0", let octet = UInt32(part), octet <= 255 else { return nil }
            value = value << 8 | octet
        }
        return value
    }

    private static func parseV6(_ text: String) -> [UInt8]? {
        var head: [UInt16] = []
        var tail: [UInt16] = []
        var sawDoubleColon = false
        let halves = text.components(separatedByString: "::")
        guard halves.count <= 2 else { return nil }
        sawDoubleColon = halves.count == 2
        func groups(_ part: Substring, allowV4Suffix: Bool) -> [UInt16]? {
            if part.isEmpty { return [] }
            let pieces = part.split(separator: ":", omittingEmptySubsequences: false)
            var result: [UInt16] = []
            for (index, piece) in pieces.enumerated() {
                if allowV4Suffix && index == pieces.count - 1 && piece.contains(".") {
                    guard let v4 = parseV4(piece) else { return nil }
                    result.append(UInt16(v4 >> 16))
                    result.append(UInt16(v4 & 0xFFFF))
                } else {
                    guard (1...4).contains(piece.count), let group = UInt16(piece, radix: 16) else { return nil }
                    result.append(group)
                }
            }
            return result
        }
        if sawDoubleColon {
            guard let h = groups(halves[0], allowV4Suffix: false),
                  let t = groups(halves[1], allowV4Suffix: true), h.count + t.count <= 7 else { return nil }
            head = h
            tail = t
        } else {
            guard let all = groups(halves[0], allowV4Suffix: true), all.count == 8 else { return nil }
            head = all
        }
        let all = head + Array(repeating: 0, count: 8 - head.count - tail.count) + tail
        return all.flatMap { [UInt8($0 >> 8), UInt8($0 & 0xFF)] }
    }
}

/// A network in CIDR form (`10.0.0.0/8`, `::1/128`), used by `HERALD_ALLOWED_NETWORKS` and the built-in lists.
public struct IPNetwork: Sendable, Hashable, CustomStringConvertible {
    public let address: IPAddress
    public let prefixLength: Int

    /// Parses `address/prefix`; a bare address means a single host (/32 or /128).
    public init?(_ text: String) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard (1...2).contains(parts.count), let address = IPAddress(String(parts[0])) else { return nil }
        let prefix = parts.count == 2 ? Int(parts[1]) : address.bitWidth
        guard let prefix, (0...address.bitWidth).contains(prefix) else { return nil }
        self.address = address
        self.prefixLength = prefix
    }

    public func contains(_ candidate: IPAddress) -> Bool {
        switch (address, candidate) {
        case let (.v4(network), .v4(value)):
            let mask: UInt32 = prefixLength == 0 ? 0 : ~UInt32(0) << UInt32(32 - prefixLength)
            return network & mask == value & mask
        case let (.v6(nh, nl), .v6(vh, vl)):
            let highBits = min(prefixLength, 64)
            let lowBits = max(prefixLength - 64, 0)
            let highMask: UInt64 = highBits == 0 ? 0 : ~UInt64(0) << UInt64(64 - highBits)
            let lowMask: UInt64 = lowBits == 0 ? 0 : ~UInt64(0) << UInt64(64 - lowBits)
            return nh & highMask == vh & highMask && nl & lowMask == vl & lowMask
        default:
            return false
        }
    }

    public var description: String { "\(address)/\(prefixLength)" }
}

/// The outbound address policy (SSRF guard): which addresses Herald may connect to.
///
/// Webhook URLs are written by customers, so without this a URL like `http://169.254.169.254/` would make Herald
/// fetch cloud credentials, or reach the database on the private network. Only globally routable unicast
/// addresses are allowed, unless an address lies in an explicitly allowed network.
public struct AddressPolicy: Sendable {
    public enum Verdict: Sendable, Equatable {
        case allowed
        case refused(reason: String)
    }

    /// Networks that are allowed although non-public (`HERALD_ALLOWED_NETWORKS`, e.g. `127.0.0.0/8,::1/128`).
    public var allowedNetworks: [IPNetwork]

    public init(allowedNetworks: [IPNetwork] = []) {
        self.allowedNetworks = allowedNetworks
    }

    /// Parses a comma-separated CIDR list; the error names the entry that is wrong.
    public static func parseNetworks(_ list: String) throws(ConfigurationError) -> [IPNetwork] {
        var networks: [IPNetwork] = []
        for piece in list.split(separator: ",") {
            let entry = String(piece).trimmingSpaces
            if entry.isEmpty { continue }
            guard let network = IPNetwork(entry) else {
                throw ConfigurationError(
                    "'\(entry)' in HERALD_ALLOWED_NETWORKS is not a network: write CIDRs such as 10.0.0.0/8 or ::1/128")
            }
            networks.append(network)
        }
        return networks
    }

    public func check(_ address: IPAddress) -> Verdict {
        if allowedNetworks.contains(where: { $0.contains(address) }) { return .allowed }
        if let inner = address.embeddedIPv4, allowedNetworks.contains(where: { $0.contains(inner) }) {
            return .allowed
        }
        guard let category = AddressPolicy.nonPublicCategory(of: address) else { return .allowed }
        return .refused(reason: "\(address) is \(category); refused by the address policy (allow it with HERALD_ALLOWED_NETWORKS)")
    }

    /// Why an address is not public, or nil when it is a global unicast address.
    public static func nonPublicCategory(of address: IPAddress) -> String? {
        if let inner = address.embeddedIPv4 {
            return nonPublicCategory(of: inner).map { "\($0) (embedded in \(address))" }
        }
        let table = address.bitWidth == 32 ? v4Ranges : v6Ranges
        if let match = table.first(where: { $0.network.contains(address) }) { return match.category }
        if case .v6 = address, !globalUnicast.contains(address) { return "not a global unicast address" }
        return nil
    }

    private struct Range: Sendable {
        let network: IPNetwork
        let category: String
        init(_ cidr: String, _ category: String) {
            network = IPNetwork(cidr)!
            self.category = category
        }
    }

    private static let v4Ranges: [Range] = [
        Range("0.0.0.0/8", "an unspecified (\"this network\") address"),
        Range("10.0.0.0/8", "a private address"),
        Range("100.64.0.0/10", "a carrier-grade NAT address"),
        Range("127.0.0.0/8", "a loopback address"),
        Range("169.254.0.0/16", "a link-local address (cloud metadata lives here)"),
        Range("172.16.0.0/12", "a private address"),
        Range("192.0.0.0/24", "an IETF protocol assignment"),
        Range("192.0.2.0/24", "a documentation address"),
        Range("192.88.99.0/24", "a 6to4 relay address"),
        Range("192.168.0.0/16", "a private address"),
        Range("198.18.0.0/15", "a benchmarking address"),
        Range("198.51.100.0/24", "a documentation address"),
        Range("203.0.113.0/24", "a documentation address"),
        Range("224.0.0.0/4", "a multicast address"),
        Range("240.0.0.0/4", "a reserved or broadcast address"),
    ]

    private static let v6Ranges: [Range] = [
        Range("::/128", "the unspecified address"),
        Range("::1/128", "a loopback address"),
        Range("::/96", "an IPv4-compatible address"),
        Range("64:ff9b:1::/48", "a local-use NAT64 address"),
        Range("100::/64", "a discard-only address"),
        Range("2001::/23", "an IETF protocol assignment"),
        Range("2001:db8::/32", "a documentation address"),
        Range("fc00::/7", "a unique local (private) address"),
        Range("fe80::/10", "a link-local address"),
        Range("fec0::/10", "a site-local address"),
        Range("ff00::/8", "a multicast address"),
    ]

    private static let globalUnicast = IPNetwork("2000::/3")!
}

/// A configuration value that cannot be used; the message names the setting and what would be right.
public struct ConfigurationError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}

extension Character {
    var isASCIIDigit: Bool { isASCII && isNumber }
}

extension String {
    func components(separatedByString separator: String) -> [Substring] {
        var parts: [Substring] = []
        var rest = self[...]
        while let range = rest.firstRange(of: separator) {
            parts.append(rest[..<range.lowerBound])
            rest = rest[range.upperBound...]
        }
        parts.append(rest)
        return parts
    }
}
