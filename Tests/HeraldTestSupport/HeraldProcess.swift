import Foundation

/// The built `herald` binary run as a child process, with its output captured to a file.
public final class HeraldProcess: @unchecked Sendable {
    // @unchecked: Process is used from the test's thread only; the class is shared only to be stopped in defer.
    public let process = Process()
    public let outputFile: URL

    public init(_ arguments: [String], environment: [String: String] = [:]) throws {
        process.executableURL = URL(fileURLWithPath: try TestEnvironment.heraldBinary())
        process.arguments = arguments
        var merged = ProcessInfo.processInfo.environment
        merged.removeValue(forKey: "DATABASE_URL")
        merged["HERALD_SQL_DIR"] = try TestEnvironment.sqlDirectory().path
        for (key, value) in environment { merged[key] = value }
        process.environment = merged
        outputFile = FileManager.default.temporaryDirectory.appendingPathComponent("herald-\(UUID().uuidString).log")
        _ = FileManager.default.createFile(atPath: outputFile.path, contents: nil)
        let handle = try FileHandle(forWritingTo: outputFile)
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
    }

    /// Runs `herald arguments…` to completion and returns its exit status and combined output.
    public static func run(_ arguments: [String], environment: [String: String] = [:], timeout: Double = 60) throws
        -> (status: Int32, output: String)
    {
        let child = try HeraldProcess(arguments, environment: environment)
        guard child.waitForExit(timeout: timeout) else {
            child.kill()
            throw ReceiverError("herald \(arguments.joined(separator: " ")) did not finish in \(timeout) s:\n\(child.output)")
        }
        return (child.process.terminationStatus, child.output)
    }

    public var output: String { (try? String(contentsOf: outputFile, encoding: .utf8)) ?? "" }

    public var isRunning: Bool { process.isRunning }

    public func terminate() { if process.isRunning { Foundation.kill(process.processIdentifier, SIGTERM) } }

    public func kill() {
        if process.isRunning { Foundation.kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }

    /// Waits for the process to exit; false on timeout.
    public func waitForExit(timeout: Double) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.02) }
        if process.isRunning { return false }
        process.waitUntilExit()
        return true
    }

    deinit {
        if process.isRunning {
            Foundation.kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(at: outputFile)
    }
}
