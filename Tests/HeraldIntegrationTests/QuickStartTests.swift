import Foundation
import HeraldTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Issue 15, acceptance: the README's quick start, run as written, on a fresh copy of the project (scripts/ and
/// sql/ only, so a fresh embedded PostgreSQL): `scripts/run`, then the README's terminal 2 and terminal 3 blocks
/// line by line in bash. The receiver must show the delivery with both signatures ✓ and `herald logs` must show
/// it; then `scripts/run` is restarted and the DATABASE_URL it exported the first time must still work.
///
/// Departures from the text, each needed to run beside other tests: HERALD_BIN (the binary already built, instead
/// of a release build), one worker, no metrics listener, and port 9000 replaced by a free one.
@Suite struct QuickStartTests {
    /// The lines of the README's fenced block after `<!-- quickstart: NAME -->`.
    static func block(_ readme: String, _ name: String) throws -> [String] {
        guard let marker = readme.range(of: "<!-- quickstart: \(name) -->") else {
            throw ReceiverError("README has no <!-- quickstart: \(name) --> block")
        }
        let rest = readme[marker.upperBound...]
        guard let open = rest.range(of: "```sh\n"), let close = rest[open.upperBound...].range(of: "```") else {
            throw ReceiverError("the quick start block \(name) is not a ```sh fenced block")
        }
        return rest[open.upperBound..<close.lowerBound].split(separator: "\n").map(String.init)
            .filter { !$0.trimmingCharacters(in: .whitespaces).isEmpty }
    }

    final class Run {
        let folder: URL
        let log: URL
        let process: ChildProcess

        init(in folder: URL, log name: String) throws {
            self.folder = folder
            log = folder.appendingPathComponent(name)
            var environment = ProcessInfo.processInfo.environment
            environment.removeValue(forKey: "DATABASE_URL")
            environment.removeValue(forKey: "HERALD_ALLOWED_NETWORKS")
            environment["HERALD_BIN"] = try TestEnvironment.heraldBinary()
            environment["HERALD_WORKERS"] = "1"
            environment["HERALD_METRICS_ADDR"] = "off"
            // As a person runs it: from the project folder.
            process = try ChildProcess(
                executable: "bash",
                arguments: ["-c", "cd \(Self.quoted(folder.path)) && exec bash scripts/run"],
                environment: environment, outputPath: log.path)
        }

        var output: String { (try? String(contentsOf: log, encoding: .utf8)) ?? "" }

        func waitUntilReady() -> Bool {
            // Up to the lines to paste, which follow "In another terminal" in a separate write (a check between
            // the two found no `export DATABASE_URL=` line, once).
            eventually(timeout: 180, interval: 0.2) {
                (output.contains("In another terminal") && output.contains("export PATH=")) || !process.isRunning
            } && process.isRunning
        }

        /// Ctrl-C's equivalent for a script without a terminal (bash ignores SIGINT in background jobs).
        func stop() -> Bool {
            process.signal(SIGTERM)
            return process.waitForExit(timeout: 60)
        }

        static func quoted(_ text: String) -> String { "'" + text.replacingOccurrences(of: "'", with: "'\\''") + "'" }
    }

    /// Runs `lines` in bash in `folder` as one script; returns status and output.
    static func bash(_ lines: [String], in folder: URL, timeout: Double = 60) throws -> (status: Int32, output: String) {
        let script = "set -e\ncd \(Run.quoted(folder.path))\n" + lines.joined(separator: "\n") + "\n"
        var environment = ProcessInfo.processInfo.environment
        environment.removeValue(forKey: "DATABASE_URL")
        environment.removeValue(forKey: "HERALD_ALLOWED_NETWORKS")
        let out = folder.appendingPathComponent("bash-\(UUID().uuidString.prefix(8)).log")
        let child = try ChildProcess(executable: "bash", arguments: ["-c", script], environment: environment,
                                     outputPath: out.path)
        guard child.waitForExit(timeout: timeout) else {
            child.signal(SIGKILL)
            throw ReceiverError("bash did not finish: \(lines)")
        }
        return (child.terminationStatus, (try? String(contentsOf: out, encoding: .utf8)) ?? "")
    }

    @Test func theReadmeQuickStartRunsAsWrittenAndTheExportedURLSurvivesARestart() throws {
        let root = try TestEnvironment.projectRoot()
        let readme = try String(contentsOf: root.appendingPathComponent("README.md"), encoding: .utf8)
        let terminal1 = try Self.block(readme, "terminal 1")
        var terminal2 = try Self.block(readme, "terminal 2")
        let terminal3 = try Self.block(readme, "terminal 3")
        #expect(terminal1 == ["scripts/run"])

        // A fresh project folder: no .pgdata, no .herald.
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("herald-quickstart-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        for item in ["scripts", "sql", "README.md"] {
            try FileManager.default.copyItem(at: root.appendingPathComponent(item), to: folder.appendingPathComponent(item))
        }
        var runs: [Run] = []
        var receiver: ChildProcess?
        defer {
            receiver?.signal(SIGKILL)
            _ = receiver?.waitForExit(timeout: 5)
            for run in runs where run.process.isRunning { _ = run.stop() }
            _ = try? runTool("bash", [folder.appendingPathComponent("scripts/pg").path, "stop", "--dir",
                                      folder.appendingPathComponent(".pgdata").path])
            try? FileManager.default.removeItem(at: folder)
        }

        // Terminal 1.
        let first = try Run(in: folder, log: "run-1.log")
        runs.append(first)
        #expect(first.waitUntilReady(), "\(first.output)")
        let exported = try #require(first.output.split(separator: "\n")
            .first { $0.contains("export DATABASE_URL=") }).trimmingCharacters(in: .whitespaces)
        #expect(first.output.contains("Local-development mode"), "\(first.output)")
        #expect(first.output.contains("herald is "), "\(first.output)")

        // Terminal 2: the receiver (exec, so that stopping the test's child stops the receiver).
        let port = try freeLoopbackPort()
        terminal2 = terminal2.map { $0.replacingOccurrences(of: "9000", with: String(port)) }
        terminal2[terminal2.count - 1] = "exec " + terminal2[terminal2.count - 1]
        let receiverLog = folder.appendingPathComponent("receiver.log")
        var environment = ProcessInfo.processInfo.environment
        environment.removeValue(forKey: "DATABASE_URL")
        receiver = try ChildProcess(
            executable: "bash",
            arguments: ["-c", "cd \(Run.quoted(folder.path))\n" + terminal2.joined(separator: "\n")],
            environment: environment, outputPath: receiverLog.path)
        func received() -> String { (try? String(contentsOf: receiverLog, encoding: .utf8)) ?? "" }
        #expect(eventually(timeout: 30) { received().contains("listening on") }, "\(received())")

        // Terminal 3, line by line, all but the last (herald logs) first.
        let steps = terminal3.map { $0.replacingOccurrences(of: "9000", with: String(port)) }
        let setup = try Self.bash(Array(steps.dropLast()), in: folder)
        #expect(setup.status == 0, "\(setup.output)")
        #expect(setup.output.contains("fanned out to 1 deliveries"), "\(setup.output)")

        #expect(eventually(timeout: 60) { received().contains("answered") }, "\(received())\n\(first.output)")
        let shown = received()
        #expect(shown.contains("event      contact.created"), "\(shown)")
        #expect(shown.contains("\"id\": \"c-42\""), "\(shown)")
        #expect(shown.contains("✓ X-Webhook-Signature"), "\(shown)")
        #expect(shown.contains("✓ webhook-signature"), "\(shown)")
        #expect(!shown.contains("✗"), "\(shown)")

        // `herald logs`, as written (the source line and the logs line of the block).
        let logsLines = [steps[0], steps[steps.count - 1]]
        var logs = (status: Int32(-1), output: "")
        #expect(try eventually(timeout: 30) {
            logs = try Self.bash(logsLines, in: folder)
            return logs.output.contains("delivered")
        }, "\(logs.output)")
        #expect(logs.status == 0)
        #expect(logs.output.contains("demo") && logs.output.contains("contact.created"), "\(logs.output)")

        // The worker said so in terminal 1: one line per attempt.
        #expect(first.output.contains("attempt finished"), "\(first.output)")

        // Restart terminal 1; the DATABASE_URL exported the first time still reaches the same database.
        #expect(first.stop(), "scripts/run did not stop on SIGTERM:\n\(first.output)")
        let second = try Run(in: folder, log: "run-2.log")
        runs.append(second)
        #expect(second.waitUntilReady(), "\(second.output)")
        let again = try Self.bash(["export PATH=\(Run.quoted(folder.appendingPathComponent(".herald/bin").path)):\"$PATH\"",
                                   exported, "herald deliveries"], in: folder)
        #expect(again.status == 0, "\(again.output)")
        #expect(again.output.contains("delivered"), "\(again.output)")
        #expect(second.output.contains(exported), "the second run printed another URL:\n\(second.output)")
    }
}
