import Foundation

/// The built `herald` binary run as a child process, with its output captured to a file.
public final class HeraldProcess: @unchecked Sendable {
    // @unchecked: used from the test's own thread; shared only so a `defer` can stop it.
    private let child: ChildProcess
    public let outputFile: URL

    /// `launcher`: a command that runs herald, e.g. `["/usr/bin/prlimit", "--nofile=300:300"]`.
    public init(_ arguments: [String], environment: [String: String] = [:], launcher: [String] = []) throws {
        var merged = ProcessInfo.processInfo.environment
        merged.removeValue(forKey: "DATABASE_URL")
        merged["HERALD_SQL_DIR"] = try TestEnvironment.sqlDirectory().path
        for (key, value) in environment { merged[key] = value }
        outputFile = FileManager.default.temporaryDirectory.appendingPathComponent("herald-\(UUID().uuidString).log")
        let command = launcher + [try TestEnvironment.heraldBinary()] + arguments
        child = try ChildProcess(executable: command[0], arguments: Array(command.dropFirst()),
                                 environment: merged, outputPath: outputFile.path)
    }

    /// Runs `herald arguments…` to completion and returns its exit status and combined output.
    public static func run(_ arguments: [String], environment: [String: String] = [:], timeout: Double = 60) throws
        -> (status: Int32, output: String)
    {
        let process = try HeraldProcess(arguments, environment: environment)
        guard process.waitForExit(timeout: timeout) else {
            process.kill()
            throw ReceiverError("herald \(arguments.joined(separator: " ")) did not finish in \(timeout) s:\n\(process.output)")
        }
        return (process.terminationStatus, process.output)
    }

    public var output: String { (try? String(contentsOf: outputFile, encoding: .utf8)) ?? "" }
    public var isRunning: Bool { child.isRunning }
    public var pid: pid_t { child.pid }
    public var terminationStatus: Int32 { child.terminationStatus }

    public func terminate() { child.signal(SIGTERM) }

    public func kill() {
        child.signal(SIGKILL)
        _ = child.waitForExit(timeout: 10)
    }

    public func waitForExit(timeout: Double) -> Bool { child.waitForExit(timeout: timeout) }

    deinit {
        kill()
        try? FileManager.default.removeItem(at: outputFile)
    }
}
