import HeraldCore

/// Standard output of the CLI. Shadows `Swift.print` in this module (same signature, so every `print` here is
/// this one), so that nothing printed, whatever the database holds, can drive the terminal: control characters
/// are shown as `\u{1B}`-style escapes (`TerminalText`). JSON output is escaped as JSON first (`printJSON`),
/// which leaves nothing to neutralize.
func print(_ items: Any..., separator: String = " ", terminator: String = "\n") {
    let text = items.map { String(describing: $0) }.joined(separator: separator)
    Swift.print(TerminalText.neutralized(text), terminator: terminator)
}

/// One JSON document from PostgreSQL, with the control characters its JSON leaves raw (DEL, C1) escaped as `\u00XX`.
func printJSON(_ json: String?) {
    print(TerminalText.jsonEscaped(json ?? "null"))
}
