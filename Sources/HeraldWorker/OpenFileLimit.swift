import Foundation

/// The open-file limit a worker runs under: every request in flight holds a socket. Many systems start processes
/// with a soft limit of 1,024, under what the default concurrency needs, while allowing far more (the hard
/// limit); so the worker raises its own soft limit, as nginx (`worker_rlimit_nofile`) and Go's runtime do. When
/// even the hard limit is too low, the caller runs fewer requests in flight and says so, instead of failing
/// connections one by one with "too many open files".
public enum OpenFileLimit {
    /// Descriptors besides the requests' sockets: PostgreSQL connections, the metrics listener, the engine's
    /// epoll and eventfd, logs, with room to spare.
    public static let reserve = 64

    /// Raises the soft limit to `needed` if it is lower, as far as the hard limit allows. Returns the soft limit
    /// in force afterwards.
    public static func ensure(_ needed: Int) -> Int {
        let unlimited = rlim_t.max  // RLIM_INFINITY, which Swift imports as a signed literal
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return needed }
        if limit.rlim_cur == unlimited || Int(clamping: limit.rlim_cur) >= needed { return needed }
        let target = limit.rlim_max == unlimited ? rlim_t(needed) : min(rlim_t(needed), limit.rlim_max)
        var raised = limit
        raised.rlim_cur = target
        if target > limit.rlim_cur && setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) == 0 {
            return Int(clamping: target)
        }
        return Int(clamping: limit.rlim_cur)
    }

    /// How many requests may be in flight under `limit` open files.
    public static func concurrency(asked: Int, limit: Int) -> Int {
        min(asked, max(1, limit - reserve))
    }
}
