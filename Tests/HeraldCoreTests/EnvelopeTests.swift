import HeraldCore
import HeraldSigning
import Testing

@Suite struct EnvelopeTests {
    @Test func compactsPostgresJSONBText() {
        let jsonb = #"{"a": 1, "b": [1, 2, {"c": null}], "s": "x: y, z", "q": "say \"hi\", ok", "e": "back\\ slash \\"}"#
        let compact = String(decoding: CompactJSON.compact(jsonb), as: UTF8.self)
        #expect(compact == #"{"a":1,"b":[1,2,{"c":null}],"s":"x: y, z","q":"say \"hi\", ok","e":"back\\ slash \\"}"#)
    }

    @Test func keepsWhitespaceInsideStringsAndNonASCII() {
        let compact = String(decoding: CompactJSON.compact(#"{"k": "  spaced\ttab é 🎉 \n"}"#), as: UTF8.self)
        #expect(compact == #"{"k":"  spaced\ttab é 🎉 \n"}"#)
    }

    @Test func encodesTheDocumentedEnvelope() {
        let envelope = Envelope(eventType: "contact.created", timestamp: "2024-01-15T10:30:00.000Z",
                                dataJSON: #"{"id": "uuid-here", "first_name": "John"}"#)
        #expect(String(decoding: envelope.encoded(), as: UTF8.self)
            == #"{"event":"contact.created","timestamp":"2024-01-15T10:30:00.000Z","data":{"id":"uuid-here","first_name":"John"}}"#)
        // The same data as PostgreSQL's jsonb text or written compactly gives the same bytes: every attempt of a
        // delivery sends (and signs) exactly the same body.
        let compactInput = Envelope(eventType: "contact.created", timestamp: "2024-01-15T10:30:00.000Z",
                                    dataJSON: #"{"id":"uuid-here","first_name":"John"}"#)
        #expect(compactInput.encoded() == envelope.encoded())
    }

    @Test func escapesStringsLikeJSONStringify() {
        #expect(JSONString.quoted("a\"b\\c\n\u{1}") == #""a\"b\\c\n\u0001""#)
    }

    @Test func signsWithHMACSHA256() {
        // RFC 4231, test case 2.
        #expect(Signer.signatureHex(secret: "Jefe", body: Array("what do ya want for nothing?".utf8))
            == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        #expect(Signer.constantTimeEquals([1, 2, 3], [1, 2, 3]))
        #expect(!Signer.constantTimeEquals([1, 2, 3], [1, 2, 4]))
        #expect(!Signer.constantTimeEquals([1, 2], [1, 2, 3]))
    }

    @Test func catalogueHoldsTheDocumentedTypes() {
        #expect(EventCatalog.all.count == 18)
        #expect(EventCatalog.names.count == 18)
        #expect(EventCatalog.contains("deal.stage.changed"))
        #expect(!EventCatalog.contains("deal.stage.change"))
    }

    @Test func masksPasswords() {
        #expect(Redaction.maskConnectionString("postgresql://herald:s3cret@127.0.0.1:5432/herald")
            == "postgresql://herald:***@127.0.0.1:5432/herald")
        #expect(Redaction.maskConnectionString("postgresql://u@h/db?password=s3cret&sslmode=require")
            == "postgresql://u@h/db?password=***&sslmode=require")
        #expect(Redaction.maskConnectionString("host=h user=u password=s3cret dbname=d")
            == "host=h user=u password=*** dbname=d")
        #expect(Redaction.maskConnectionString("postgresql://u:pa?ss#w:rd@h:5432/db?sslmode=require")
            == "postgresql://u:***@h:5432/db?sslmode=require")
        #expect(Redaction.maskConnectionString("host=h password = 'a b\\' c' user=u")
            == "host=h password=*** user=u")
        #expect(Redaction.maskConnectionString("postgresql://h/db") == "postgresql://h/db")
    }
}

@Suite struct StandardWebhooksTests {
    @Test func base64MatchesRFC4648Vectors() {
        #expect(Base64.encode(Array("".utf8)) == "")
        #expect(Base64.encode(Array("f".utf8)) == "Zg==")
        #expect(Base64.encode(Array("fo".utf8)) == "Zm8=")
        #expect(Base64.encode(Array("foo".utf8)) == "Zm9v")
        #expect(Base64.encode(Array("foobar".utf8)) == "Zm9vYmFy")
    }

    /// Vectors produced once with the reference library, `standardwebhooks` 1.1.0 from PyPI:
    /// `Webhook("whsec_" + base64(secret.encode())).sign(id, datetime.fromtimestamp(ts, timezone.utc), body)`.
    @Test(arguments: [
        ("secret", "msg_1", 1_700_000_000, #"{"a":1}"#, "v1,Q5nZ7DiOGwijBBqvBVAK6c0zDr2JLkXI7TaV4f+Q2vY="),
        ("Jefe é🔑", "msg_2p5fFZJ8GvVjHf9tVkc7bBsJVcg", 1_614_265_330, #"{"test": 2432232314}"#,
         "v1,HfISYd6eiu9qRDkavICyrqi0fTxJHu36vXbNMgEC2LQ="),
    ])
    func signsLikeTheReferenceLibrary(secret: String, id: String, timestamp: Int, body: String, expected: String) {
        let signature = Signer.standardWebhooksSignature(secret: secret, id: id, timestamp: timestamp,
                                                         body: Array(body.utf8))
        #expect(signature == expected)
    }
}
