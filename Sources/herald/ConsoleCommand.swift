import ArgumentParser
import Foundation

/// `herald console`: starts `herald-console`, the web console, found next to this binary.
///
/// The console is a program of its own because its HTTP server (SwiftNIO, with TLS) would add minutes to every
/// release build of `herald` (measured: docs/ARCHITECTURE.md, "The console"); `herald console` keeps the one
/// command operators know. It replaces this process (`execv`), so signals and the exit status are the console's.
struct Console: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve the operator web console (HERALD_CONSOLE_ADDR, default 127.0.0.1:8400).",
        discussion: """
            Pages: overview, endpoints and their health, deliveries with every attempt, search; actions: enable, \
            disable, test event, replay. Access needs HERALD_CONSOLE_TOKEN; on loopback without it, a token is \
            generated and printed once as `console token: TOKEN`. Off loopback it also needs TLS \
            (HERALD_CONSOLE_TLS_CERT and HERALD_CONSOLE_TLS_KEY) or HERALD_CONSOLE_BEHIND_PROXY=1. \
            HERALD_CONSOLE_READONLY=1 hides and refuses every action. Browsers log in at /login; scripts send \
            Authorization: Bearer TOKEN.
            """)
    @OptionGroup var database: DatabaseOptions

    func run() throws {
        let console = Console.binary()
        guard FileManager.default.isExecutableFile(atPath: console) else {
            throw CommandFailure("""
                herald console runs \(console), which is not built: swift build -c release --product herald-console \
                (or HERALD_CONSOLE=1 scripts/run)
                """)
        }
        var arguments = [console]
        if let url = database.databaseURL, !url.isEmpty { arguments += ["--database-url", url] }
        let cArguments = arguments.map { strdup($0) } + [nil]
        execv(console, cArguments)
        throw CommandFailure("cannot start \(console): \(String(cString: strerror(errno)))")
    }

    /// `herald-console` in the folder of the running `herald` (symbolic links resolved, so `.herald/bin/herald`
    /// finds the build folder's).
    static func binary() -> String {
        let executable = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"))
            ?? URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().path
        return URL(fileURLWithPath: executable).deletingLastPathComponent().appendingPathComponent("herald-console").path
    }
}
