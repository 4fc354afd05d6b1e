import HeraldCore

/// A fragment of HTML that escapes by default.
///
/// The console prints what receivers, producers and operators wrote into the database: response bodies, event
/// data, config names. Any of them may hold `<script>`, quotes or terminal control characters. Interpolating a
/// `String` (or any value) into an `HTML` literal escapes it and neutralizes its control characters; only another
/// `HTML` value is inserted as it is. So the safe way is the short way, and markup has to be asked for by type.
struct HTML: Sendable, Equatable, ExpressibleByStringInterpolation, CustomStringConvertible {
    /// The markup, ready to send.
    private(set) var text: String

    /// Markup written by the console itself (a literal in the source, never data).
    init(stringLiteral value: String) { text = value }

    init(stringInterpolation: Interpolation) { text = stringInterpolation.text }

    /// Builds a fragment out of parts that are already `HTML`.
    init<S: Sequence>(joining parts: S, separator: HTML = "") where S.Element == HTML {
        text = parts.map(\.text).joined(separator: separator.text)
    }

    var description: String { text }

    static let empty: HTML = ""

    static func + (left: HTML, right: HTML) -> HTML {
        var joined = left
        joined.text += right.text
        return joined
    }

    static func += (left: inout HTML, right: HTML) { left.text += right.text }

    /// Escapes `&`, `<`, `>`, `"` and `'` (so the text is safe between tags and inside quoted attributes) and makes
    /// control characters visible (`\u{1B}`) instead of passing them to the browser.
    static func escape(_ value: String) -> String {
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

    /// How `"…\(value)…"` builds an `HTML` value: literal parts as they are, interpolated values escaped.
    struct Interpolation: StringInterpolationProtocol {
        var text = ""

        init(literalCapacity: Int, interpolationCount: Int) { text.reserveCapacity(literalCapacity * 2) }

        mutating func appendLiteral(_ literal: String) { text += literal }

        /// Markup: inserted as it is.
        mutating func appendInterpolation(_ html: HTML) { text += html.text }

        /// Anything else: escaped.
        mutating func appendInterpolation<T>(_ value: T) { text += HTML.escape(String(describing: value)) }

        /// A database value that may be NULL: escaped, and `placeholder` when NULL.
        mutating func appendInterpolation(_ value: String?, or placeholder: String = "–") {
            text += HTML.escape(value ?? placeholder)
        }
    }
}
