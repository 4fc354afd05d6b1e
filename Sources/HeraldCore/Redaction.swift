/// Masks secrets before anything is printed or logged.
public enum Redaction {
    /// `postgresql://user:secret@host/db` → `postgresql://user:***@host/db`; `password=secret` → `password=***`.
    public static func maskConnectionString(_ text: String) -> String {
        if let scheme = text.firstRange(of: "://") {
            let rest = text[scheme.upperBound...]
            let authorityEnd = rest.firstIndex(where: { $0 == "/" || $0 == "?" }) ?? rest.endIndex
            var authority = String(rest[..<authorityEnd])
            if let at = authority.lastIndex(of: "@") {
                let userInfo = authority[..<at]
                if let colon = userInfo.firstIndex(of: ":") {
                    authority = String(userInfo[..<colon]) + ":***" + authority[at...]
                }
            }
            var masked = String(text[..<scheme.upperBound]) + authority + rest[authorityEnd...]
            if let query = masked.firstRange(of: "password=") {
                let valueEnd = masked[query.upperBound...].firstIndex(of: "&") ?? masked.endIndex
                masked.replaceSubrange(query.upperBound..<valueEnd, with: "***")
            }
            return masked
        }
        // key=value form: mask the value of password=…
        return text.split(separator: " ", omittingEmptySubsequences: false).map { part -> String in
            part.hasPrefix("password=") ? "password=***" : String(part)
        }.joined(separator: " ")
    }

    /// A secret shown as its first characters only (`whs…` style), or `none`.
    public static func maskSecret(_ secret: String?) -> String {
        guard let secret, !secret.isEmpty else { return "none" }
        return "set (\(secret.count) chars, hidden)"
    }
}
