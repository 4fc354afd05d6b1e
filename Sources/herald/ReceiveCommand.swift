import ArgumentParser
import Foundation
import HeraldCore

struct Receive: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "A local webhook receiver: prints each delivery and checks both signatures (✓ or ✗).",
        discussion: """
            For trying Herald and for developing a receiver. Listens on 127.0.0.1 only, prints every request \
            readably (event, id, attempt, body) and verifies X-Webhook-Signature (hex HMAC-SHA256 of the body) \
            and the Standard Webhooks webhook-signature with the config's secret. --status and --delay rehearse \
            failures: Herald retries anything but a 2xx answered within its timeout (5 s).

            Try it:   herald receive --port 9000 --secret demo-secret
                      herald config create --name local --url http://127.0.0.1:9000/ --events '*' --secret demo-secret
                      herald emit contact.created --data '{"id":"c-42"}'
            The workers deliver to 127.0.0.1 only when HERALD_ALLOWED_NETWORKS allows it (scripts/run does).
            """)

    @Option(help: "Port on 127.0.0.1 (0 picks a free one).") var port: Int = 9000
    @Option(help: "The config's secret, to verify signatures. Visible in ps and shell history: prefer --secret-file.")
    var secret: String?
    @Option(name: .customLong("secret-file"), help: "Read the config's secret from this file, or - for standard input.")
    var secretFile: String?
    @Option(help: "HTTP status to answer with, e.g. 500 to watch Herald retry.") var status: Int = 200
    @Option(help: "Wait this long before answering, e.g. 2s or 6s (past Herald's 5 s timeout).") var delay: String?
    @Option(help: "Exit after answering this many requests.") var count: Int?

    func validate() throws {
        if !(0...65535).contains(port) { throw CommandFailure("--port must be between 0 and 65535") }
        if secret != nil && secretFile != nil { throw CommandFailure("use one of --secret and --secret-file") }
        if secret == "" { throw CommandFailure("--secret must not be empty (omit it to skip verification)") }
        if !(200...599).contains(status) { throw CommandFailure("--status must be an HTTP status from 200 to 599") }
        if let delay, DurationText.parse(delay) == nil {
            throw CommandFailure(DurationText.explain("--delay", delay, datesAllowed: false))
        }
        if let count, count < 1 { throw CommandFailure("--count must be at least 1") }
    }

    func run() throws {
        let chosenSecret = try secretFile.map(ConfigCommand.readSecret(from:)) ?? secret
        let server = try ReceiveServer(
            port: port,
            settings: .init(key: chosenSecret.map(ReceiveServer.key(for:)), status: status,
                            delay: delay.flatMap(DurationText.parse) ?? .zero, count: count))
        let url = "http://127.0.0.1:\(server.port)/"
        print("herald receive: listening on \(url) (loopback only); Ctrl-C stops it")
        if chosenSecret == nil {
            print("  signatures: not verified (pass --secret or --secret-file with the config's secret to check them)")
        } else {
            print("  signatures: verified with the secret from \(secretFile == nil ? "--secret" : secretFile == "-" ? "standard input" : secretFile!)")
        }
        let delayText = delay.map { " after \($0)" } ?? ""
        print("  answering:  \(status)\(delayText)")
        print("  send it deliveries: herald config create --name local --url \(url) --events '*' --secret …")
        print("  (the workers deliver to 127.0.0.1 only with HERALD_ALLOWED_NETWORKS=127.0.0.0/8; scripts/run sets it)")
        print()
        fflush(nil)  // nil: every stream (stdout may be a file)
        server.serve()
    }
}
