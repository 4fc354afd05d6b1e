import ArgumentParser
import Foundation
import HeraldCore
import HeraldPostgres

struct TestEvent: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "test",
        abstract: "Send a webhook.test event to one config and report what its endpoint answered.",
        discussion: """
            The event goes through the normal path (a running `herald work` sends it, signed, and logs the attempt) \
            but to this config only, with a single attempt. Exit status: 0 accepted (2xx), 1 not accepted, \
            2 no worker sent it in time.
            """)
    @OptionGroup var database: DatabaseOptions
    @Argument(help: "Config id or name.") var config: String
    @OptionGroup var scope: OrganizationOption
    @Option(help: "Seconds to wait for the outcome (default: the 5 s request timeout plus 10 s).") var wait: Double = 15

    func run() throws {
        let connection = try database.connect()
        let configID = try resolveConfig(config, organization: scope.organization, on: connection)
        let row = try connection.query("SELECT is_active, url FROM webhook_configs WHERE id = $1",
                                       [configID]).rows[0]
        guard row[0] == "t" else {
            throw CommandFailure("config \(configID) is disabled: enable it first (herald config enable \(configID))")
        }
        // One event for this config only, one attempt: herald_send_test_event (sql/011), which the console uses too.
        let deliveryID = try perform {
            try connection.query("SELECT herald_send_test_event($1::uuid)", [configID]).scalar!
        }
        print("sent webhook.test to \(row[1] ?? "?") (delivery \(deliveryID)); waiting for a worker…")
        let deadline = Date().addingTimeInterval(wait)
        while Date() < deadline {
            let attempt = try connection.query("""
                SELECT outcome, response_status, duration_ms, error, left(response_body, 200)
                  FROM webhook_logs WHERE delivery_id = $1 ORDER BY id DESC LIMIT 1
                """, [deliveryID]).rows.first
            if let attempt {
                let status = attempt[1].map { "HTTP \($0)" } ?? "no response"
                let duration = attempt[2].map { "\($0) ms" } ?? "-"
                if attempt[0] == "delivered" {
                    print("accepted: \(status) in \(duration)")
                    if let body = attempt[4] { print("response: \(Output.shorten(body, limit: 200))") }
                    return
                }
                print("not accepted: \(status) after \(duration)")
                if let error = attempt[3] { print("error: \(error)") }
                if let body = attempt[4] { print("response: \(Output.shorten(body, limit: 200))") }
                throw ExitCode(1)
            }
            Thread.sleep(forTimeInterval: 0.1)
        }
        print("no worker sent it within \(Int(wait)) s: is `herald work` running against this database? (the test delivery stays queued until one does)")
        throw ExitCode(2)
    }
}
