import ArgumentParser
import Foundation
import HeraldCore
import HeraldPostgres
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

            Start with `herald migrate`, then run one or more `herald work` processes.
            """,
        version: HeraldVersion.current,
        subcommands: [Migrate.self, Work.self, Emit.self, ConfigCommand.self, TestEvent.self, Logs.self, Deliveries.self,
                      Show.self, Replay.self, Stats.self])
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
        throw CommandFailure(
            "no database: set DATABASE_URL or pass --database-url postgresql://user:password@host:port/database")
    }

    func connect() throws -> PostgresConnection {
        try PostgresConnection(try resolved())
    }
}

/// Errors from the libraries reach the user as one line, without a stack of Swift type names.
struct CommandFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

func bootstrapLogging() {
    let environment = ProcessInfo.processInfo.environment
    let level = environment["HERALD_LOG_LEVEL"].flatMap { Logger.Level(rawValue: $0.lowercased()) } ?? .info
    LoggingSystem.bootstrap { label in
        var handler = StreamLogHandler.standardError(label: label)
        handler.logLevel = level
        return handler
    }
}
