import ArgumentParser
import Foundation
import HeraldCore
import HeraldPostgres
import HeraldWorker
import Logging

/// The `herald` command: a thin layer of argument parsing over the library targets.
@main
struct Herald: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "herald",
        abstract: "Durable, at-least-once webhook delivery from a PostgreSQL outbox.",
        discussion: """
            Applications INSERT events into webhook_events in their own transactions; Herald fans them out to \
            every subscribed webhook config and delivers them, signed, with retries and a log of every attempt.

            Start with `herald migrate`, then run one or more `herald work` processes. On your own machine, \
            scripts/run does both; `herald receive` is a receiver to try it with.
            """,
        version: HeraldVersion.current,
        subcommands: [Migrate.self, Work.self, Emit.self, ConfigCommand.self, TestEvent.self, Logs.self, Deliveries.self,
                      Show.self, Retry.self, Replay.self, Stats.self, Prune.self, EventTypes.self, Receive.self, Console.self])

    /// As argument-parser's, except that a database error is printed through `CommandFailure` (its generic
    /// description, control characters neutralized) rather than as it comes.
    static func main() {
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch let error as PostgresError {
            exit(withError: CommandFailure(error.description))
        } catch {
            exit(withError: error)
        }
    }
}

/// Options every database command shares.
struct DatabaseOptions: ParsableArguments {
    @Option(name: .customLong("database-url"),
            help: ArgumentHelp("PostgreSQL URL or key=value string.", discussion: "Default: $DATABASE_URL."))
    var databaseURL: String?

    func resolved() throws -> String {
        if let databaseURL, !databaseURL.isEmpty { return databaseURL }
        if let fromEnvironment = ProcessInfo.processInfo.environment["DATABASE_URL"], !fromEnvironment.isEmpty {
            return fromEnvironment
        }
        throw CommandFailure(WorkerConfiguration.missingDatabase)
    }

    func connect() throws -> PostgresConnection {
        try PostgresConnection(try resolved())
    }
}

/// Errors from the libraries reach the user as one line, without a stack of Swift type names. The text often
/// quotes what the database holds, so its control characters are neutralized like everything else printed.
struct CommandFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = TerminalText.neutralized(description) }
}

func bootstrapLogging() throws {
    let environment = ProcessInfo.processInfo.environment
    var level = Logger.Level.info
    if let text = environment["HERALD_LOG_LEVEL"], !text.isEmpty {
        guard let parsed = Logger.Level(rawValue: text.lowercased()) else {
            throw CommandFailure("HERALD_LOG_LEVEL=\(text) is not a level: use trace, debug, info, notice, warning, error or critical")
        }
        level = parsed
    }
    let format = environment["HERALD_LOG_FORMAT"] ?? "text"
    guard format == "text" || format == "json" else {
        throw CommandFailure("HERALD_LOG_FORMAT=\(format) is not a format: use text or json")
    }
    let chosen = level
    LoggingSystem.bootstrap { label in
        let level = chosen
        if format == "json" { return JSONLogHandler(label: label, level: level) }
        var handler = StreamLogHandler.standardError(label: label)
        handler.logLevel = level
        return handler
    }
}
