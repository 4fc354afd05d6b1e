/// The event types Herald delivers: the 17 of the public webhook documentation plus `webhook.test`.
///
/// The database holds the same list in `webhook_event_types` (sql/001); this copy lets the CLI reject a typo
/// before it reaches the database, and tests check that both agree.
public enum EventCatalog {
    public struct EventType: Sendable, Hashable {
        public let name: String
        public let category: String
        /// When it fires (as in `webhook_event_types.description`).
        public let description: String
    }

    public static let testEventType = "webhook.test"

    public static let all: [EventType] = [
        .init(name: "contact.created", category: "contact",
              description: "Fired when a new contact is created"),
        .init(name: "contact.updated", category: "contact",
              description: "Fired when a contact is updated"),
        .init(name: "contact.assigned", category: "contact",
              description: "Fired when a contact is assigned to someone"),
        .init(name: "deal.created", category: "deal",
              description: "Fired when a new deal/lead is created"),
        .init(name: "deal.updated", category: "deal",
              description: "Fired when a deal is updated"),
        .init(name: "deal.stage.changed", category: "deal",
              description: "Fired when a deal moves to a different pipeline stage"),
        .init(name: "deal.assigned", category: "deal",
              description: "Fired when a deal is assigned to someone"),
        .init(name: "conversation.created", category: "conversation",
              description: "Fired when a new conversation is created"),
        .init(name: "conversation.assigned", category: "conversation",
              description: "Fired when a conversation is assigned"),
        .init(name: "conversation.status.changed", category: "conversation",
              description: "Fired when conversation status changes (OPEN/CLOSED)"),
        .init(name: "message.received", category: "message",
              description: "Fired when a new message is received"),
        .init(name: "message.sent", category: "message",
              description: "Fired when a message is sent"),
        .init(name: "message.delivered", category: "message",
              description: "Fired when a sent message is delivered to the recipient"),
        .init(name: "message.read", category: "message",
              description: "Fired when a sent message is read by the recipient"),
        .init(name: "message.failed", category: "message",
              description: "Fired when a message fails to send"),
        .init(name: "broadcast.response", category: "broadcast",
              description: "Fired when a contact replies to a broadcast/campaign message"),
        .init(name: "zoom.recording.completed", category: "meeting",
              description: "Fired when a Zoom cloud recording finishes processing"),
        .init(name: testEventType, category: "system",
              description: "Sent by `herald test` to check that an endpoint accepts deliveries"),
    ]

    public static let names: Set<String> = Set(all.map(\.name))

    public static func contains(_ name: String) -> Bool { names.contains(name) }
}
