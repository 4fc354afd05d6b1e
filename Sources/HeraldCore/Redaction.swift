/// Masks secrets before anything is printed or logged.
public enum Redaction {
    /// `postgresql://user:secret@host/db` → `postgresql://user:***@host/db`; `password=secret` → `password=***`.
    ///
    /// As libpq reads a URL, the user-info part ends at the last `@` before the path, so a password may contain
    /// `?`, `#` or `:`; everything after the first `:` of it is masked.
    public static func maskConnectionString(_ text: String) -> String {
        if let scheme = text.firstRange(of: "://") {
            let rest = text[scheme.upperBound...]
            let pathStart = rest.firstIndex(of: "/") ?? rest.endIndex
            var masked = String(text[..<scheme.upperBound])
            var tail = rest[...]
            if let at = rest[..<pathStart].lastIndex(of: "@") {
                let userInfo = rest[..<at]
                if let colon = userInfo.firstIndex(of: ":") {
                    masked += userInfo[..<colon] + ":***"
                } else {
                    masked += userInfo
                }
                tail = rest[at...]
            }
            masked += tail
            if let query = masked.firstRange(of: "password=") {
                let valueEnd = masked[query.upperBound...].firstIndex(of: "&") ?? masked.endIndex
                masked.replaceSubrange(query.upperBound..<valueEnd, with: "***")
            }
            return masked
        }
        // key=value form: mask the value after `password`, with or without blanks around `=`, quoted or not.
        guard let key = text.firstRange(of: "password") else { return text }
        var index = key.upperBound
        while index < text.endIndex, text[index] == " " { index = text.index(after: index) }
        guard index < text.endIndex, text[index] == "=" else { return text }
        index = text.index(after: index)
        while index < text.endIndex, text[index] == " " { index = text.index(after: index) }
        var end = index
        if end < text.endIndex, text[end] == "'" {
            end = text.index(after: end)
            while end < text.endIndex, text[end] != "'" {
                if text[end] == "\\" { end = text.index(after: end) }
                if end < text.endIndex { end = text.index(after: end) }
            }
            if end < text.endIndex { end = text.index(after: end) }
        } else {
            while end < text.endIndex, text[end] != " " { end = text.index(after: end) }
        }
        return String(text[..<key.lowerBound]) + "password=***" + maskConnectionString(String(text[end...]))
    }
}
