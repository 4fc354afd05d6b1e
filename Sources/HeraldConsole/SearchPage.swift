import Foundation
import HeraldCore
import HeraldPostgres

/// `GET /search?q=`: find a delivery by its id (the X-Webhook-Id a customer quotes), an event by its id, or the
/// latest deliveries of an event type; a config id or name leads to its endpoint page.
enum SearchPage {
    enum Result {
        case page(HTML)
        case redirect(String)
    }

    static func render(_ connection: PostgresConnection, _ viewer: Layout.Viewer, query: String) throws -> Result {
        let q = query.trimmingCharacters(in: .whitespacesAndNewlines)
        let columns = """
            d.id, d.config_id, c.name AS config_name, e.event_type, d.status, d.attempts, d.last_response_status,
            d.last_error, extract(epoch FROM now() - d.created_at)::bigint AS age, d.created_at::text AS created,
            \(DeliveryPage.nextAttemptSQL) AS next
            """
        var content: HTML = "<h1>Search</h1>"
        content += """
            <form class="filters" method="get" action="/search"><label>Delivery id, event id, event type or endpoint name\
            <input name="q" value="\(q)" size="40"></label><button type="submit">Search</button></form>
            """
        guard !q.isEmpty else {
            return .page(Layout.page("Search", .search, viewer, content))
        }
        if UUID(uuidString: q) != nil {
            let id = q.lowercased()
            if try connection.query("SELECT 1 FROM webhook_deliveries WHERE id = $1::uuid", [id]).rows.count == 1 {
                return .redirect("/deliveries/\(id)")
            }
            if try connection.query("SELECT 1 FROM webhook_configs WHERE id = $1::uuid", [id]).rows.count == 1 {
                return .redirect("/endpoints/\(id)")
            }
            let ofEvent = try connection.query("""
                SELECT \(columns)
                  FROM webhook_deliveries d JOIN webhook_events e ON e.id = d.event_id
                  JOIN webhook_configs c ON c.id = d.config_id
                 WHERE d.event_id = $1::uuid ORDER BY c.name LIMIT 200
                """, [id]).namedRows
            if !ofEvent.isEmpty {
                content += Layout.card("Deliveries of event \(id)",
                                       DeliveryPage.table(ofEvent, showConfig: true, empty: ""))
                return .page(Layout.page("Search", .search, viewer, content))
            }
            let logged = try connection.query(
                "SELECT count(*) FROM webhook_logs WHERE delivery_id = $1::uuid OR event_id = $1::uuid", [id]).scalar ?? "0"
            content += Layout.notice(logged == "0"
                ? "No delivery, event or config has the id \(id)."
                : "No delivery or event with id \(id) is left (pruned), but webhook_logs holds \(logged) attempts: herald logs --delivery \(id)",
                bad: true)
            return .page(Layout.page("Search", .search, viewer, content))
        }
        if EventCatalog.contains(q) {
            let ofType = try connection.query("""
                SELECT \(columns)
                  FROM webhook_deliveries d JOIN webhook_events e ON e.id = d.event_id
                  JOIN webhook_configs c ON c.id = d.config_id
                 WHERE e.event_type = $1 ORDER BY d.created_at DESC, d.id LIMIT 100
                """, [q]).namedRows
            content += Layout.card("Latest deliveries of \(q) (up to 100)",
                                   DeliveryPage.table(ofType, showConfig: true, empty: "No deliveries of \(q)."))
            return .page(Layout.page("Search", .search, viewer, content))
        }
        let configs = try connection.query("""
            SELECT id, name, coalesce(organization_id::text, 'none') AS organization, url
              FROM webhook_configs WHERE strpos(lower(name), lower($1)) > 0 ORDER BY name LIMIT 50
            """, [q]).namedRows
        if configs.count == 1, let id = configs[0][column: "id"] { return .redirect("/endpoints/\(id)") }
        let rows: [HTML] = configs.map { row in
            """
            <tr><td><a href="/endpoints/\(row[column: "id"] ?? "")">\(row[column: "name"])</a></td>\
            <td class="id">\(row[column: "organization"])</td><td class="id">\(Layout.excerpt(row[column: "url"], 60))</td></tr>
            """
        }
        content += Layout.card("Endpoints named like “\(q)”", Layout.table(
            ["Endpoint", "Organization", "URL"], rows,
            empty: "Nothing matches: search a delivery id, an event id, an event type (e.g. contact.created) or part of an endpoint's name."))
        return .page(Layout.page("Search", .search, viewer, content))
    }
}
