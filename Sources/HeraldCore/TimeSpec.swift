/// Parses the durations operators type: `500ms`, `30s`, `15m`, `1h`, `7d`, `2w`.
public enum DurationText {
    public static func parse(_ text: String) -> Duration? {
        let units: [(String, Int64)] = [("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000), ("d", 86_400_000),
                                        ("w", 604_800_000)]
        for (suffix, milliseconds) in units where text.hasSuffix(suffix) {
            let number = text.dropLast(suffix.count)
            // "ms" also ends in "s": only accept when what is left is a plain number.
            guard !number.isEmpty, number.allSatisfy(\.isASCIIDigit), let value = Int64(number),
                  value <= Int64.max / milliseconds / 1000 else { continue }
            return .milliseconds(value * milliseconds)
        }
        return nil
    }

    /// The message for a value that is neither a duration nor (where allowed) a date.
    public static func explain(_ option: String, _ value: String, datesAllowed: Bool) -> String {
        "\(option) '\(value)' is not a duration: use a number with a unit (ms, s, m, h, d, w) such as 30m, 1h or 7d"
            + (datesAllowed ? ", or an ISO 8601 time such as 2026-11-29T12:00:00Z" : "")
    }
}
