import HeraldCore
import Testing

@Suite struct AddressPolicyTests {
    let policy = AddressPolicy()

    @Test(arguments: [
        "127.0.0.1", "127.255.255.254", "10.0.0.1", "10.255.255.255", "172.16.0.1", "172.31.255.255",
        "192.168.1.1", "169.254.169.254", "169.254.0.1", "100.64.0.1", "100.127.255.255", "0.0.0.0", "0.1.2.3",
        "224.0.0.1", "239.255.255.255", "255.255.255.255", "240.0.0.1", "192.0.2.10", "198.51.100.7",
        "203.0.113.9", "198.18.0.1", "192.0.0.8",
        "::1", "::", "fe80::1", "fc00::1", "fd12:3456::1", "ff02::1", "::ffff:127.0.0.1", "::ffff:10.1.2.3",
        "::ffff:169.254.169.254", "64:ff9b::a9fe:a9fe", "64:ff9b::7f00:1", "2002:7f00:1::", "2002:a00:1::1",
        "2001:db8::1", "fec0::1", "100::1", "2001::1", "::7f00:1", "64:ff9b:1::1",
    ])
    func refusesNonPublicAddresses(_ text: String) throws {
        let address = try #require(IPAddress(text))
        guard case let .refused(reason) = policy.check(address) else {
            Issue.record("\(text) should be refused")
            return
        }
        #expect(reason.contains("HERALD_ALLOWED_NETWORKS"))
    }

    @Test(arguments: [
        "8.8.8.8", "1.1.1.1", "93.184.216.34", "172.32.0.1", "172.15.255.255", "100.128.0.1", "100.63.255.255",
        "192.169.0.1", "169.255.0.1", "11.0.0.1", "223.255.255.255",
        "2606:4700:4700::1111", "2a00:1450:4001:81c::200e", "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1",
    ])
    func allowsPublicAddresses(_ text: String) throws {
        let address = try #require(IPAddress(text))
        #expect(policy.check(address) == .allowed, "\(text) should be allowed")
    }

    @Test func allowListOpensExactlyTheListedNetworks() throws {
        let allowing = AddressPolicy(allowedNetworks: try AddressPolicy.parseNetworks("127.0.0.0/8, ::1/128"))
        #expect(allowing.check(IPAddress("127.0.0.1")!) == .allowed)
        #expect(allowing.check(IPAddress("127.1.2.3")!) == .allowed)
        #expect(allowing.check(IPAddress("::1")!) == .allowed)
        #expect(allowing.check(IPAddress("::ffff:127.0.0.1")!) == .allowed)
        #expect(allowing.check(IPAddress("10.0.0.1")!) != .allowed)
        #expect(allowing.check(IPAddress("169.254.169.254")!) != .allowed)
        #expect(allowing.check(IPAddress("::2")!) != .allowed)
    }

    @Test func reasonNamesTheCategory() {
        #expect(policy.check(IPAddress("169.254.169.254")!)
            == .refused(reason: "169.254.169.254 is a link-local address (cloud metadata lives here); refused by the address policy (allow it with HERALD_ALLOWED_NETWORKS)"))
        guard case let .refused(reason) = policy.check(IPAddress("::ffff:10.0.0.1")!) else {
            Issue.record("mapped private address allowed")
            return
        }
        #expect(reason.contains("a private address (embedded in ::ffff:a00:1)"))
    }

    @Test func badNetworkListsNameTheEntry() {
        #expect(throws: ConfigurationError.self) { try AddressPolicy.parseNetworks("10.0.0.0/8,banana") }
        do {
            _ = try AddressPolicy.parseNetworks("10.0.0.0/33")
            Issue.record("accepted /33")
        } catch {
            #expect(error.description.contains("'10.0.0.0/33'"))
        }
    }

    @Test(arguments: ["", "1.2.3", "1.2.3.4.5", "256.1.1.1", "01.2.3.4", "1.2.3.-1", "1:2:3:4:5:6:7:8:9", "1::2::3",
                      "12345::1", "g::1", ":::", "1.2.3.4/8", " 1.2.3.4"])
    func rejectsMalformedAddresses(_ text: String) {
        #expect(IPAddress(text) == nil, "\(text) parsed")
    }

    @Test func parsesAndPrintsIPv6() {
        #expect(IPAddress("2001:db8:0:0:0:0:2:1")?.description == "2001:db8::2:1")
        #expect(IPAddress("::ffff:1.2.3.4") == IPAddress("::ffff:102:304"))
        #expect(IPAddress("fe80::")?.description == "fe80::")
        #expect(IPAddress("1:2:3:4:5:6:7:8")?.description == "1:2:3:4:5:6:7:8")
        #expect(IPNetwork("10.1.2.3/8")?.contains(IPAddress("10.200.0.1")!) == true)
        #expect(IPNetwork("0.0.0.0/0")?.contains(IPAddress("8.8.8.8")!) == true)
        #expect(IPNetwork("::/0")?.contains(IPAddress("8.8.8.8")!) == false)
    }
}
