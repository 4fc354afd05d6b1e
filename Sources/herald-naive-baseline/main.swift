// The benchmark's baseline: the design most hand-rolled outboxes use, one delivery per transaction.
//
//   loop: BEGIN; claim one row FOR UPDATE SKIP LOCKED; POST it and wait; INSERT the log row; UPDATE the row; COMMIT
//
// Same language, same libraries (libpq, libcurl, libcrypto) and the same request as `herald work`, so the
// benchmark's ratio measures the design, not the tools. It exits when the queue is empty. Not for production.
import Foundation
import HeraldCore
import HeraldHTTP
import HeraldPostgres
import HeraldSigning

guard let url = ProcessInfo.processInfo.environment["DATABASE_URL"] else {
    FileHandle.standardError.write(Data("DATABASE_URL is not set\n".utf8))
    exit(2)
}
var http = CurlEngine.Configuration()
http.addressPolicy = AddressPolicy(allowedNetworks: [IPNetwork("127.0.0.0/8")!])
let engine = CurlEngine(configuration: http)
let connection = try PostgresConnection(url)
var delivered = 0

/// Blocks the calling thread until the engine's completion arrives: the naive, synchronous way.
final class Wait: @unchecked Sendable {
    // @unchecked: `response` is written once before `semaphore.signal()` and read after `wait()`.
    let semaphore = DispatchSemaphore(value: 0)
    var response: HTTPResponse?
}

while true {
    try connection.query("BEGIN")
    let rows = try connection.query("""
        SELECT d.id, d.attempts + 1, e.id, e.event_type,
               to_char(e.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'), e.data::text, c.id, c.url, c.secret
          FROM webhook_deliveries d JOIN webhook_events e ON e.id = d.event_id JOIN webhook_configs c ON c.id = d.config_id
         WHERE d.status = 'pending' AND d.lease_token IS NULL AND d.attempts = 0 AND d.next_attempt_at <= now()
         ORDER BY d.config_id, d.next_attempt_at LIMIT 1 FOR UPDATE OF d SKIP LOCKED
        """).rows
    guard let row = rows.first else {
        try connection.query("COMMIT")
        break
    }
    // The same request Herald sends (DeliveryRequest), so the benchmark compares designs, not request building.
    let request = DeliveryRequest(
        deliveryID: row[0]!, eventType: row[3]!, occurredAt: row[4]!, dataJSON: row[5]!, attempt: Int(row[1]!)!,
        secret: row[8], previousSecret: nil, unixTime: Int(Date().timeIntervalSince1970))
    let body = request.body
    let headers = request.headers
    let wait = Wait()
    engine.submit(HTTPRequest(url: row[7]!, headers: headers, body: body, timeout: .seconds(5))) { response in
        wait.response = response
        wait.semaphore.signal()
    }
    wait.semaphore.wait()
    let response = wait.response!
    let ok = response.isSuccess
    try connection.query("""
        INSERT INTO webhook_logs (delivery_id, event_id, config_id, event_type, attempt, outcome, payload,
                                  response_status, response_body, error, duration_ms)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
        """, [row[0], row[2], row[6], row[3], row[1], ok ? "delivered" : "retry", String(decoding: body, as: UTF8.self),
              response.status.map(String.init), String(decoding: response.body, as: UTF8.self), response.error?.message,
              String(Int(response.duration.milliseconds))])
    try connection.query("""
        UPDATE webhook_deliveries SET attempts = attempts + 1, status = $2, last_response_status = $3,
               next_attempt_at = now() + interval '5 seconds', completed_at = CASE WHEN $2 = 'delivered' THEN now() END
         WHERE id = $1
        """, [row[0], ok ? "delivered" : "pending", response.status.map(String.init)])
    try connection.query("COMMIT")
    delivered += 1
}
print("naive baseline: \(delivered) deliveries")
engine.shutdown()
