/// The event types Herald delivers: the 17 of the public webhook documentation plus `webhook.test`.
///
/// The database holds the same list in `webhook_event_types` (sql/001); this copy lets the CLI reject a typo
/// before it reaches the database, and tests check that both agree.
public enum EventCatalog {
    public struct EventType: Sendable, Hashable {
        public let name: String
        public let category: String
    }

    public static let testEventType = "webhook.test"

    public static let all: [EventType] = [
        .init(name: "contact.created", category: "contact"),
        .init(name: "contact.updated", category: "contact"),
        .init(name: "contact.assigned", category: "contact"),
        .init(name: "deal.created", category: "deal"),
        .init(name: "deal.updated", category: "deal"),
        .init(name: "deal.stage.changed", category: "deal"),
        .init(name: "deal.assigned", category: "deal"),
        .init(name: "conversation.created", category: "conversation"),
        .init(name: "conversation.assigned", category: "conversation"),
        .init(name: "conversation.status.changed", category: "conversation"),
        .init(name: "message.received", category: "message"),
        .init(name: "message.sent", category: "message"),
        .init(name: "message.delivered", category: "message"),
        .init(name: "message.read", category: "message"),
        .init(name: "message.failed", category: "message"),
        .init(name: "broadcast.response", category: "broadcast"),
        .init(name: "zoom.recording.completed", category: "meeting"),
        .init(name: testEventType, category: "system"),
    ]

    public static let names: Set<String> = Set(all.map(\.name))

    public static func contains(_ name: String) -> Bool { names.contains(name) }
}
