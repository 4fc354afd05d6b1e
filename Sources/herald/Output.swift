import ArgumentParser
import Foundation
import HeraldCore
import HeraldPostgres

/// How list commands print: aligned tables for people, one JSON object per line for scripts.
enum Output {
    /// Runs `sql`; with `json`, wrapped so that PostgreSQL writes each row as one JSON object (`row_to_json`).
    static func query(_ connection: PostgresConnection, _ sql: String, _ parameters: [String?] = [], json: Bool)
        throws -> PostgresResult
    {
        try connection.query(json ? "SELECT row_to_json(t) FROM (\(sql)) t" : sql, parameters)
    }

    static func table(_ result: PostgresResult, json: Bool, empty: String) {
        if json {
            // The queries behind --json select row_to_json(…) as their only column: Postgres writes the JSON.
            for row in result.rows { printJSON(row[0]) }
            return
        }
        if result.rows.isEmpty {
            print(empty)
            return
        }
        // The last column is never cut: it is where errors go ("… (allow it with HERALD_ALLOWED_NETWORKS)"), and
        // nothing after it needs aligning.
        let cells = result.rows.map { row in
            row.enumerated().map { index, value in
                index == row.count - 1 ? flatten(value ?? "-") : shorten(value ?? "-")
            }
        }
        var widths = result.columns.map(\.count)
        for row in cells {
            for (index, cell) in row.enumerated() { widths[index] = max(widths[index], cell.count) }
        }
        func line(_ values: [String]) -> String {
            values.enumerated().map { index, value in
                index == values.count - 1 ? value : value.padding(toLength: widths[index], withPad: " ", startingAt: 0)
            }.joined(separator: "  ")
        }
        print(line(result.columns.map { $0.uppercased() }))
        for row in cells { print(line(row)) }
    }

    /// One line per cell: newlines and long values would break the table.
    static func shorten(_ value: String, limit: Int = 80) -> String {
        let flat = flatten(value)
        return flat.count > limit ? String(flat.prefix(limit - 1)) + "…" : flat
    }

    /// The value on one line, control characters neutralized.
    static func flatten(_ value: String) -> String {
        TerminalText.neutralized(value).replacingOccurrences(of: "\r", with: " ").replacingOccurrences(of: "\n", with: " ")
    }

    /// `name  value` lines with the names padded to the longest, so no label is cut.
    static func fields(_ columns: [String], _ values: [String?]) {
        let width = columns.map(\.count).max() ?? 0
        for (column, value) in zip(columns, values) {
            print("\(column.padding(toLength: width, withPad: " ", startingAt: 0))  \(value ?? "-")")
        }
    }
}

/// `--since`/`--until`: a duration ago (`1h`) or an absolute ISO 8601 time, as a SQL `timestamptz` parameter.
func timeBound(_ option: String, _ value: String?) throws -> String? {
    guard let value else { return nil }
    if let duration = DurationText.parse(value) {
        let seconds = Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
        return ISO8601DateFormatter().string(from: Date().addingTimeInterval(-seconds))
    }
    let formatter = ISO8601DateFormatter()
    formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
    if formatter.date(from: value) != nil { return value }
    formatter.formatOptions = [.withInternetDateTime]
    if formatter.date(from: value) != nil { return value }
    formatter.formatOptions = [.withFullDate]
    if formatter.date(from: value) != nil { return value }
    throw CommandFailure(DurationText.explain(option, value, datesAllowed: true))
}

/// Finds a config by id or by name (within `organization` when given: names are unique per organization); the
/// error says which exist when nothing matches.
func resolveConfig(_ reference: String, organization: String? = nil, on connection: PostgresConnection) throws -> String {
    let rows = try connection.query("""
        SELECT id, coalesce(organization_id::text, 'none') FROM webhook_configs
         WHERE (id::text = lower($1) OR name = $1)
           AND ($2::uuid IS NULL OR organization_id = $2::uuid)
         ORDER BY created_at
        """, [reference, organization]).rows
    if rows.count == 1 { return rows[0][0]! }
    if rows.count > 1 {
        let organizations = rows.map { $0[1]! }.joined(separator: ", ")
        throw CommandFailure("\(rows.count) configs are named '\(reference)', in organizations \(organizations): pass --org ORG or use the id (herald config list)")
    }
    let scope = organization.map { " in organization \($0)" } ?? ""
    throw CommandFailure("no webhook config with id or name '\(reference)'\(scope) (herald config list shows them)")
}

/// `--org` for commands that name a config: picks among configs of the same name in different organizations.
struct OrganizationOption: ParsableArguments {
    @Option(name: .customLong("org"),
            help: "Organization id (UUID) of the config named, when configs of different organizations share the name.")
    var organization: String?

    func validate() throws {
        if let organization { _ = try requireUUID("--org", organization) }
    }
}

func requireUUID(_ option: String, _ value: String) throws -> String {
    guard UUID(uuidString: value) != nil else {
        throw CommandFailure("\(option) '\(value)' is not a UUID (expected e.g. 8d0f6f0e-3c1a-4f5e-9b7a-2f1e0d9c8b7a)")
    }
    return value.lowercased()
}

/// Runs a statement and turns a database rejection into one line for the person at the terminal.
@discardableResult
func perform<T>(_ body: () throws -> T) throws -> T {
    do {
        return try body()
    } catch let error as PostgresError where error.kind == .query {
        if error.sqlState == "23505" && error.message.contains("webhook_configs_name_per_organization") {
            throw CommandFailure("""
                a config of that name already exists in this organization (names are unique per organization, \
                the one without an organization included): choose another --name, or change the existing one \
                (herald config show NAME)
                """)
        }
        var text = error.message
        if let hint = error.hint { text += " (\(hint))" }
        throw CommandFailure(text)
    }
}
