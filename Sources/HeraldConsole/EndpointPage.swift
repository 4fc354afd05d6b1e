import HeraldPostgres

/// `GET /endpoints/{id}`: one config, its health, its recent deliveries, and what an operator can do about it:
/// enable, disable, send a test event (the verdict shows here), replay its failed deliveries since a time.
enum EndpointPage {
    /// Outcomes of actions, passed back through the redirect as fixed words and numbers (never free text).
    struct Outcome {
        var done: String?
        var count: String?
        var testDelivery: String?
    }

    static func render(_ connection: PostgresConnection, _ viewer: Layout.Viewer, id: String, status: String?,
                       outcome: Outcome) throws -> HTML? {
        guard let config = try connection.query("""
            SELECT h.config_id AS id, h.name, coalesce(h.organization_id::text, 'none') AS organization, h.url,
                   h.is_active, h.disabled_reason, extract(epoch FROM now() - h.disabled_at)::bigint AS disabled_ago,
                   h.disabled_at::text AS disabled_at, array_to_string(c.events, ', ') AS events,
                   CASE WHEN c.secret IS NULL THEN 'none (unsigned)' ELSE 'set (never shown)' END AS secret,
                   coalesce(c.max_attempts::text, 'worker default') AS max_attempts, c.ordering,
                   h.attempts_24h, h.success_rate_pct, h.consecutive_failures,
                   extract(epoch FROM now() - h.failing_since)::bigint AS failing_for, h.failing_since::text AS since,
                   h.circuit, extract(epoch FROM now() - h.circuit_open_until)::bigint AS circuit_until,
                   h.circuit_open_until::text AS circuit_at, h.in_flight,
                   coalesce(h.max_in_flight::text, 'default') AS max_in_flight, h.adaptive_limit,
                   h.pending, h.failed, h.last_error
              FROM webhook_endpoint_health h JOIN webhook_configs c ON c.id = h.config_id
             WHERE h.config_id = $1::uuid
            """, [id]).namedRows.first else { return nil }
        let filter = ["pending", "delivered", "failed"].contains(status ?? "") ? status : nil
        let deliveries = try connection.query("""
            SELECT d.id, e.event_type, d.status, d.attempts, d.replay_count, d.last_response_status, d.last_error,
                   extract(epoch FROM now() - d.created_at)::bigint AS age, d.created_at::text AS created,
                   \(DeliveryPage.nextAttemptSQL) AS next
              FROM webhook_deliveries d JOIN webhook_events e ON e.id = d.event_id
             WHERE d.config_id = $1::uuid AND ($2::text IS NULL OR d.status = $2)
             ORDER BY d.created_at DESC, d.id LIMIT 50
            """, [id, filter]).namedRows

        let active = config[column: "is_active"] == "t"
        var content: HTML = """
            <h1>\(config[column: "name"]) \(Layout.badge(active ? "active" : "disabled"))</h1>
            """
        if let verdict = try verdict(connection, outcome) { content += Layout.notice(verdict.text, bad: verdict.bad) }
        if !active {
            content += Layout.notice("Disabled\(config[column: "disabled_reason"].map { ": \($0)" } ?? " by an operator"). New events do not fan out to it; queued deliveries fail unsent.", bad: true)
        }
        let details: HTML = """
            <dl><dt>URL</dt><dd class="id">\(config[column: "url"])</dd>\
            <dt>Config id</dt><dd class="id">\(config[column: "id"])</dd>\
            <dt>Organization</dt><dd class="id">\(config[column: "organization"])</dd>\
            <dt>Events</dt><dd>\(config[column: "events"])</dd>\
            <dt>Secret</dt><dd>\(config[column: "secret"])</dd>\
            <dt>Attempts</dt><dd>\(config[column: "max_attempts"])</dd>\
            <dt>Ordering</dt><dd>\(config[column: "ordering"])</dd></dl>
            """
        let health: HTML = """
            <dl><dt>Success, 24 h</dt><dd>\(config[column: "success_rate_pct"].map { "\($0) %" } ?? "no attempts") \
            (\(config[column: "attempts_24h"], or: "0") attempts)</dd>\
            <dt>Failures in a row</dt><dd>\(config[column: "consecutive_failures"], or: "0")\
            \(config[column: "failing_for"] == nil ? "" : (", failing since " as HTML) + Layout.ago(config[column: "failing_for"], exact: config[column: "since"]))</dd>\
            <dt>Circuit</dt><dd>\(Layout.badge(config[column: "circuit"]))\
            \(config[column: "circuit"] == "open" ? (" reopens " as HTML) + Layout.ago(config[column: "circuit_until"], exact: config[column: "circuit_at"]) : "")</dd>\
            <dt>In flight</dt><dd>\(config[column: "in_flight"], or: "0") (cap: \(config[column: "adaptive_limit"].map { "\($0), eased off from " } ?? "")\(config[column: "max_in_flight"]))</dd>\
            <dt>Pending</dt><dd>\(config[column: "pending"], or: "0")</dd>\
            <dt>Failed</dt><dd>\(config[column: "failed"], or: "0")</dd>\
            <dt>Last error, 24 h</dt><dd>\(config[column: "last_error"], or: "none")</dd></dl>
            """
        content += "<div class=\"grid\">" + Layout.card("Health", health) + Layout.card("Endpoint", details) + "</div>"
        if !viewer.readOnly {
            let base = "/endpoints/\(id)"
            var actions: HTML = "<div class=\"actions\">"
            actions += active
                ? Layout.action(viewer, base + "/disable", "Disable", style: "danger")
                : Layout.action(viewer, base + "/enable", "Enable")
            if active { actions += Layout.action(viewer, base + "/test", "Send test event", style: "quiet") }
            actions += Layout.action(
                viewer, base + "/replay-failed", "Replay failed…", fields: """
                    <label>Failed since<input name="since" value="24h" size="14" \
                    placeholder="1h, 2d or 2026-11-30T08:00Z" required></label>
                    """)
            actions += "</div><p class=\"muted\">Replay shows how many deliveries it would send before it sends any.</p>"
            content += Layout.card("Actions", actions)
        }
        var filters: HTML = ""
        for choice in [nil, "failed", "pending", "delivered"] as [String?] {
            let href = "/endpoints/\(id)" + (choice.map { "?status=\($0)" } ?? "")
            let label = choice ?? "all"
            filters += choice == filter
                ? "<a aria-current=\"page\" class=\"badge muted\" href=\"\(href)\">\(label)</a> "
                : "<a href=\"\(href)\">\(label)</a> "
        }
        content += Layout.card("Recent deliveries", "<p class=\"meta\">Show: \(filters)</p>"
            + DeliveryPage.table(deliveries, showConfig: false, empty: "No deliveries\(filter.map { " with status \($0)" } ?? "") yet."))
        return Layout.page(config[column: "name"] ?? "Endpoint", .endpoints, viewer, content)
    }

    /// The sentence shown after an action.
    static func verdict(_ connection: PostgresConnection, _ outcome: Outcome) throws -> (text: String, bad: Bool)? {
        if let delivery = outcome.testDelivery {
            guard let attempt = try DeliveryPage.lastAttempt(connection, delivery) else {
                return ("Test event queued (delivery \(delivery)); no worker has sent it yet. Is `herald work` running? Reload to check again.", true)
            }
            let status = attempt[column: "response_status"].map { "HTTP \($0)" } ?? "no response"
            let duration = attempt[column: "duration_ms"].map { " in \($0) ms" } ?? ""
            let error = attempt[column: "error"].map { "; \($0)" } ?? ""
            let body = attempt[column: "response"].map { "; response: \(Layout.excerpt($0, 200))" } ?? ""
            let accepted = attempt[column: "outcome"] == "delivered"
            return ("Test event \(accepted ? "accepted" : "not accepted"): \(status)\(duration)\(error)\(body)", !accepted)
        }
        switch outcome.done {
        case "enabled": return ("Enabled: new events fan out to it again.", false)
        case "disabled": return ("Disabled: new events no longer fan out to it; queued deliveries fail unsent.", false)
        case "replayed": return ("Replayed \(Int(outcome.count ?? "") ?? 0) failed deliveries: they are due now.", false)
        default: return nil
        }
    }
}
