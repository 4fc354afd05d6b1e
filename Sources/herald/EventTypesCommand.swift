import ArgumentParser
import Foundation
import HeraldCore

struct EventTypes: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "event-types",
        abstract: "List the event types configs can subscribe to and events can carry.",
        discussion: """
            The same catalogue as the webhook_event_types table (SELECT * FROM webhook_event_types). \
            A config's --events takes these names, comma-separated, or * for all of them.
            """)
    @Flag(help: "One JSON object per line.") var json = false

    func run() throws {
        if json {
            for type in EventCatalog.all {
                print(#"{"name":"\#(type.name)","category":"\#(type.category)","description":"\#(type.description)"}"#)
            }
            return
        }
        let width = EventCatalog.all.map(\.name.count).max() ?? 0
        let categoryWidth = EventCatalog.all.map(\.category.count).max() ?? 0
        func line(_ name: String, _ category: String, _ description: String) -> String {
            name.padding(toLength: width, withPad: " ", startingAt: 0) + "  "
                + category.padding(toLength: categoryWidth, withPad: " ", startingAt: 0) + "  " + description
        }
        print(line("EVENT TYPE", "CATEGORY", "FIRED WHEN"))
        for type in EventCatalog.all { print(line(type.name, type.category, type.description)) }
        print()
        print("Subscribe with: herald config create … --events contact.created,deal.stage.changed (or '*' for all)")
    }
}
