import HeraldSigning

/// The documented signature, for tests that forge or check requests by hand.
public func hmacHex(secret: String, body: [UInt8]) -> String {
    Signer.signatureHex(secret: secret, body: body)
}
