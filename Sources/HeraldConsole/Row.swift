/// A result row by column name, as `PostgresResult.namedRows` gives it, with NULL and a missing column alike.
typealias Row = [String: String?]

extension Dictionary where Key == String, Value == String? {
    subscript(column column: String) -> String? { self[column] ?? nil }
}
