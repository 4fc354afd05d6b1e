/// Encodes Swift values as PostgreSQL array literals (`{"a","b",NULL}`), the text form of `text[]`, `uuid[]`,
/// `integer[]` parameters.
///
/// Herald writes the outcomes of a whole batch of attempts as one `unnest(…)` statement; arrays are how a batch
/// travels as a handful of parameters instead of thousands.
public enum PostgresArray {
    /// Every element is double-quoted with `"` and `\` escaped, so no element can break out of the literal.
    /// Built as bytes: a batch carries every payload and response body, and appending to a `String` one
    /// character at a time was, measured with callgrind, the worker's largest cost.
    public static func literal<S: Sequence>(_ elements: S) -> String where S.Element == String? {
        var bytes: [UInt8] = [UInt8(ascii: "{")]
        var first = true
        for element in elements {
            if !first { bytes.append(UInt8(ascii: ",")) }
            first = false
            guard var element else {
                bytes.append(contentsOf: "NULL".utf8)
                continue
            }
            bytes.append(UInt8(ascii: "\""))
            element.withUTF8 { utf8 in
                var start = 0
                for index in utf8.indices where utf8[index] == UInt8(ascii: "\"") || utf8[index] == UInt8(ascii: "\\") {
                    bytes.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[start..<index]))
                    bytes.append(UInt8(ascii: "\\"))
                    start = index
                }
                bytes.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[start...]))
            }
            bytes.append(UInt8(ascii: "\""))
        }
        bytes.append(UInt8(ascii: "}"))
        return String(decoding: bytes, as: UTF8.self)
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

    /// The elements of a `uuid[]` (or any array of unquoted, comma-free elements) in its text form, `{a,b}`.
    public static func parseUUIDs(_ text: String) -> [String] {
        let inner = text.dropFirst(text.hasPrefix("{") ? 1 : 0).dropLast(text.hasSuffix("}") ? 1 : 0)
        return inner.split(separator: ",").map(String.init).filter { $0 != "NULL" }
    }
}
