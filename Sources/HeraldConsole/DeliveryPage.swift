import HeraldCore
import HeraldPostgres
import HeraldSigning

/// `GET /deliveries/{id}`: one delivery's whole story — the event, every attempt on a timeline, the exact body
/// sent, the headers as rebuilt, what happens next — and a replay button.
enum DeliveryPage {
    /// THE query for the exact body a delivery sent: `herald_body_sent` (sql/011) is the one place that knows
    /// where bodies are kept. NULL when no attempt recorded one; the page then rebuilds it from the event.
    static let bodySentSQL = "SELECT herald_body_sent($1::uuid)"

    /// What happens next to a pending delivery, in words (NULL once it is finished). Over `d` (deliveries).
    static let nextAttemptSQL = """
        CASE WHEN d.status <> 'pending' THEN NULL
             WHEN d.lease_token IS NOT NULL THEN 'In flight on ' || coalesce(d.leased_by, 'a worker')
             WHEN d.ordering_blocked THEN 'Waiting behind an earlier event of ordering key ' || d.ordering_key
             WHEN d.next_attempt_at <= now() THEN 'Due now'
             ELSE 'Due in ' || justify_interval(date_trunc('second', d.next_attempt_at - now())) END
        """

    static func render(_ connection: PostgresConnection, _ viewer: Layout.Viewer, id: String, replayed: Bool)
        throws -> HTML?
    {
        guard let delivery = try connection.query("""
            SELECT d.id, d.status, d.attempts, d.replay_count,
                   coalesce(d.max_attempts, c.max_attempts, d.default_max_attempts)::text AS max_attempts,
                   d.created_at::text AS created, extract(epoch FROM now() - d.created_at)::bigint AS age,
                   d.completed_at::text AS completed, extract(epoch FROM now() - d.completed_at)::bigint AS completed_ago,
                   d.last_error, d.last_response_status, \(nextAttemptSQL) AS next,
                   e.id AS event_id, e.event_type, coalesce(e.organization_id::text, 'none') AS organization,
                   to_char(e.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS occurred_at,
                   e.data::text AS data, jsonb_pretty(e.data) AS pretty, e.ordering_key,
                   c.id AS config_id, c.name AS config_name, c.url, c.secret IS NOT NULL AS signed,
                   coalesce(c.previous_secret_expires_at > now(), false) AS rotating
              FROM webhook_deliveries d
              JOIN webhook_events e ON e.id = d.event_id
              JOIN webhook_configs c ON c.id = d.config_id
             WHERE d.id = $1::uuid
            """, [id]).namedRows.first else { return nil }
        let attempts = try connection.query("""
            SELECT replay, attempt, outcome, response_status, duration_ms, worker, error,
                   left(response_body, 2000) AS response, length(response_body) AS response_length,
                   to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.MS') AS time,
                   extract(epoch FROM now() - created_at)::bigint AS ago,
                   extract(epoch FROM created_at)::bigint AS unix
              FROM webhook_logs WHERE delivery_id = $1::uuid ORDER BY id
            """, [id]).namedRows
        let bodySent = try connection.query(bodySentSQL, [id]).scalar

        let status = delivery[column: "status"] ?? "pending"
        var content: HTML = """
            <h1>Delivery <span class="id">\(id)</span> \(Layout.badge(status))</h1>
            """
        if replayed { content += Layout.notice("Replayed: a fresh attempt cycle is due now (same X-Webhook-Id).") }

        let event: HTML = """
            <dl><dt>Type</dt><dd>\(delivery[column: "event_type"])</dd>\
            <dt>Event id</dt><dd class="id"><a href="/search?q=\(delivery[column: "event_id"] ?? "")">\(delivery[column: "event_id"])</a></dd>\
            <dt>Occurred</dt><dd>\(delivery[column: "occurred_at"])</dd>\
            <dt>Organization</dt><dd class="id">\(delivery[column: "organization"])</dd>\
            \(delivery[column: "ordering_key"].map { "<dt>Ordering key</dt><dd class=\"id\">\($0)</dd>" as HTML } ?? "")\
            <dt>Endpoint</dt><dd><a href="/endpoints/\(delivery[column: "config_id"] ?? "")">\(delivery[column: "config_name"])</a>\
            <div class="id muted">\(delivery[column: "url"])</div></dd>\
            <dt>Created</dt><dd>\(Layout.ago(delivery[column: "age"], exact: delivery[column: "created"]))</dd></dl>
            <h3>Data</h3><pre>\(delivery[column: "pretty"])</pre>
            """
        // What happens next first: on a phone it is what shows without scrolling.
        content += "<div class=\"grid\">" + Layout.card("What happens next", next(delivery, viewer))
            + Layout.card("Event", event) + "</div>"
        content += Layout.card("Attempts (\(attempts.count))", timeline(attempts, replayCount: delivery[column: "replay_count"]))

        let rebuilt = DeliveryRequest(
            deliveryID: id, eventType: delivery[column: "event_type"] ?? "", occurredAt: delivery[column: "occurred_at"] ?? "",
            dataJSON: delivery[column: "data"] ?? "{}", attempt: Int(attempts.last?[column: "attempt"] ?? "") ?? 1,
            secret: nil, previousSecret: nil,
            unixTime: Int(attempts.last?[column: "unix"] ?? "") ?? 0, replay: Int(attempts.last?[column: "replay"] ?? "") ?? 0)
        let body: HTML
        if let bodySent {
            body = """
                <p class="muted">Exactly as sent (\(bodySent.utf8.count) bytes), byte-identical on every attempt; \
                the signatures cover these bytes.</p><pre>\(bodySent)</pre>
                """
        } else {
            body = """
                <p class="muted">No attempt has sent it yet. Rebuilt from the event, this is what Herald sends \
                (\(rebuilt.body.count) bytes):</p><pre>\(String(decoding: rebuilt.body, as: UTF8.self))</pre>
                """
        }
        content += Layout.card("Body", body)
        content += Layout.card("Headers (rebuilt)", headers(rebuilt, delivery, lastAttempt: attempts.last))
        return Layout.page("Delivery \(id)", .none, viewer, content)
    }

    /// The request headers of the last attempt as Herald builds them, from what is stored. Marked as rebuilt:
    /// per-attempt send times are not stored, so `webhook-timestamp` is estimated, and signatures are never
    /// shown (the console does not read secrets at all).
    static func headers(_ request: DeliveryRequest, _ delivery: Row, lastAttempt: Row?) -> HTML {
        var lines = ["Content-Type: application/json", "User-Agent: Herald/\(HeraldVersion.current)"] + request.headers
        if delivery[column: "signed"] == "t" {
            lines.append("X-Webhook-Signature: ‹hex HMAC-SHA256 of the body with the config's secret; not shown›")
            lines.append("webhook-signature: v1,‹base64 HMAC-SHA256 of id.timestamp.body; not shown›"
                + (delivery[column: "rotating"] == "t" ? " v1,‹the same with the previous secret, during rotation›" : ""))
        }
        let timestampNote = lastAttempt == nil
            ? "webhook-timestamp is the Unix time of the attempt when it is sent."
            : "webhook-timestamp is estimated from when the attempt was recorded: send times are not stored."
        return """
            <p class="muted">Rebuilt from the delivery, the event and the config\
            \(lastAttempt == nil ? " for the first attempt" : " for the last attempt"), not recorded. \(timestampNote) \
            Secrets and signatures are never shown.</p><pre>\(lines.joined(separator: "\n"))</pre>
            """
    }

    static func next(_ delivery: Row, _ viewer: Layout.Viewer) -> HTML {
        let id = delivery[column: "id"] ?? ""
        let attempts = "\(delivery[column: "attempts"] ?? "0") of \(delivery[column: "max_attempts"] ?? "the worker default")"
        let replays = Int(delivery[column: "replay_count"] ?? "0") ?? 0
        var text: HTML
        switch delivery[column: "status"] {
        case "delivered":
            text = """
                <p>Delivered \(Layout.ago(delivery[column: "completed_ago"], exact: delivery[column: "completed"])) \
                after \(attempts) attempts. Nothing more is sent; a replay sends it again with the same X-Webhook-Id.</p>
                """
        case "failed":
            text = """
                <p>Failed \(Layout.ago(delivery[column: "completed_ago"], exact: delivery[column: "completed"])) after \
                \(attempts) attempts\(delivery[column: "last_error"].map { ": \($0)" } ?? "."). Nothing more is sent \
                unless it is replayed.</p>
                """
        default:
            text = """
                <p>\(delivery[column: "next"], or: "pending"). Attempts so far: \(attempts).</p>
                """
        }
        if replays > 0 { text += "<p class=\"muted\">Replayed \(replays)× (attempt numbers restart at 1 on each replay).</p>" }
        if delivery[column: "status"] != "pending" {
            text += Layout.action(viewer, "/deliveries/\(id)/replay", "Replay this delivery")
        }
        return text
    }

    static func timeline(_ attempts: [Row], replayCount: String?) -> HTML {
        guard !attempts.isEmpty else { return "<p class=\"empty\">No attempt yet.</p>" }
        var items: [HTML] = []
        for attempt in attempts {
            let outcome = attempt[column: "outcome"] ?? ""
            let kind = outcome == "delivered" ? "ok" : outcome == "retry" ? "warn" : "bad"
            let replay = attempt[column: "replay"].flatMap(Int.init) ?? 0
            let status: HTML = attempt[column: "response_status"].map { "HTTP \($0)" as HTML } ?? "no response"
            var item: HTML = """
                <li class="\(kind)"><div class="meta"><b>Attempt \(attempt[column: "attempt"], or: "?")\
                \(replay > 0 ? " (replay \(replay))" : "")</b>\(Layout.badge(outcome))<span>\(status)</span>\
                <span>\(attempt[column: "duration_ms"].map { "\($0) ms" } ?? "")</span>\
                <span class="muted">recorded \(Layout.ago(attempt[column: "ago"], exact: (attempt[column: "time"] ?? "") + " UTC"))\
                \(attempt[column: "worker"].map { " by \($0)" } ?? "")</span></div>
                """
            if let error = attempt[column: "error"] { item += "<div>Error: \(error)</div>" }
            if let response = attempt[column: "response"], !response.isEmpty {
                let total = Int(attempt[column: "response_length"] ?? "0") ?? 0
                let cut = total > response.count ? " (first \(response.count) of \(total) characters)" : ""
                item += "<div class=\"muted\">Response\(cut):</div><pre>\(response)</pre>"
            }
            items.append(item + "</li>")
        }
        return "<ol class=\"timeline\">\(HTML(joining: items))</ol>"
    }

    /// The last attempt of a delivery (for the test event's verdict).
    static func lastAttempt(_ connection: PostgresConnection, _ delivery: String) throws -> Row? {
        try connection.query("""
            SELECT outcome, response_status, duration_ms, error, left(response_body, 200) AS response
              FROM webhook_logs WHERE delivery_id = $1::uuid ORDER BY id DESC LIMIT 1
            """, [delivery]).namedRows.first
    }

    /// A table of deliveries (the endpoint page, search results).
    static func table(_ rows: [Row], showConfig: Bool, empty: String) -> HTML {
        let headings = ["Delivery"] + (showConfig ? ["Endpoint"] : [])
            + ["Event", "Status", "Attempts", "HTTP", "Last error", "Created", "Next"]
        let cells: [HTML] = rows.map { row in
            let id = row[column: "id"] ?? ""
            let config: [(String, HTML)] = showConfig
                ? [("", "<a href=\"/endpoints/\(row[column: "config_id"] ?? "")\">\(row[column: "config_name"])</a>")]
                : []
            return Layout.row(headings, [("id", "<a href=\"/deliveries/\(id)\">\(id.prefix(8))…</a>")] + config + [
                ("", "\(row[column: "event_type"])"), ("", Layout.badge(row[column: "status"])),
                ("num", "\(row[column: "attempts"], or: "0")"), ("num", "\(row[column: "last_response_status"], or: "")"),
                ("", "\(Layout.excerpt(row[column: "last_error"], 70))"),
                ("nowrap", Layout.ago(row[column: "age"], exact: row[column: "created"])),
                ("nowrap", "\(row[column: "next"], or: "")"),
            ])
        }
        return Layout.table(headings, cells, empty: empty, stacked: true)
    }
}
