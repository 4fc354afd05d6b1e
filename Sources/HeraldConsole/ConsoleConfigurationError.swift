/// A `HERALD_CONSOLE_*` setting that is missing, malformed or unsafe; the message says which and what to do.
public struct ConsoleConfigurationError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}
