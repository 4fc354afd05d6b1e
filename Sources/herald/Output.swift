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
        let cells = result.rows.map { $0.map { shorten($0 ?? "-") } }
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
        let flat = TerminalText.neutralized(value).replacingOccurrences(of: "\r", with: " ").replacingOccurrences(of: "\n", with: " ")
        return flat.count > limit ? String(flat.prefix(limit - 1)) + "…" : flat
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

/// Finds a config by id or by name; the error says which exist when nothing matches.
func resolveConfig(_ reference: String, on connection: PostgresConnection) throws -> String {
    let rows = try connection.query(
        "SELECT id FROM webhook_configs WHERE id::text = lower($1) OR name = $1 ORDER BY created_at", [reference]).rows
    if rows.count == 1 { return rows[0][0]! }
    if rows.count > 1 {
        throw CommandFailure("\(rows.count) configs are named '\(reference)': use the id (herald config list)")
    }
    throw CommandFailure("no webhook config with id or name '\(reference)' (herald config list shows them)")
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
        var text = error.message
        if let hint = error.hint { text += " (\(hint))" }
        throw CommandFailure(text)
    }
}
