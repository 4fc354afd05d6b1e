import HeraldCore
import HeraldSigning
import Testing

/// The request one attempt sends, built without I/O.
@Suite struct DeliveryRequestTests {
    func request(secret: String? = "s3cret", previous: String? = nil, replay: Int = 0) -> DeliveryRequest {
        DeliveryRequest(deliveryID: "d-1", eventType: "contact.created", occurredAt: "2026-01-02T03:04:05.678Z",
                        dataJSON: #"{ "id" : 42 }"#, attempt: 3, secret: secret, previousSecret: previous,
                        unixTime: 1_700_000_000, replay: replay)
    }

    func header(_ name: String, in request: DeliveryRequest) -> [String] {
        request.headers.filter { $0.lowercased().hasPrefix(name.lowercased() + ": ") }
            .map { String($0.dropFirst(name.count + 2)) }
    }

    @Test func carriesTheDocumentedHeadersAndTheCompactEnvelope() {
        let r = request()
        #expect(String(decoding: r.body, as: UTF8.self)
                == #"{"event":"contact.created","timestamp":"2026-01-02T03:04:05.678Z","data":{"id":42}}"#)
        #expect(header("X-Webhook-Event", in: r) == ["contact.created"])
        #expect(header("X-Webhook-Timestamp", in: r) == ["2026-01-02T03:04:05.678Z"])
        #expect(header("X-Webhook-Id", in: r) == ["d-1"])
        #expect(header("X-Webhook-Attempt", in: r) == ["3"])
        #expect(header("webhook-timestamp", in: r) == ["1700000000"])
        // Hex HMAC-SHA256 of the exact body; 64 lowercase hex digits.
        let signature = header("X-Webhook-Signature", in: r)
        #expect(signature.count == 1 && signature[0].count == 64 && signature[0].allSatisfy { $0.isHexDigit && !$0.isUppercase })
        #expect(header("X-Webhook-Replay", in: r).isEmpty)
    }

    @Test func aRotationSendsTwoStandardSignaturesAndNoSecretSendsNone() {
        let rotating = request(previous: "old")
        let both = header("webhook-signature", in: rotating)
        #expect(both.count == 1 && both[0].split(separator: " ").count == 2)
        #expect(both[0].split(separator: " ").allSatisfy { $0.hasPrefix("v1,") })
        // The documented header always uses the current secret, whatever the rotation.
        #expect(header("X-Webhook-Signature", in: rotating) == header("X-Webhook-Signature", in: request()))
        let unsigned = request(secret: nil)
        #expect(header("X-Webhook-Signature", in: unsigned).isEmpty && header("webhook-signature", in: unsigned).isEmpty)
    }

    @Test func aReplayIsMarkedFromTheFirstReplayOn() {
        #expect(header("X-Webhook-Replay", in: request(replay: 2)) == ["2"])
    }
}
