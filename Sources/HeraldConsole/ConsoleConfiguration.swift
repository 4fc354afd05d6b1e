/// How `herald console` is set up, read from `HERALD_CONSOLE_*`, with the rules that keep it from being opened up
/// by accident.
///
/// The console can replay deliveries and disable endpoints, and it shows every event's data: on loopback it may
/// make its own token, but on any other address it starts only with a token chosen by the operator and with TLS
/// (its own, or a proxy's in front of it).
public struct ConsoleConfiguration: Sendable {
    /// `HERALD_CONSOLE_ADDR`, default `127.0.0.1:8400`. An IPv4 address or `[IPv6]`, then `:port`.
    public var host: String = "127.0.0.1"
    public var port: Int = 8400
    /// `HERALD_CONSOLE_TOKEN`; when unset on loopback, a generated one (see `tokenWasGenerated`).
    public var token: String = ""
    /// True when the console made the token itself: it prints it once, as `console token: TOKEN`.
    public var tokenWasGenerated = false
    /// `HERALD_CONSOLE_TLS_CERT` and `HERALD_CONSOLE_TLS_KEY`: PEM files; TLS is served when both are set.
    public var tlsCertificatePath: String?
    public var tlsKeyPath: String?
    /// `HERALD_CONSOLE_BEHIND_PROXY=1`: a TLS-terminating proxy is in front; cookies are marked Secure.
    public var behindProxy = false
    /// `HERALD_CONSOLE_READONLY=1`: no action is shown, and every action is refused with 403.
    public var readOnly = false

    /// The shortest token accepted from the environment: a guessable token would be the only lock.
    public static let minimumTokenLength = 16

    public init() {}

    public var isLoopback: Bool {
        host == "localhost" || host == "::1" || host.hasPrefix("127.")
    }

    public var servesTLS: Bool { tlsCertificatePath != nil }

    /// Session cookies get `Secure` when browsers reach the console over https.
    public var secureCookies: Bool { servesTLS || behindProxy }

    /// Reads and checks the environment.
    ///
    /// - Throws: `ConsoleConfigurationError` naming the variable and what to do.
    public static func fromEnvironment(_ environment: [String: String]) throws(ConsoleConfigurationError)
        -> ConsoleConfiguration
    {
        var configuration = ConsoleConfiguration()
        func value(_ name: String) -> String? {
            guard let text = environment[name], !text.isEmpty else { return nil }
            return text
        }
        if let address = value("HERALD_CONSOLE_ADDR") {
            guard let (host, port) = parseAddress(address) else {
                throw ConsoleConfigurationError(
                    "HERALD_CONSOLE_ADDR=\(address) is not HOST:PORT (e.g. 127.0.0.1:8400, 0.0.0.0:8400 or [::1]:8400)")
            }
            configuration.host = host
            configuration.port = port
        }
        configuration.tlsCertificatePath = value("HERALD_CONSOLE_TLS_CERT")
        configuration.tlsKeyPath = value("HERALD_CONSOLE_TLS_KEY")
        if (configuration.tlsCertificatePath == nil) != (configuration.tlsKeyPath == nil) {
            throw ConsoleConfigurationError(
                "HERALD_CONSOLE_TLS_CERT and HERALD_CONSOLE_TLS_KEY go together: set both (PEM files) or neither")
        }
        configuration.behindProxy = try flag("HERALD_CONSOLE_BEHIND_PROXY", value("HERALD_CONSOLE_BEHIND_PROXY"))
        configuration.readOnly = try flag("HERALD_CONSOLE_READONLY", value("HERALD_CONSOLE_READONLY"))
        if let token = value("HERALD_CONSOLE_TOKEN") {
            guard token.count >= minimumTokenLength, token.allSatisfy({ $0.isASCII && !$0.isWhitespace }) else {
                throw ConsoleConfigurationError(
                    "HERALD_CONSOLE_TOKEN must be at least \(minimumTokenLength) printable ASCII characters without blanks (e.g. openssl rand -hex 32)")
            }
            configuration.token = token
        } else if configuration.isLoopback {
            configuration.token = SessionStore.randomToken()
            configuration.tokenWasGenerated = true
        } else {
            throw ConsoleConfigurationError(
                "the console on \(configuration.host) (not loopback) needs HERALD_CONSOLE_TOKEN: choose one, e.g. openssl rand -hex 32")
        }
        if !configuration.isLoopback && !configuration.servesTLS && !configuration.behindProxy {
            throw ConsoleConfigurationError("""
                the console on \(configuration.host) (not loopback) needs TLS: set HERALD_CONSOLE_TLS_CERT and \
                HERALD_CONSOLE_TLS_KEY, or HERALD_CONSOLE_BEHIND_PROXY=1 when a proxy in front of it serves https
                """)
        }
        return configuration
    }

    static func flag(_ name: String, _ text: String?) throws(ConsoleConfigurationError) -> Bool {
        switch text?.lowercased() {
        case nil, "0", "false", "no": return false
        case "1", "true", "yes": return true
        default: throw ConsoleConfigurationError("\(name)=\(text ?? "") is not a flag: use 1 or 0")
        }
    }

    /// `127.0.0.1:8400`, `0.0.0.0:8400`, `localhost:8400`, `[::1]:8400` → host and port.
    static func parseAddress(_ text: String) -> (String, Int)? {
        let host: Substring
        let portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else { return nil }
            host = text[text.index(after: text.startIndex)..<close]
            portText = text[text.index(close, offsetBy: 2)...]
        } else {
            guard let colon = text.lastIndex(of: ":") else { return nil }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
        }
        guard !host.isEmpty, let port = Int(portText), (0...65535).contains(port) else { return nil }
        return (String(host), port)
    }
}
