import HeraldCore

/// The exact bytes and headers Herald sends for one attempt: the envelope, the documented `X-Webhook-*` headers
/// and the Standard Webhooks headers, signed with the config's secret (and, during a rotation, the previous one).
///
/// Pure (the clock is a parameter), so the worker, the naive baseline and the tests build requests the same way.
public struct DeliveryRequest: Sendable, Equatable {
    /// The JSON envelope `{"event","timestamp","data"}`: what the signatures cover, byte for byte.
    public var body: [UInt8]
    /// `Name: value` lines.
    public var headers: [String]

    /// - Parameters:
    ///   - deliveryID: `webhook_deliveries.id`, sent as `X-Webhook-Id` and `webhook-id`.
    ///   - occurredAt: the event's time as sent in the envelope and `X-Webhook-Timestamp`.
    ///   - dataJSON: the event's `data` as JSON text (re-encoded compactly).
    ///   - attempt: this attempt's number, 1-based, sent as `X-Webhook-Attempt`.
    ///   - secret: the config's secret; nil sends the request unsigned.
    ///   - previousSecret: during a rotation, a second Standard Webhooks signature is made with it.
    ///   - unixTime: now, in seconds: the Standard Webhooks timestamp is this attempt's, not the event's.
    ///   - replay: how many times an operator replayed the delivery; from the first replay on, sent as
    ///     `X-Webhook-Replay` (attempt numbers start again at 1 after a replay).
    public init(deliveryID: String, eventType: String, occurredAt: String, dataJSON: String, attempt: Int,
                secret: String?, previousSecret: String?, unixTime: Int, replay: Int = 0) {
        body = Envelope(eventType: eventType, timestamp: occurredAt, dataJSON: dataJSON).encoded()
        headers = [
            "X-Webhook-Event: \(eventType)",
            "X-Webhook-Timestamp: \(occurredAt)",
            "X-Webhook-Id: \(deliveryID)",
            "X-Webhook-Attempt: \(attempt)",
            "webhook-id: \(deliveryID)",
            "webhook-timestamp: \(unixTime)",
        ]
        if replay > 0 { headers.append("X-Webhook-Replay: \(replay)") }
        guard let secret else { return }
        headers.append("X-Webhook-Signature: \(Signer.signatureHex(secret: secret, body: body))")
        // Both signatures go out during a rotation, space-separated, as Standard Webhooks specifies; the
        // documented X-Webhook-Signature always uses the current secret.
        var signatures = [Signer.standardWebhooksSignature(secret: secret, id: deliveryID, timestamp: unixTime, body: body)]
        if let previousSecret {
            signatures.append(Signer.standardWebhooksSignature(
                secret: previousSecret, id: deliveryID, timestamp: unixTime, body: body))
        }
        headers.append("webhook-signature: " + signatures.joined(separator: " "))
    }
}
