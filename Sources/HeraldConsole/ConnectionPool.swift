import HeraldPostgres
import Synchronization

/// PostgreSQL connections for the console's request threads: each request borrows one for its duration.
///
/// libpq connections are owned by one thread at a time; a borrowed connection is used by the borrowing thread
/// only and comes back when the request is done, or is dropped when the server closed it.
final class ConnectionPool: Sendable {
    /// `PostgresConnection` is not `Sendable`: this box moves it between threads.
    private final class Box: @unchecked Sendable {
        // @unchecked: a box is either in the pool (under the mutex) or held by exactly one borrowing thread.
        let connection: PostgresConnection
        init(_ connection: PostgresConnection) { self.connection = connection }
    }

    private let url: String
    private let idle = Mutex<[Box]>([])
    /// Idle connections kept beyond this are closed.
    private let keep: Int

    init(url: String, keep: Int = 4) {
        self.url = url
        self.keep = keep
    }

    /// Runs `body` with a connection of its own; a connection that failed as a connection is not reused.
    func withConnection<T>(_ body: (PostgresConnection) throws -> T) throws -> T {
        let box = try idle.withLock { $0.popLast() } ?? open()
        do {
            let result = try body(box.connection)
            giveBack(box)
            return result
        } catch let error as PostgresError where error.isConnectionProblem {
            box.connection.close()
            throw error
        } catch {
            giveBack(box)
            throw error
        }
    }

    /// A new connection, named in `pg_stat_activity`, whose statements give up after 15 s (a page waiting on a
    /// lock must not hold a request thread forever), and whose times are written in UTC, as the pages say.
    private func open() throws -> Box {
        let connection = try PostgresConnection(PostgresConnection.withNetworkTimeouts(url))
        try connection.query("SELECT set_config('application_name', 'herald console', false), "
                                 + "set_config('statement_timeout', '15s', false), set_config('TimeZone', 'UTC', false)")
        return Box(connection)
    }

    private func giveBack(_ box: Box) {
        let extra: Box? = idle.withLock { boxes in
            guard boxes.count < keep else { return box }
            boxes.append(box)
            return nil
        }
        extra?.connection.close()
    }
}
