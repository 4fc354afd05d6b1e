import ArgumentParser
import Foundation
import HeraldCore
import HeraldPostgres
import HeraldWorker

/// The filters `herald logs` and `herald deliveries` share.
struct Filters: ParsableArguments {
    @Option(help: "Config id or name.") var config: String?
    @OptionGroup var scope: OrganizationOption
    @Option(name: .customLong("event-type"), help: "Event type, e.g. contact.created.") var eventType: String?
    @Option(help: "Delivery id (the X-Webhook-Id header).") var delivery: String?
    @Option(help: "Event id.") var event: String?
    @Option(help: "The delivery's current status: pending, delivered or failed.") var status: String?
    @Option(help: "Only since then: a duration ago (30m, 1h, 7d) or an ISO 8601 time.") var since: String?
    @Option(help: "At most this many rows (newest first).") var limit: Int = 50
    @Flag(help: "One JSON object per line.") var json = false

    func validate() throws {
        if let status, !["pending", "delivered", "failed"].contains(status) {
            throw CommandFailure("--status '\(status)' is not a delivery status: use pending, delivered or failed")
        }
        if let eventType, !EventCatalog.contains(eventType) {
            throw CommandFailure("--event-type '\(eventType)' is not a known event type (see webhook_event_types)")
        }
        if let delivery { _ = try requireUUID("--delivery", delivery) }
        if let event { _ = try requireUUID("--event", event) }
        if limit < 1 { throw CommandFailure("--limit must be at least 1") }
        if scope.organization != nil && config == nil {
            throw CommandFailure("--org picks the organization of the --config NAME: give --config too")
        }
        _ = try timeBound("--since", since)
    }

    /// SQL conditions over `d` (deliveries), `e` (events) or the given columns, with their parameters.
    func conditions(on connection: PostgresConnection, delivery deliveryColumn: String, event eventColumn: String,
                    config configColumn: String, type typeColumn: String, time timeColumn: String)
        throws -> (sql: String, parameters: [String?])
    {
        var clauses: [String] = []
        var parameters: [String?] = []
        func add(_ template: String, _ value: String) {
            parameters.append(value)
            clauses.append(template.replacingOccurrences(of: "?", with: "$\(parameters.count)"))
        }
        if let config { add("\(configColumn) = ?::uuid", try resolveConfig(config, organization: scope.organization, on: connection)) }
        if let eventType { add("\(typeColumn) = ?", eventType) }
        if let delivery { add("\(deliveryColumn) = ?::uuid", delivery) }
        if let event { add("\(eventColumn) = ?::uuid", event) }
        if let status { add("d.status = ?", status) }
        if let since = try timeBound("--since", since) { add("\(timeColumn) >= ?::timestamptz", since) }
        return (clauses.isEmpty ? "true" : clauses.joined(separator: " AND "), parameters)
    }
}

struct Logs: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Delivery attempts, newest first (the webhook_logs table).",
        discussion: "--status filters by the delivery's current status; --outcome by the attempt's own outcome.")
    @OptionGroup var database: DatabaseOptions
    @OptionGroup var filters: Filters
    @Option(help: "The attempt's outcome: delivered, retry, failed or lost.") var outcome: String?

    func validate() throws {
        if let outcome, !["delivered", "retry", "failed", "lost"].contains(outcome) {
            throw CommandFailure("--outcome '\(outcome)' is not an outcome: use delivered, retry, failed or lost")
        }
    }

    func run() throws {
        let connection = try database.connect()
        var (conditions, parameters) = try filters.conditions(
            on: connection, delivery: "l.delivery_id", event: "l.event_id", config: "l.config_id",
            type: "l.event_type", time: "l.created_at")
        if let outcome {
            parameters.append(outcome)
            conditions += " AND l.outcome = $\(parameters.count)"
        }
        parameters.append(String(filters.limit))
        let columns = filters.json
            ? """
              l.id, l.created_at AS time, l.delivery_id, l.event_id, l.config_id, c.name AS config, l.event_type,
              l.replay, l.attempt, l.outcome, l.response_status, l.duration_ms, l.error, l.response_body, l.worker
              """
            : """
              to_char(l.created_at, 'YYYY-MM-DD HH24:MI:SS') AS time, l.delivery_id AS delivery, c.name AS config,
              l.event_type AS event, l.replay, l.attempt, l.outcome, l.response_status AS http, l.duration_ms AS ms,
              coalesce(l.error, left(l.response_body, 60)) AS detail
              """
        let sql = """
            SELECT \(columns)
              FROM webhook_logs l
              LEFT JOIN webhook_configs c ON c.id = l.config_id
              LEFT JOIN webhook_deliveries d ON d.id = l.delivery_id
             WHERE \(conditions)
             ORDER BY l.created_at DESC, l.id DESC
             LIMIT $\(parameters.count)
            """
        Output.table(try Output.query(connection, sql, parameters, json: filters.json),
                     json: filters.json, empty: "no attempts match")
    }
}

struct Deliveries: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Deliveries, newest first (the webhook_deliveries table).")
    @OptionGroup var database: DatabaseOptions
    @OptionGroup var filters: Filters

    func run() throws {
        let connection = try database.connect()
        var (conditions, parameters) = try filters.conditions(
            on: connection, delivery: "d.id", event: "d.event_id", config: "d.config_id", type: "e.event_type",
            time: "d.created_at")
        parameters.append(String(filters.limit))
        let columns = filters.json
            ? """
              d.id, d.event_id, d.config_id, c.name AS config, e.event_type, d.status, d.attempts,
              d.next_attempt_at, d.leased_by, d.last_response_status, d.last_error, d.created_at, d.completed_at,
              d.replay_count
              """
            : """
              d.id, c.name AS config, e.event_type AS event, d.status, d.attempts,
              CASE WHEN d.status <> 'pending' THEN '-'
                   WHEN d.lease_token IS NOT NULL THEN 'in flight'
                   WHEN d.next_attempt_at <= now() THEN 'now'
                   ELSE 'in ' || to_char(d.next_attempt_at - now(), 'HH24:MI:SS') END AS next,
              d.last_response_status AS http, d.last_error AS error
              """
        let sql = """
            SELECT \(columns)
              FROM webhook_deliveries d
              JOIN webhook_events e ON e.id = d.event_id
              JOIN webhook_configs c ON c.id = d.config_id
             WHERE \(conditions)
             ORDER BY d.created_at DESC, d.id
             LIMIT $\(parameters.count)
            """
        Output.table(try Output.query(connection, sql, parameters, json: filters.json),
                     json: filters.json, empty: "no deliveries match")
    }
}

struct Show: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The whole story of one delivery: event, config, every attempt, and what happens next.")
    @OptionGroup var database: DatabaseOptions
    @Argument(help: "Delivery id (the X-Webhook-Id header).") var delivery: String
    @Flag(help: "One JSON object.") var json = false

    func run() throws {
        let id = try requireUUID("delivery id", delivery)
        let connection = try database.connect()
        let summarySQL = """
            SELECT d.id, d.status, d.attempts, coalesce(d.max_attempts, c.max_attempts) AS max_attempts,
                   d.created_at, d.completed_at, d.replay_count, d.leased_by,
                   CASE WHEN d.status <> 'pending' THEN NULL
                        WHEN d.lease_token IS NOT NULL THEN 'in flight on ' || d.leased_by || ' (lease until ' || d.next_attempt_at || ')'
                        WHEN d.next_attempt_at <= now() THEN 'due now'
                        ELSE 'due in ' || justify_interval(date_trunc('second', d.next_attempt_at - now())) || ' (at ' || d.next_attempt_at || ')'
                   END AS next_attempt,
                   e.id AS event_id, e.event_type, e.organization_id, e.occurred_at, e.data::text AS data,
                   c.id AS config_id, c.name AS config_name, c.url,
                   CASE WHEN c.secret IS NULL THEN 'none' ELSE 'set' END AS secret,
                   c.is_active
              FROM webhook_deliveries d
              JOIN webhook_events e ON e.id = d.event_id
              JOIN webhook_configs c ON c.id = d.config_id
             WHERE d.id = $1
            """
        let summary = try connection.query(summarySQL, [id])
        guard let row = summary.namedRows.first else {
            throw CommandFailure("no delivery \(id) (it may have been pruned; webhook_logs still holds its attempts: herald logs --delivery \(id))")
        }
        let attemptsSQL = """
            SELECT replay, attempt, to_char(created_at, 'YYYY-MM-DD HH24:MI:SS.MS') AS time, outcome,
                   response_status AS http, duration_ms AS ms, worker, left(response_body, 200) AS response, error
              FROM webhook_logs WHERE delivery_id = $1 ORDER BY id
            """
        if json {
            // `body`: the exact bytes each attempt sent, rebuilt from the event (view webhook_attempts, sql/012).
            let document = try connection.query("""
                SELECT json_build_object('delivery', (SELECT row_to_json(s) FROM (\(summarySQL)) s),
                                         'attempts', coalesce((SELECT json_agg(a) FROM (
                                             SELECT replay, attempt, created_at AS time, outcome, response_status AS http,
                                                    duration_ms AS ms, worker, response_body AS response, error, body
                                               FROM webhook_attempts WHERE delivery_id = $1 ORDER BY id) a), '[]'::json))
                """, [id])
            printJSON(document.scalar)
            return
        }
        func value(_ key: String) -> String { (row[key] ?? nil) ?? "-" }
        print("delivery  \(value("id"))   \(value("status"))   attempts \(value("attempts"))/\(value("max_attempts") == "-" ? "worker default" : value("max_attempts"))")
        print("event     \(value("event_id"))   \(value("event_type"))   occurred \(value("occurred_at"))   org \(value("organization_id"))")
        print("config    \(value("config_id"))   \(value("config_name"))   \(value("url"))   secret \(value("secret"))\(value("is_active") == "t" ? "" : "   DISABLED")")
        print("data      \(Output.shorten(value("data"), limit: 200))")
        print("created   \(value("created_at"))\(value("replay_count") == "0" ? "" : "   replayed \(value("replay_count"))×")")
        print()
        let attempts = try connection.query(attemptsSQL, [id])
        Output.table(attempts, json: false, empty: "no attempts yet")
        if value("replay_count") != "0" {
            print("(REPLAY 0 is the first cycle; each replay numbers its attempts from 1 again, as X-Webhook-Attempt does)")
        }
        // Every attempt of a delivery sends the same bytes (the envelope is a pure function of the event), so
        // each distinct body is printed once, with the attempts that sent it.
        let bodies = try connection.query("""
            SELECT string_agg(replay || '.' || attempt, ', ' ORDER BY id), body
              FROM webhook_attempts WHERE delivery_id = $1 AND body IS NOT NULL GROUP BY body ORDER BY min(id)
            """, [id])
        for row in bodies.rows {
            print()
            // Exact but for DEL and C1 controls, which JSON leaves raw: shown as \u{…} so no terminal obeys them
            // (`--json` has the bytes as they were).
            print("body sent by attempt \(row[0] ?? "?") (replay.attempt), exact bytes:")
            print(TerminalText.neutralized(row[1] ?? ""))
        }
        print()
        switch value("status") {
        case "delivered": print("delivered at \(value("completed_at"))")
        case "failed": print("failed at \(value("completed_at")); replay it with: herald replay \(id)")
        default: print("next: \(value("next_attempt"))")
        }
    }
}

struct Stats: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Backlog, outcomes per config over 24 h, and live workers (views webhook_delivery_stats, webhook_config_stats, herald_workers).")
    @OptionGroup var database: DatabaseOptions
    @Flag(help: "One JSON object.") var json = false

    func run() throws {
        let connection = try database.connect()
        if json {
            let document = try connection.query("""
                SELECT json_build_object(
                    'deliveries', (SELECT row_to_json(s) FROM webhook_delivery_stats s),
                    'configs', coalesce((SELECT json_agg(c ORDER BY c.name) FROM webhook_config_stats c), '[]'::json),
                    'workers', coalesce((SELECT json_agg(w) FROM herald_workers w WHERE w.alive), '[]'::json),
                    'endpoints_under_pressure', coalesce((SELECT json_agg(p) FROM (\(Stats.pressure)) p), '[]'::json),
                    'ordering', (SELECT json_build_object('blocked_keys', count(*),
                                                          'oldest_blocked_seconds', coalesce(max(oldest_waiting_seconds), 0))
                                   FROM webhook_ordering_blocked),
                    'tables', (SELECT jsonb_agg(to_jsonb(t)) FROM herald_queue_health() t),
                    'xmin_horizon', (SELECT row_to_json(h) FROM herald_xmin_horizon() h),
                    'log_partitions', (SELECT json_build_object('count', count(*), 'ahead_until', max(upper_bound))
                                         FROM herald_log_partitions WHERE attached))
                """)
            printJSON(document.scalar)
            return
        }
        let totals = try connection.query("SELECT * FROM webhook_delivery_stats")
        Output.fields(totals.columns, totals.rows[0])
        print()
        Output.table(try connection.query("""
            SELECT name AS config, CASE WHEN is_active THEN 'active' ELSE 'disabled' END AS state, attempts_24h,
                   delivered_24h, success_rate_pct AS "success_%", pending, failed, last_error
              FROM webhook_config_stats ORDER BY name
            """), json: false, empty: "no webhook configs")
        print()
        Output.table(try connection.query("""
            SELECT worker, to_char(last_seen_at, 'HH24:MI:SS') AS last_seen, in_flight, concurrency
              FROM herald_workers WHERE alive
            """), json: false, empty: "no worker seen in the last 30 seconds")
        let ordering = try connection.query("""
            SELECT count(*), coalesce(max(oldest_waiting_seconds), 0) FROM webhook_ordering_blocked
            """).rows[0]
        print("\("ordering_blocked".padding(toLength: 19, withPad: " ", startingAt: 0)) \(ordering[0] ?? "0") keys waiting behind their head, oldest for \(ordering[1] ?? "0") s")
        print()
        Output.table(try connection.query(Stats.pressure), json: false,
                     empty: "every endpoint at its full in-flight limit, no circuit open")
        print()
        try printQueueHealth(connection)
    }

    /// The hot tables' rows, dead rows and sizes, the log partitions, and a warning about a long transaction that
    /// holds back vacuum (sql/013).
    private func printQueueHealth(_ connection: PostgresConnection) throws {
        Output.table(try connection.query("""
            SELECT table_name AS "table", live_rows AS rows, dead_rows,
                   round(100.0 * dead_rows / nullif(live_rows + dead_rows, 0), 1) AS "dead_%",
                   pg_size_pretty(bytes) AS size, to_char(last_vacuum, 'YYYY-MM-DD HH24:MI:SS') AS last_vacuum
              FROM herald_queue_health()
            """), json: false, empty: "no table statistics yet")
        let partitions = try connection.query("""
            SELECT count(*), to_char(min(lower_bound), 'YYYY-MM-DD HH24:MI'), to_char(max(upper_bound), 'YYYY-MM-DD HH24:MI'),
                   max(upper_bound) < now() + (SELECT partition_interval FROM herald_log_partitioning)
              FROM herald_log_partitions WHERE attached AND lower_bound > '-infinity'
            """).rows[0]
        print("\("log_partitions".padding(toLength: 19, withPad: " ", startingAt: 0)) \(partitions[0] ?? "0") partitions of webhook_logs, \(partitions[1] ?? "-") to \(partitions[2] ?? "-")")
        if partitions[3] == "t" {
            print("warning: webhook_logs has partitions for less than one more interval; a worker or `herald migrate` creates more (is any worker running?)")
        }
        let maintenance = QueueMaintenance(connection: connection)
        guard let horizon = try maintenance.xminHorizon() else { return }
        let open = horizon.seconds.map { "open for \(Int($0)) s" } ?? "no time known"
        print("\("oldest_transaction".padding(toLength: 19, withPad: " ", startingAt: 0)) \(horizon.holder), \(open), \(horizon.xidAge) transactions behind: \(TerminalText.neutralized(horizon.detail))")
        if (horizon.seconds ?? 0) > Stats.longTransaction || horizon.xidAge > 10_000_000 {
            print("warning: \(horizon.holder) holds back vacuum: dead rows in webhook_deliveries and the other hot tables stay until it ends, and the claim slows down; end it (pg_terminate_backend) or fix what leaves it open")
        }
    }

    /// Seconds after which an open transaction is worth a warning: vacuum of a busy queue falls behind by then.
    static let longTransaction: Double = 300

    /// Endpoints eased off (adaptive limit below `max_in_flight`, else HERALD_ENDPOINT_CONCURRENCY) or paused
    /// (circuit open): read from a partial index, so it stays short with 100,000 configs.
    static let pressure = """
        SELECT c.name AS config, round(p.concurrency_limit::numeric, 1) AS "limit",
               coalesce(c.max_in_flight::text, 'default') AS ceiling,
               (SELECT count(*) FROM webhook_deliveries d WHERE d.config_id = c.id AND d.lease_token IS NOT NULL) AS in_flight,
               CASE WHEN p.circuit_open THEN 'open until ' || to_char(c.circuit_open_until, 'HH24:MI:SS')
                    WHEN c.circuit_open_until IS NOT NULL THEN 'half-open' ELSE 'closed' END AS circuit,
               c.consecutive_failures AS failures_in_a_row
          FROM herald_endpoints_under_pressure() p JOIN webhook_configs c ON c.id = p.config_id
         ORDER BY c.name
        """
}
