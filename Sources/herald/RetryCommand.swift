import ArgumentParser
import Foundation
import HeraldCore
import HeraldPostgres

struct Retry: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Make pending deliveries due now instead of waiting out their backoff.",
        discussion: """
            For after fixing an endpoint (or allowing it with HERALD_ALLOWED_NETWORKS): the waiting deliveries are \
            sent at the next claim. Attempts in flight are left alone; finished deliveries are for herald replay.
            By id:      herald retry 8d0f6f0e-… 1a2b3c4d-…
            By config:  herald retry --config NAME [--org ORG]
            In psql:    SELECT * FROM herald_retry_now(ARRAY['…']::uuid[]);  SELECT * FROM herald_retry_now(p_config_id => '…');
            """)
    @OptionGroup var database: DatabaseOptions
    @Argument(help: "Delivery ids to retry now.") var deliveries: [String] = []
    @Option(help: "Every pending delivery of this config (id or name).") var config: String?
    @OptionGroup var scope: OrganizationOption

    func validate() throws {
        if deliveries.isEmpty == (config == nil) {
            throw CommandFailure("name pending deliveries by id, or choose them with --config NAME (not both)")
        }
        for id in deliveries { _ = try requireUUID("delivery id", id) }
        if scope.organization != nil && config == nil {
            throw CommandFailure("--org picks the organization of the --config NAME: give --config too")
        }
    }

    func run() throws {
        let connection = try database.connect()
        let configID = try config.map { try resolveConfig($0, organization: scope.organization, on: connection) }
        let ids = deliveries.isEmpty ? nil : PostgresArray.literal(deliveries.map { $0.lowercased() })
        let due = try perform {
            try connection.query("SELECT herald_retry_now($1::uuid[], $2::uuid)", [ids, configID]).rows.compactMap { $0[0] }
        }
        print("\(due.count) \(due.count == 1 ? "delivery is" : "deliveries are") due now")
        // Say what happened to the others, so "0 due" is never a mystery.
        if !deliveries.isEmpty {
            let others = try connection.query("""
                SELECT d.id, CASE WHEN d.status <> 'pending' THEN d.status || ' already (herald replay sends it again)'
                                  WHEN d.lease_token IS NOT NULL THEN 'in flight now'
                                  ELSE 'due already' END
                  FROM webhook_deliveries d
                 WHERE d.id = ANY ($1::uuid[]) AND NOT (d.id = ANY ($2::uuid[]))
                """, [ids, PostgresArray.literal(due)]).rows
            for row in others { print("\(row[0]!): \(row[1]!)") }
            let known = Set(others.compactMap { $0[0] } + due)
            for id in deliveries.map({ $0.lowercased() }) where !known.contains(id) {
                print("\(id): no such delivery")
            }
        }
        let circuits = try connection.query("""
            SELECT DISTINCT c.name, to_char(c.circuit_open_until, 'HH24:MI:SS')
              FROM webhook_deliveries d JOIN webhook_configs c ON c.id = d.config_id
             WHERE d.id = ANY ($1::uuid[]) AND c.circuit_open_until > now()
            """, [PostgresArray.literal(due)]).rows
        for row in circuits {
            print("note: the circuit of config '\(row[0]!)' is open until \(row[1]!) (it failed too often in a row); its deliveries go out when it closes")
        }
        if !due.isEmpty {
            let workers = try connection.query("SELECT count(*) FROM herald_workers WHERE alive").scalar ?? "0"
            if workers == "0" { print("note: no worker seen in the last 30 seconds; start one with herald work (or scripts/run)") }
        }
    }
}
