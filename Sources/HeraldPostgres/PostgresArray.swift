/// Encodes Swift values as PostgreSQL array literals (`{"a","b",NULL}`), the text form of `text[]`, `uuid[]`,
/// `integer[]` parameters.
///
/// Herald writes the outcomes of a whole batch of attempts as one `unnest(…)` statement; arrays are how a batch
/// travels as a handful of parameters instead of thousands.
public enum PostgresArray {
    /// Every element is double-quoted with `"` and `\` escaped, so no element can break out of the literal.
    public static func literal<S: Sequence>(_ elements: S) -> String where S.Element == String? {
        var text = "{"
        var first = true
        for element in elements {
            if !first { text.append(",") }
            first = false
            guard let element else {
                text.append("NULL")
                continue
            }
            text.append("\"")
            for character in element.unicodeScalars {
                if character == "\"" || character == "\\" { text.unicodeScalars.append("\\") }
                text.unicodeScalars.append(character)
            }
            text.append("\"")
        }
        text.append("}")
        return text
    }

    public static func literal<S: Sequence>(_ elements: S) -> String where S.Element == String {
        literal(elements.lazy.map { Optional($0) })
    }

    public static func literal<S: Sequence, N: BinaryInteger>(_ elements: S) -> String where S.Element == N? {
        "{" + elements.map { $0.map { String($0) } ?? "NULL" }.joined(separator: ",") + "}"
    }

    public static func literal<S: Sequence, N: BinaryInteger>(_ elements: S) -> String where S.Element == N {
        "{" + elements.map { String($0) }.joined(separator: ",") + "}"
    }
}
