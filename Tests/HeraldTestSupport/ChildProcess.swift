import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A child process started with `posix_spawn` and reaped with `waitpid`, with stdin and stdout+stderr on files.
///
/// Not Foundation's `Process`: with many children started and ending at once across parallel tests, its exit
/// monitoring missed terminations here (a zombie child stayed "running"). `waitpid` on our own pid cannot.
public final class ChildProcess: @unchecked Sendable {
    // @unchecked: `status` is only written by the thread that reaps, and tests use one thread per child.
    public let pid: pid_t
    private var status: Int32?

    public init(executable: String, arguments: [String], environment: [String: String], stdinPath: String = "/dev/null",
                outputPath: String) throws {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, stdinPath, O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, outputPath, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        // The child starts with SIGTERM and SIGINT at their defaults and nothing blocked, as from a shell: the test
        // runner's own dispositions would otherwise be inherited, and a shell script cannot trap a signal it was
        // started ignoring (scripts/run stops its workers and PostgreSQL on SIGTERM).
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var defaults = sigset_t()
        sigemptyset(&defaults)
        sigaddset(&defaults, SIGTERM)
        sigaddset(&defaults, SIGINT)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        var unblocked = sigset_t()
        sigemptyset(&unblocked)
        posix_spawnattr_setsigmask(&attributes, &unblocked)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))
        var child: pid_t = 0
        let result = posix_spawnp(&child, executable, &actions, &attributes, argv, envp)
        guard result == 0 else { throw ReceiverError("could not start \(executable): error \(result)") }
        pid = child
    }

    /// Exit status (or 128 + signal), once the child has ended.
    public var terminationStatus: Int32 {
        _ = poll()
        return status ?? -1
    }

    public var isRunning: Bool { poll() == nil }

    /// Reaps the child if it has ended; returns its status then.
    private func poll() -> Int32? {
        if let status { return status }
        var raw: Int32 = 0
        let reaped = waitpid(pid, &raw, WNOHANG)
        guard reaped == pid else { return nil }
        let signal = raw & 0x7F
        status = signal == 0 ? (raw >> 8) & 0xFF : 128 + signal
        return status
    }

    public func signal(_ number: Int32) {
        if isRunning { kill(pid, number) }
    }

    public func waitForExit(timeout: Double) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while isRunning {
            if Date() >= deadline { return false }
            Thread.sleep(forTimeInterval: 0.01)
        }
        return true
    }

    /// Runs a command to completion and returns its combined output.
    public static func run(_ executable: String, _ arguments: [String], input: [UInt8]? = nil, timeout: Double = 60)
        throws -> (status: Int32, output: String)
    {
        let folder = FileManager.default.temporaryDirectory
        let inputFile = folder.appendingPathComponent("child-in-\(UUID().uuidString)")
        let outputFile = folder.appendingPathComponent("child-out-\(UUID().uuidString)")
        defer {
            try? FileManager.default.removeItem(at: inputFile)
            try? FileManager.default.removeItem(at: outputFile)
        }
        try Data(input ?? []).write(to: inputFile)
        let child = try ChildProcess(executable: executable, arguments: arguments,
                                     environment: ProcessInfo.processInfo.environment, stdinPath: inputFile.path,
                                     outputPath: outputFile.path)
        guard child.waitForExit(timeout: timeout) else {
            child.signal(SIGKILL)
            _ = child.waitForExit(timeout: 5)
            throw ReceiverError("\(executable) \(arguments.joined(separator: " ")) did not finish in \(timeout) s")
        }
        let output = (try? String(contentsOf: outputFile, encoding: .utf8)) ?? ""
        return (child.terminationStatus, output)
    }
}
