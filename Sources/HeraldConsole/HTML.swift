import HeraldCore

/// A fragment of HTML that escapes by default.
///
/// The console prints what receivers, producers and operators wrote into the database: response bodies, event
/// data, config names. Any of them may hold `<script>`, quotes or terminal control characters. Interpolating a
/// `String` (or any value) into an `HTML` literal escapes it and neutralizes its control characters; only another
/// `HTML` value is inserted as it is. So the safe way is the short way, and markup has to be asked for by type.
public struct HTML: Sendable, Equatable, ExpressibleByStringInterpolation, CustomStringConvertible {
    /// The markup, ready to send.
    public private(set) var text: String

    /// Markup written by the console itself (a literal in the source, never data).
    public init(stringLiteral value: String) { text = value }

    public init(stringInterpolation: Interpolation) { text = stringInterpolation.text }

    /// Builds a fragment out of parts that are already `HTML`.
    public init<S: Sequence>(joining parts: S, separator: HTML = "") where S.Element == HTML {
        text = parts.map(\.text).joined(separator: separator.text)
    }

    public var description: String { text }

    public static let empty: HTML = ""

    public static func + (left: HTML, right: HTML) -> HTML {
        var joined = left
        joined.text += right.text
        return joined
    }

    public static func += (left: inout HTML, right: HTML) { left.text += right.text }

    /// Escapes `&`, `<`, `>`, `"` and `'` (so the text is safe between tags and inside quoted attributes) and makes
    /// control characters visible (`\u{1B}`) instead of passing them to the browser.
    public static func escape(_ value: String) -> String {
        var result = ""
        result.reserveCapacity(value.utf8.count)
        for scalar in TerminalText.neutralized(value).unicodeScalars {
            switch scalar {
            case "&": result += "&amp;"
            case "<": result += "&lt;"
            case ">": result += "&gt;"
            case "\"": result += "&quot;"
            case "'": result += "&#39;"
            default: result.unicodeScalars.append(scalar)
            }
        }
        return result
    }

    public struct Interpolation: StringInterpolationProtocol {
        var text = ""

        public init(literalCapacity: Int, interpolationCount: Int) { text.reserveCapacity(literalCapacity * 2) }

        public mutating func appendLiteral(_ literal: String) { text += literal }

        /// Markup: inserted as it is.
        public mutating func appendInterpolation(_ html: HTML) { text += html.text }

        /// Anything else: escaped.
        public mutating func appendInterpolation<T>(_ value: T) { text += HTML.escape(String(describing: value)) }

        /// A database value that may be NULL: escaped, and `placeholder` when NULL.
        public mutating func appendInterpolation(_ value: String?, or placeholder: String = "–") {
            text += HTML.escape(value ?? placeholder)
        }
    }
}
