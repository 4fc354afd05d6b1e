/// Text from the database made safe to print on a terminal.
///
/// Receivers write `webhook_logs.response_body`, producers write `webhook_events.data`, operators write config
/// names: any of them can hold `ESC ] 0 ; … BEL` or `ESC [ 2 J`, which a terminal obeys (retitle the window,
/// clear the screen, rewrite what was printed before). The CLI passes everything it prints through these.
public enum TerminalText {
    /// True for the characters a terminal may act on: C0 controls except tab and newline, DEL, and C1 controls.
    public static func isUnsafe(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.value {
        case 0x09, 0x0A: false
        case 0x00...0x1F, 0x7F, 0x80...0x9F: true
        default: false
        }
    }

    /// Replaces each unsafe character by a visible escape such as `\u{1B}`, so that it is shown, not obeyed.
    public static func neutralized(_ text: String) -> String {
        guard text.unicodeScalars.contains(where: isUnsafe) else { return text }
        var result = String.UnicodeScalarView()
        for scalar in text.unicodeScalars {
            if isUnsafe(scalar) {
                result.append(contentsOf: "\\u{\(String(scalar.value, radix: 16, uppercase: true))}".unicodeScalars)
            } else {
                result.append(scalar)
            }
        }
        return String(result)
    }

    /// For JSON text: writes each unsafe character as a JSON `\u00XX` escape. PostgreSQL's JSON already escapes C0
    /// controls inside strings, but not DEL and C1; the escape means the same character to a JSON parser, so the
    /// document's meaning is unchanged. (Outside strings, valid JSON holds no such characters.)
    public static func jsonEscaped(_ json: String) -> String {
        guard json.unicodeScalars.contains(where: isUnsafe) else { return json }
        var result = String.UnicodeScalarView()
        for scalar in json.unicodeScalars {
            if isUnsafe(scalar) {
                let hex = String(scalar.value, radix: 16)
                result.append(contentsOf: ("\\u" + String(repeating: "0", count: 4 - hex.count) + hex).unicodeScalars)
            } else {
                result.append(scalar)
            }
        }
        return String(result)
    }
}
