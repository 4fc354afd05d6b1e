/// Herald's version, sent in `User-Agent: Herald/<version>` and printed by `herald --version`.
public enum HeraldVersion {
    public static let current = "0.1.0"
}
