import Foundation
import HeraldPostgres

/// `GET /endpoints[?org=…]`: every config's health in one table (view `webhook_endpoint_health`, sql/011), worst
/// first, filtered by organization.
enum EndpointsPage {
    static func render(_ connection: PostgresConnection, _ viewer: Layout.Viewer, organization: String?) throws -> HTML {
        // "none" stands for configs without an organization; anything else must be a UUID to filter at all.
        let filter = organization.flatMap { $0 == "none" || UUID(uuidString: $0) != nil ? $0.lowercased() : nil }
        let organizations = try connection.query("""
            SELECT DISTINCT coalesce(organization_id::text, 'none') FROM webhook_configs ORDER BY 1
            """).rows.compactMap { $0[0] }
        let rows = try connection.query("""
            SELECT config_id AS id, name, coalesce(organization_id::text, 'none') AS organization, url, is_active,
                   disabled_reason, attempts_24h, success_rate_pct, consecutive_failures, circuit, in_flight,
                   coalesce(adaptive_limit::text || ' of ' || coalesce(max_in_flight::text, 'default'),
                            max_in_flight::text, 'default') AS cap,
                   pending, failed
              FROM webhook_endpoint_health
             WHERE $1::text IS NULL OR coalesce(organization_id::text, 'none') = $1
             ORDER BY is_active, consecutive_failures DESC, circuit <> 'closed' DESC, name
             LIMIT 1000
            """, [filter]).namedRows

        var options: HTML = "<option value=\"\">all organizations</option>"
        for value in organizations {
            options += "<option value=\"\(value)\"\(HTML(stringLiteral: value == filter ? " selected" : ""))>\(value)</option>"
        }
        let headings = ["Endpoint", "State", "Success 24 h", "Failures in a row", "Circuit", "In flight", "Cap",
                        "Pending", "Failed", "Organization"]
        let tableRows: [HTML] = rows.map { row in
            let active = row[column: "is_active"] == "t"
            let rate: HTML = row[column: "success_rate_pct"].map { value -> HTML in
                (Double(value) ?? 100) < 90 ? "<span class=\"badge bad\">\(value) %</span>" : "\(value) %"
            } ?? "no attempts"
            let failures = Int(row[column: "consecutive_failures"] ?? "0") ?? 0
            let organization = row[column: "organization"] ?? ""
            return Layout.row(headings, [
                ("", "<a href=\"/endpoints/\(row[column: "id"] ?? "")\">\(row[column: "name"])</a>"
                    + "<div class=\"muted\">\(Layout.excerpt(row[column: "url"], 60))</div>"),
                ("", Layout.badge(active ? "active" : "disabled")),
                ("num", "\(rate)<div class=\"muted\">\(row[column: "attempts_24h"], or: "0") attempts</div>"),
                ("num", failures > 0 ? "<span class=\"badge bad\">\(failures)</span>" : "0"),
                ("", Layout.badge(row[column: "circuit"])),
                ("num", "\(row[column: "in_flight"], or: "0")"), ("nowrap", "\(row[column: "cap"])"),
                ("num", "\(row[column: "pending"], or: "0")"), ("num", "\(row[column: "failed"], or: "0")"),
                ("id", "<span title=\"\(organization)\">\(Layout.excerpt(organization, 9))</span>"),
            ])
        }
        let content: HTML = """
            <h1>Endpoints</h1>
            <form class="filters" method="get" action="/endpoints"><label>Organization\
            <select name="org">\(options)</select></label><button type="submit" class="quiet">Filter</button></form>
            \(Layout.card("\(rows.count) endpoint\(rows.count == 1 ? "" : "s"), disabled and failing first", Layout.table(
                headings, tableRows, empty: "No webhook config matches (add one with herald config create).",
                stacked: true)))
            """
        return Layout.page("Endpoints", .endpoints, viewer, content)
    }
}
