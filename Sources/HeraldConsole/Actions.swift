import Foundation
import HeraldCore
import HeraldPostgres

/// The POST routes: each changes something through the same SQL the CLI uses, then redirects to the page that
/// shows the result (so a reload never repeats an action). Reached only after `ConsoleApp` checked the caller,
/// the origin, the form token and read-only mode.
enum Actions {
    /// How long "Send test event" waits for a worker's verdict before showing "queued" (the worker's default
    /// request timeout is 5 s).
    static let testWait: Double = 8
    /// Bulk replay goes in batches of this size, like `herald replay`, so locks stay short.
    static let replayBatch = 1000

    static func perform(_ request: ConsoleRequest, _ connection: PostgresConnection, _ viewer: Layout.Viewer) throws
        -> ConsoleResponse
    {
        let parts = request.path.split(separator: "/").map(String.init)
        guard parts.count == 3, UUID(uuidString: parts[1]) != nil else {
            return .text("no action at this address", status: 404)
        }
        let id = parts[1].lowercased()
        switch (parts[0], parts[2]) {
        case ("endpoints", "enable"), ("endpoints", "disable"):
            let enable = parts[2] == "enable"
            let changed = try connection.query("UPDATE webhook_configs SET is_active = $2 WHERE id = $1::uuid",
                                               [id, enable ? "true" : "false"]).affectedRows
            guard changed == 1 else { return .text("no webhook config \(id)", status: 404) }
            return .redirect("/endpoints/\(id)?done=\(enable ? "enabled" : "disabled")")
        case ("endpoints", "test"):
            let delivery: String
            do {
                delivery = try connection.query("SELECT herald_send_test_event($1::uuid)", [id]).scalar ?? ""
            } catch let error as PostgresError where error.kind == .query {
                return refused(error, back: "/endpoints/\(id)", viewer)
            }
            let deadline = Date().addingTimeInterval(testWait)
            while Date() < deadline, try DeliveryPage.lastAttempt(connection, delivery) == nil {
                Thread.sleep(forTimeInterval: 0.1)
            }
            return .redirect("/endpoints/\(id)?test=\(delivery)")
        case ("endpoints", "replay-failed"):
            return try replayFailed(request, connection, viewer, config: id)
        case ("deliveries", "replay"):
            do {
                try connection.query("SELECT herald_replay(ARRAY[$1::uuid])", [id])
            } catch let error as PostgresError where error.kind == .query {
                return refused(error, back: "/deliveries/\(id)", viewer)
            }
            return .redirect("/deliveries/\(id)?done=replayed")
        default:
            return .text("no action at this address", status: 404)
        }
    }

    /// Step one (no `confirm`): the dry run's count and the first candidates, and a button to go ahead with
    /// exactly that time window. Step two: replay in batches, then back to the endpoint.
    static func replayFailed(_ request: ConsoleRequest, _ connection: PostgresConnection, _ viewer: Layout.Viewer,
                             config id: String) throws -> ConsoleResponse {
        let form = request.form
        let sinceText = (form["since"] ?? "").trimmingCharacters(in: .whitespaces)
        let since: String
        let until: String
        do {
            if let duration = DurationText.parse(sinceText) {
                let row = try connection.query(
                    "SELECT (now() - $1::bigint * interval '1 millisecond')::text, now()::text",
                    [String(Int64(duration.components.seconds) * 1000)]).rows[0]
                (since, until) = (row[0] ?? "", row[1] ?? "")
            } else {
                let row = try connection.query("SELECT $1::timestamptz::text, coalesce($2::timestamptz, now())::text",
                                               [sinceText, form["until"]]).rows[0]
                (since, until) = (row[0] ?? "", row[1] ?? "")
            }
        } catch let error as PostgresError where error.kind == .query {
            _ = error
            return .page(Layout.page("Replay", .endpoints, viewer, Layout.notice(
                DurationText.explain("since", sinceText, datesAllowed: true), bad: true)
                + "<p><a href=\"/endpoints/\(id)\">Back to the endpoint</a></p>"), status: 400)
        }
        let arguments: [String?] = [id, since, until]
        if form["confirm"] == "1" {
            var replayed = 0
            while true {
                let batch = Int(try connection.query("""
                    SELECT herald_replay_matching('failed', $1::uuid, NULL, $2::timestamptz, $3::timestamptz, $4, false)
                    """, arguments + [String(replayBatch)]).scalar ?? "0") ?? 0
                replayed += batch
                if batch < replayBatch { break }
            }
            return .redirect("/endpoints/\(id)?done=replayed&count=\(replayed)")
        }
        let count = Int(try connection.query("""
            SELECT herald_replay_matching('failed', $1::uuid, NULL, $2::timestamptz, $3::timestamptz, NULL, true)
            """, arguments).scalar ?? "0") ?? 0
        let skipped = connection.takeNotices().map(\.message).filter { $0.hasPrefix("skipping") }
        let candidates = try connection.query("""
            SELECT delivery_id AS id, event_type, attempts, last_error,
                   extract(epoch FROM now() - completed_at)::bigint AS age, completed_at::text AS created
              FROM herald_replay_candidates('failed', $1::uuid, NULL, $2::timestamptz, $3::timestamptz, 20)
            """, arguments).namedRows
        let name = try connection.query("SELECT name FROM webhook_configs WHERE id = $1::uuid", [id]).scalar ?? id
        var content: HTML = "<h1>Replay failed deliveries of \(name)</h1>"
        content += Layout.notice(
            "Dry run: \(count) failed \(count == 1 ? "delivery" : "deliveries") finished between \(since.prefix(19)) and \(until.prefix(19)) UTC would be replayed. Nothing has been changed yet.",
            bad: count == 0)
        for notice in skipped { content += Layout.notice(notice, bad: true) }
        let rows: [HTML] = candidates.map { row in
            """
            <tr><td class="id"><a href="/deliveries/\(row[column: "id"] ?? "")">\((row[column: "id"] ?? "").prefix(8))…</a></td>\
            <td>\(row[column: "event_type"])</td><td class="num">\(row[column: "attempts"], or: "0")</td>\
            <td>\(Layout.excerpt(row[column: "last_error"], 80))</td>\
            <td class="nowrap">\(Layout.ago(row[column: "age"], exact: row[column: "created"]))</td></tr>
            """
        }
        var confirm: HTML = ""
        if count > 0 {
            confirm = Layout.action(viewer, "/endpoints/\(id)/replay-failed", "Replay \(count) \(count == 1 ? "delivery" : "deliveries")", fields: """
                <input type="hidden" name="since" value="\(since)"><input type="hidden" name="until" value="\(until)">\
                <input type="hidden" name="confirm" value="1">
                """, style: "danger")
        }
        content += Layout.card("The first \(candidates.count) of \(count), oldest first", Layout.table(
            ["Delivery", "Event", "Attempts", "Last error", "Failed"], rows, empty: "Nothing to replay in this window."))
        content += "<div class=\"actions\">\(confirm)<a href=\"/endpoints/\(id)\">Cancel</a></div>"
        return .page(Layout.page("Replay", .endpoints, viewer, content))
    }

    /// A refusal from the database (a pending delivery, another organization's event, a disabled config), shown
    /// as the page's message: these texts are written for operators.
    static func refused(_ error: PostgresError, back: String, _ viewer: Layout.Viewer) -> ConsoleResponse {
        let text = error.message + (error.hint.map { " (\($0))" } ?? "")
        return .page(Layout.page("Refused", .none, viewer, Layout.notice(text, bad: true)
            + "<p><a href=\"\(back)\">Back</a></p>"), status: 409)
    }
}
