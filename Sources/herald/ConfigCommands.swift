import ArgumentParser
import Foundation
import HeraldCore
import HeraldPostgres

struct ConfigCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "config",
        abstract: "Create, inspect and change webhook configs (the webhook_configs table).",
        subcommands: [Create.self, List.self, Show.self, Update.self, Enable.self, Disable.self, Delete.self,
                      RotateSecret.self])

    /// Columns shown for a config: never the secret itself.
    static let columns = """
        c.id, c.name, c.url, array_to_string(c.events, ',') AS events,
        CASE WHEN c.secret IS NULL THEN 'none' ELSE 'set' END AS secret,
        CASE WHEN c.is_active THEN 'active' ELSE 'disabled' END AS state,
        coalesce(c.organization_id::text, '-') AS organization, c.max_attempts, c.ordering
        """

    static func validateURL(_ url: String) throws {
        guard let parsed = URLComponents(string: url), let scheme = parsed.scheme?.lowercased(),
              scheme == "http" || scheme == "https", let host = parsed.host, !host.isEmpty else {
            throw CommandFailure("--url '\(url)' is not an absolute http:// or https:// URL (e.g. https://example.com/webhooks)")
        }
        if parsed.user != nil || parsed.password != nil {
            throw CommandFailure("--url must not carry credentials (user:password@); receivers authenticate Herald by its signature")
        }
    }

    static func validateEvents(_ list: String) throws -> [String] {
        let events = list.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        guard !events.isEmpty else { throw CommandFailure("--events must name at least one event type, or * for all") }
        let unknown = events.filter { $0 != "*" && !EventCatalog.contains($0) }
        guard unknown.isEmpty else {
            throw CommandFailure("unknown event type(s) \(unknown.joined(separator: ", ")): expected * or any of \(EventCatalog.all.map(\.name).joined(separator: ", "))")
        }
        return events
    }

    /// 32 random bytes from the system's CSPRNG, as 64 hex characters.
    static func generateSecret() -> String {
        var generator = SystemRandomNumberGenerator()
        return (0..<32).map { _ in String(format: "%02x", UInt8.random(in: 0...255, using: &generator)) }.joined()
    }

    /// Reads a secret from `path` (`-`: standard input) for `--secret-file`, so it never appears in `ps`,
    /// `/proc/*/cmdline` or shell history. One trailing newline (`\n` or `\r\n`) is stripped, as `echo` and
    /// editors add one; the rest is the secret, byte for byte.
    static func readSecret(from path: String) throws -> String {
        let data: Data
        if path == "-" {
            data = FileHandle.standardInput.readDataToEndOfFile()
        } else {
            guard let contents = FileManager.default.contents(atPath: path) else {
                throw CommandFailure("--secret-file \(path): cannot read it (missing, or not readable by this user)")
            }
            data = contents
        }
        var bytes = [UInt8](data)
        if bytes.last == 0x0A {
            bytes.removeLast()
            if bytes.last == 0x0D { bytes.removeLast() }
        }
        let source = path == "-" ? "standard input" : path
        guard bytes.count <= 4096 else { throw CommandFailure("--secret-file: the secret in \(source) is longer than 4096 bytes") }
        guard !bytes.isEmpty else { throw CommandFailure("--secret-file: \(source) holds no secret (it is empty)") }
        let secret = String(decoding: bytes, as: UTF8.self)
        guard !bytes.contains(0), Array(secret.utf8) == bytes else {
            throw CommandFailure("--secret-file: the secret in \(source) must be UTF-8 text without NUL bytes")
        }
        return secret
    }

    static func printSecretOnce(_ secret: String) {
        print("secret: \(secret)")
        print("(shown once: store it with the receiver now; Herald never prints it again)")
    }

    struct Create: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Add a webhook config.",
            discussion: """
                --events takes event type names, comma-separated, or * for all: `herald event-types` lists them. \
                Names are unique within an organization. A config only receives events of its own organization \
                (--org; none matches events emitted without one).
                """)
        @OptionGroup var database: DatabaseOptions
        @Option(help: "Human-readable name.") var name: String
        @Option(help: "Endpoint, an absolute http(s) URL.") var url: String
        @Option(help: "Comma-separated event types, or * for all (herald event-types lists them).") var events: String
        @Option(help: "HMAC secret. Visible in ps and shell history: prefer --secret-file or --generate-secret.")
        var secret: String?
        @Option(name: .customLong("secret-file"), help: "Read the HMAC secret from this file, or - for standard input.")
        var secretFile: String?
        @Flag(name: .customLong("generate-secret"), help: "Generate a strong secret and print it once.")
        var generateSecret = false
        @Option(name: .customLong("org"), help: "Organization id (UUID).") var organization: String?
        @Flag(help: "Create it disabled.") var inactive = false
        @Option(name: .customLong("max-attempts"), help: "Attempts before failing (1–100), instead of the worker's.")
        var maxAttempts: Int?
        @Option(help: "key: events sharing an ordering_key are delivered one at a time, in order; none (default): independently.")
        var ordering: Ordering = .none

        func validate() throws {
            if name.trimmingCharacters(in: .whitespaces).isEmpty { throw CommandFailure("--name must not be empty") }
            try ConfigCommand.validateURL(url)
            _ = try ConfigCommand.validateEvents(events)
            if [secret != nil, secretFile != nil, generateSecret].filter({ $0 }).count > 1 {
                throw CommandFailure("use one of --secret, --secret-file and --generate-secret")
            }
            if secret == "" { throw CommandFailure("--secret must not be empty (omit it for unsigned requests)") }
            if let organization { _ = try requireUUID("--org", organization) }
            if let maxAttempts, !(1...100).contains(maxAttempts) {
                throw CommandFailure("--max-attempts must be between 1 and 100")
            }
        }

        func run() throws {
            let chosenSecret = try generateSecret ? ConfigCommand.generateSecret()
                : secretFile.map(ConfigCommand.readSecret(from:)) ?? secret
            let connection = try database.connect()
            let id = try perform {
                try connection.query("""
                    INSERT INTO webhook_configs (name, url, events, secret, organization_id, is_active, max_attempts, ordering)
                    VALUES ($1, $2, $3::text[], $4, $5::uuid, $6, $7::integer, $8) RETURNING id
                    """, [name, url, PostgresArray.literal(try ConfigCommand.validateEvents(events)), chosenSecret,
                          organization, inactive ? "false" : "true", maxAttempts.map(String.init),
                          ordering.rawValue]).scalar!
            }
            print("created config \(id) (\(name))")
            if generateSecret, let chosenSecret { ConfigCommand.printSecretOnce(chosenSecret) }
            // (Not for this machine's own receivers, such as herald receive: https is for what crosses a network.)
            if let parsed = URLComponents(string: url), parsed.scheme?.lowercased() == "http",
               !["127.0.0.1", "localhost", "[::1]", "::1"].contains(parsed.host?.lowercased() ?? "") {
                print("warning: \(url) is plain http; the documentation recommends https")
            }
            if let warning = AddressWarning.check(url: url) { print(warning) }
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List webhook configs (secrets masked).")
        @OptionGroup var database: DatabaseOptions
        @Flag(help: "One JSON object per line.") var json = false

        func run() throws {
            let connection = try database.connect()
            let sql = "SELECT \(ConfigCommand.columns) FROM webhook_configs c ORDER BY c.created_at"
            Output.table(try Output.query(connection, sql, json: json), json: json,
                                empty: "no webhook configs (add one with herald config create)")
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show one config and how its deliveries are doing.")
        @OptionGroup var database: DatabaseOptions
        @Argument(help: "Config id or name.") var config: String
        @OptionGroup var scope: OrganizationOption
        @Flag(help: "One JSON object.") var json = false

        func run() throws {
            let connection = try database.connect()
            let id = try resolveConfig(config, organization: scope.organization, on: connection)
            let sql = """
                SELECT \(ConfigCommand.columns), c.disabled_reason, c.disabled_at,
                       CASE WHEN c.previous_secret_expires_at > now()
                            THEN 'until ' || c.previous_secret_expires_at END AS previous_secret_valid,
                       c.created_at, c.updated_at,
                       s.attempts_24h, s.success_rate_pct,
                       s.pending, s.failed, s.last_error
                  FROM webhook_configs c JOIN webhook_config_stats s ON s.config_id = c.id WHERE c.id = $1
                """
            let result = try Output.query(connection, sql, [id], json: json)
            if json {
                printJSON(result.scalar)
                return
            }
            Output.fields(result.columns, result.rows[0])
        }
    }

    struct Update: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Change a config's fields; others stay as they are.")
        @OptionGroup var database: DatabaseOptions
        @Argument(help: "Config id or name.") var config: String
        @Option var name: String?
        @Option var url: String?
        @Option(help: "Comma-separated event types, or * for all.") var events: String?
        @Option(help: "HMAC secret. Visible in ps and shell history: prefer --secret-file or --generate-secret.")
        var secret: String?
        @Option(name: .customLong("secret-file"), help: "Read the HMAC secret from this file, or - for standard input.")
        var secretFile: String?
        @Flag(name: .customLong("generate-secret"), help: "Generate a strong secret and print it once.")
        var generateSecret = false
        @Flag(name: .customLong("no-secret"), help: "Send unsigned requests from now on.") var noSecret = false
        @Option(name: .customLong("org"), help: "Move the config to this organization (UUID). (Name it by id when configs of several organizations share its name.)")
        var organization: String?
        @Option(name: .customLong("max-attempts")) var maxAttempts: Int?
        @Option(help: "key: events sharing an ordering_key go one at a time, in order; none: independently.")
        var ordering: Ordering?

        func validate() throws {
            if let url { try ConfigCommand.validateURL(url) }
            if let events { _ = try ConfigCommand.validateEvents(events) }
            if [secret != nil, secretFile != nil, generateSecret, noSecret].filter({ $0 }).count > 1 {
                throw CommandFailure("use one of --secret, --secret-file, --generate-secret and --no-secret")
            }
            if secret == "" { throw CommandFailure("--secret must not be empty (use --no-secret for unsigned requests)") }
            if let organization { _ = try requireUUID("--org", organization) }
            if let name, name.trimmingCharacters(in: .whitespaces).isEmpty { throw CommandFailure("--name must not be empty") }
        }

        func run() throws {
            let newSecret = try generateSecret ? ConfigCommand.generateSecret()
                : secretFile.map(ConfigCommand.readSecret(from:)) ?? secret
            let connection = try database.connect()
            let id = try resolveConfig(config, on: connection)
            var assignments: [String] = []
            var parameters: [String?] = [id]
            func set(_ column: String, _ value: String?, cast: String = "") {
                parameters.append(value)
                assignments.append("\(column) = $\(parameters.count)\(cast)")
            }
            if let name { set("name", name) }
            if let url { set("url", url) }
            if let events { set("events", PostgresArray.literal(try ConfigCommand.validateEvents(events)), cast: "::text[]") }
            if let newSecret { set("secret", newSecret) }
            if noSecret { assignments.append("secret = NULL") }
            if let organization { set("organization_id", organization, cast: "::uuid") }
            if let maxAttempts { set("max_attempts", String(maxAttempts), cast: "::integer") }
            if let ordering { set("ordering", ordering.rawValue) }
            guard !assignments.isEmpty else { throw CommandFailure("nothing to change: pass at least one option") }
            try perform {
                try connection.query("UPDATE webhook_configs SET \(assignments.joined(separator: ", ")) WHERE id = $1", parameters)
            }
            print("updated config \(id)")
            if let url, let warning = AddressWarning.check(url: url) { print(warning) }
            if generateSecret, let newSecret { ConfigCommand.printSecretOnce(newSecret) }
        }
    }

    struct Enable: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Resume deliveries to a config.")
        @OptionGroup var database: DatabaseOptions
        @Argument(help: "Config id or name.") var config: String
        @OptionGroup var scope: OrganizationOption
        func run() throws { try setActive(database, config, scope.organization, true) }
    }

    struct Disable: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Stop deliveries to a config.",
            discussion: "New events no longer fan out to it; deliveries already queued fail without being sent (replay them after enabling).")
        @OptionGroup var database: DatabaseOptions
        @Argument(help: "Config id or name.") var config: String
        @OptionGroup var scope: OrganizationOption
        func run() throws { try setActive(database, config, scope.organization, false) }
    }

    struct Delete: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Delete a config and its queued deliveries (webhook_logs history is kept).")
        @OptionGroup var database: DatabaseOptions
        @Argument(help: "Config id or name.") var config: String
        @OptionGroup var scope: OrganizationOption
        func run() throws {
            let connection = try database.connect()
            let id = try resolveConfig(config, organization: scope.organization, on: connection)
            let deliveries = try connection.transaction { connection -> String in
                let count = try connection.query("SELECT count(*) FROM webhook_deliveries WHERE config_id = $1", [id]).scalar ?? "0"
                try connection.query("DELETE FROM webhook_configs WHERE id = $1", [id])
                return count
            }
            print("deleted config \(id) and its \(deliveries) deliveries")
        }
    }

    struct RotateSecret: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "rotate-secret",
            abstract: "Replace a config's secret with a new generated one, printed once (or one from --secret-file).",
            discussion: """
                The old secret stays valid for --keep-previous (default 24h): until then requests carry a Standard \
                Webhooks signature for each secret (X-Webhook-Signature uses the new one), so receivers can switch \
                over without rejecting anything. --keep-previous 0s drops it at once.
                """)
        @OptionGroup var database: DatabaseOptions
        @Argument(help: "Config id or name.") var config: String
        @OptionGroup var scope: OrganizationOption
        @Option(name: .customLong("keep-previous"), help: "How long the old secret still signs (e.g. 24h, 0s).")
        var keepPrevious: String = "24h"
        @Option(name: .customLong("secret-file"), help: "Use the secret in this file (- for standard input) instead of generating one; it is not printed.")
        var secretFile: String?

        func validate() throws {
            if DurationText.parse(keepPrevious) == nil {
                throw CommandFailure(DurationText.explain("--keep-previous", keepPrevious, datesAllowed: false))
            }
        }

        func run() throws {
            let supplied = try secretFile.map(ConfigCommand.readSecret(from:))
            let secret = supplied ?? ConfigCommand.generateSecret()
            let connection = try database.connect()
            let id = try resolveConfig(config, organization: scope.organization, on: connection)
            let keep = DurationText.parse(keepPrevious)!
            try connection.query("""
                UPDATE webhook_configs
                   SET previous_secret = CASE WHEN $3::bigint > 0 THEN secret END,
                       previous_secret_expires_at = CASE WHEN $3::bigint > 0 AND secret IS NOT NULL
                                                         THEN now() + $3::bigint * interval '1 millisecond' END,
                       secret = $2
                 WHERE id = $1
                """, [id, secret, String(Int64(keep.milliseconds))])
            print("rotated the secret of config \(id); requests are signed with the new one from now on")
            if keep > .zero { print("the previous secret also signs (webhook-signature) for \(keepPrevious)") }
            if supplied == nil { ConfigCommand.printSecretOnce(secret) }
        }
    }
}

private func setActive(_ database: DatabaseOptions, _ reference: String, _ organization: String?, _ active: Bool) throws {
    let connection = try database.connect()
    let id = try resolveConfig(reference, organization: organization, on: connection)
    try connection.query("UPDATE webhook_configs SET is_active = $2 WHERE id = $1", [id, active ? "true" : "false"])
    print("\(active ? "enabled" : "disabled") config \(id)")
}

/// `webhook_configs.ordering`: whether deliveries of events sharing an `ordering_key` go one at a time, in order.
enum Ordering: String, CaseIterable, ExpressibleByArgument {
    case none
    case key
}
