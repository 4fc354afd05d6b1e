import HeraldPostgres

/// `GET /`: is Herald keeping up, and what is broken? The first page an on-call engineer sees.
enum OverviewPage {
    static func render(_ connection: PostgresConnection, _ viewer: Layout.Viewer) throws -> HTML {
        let totals = try connection.query("""
            SELECT pending, in_flight, due_now, retries_scheduled, failed, workers_alive,
                   coalesce(oldest_due_seconds, 0)::numeric(12, 1) AS oldest_due_seconds
              FROM webhook_delivery_stats
            """).namedRows[0]
        let minutes = try connection.query("""
            SELECT to_char(minute AT TIME ZONE 'UTC', 'HH24:MI') AS label, delivered, failed
              FROM herald_attempts_per_minute(60)
            """).rows.map {
            AttemptsChart.Minute(label: $0[0] ?? "", delivered: Int($0[1] ?? "0") ?? 0, failed: Int($0[2] ?? "0") ?? 0)
        }
        let failing = try connection.query("""
            SELECT id, name, consecutive_failures,
                   extract(epoch FROM now() - failing_since)::bigint AS failing_for, failing_since::text AS since,
                   (SELECT l.error FROM webhook_logs l WHERE l.config_id = c.id AND l.outcome <> 'delivered'
                     ORDER BY l.id DESC LIMIT 1) AS last_error
              FROM webhook_configs c
             WHERE is_active AND consecutive_failures > 0
             ORDER BY consecutive_failures DESC, name LIMIT 20
            """).namedRows
        let circuits = try connection.query("""
            SELECT c.id, c.name, extract(epoch FROM now() - c.circuit_open_until)::bigint AS until_seconds,
                   c.circuit_open_until::text AS until
              FROM herald_endpoints_under_pressure() p JOIN webhook_configs c ON c.id = p.config_id
             WHERE p.circuit_open ORDER BY c.name LIMIT 20
            """).namedRows
        let disabled = try connection.query("""
            SELECT id, name, disabled_reason, extract(epoch FROM now() - disabled_at)::bigint AS ago,
                   disabled_at::text AS at
              FROM webhook_configs WHERE NOT is_active
             ORDER BY disabled_at DESC NULLS LAST, name LIMIT 20
            """).namedRows
        let workers = try connection.query("""
            SELECT worker, alive, in_flight, concurrency, extract(epoch FROM now() - last_seen_at)::bigint AS seen,
                   last_seen_at::text AS seen_at, extract(epoch FROM now() - started_at)::bigint AS up,
                   started_at::text AS started
              FROM herald_workers LIMIT 50
            """).namedRows

        let alive = Int(totals[column: "workers_alive"] ?? "0") ?? 0
        let oldest = Double(totals[column: "oldest_due_seconds"] ?? "0") ?? 0
        func kpi(_ value: String?, _ label: String, bad: Bool = false) -> HTML {
            "<div class=\"kpi\(bad ? " bad" : "")\"><b>\(value, or: "0")</b><span>\(label)</span></div>"
        }
        var content: HTML = "<h1>Overview</h1>"
        content += "<div class=\"kpis\">"
        content += kpi(totals[column: "pending"], "pending (backlog)")
        content += kpi(totals[column: "due_now"], "due now")
        content += kpi(oldest < 1 ? "–" : Layout.relative(oldest).replacingOccurrences(of: " ago", with: ""),
                       "oldest due waiting", bad: oldest >= 60)
        content += kpi(totals[column: "in_flight"], "in flight")
        content += kpi(totals[column: "retries_scheduled"], "retries scheduled")
        content += kpi(totals[column: "failed"], "failed (replayable)")
        content += kpi(String(alive), "workers alive", bad: alive == 0)
        content += "</div>"
        if alive == 0 {
            content += Layout.notice("No worker has reported in the last 30 seconds: nothing is being delivered. Start `herald work`.", bad: true)
        }
        content += Layout.card("Attempts per minute, last hour", AttemptsChart.svg(minutes))

        let failingRows: [HTML] = failing.map { row in
            """
            <tr><td>\(endpointLink(row))</td><td class="num">\(row[column: "consecutive_failures"], or: "0")</td>\
            <td class="nowrap">\(Layout.ago(row[column: "failing_for"], exact: row[column: "since"]))</td>\
            <td>\(Layout.excerpt(row[column: "last_error"], 90))</td></tr>
            """
        }
        let circuitRows: [HTML] = circuits.map { row in
            """
            <tr><td>\(endpointLink(row))</td>\
            <td class="nowrap">reopens \(Layout.ago(row[column: "until_seconds"], exact: row[column: "until"]))</td></tr>
            """
        }
        let disabledRows: [HTML] = disabled.map { row in
            """
            <tr><td>\(endpointLink(row))</td><td>\(row[column: "disabled_reason"], or: "by an operator")</td>\
            <td class="nowrap">\(Layout.ago(row[column: "ago"], exact: row[column: "at"]))</td></tr>
            """
        }
        let workerRows: [HTML] = workers.map { row in
            """
            <tr><td class="id">\(row[column: "worker"])</td>\
            <td>\(Layout.badge(row[column: "alive"] == "t" ? "alive" : "dead"))</td>\
            <td class="num">\(row[column: "in_flight"])/\(row[column: "concurrency"])</td>\
            <td class="nowrap">\(Layout.ago(row[column: "seen"], exact: row[column: "seen_at"]))</td>\
            <td class="nowrap">\(Layout.ago(row[column: "up"], exact: row[column: "started"]))</td></tr>
            """
        }
        content += Layout.card("Failing endpoints", Layout.table(
            ["Endpoint", "Failures in a row", "Failing since", "Last error"], failingRows,
            empty: "No active endpoint is failing."))
        content += "<div class=\"grid\">"
        content += Layout.card("Circuits open", Layout.table(
            ["Endpoint", "Paused"], circuitRows, empty: "No circuit is open."))
        content += Layout.card("Disabled configs", Layout.table(
            ["Endpoint", "Reason", "Disabled"], disabledRows, empty: "No config is disabled."))
        content += "</div>"
        content += Layout.card("Workers", Layout.table(
            ["Worker", "State", "In flight", "Last seen", "Started"], workerRows,
            empty: "No worker has ever reported (herald_workers is empty)."))
        return Layout.page("Overview", .overview, viewer, content)
    }

    static func endpointLink(_ row: Row) -> HTML {
        "<a href=\"/endpoints/\(row[column: "id"] ?? "")\">\(row[column: "name"])</a>"
    }
}
