internal import CLibPQ

/// The rows of one statement's result, copied out of libpq as text (`nil` for SQL NULL).
///
/// Copying at once lets the `PGresult` be freed immediately, so no C pointer escapes the wrapper.
public struct PostgresResult: Sendable {
    public let columns: [String]
    public let rows: [[String?]]
    /// Rows affected, for INSERT/UPDATE/DELETE (from `PQcmdTuples`).
    public let affectedRows: Int

    init(taking result: OpaquePointer) {
        defer { PQclear(result) }
        let rowCount = Int(PQntuples(result))
        let columnCount = Int(PQnfields(result))
        columns = (0..<columnCount).map { String(cString: PQfname(result, Int32($0))) }
        var rows: [[String?]] = []
        rows.reserveCapacity(rowCount)
        for row in 0..<rowCount {
            var values: [String?] = []
            values.reserveCapacity(columnCount)
            for column in 0..<columnCount {
                if PQgetisnull(result, Int32(row), Int32(column)) == 1 {
                    values.append(nil)
                } else {
                    values.append(String(cString: PQgetvalue(result, Int32(row), Int32(column))))
                }
            }
            rows.append(values)
        }
        self.rows = rows
        affectedRows = Int(String(cString: PQcmdTuples(result))) ?? 0
    }

    /// The first column of the first row, for single-value queries.
    public var scalar: String? { rows.first?.first ?? nil }

    /// Rows as dictionaries keyed by column name (convenient in tools and tests, not on hot paths).
    public var namedRows: [[String: String?]] {
        rows.map { Dictionary(uniqueKeysWithValues: zip(columns, $0)) }
    }
}
