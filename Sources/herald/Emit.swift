import ArgumentParser
import Foundation
import HeraldCore
import HeraldPostgres

struct Emit: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Insert an event into the outbox, exactly as an application would.",
        discussion: "Prints the event id and how many deliveries it fanned out to.")

    @OptionGroup var database: DatabaseOptions

    @Argument(help: "Event type, e.g. contact.created (herald event-types lists them).")
    var eventType: String

    @Option(help: "The event's data: a JSON object, or @file.json to read it from a file.")
    var data: String = "{}"

    @Option(name: .customLong("org"), help: "Organization id (UUID); omit for events without one.")
    var organization: String?

    @Option(name: .customLong("ordering-key"),
            help: "Ordering key, e.g. contact:42: configs with ordering key get this key's events one at a time, in order.")
    var orderingKey: String?

    func validate() throws {
        guard EventCatalog.contains(eventType) else {
            throw CommandFailure("unknown event type '\(eventType)': expected one of \(EventCatalog.all.map(\.name).joined(separator: ", "))")
        }
        if let organization, UUID(uuidString: organization) == nil {
            throw CommandFailure("--org '\(organization)' is not a UUID (expected e.g. 4f1c2d3e-0000-4000-8000-000000000000)")
        }
    }

    func run() throws {
        var text = data
        if text.hasPrefix("@") {
            let path = String(text.dropFirst())
            guard let contents = FileManager.default.contents(atPath: path) else {
                throw CommandFailure("--data @\(path): cannot read that file")
            }
            text = String(decoding: contents, as: UTF8.self)
        }
        guard let parsed = try? JSONSerialization.jsonObject(with: Data(text.utf8), options: [.fragmentsAllowed]) else {
            throw CommandFailure("--data is not valid JSON: expected an object such as {\"id\":\"42\"}")
        }
        guard parsed is [String: Any] else {
            throw CommandFailure("--data must be a JSON object (got \(text.prefix(40))); wrap the value, e.g. {\"value\": …}")
        }
        let connection = try database.connect()
        let row = try connection.transaction { connection -> [String?] in
            let event = try connection.query(
                """
                INSERT INTO webhook_events (event_type, organization_id, data, ordering_key)
                VALUES ($1, $2::uuid, $3::jsonb, $4) RETURNING id
                """,
                [eventType, organization, text, orderingKey])
            let id = event.scalar!
            let fanned = try connection.query("SELECT count(*) FROM webhook_deliveries WHERE event_id = $1", [id])
            let why = fanned.scalar == "0"
                ? try connection.query("SELECT herald_why_no_deliveries($1, $2::uuid)", [eventType, organization]).scalar
                : nil
            return [id, fanned.scalar, why]
        }
        print("event \(row[0]!) fanned out to \(row[1] ?? "0") deliveries")
        if let why = row[2] { print("why 0: \(why)") }
    }
}
