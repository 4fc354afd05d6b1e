import HeraldSigning
import Synchronization

/// The browser sessions of one console process: who logged in with the token, and each session's form token.
///
/// Kept in memory on purpose: a restart of the console logs everyone out, which is the safe direction, and there
/// is no table of live credentials in the database to leak.
public final class SessionStore: Sendable {
    /// What the console knows about one logged-in browser.
    public struct Session: Sendable {
        /// Sent back in every form (`_form`) and compared on every POST: a page of another site cannot read it.
        public var formToken: String
        public var expires: ContinuousClock.Instant
    }

    /// How long a session lasts from its login: one working shift.
    public static let lifetime: Duration = .seconds(12 * 3600)
    /// Beyond this many live sessions the oldest are dropped (a flood of logins cannot grow memory without end).
    public static let limit = 1000

    /// Wrong tokens allowed per minute (login form and Bearer together) before every token is refused for the
    /// rest of that minute: guessing stays hopeless even for a short token, and a person who mistypes is not hurt.
    public static let failuresPerMinute = 20

    private let sessions = Mutex<[String: Session]>([:])
    private let failures = Mutex<[ContinuousClock.Instant]>([])
    /// Tokens are compared as HMACs under this per-process key, so the comparison is constant-time whatever the
    /// lengths, and the token itself is never compared byte by byte.
    private let comparisonKey: [UInt8]
    private let clock: @Sendable () -> ContinuousClock.Instant

    public init(clock: @escaping @Sendable () -> ContinuousClock.Instant = { ContinuousClock.now }) {
        comparisonKey = Array(SessionStore.randomToken().utf8)
        self.clock = clock
    }

    /// 32 random bytes from the system's CSPRNG, as 64 hex characters.
    public static func randomToken() -> String {
        var generator = SystemRandomNumberGenerator()
        let digits = Array("0123456789abcdef")
        var text = ""
        for _ in 0..<32 {
            let byte = UInt8.random(in: 0...255, using: &generator)
            text.append(digits[Int(byte >> 4)])
            text.append(digits[Int(byte & 0xF)])
        }
        return text
    }

    /// Constant-time equality of two secrets.
    public func same(_ given: String, _ expected: String) -> Bool {
        Signer.constantTimeEquals(Signer.hmacSHA256(key: comparisonKey, message: Array(given.utf8)),
                                  Signer.hmacSHA256(key: comparisonKey, message: Array(expected.utf8)))
    }

    /// Whether `given` is `expected`, counting a wrong one; false without comparing while too many wrong tokens
    /// came in the last minute.
    public func check(_ given: String, against expected: String) -> Bool {
        let now = clock()
        let throttled = failures.withLock { recent in
            recent.removeAll { now - $0 > .seconds(60) }
            return recent.count >= SessionStore.failuresPerMinute
        }
        guard !throttled else { return false }
        if same(given, expected) { return true }
        failures.withLock { $0.append(now) }
        return false
    }

    /// Starts a session; returns its id (the cookie's value).
    public func open() -> String {
        let id = SessionStore.randomToken()
        let now = clock()
        sessions.withLock { sessions in
            sessions = sessions.filter { $0.value.expires > now }
            if sessions.count >= SessionStore.limit,
               let oldest = sessions.min(by: { $0.value.expires < $1.value.expires }) {
                sessions.removeValue(forKey: oldest.key)
            }
            sessions[id] = Session(formToken: SessionStore.randomToken(), expires: now + SessionStore.lifetime)
        }
        return id
    }

    /// The live session with this id, if any.
    public func session(_ id: String?) -> Session? {
        guard let id, !id.isEmpty else { return nil }
        let now = clock()
        return sessions.withLock { sessions in
            // Looked up by hash key: the id is 256 random bits, so timing reveals nothing usable.
            guard let session = sessions[id] else { return nil }
            guard session.expires > now else {
                sessions.removeValue(forKey: id)
                return nil
            }
            return session
        }
    }

    public func close(_ id: String?) {
        guard let id else { return }
        _ = sessions.withLock { $0.removeValue(forKey: id) }
    }
}
