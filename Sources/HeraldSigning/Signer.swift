internal import CCrypto
import HeraldCore

/// HMAC-SHA256 signatures of request bodies, computed with OpenSSL's libcrypto.
///
/// `X-Webhook-Signature` is the lowercase hex HMAC-SHA256 of the exact body bytes, keyed with the UTF-8 bytes of
/// the config's secret: what the documented Express and Flask receivers compute.
public enum Signer {
    /// The raw 32-byte HMAC-SHA256 of `message` under `key`.
    public static func hmacSHA256(key: [UInt8], message: [UInt8]) -> [UInt8] {
        var digest = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        key.withUnsafeBufferPointer { keyBytes in
            message.withUnsafeBufferPointer { messageBytes in
                digest.withUnsafeMutableBufferPointer { out in
                    // One-shot HMAC(): the HMAC_CTX_* calls are deprecated in OpenSSL 3.
                    _ = HMAC(EVP_sha256(), keyBytes.baseAddress, Int32(keyBytes.count),
                             messageBytes.baseAddress, messageBytes.count, out.baseAddress, &length)
                }
            }
        }
        return Array(digest.prefix(Int(length)))
    }

    /// The `X-Webhook-Signature` value: lowercase hex HMAC-SHA256 of `body` keyed with `secret`'s UTF-8 bytes.
    public static func signatureHex(secret: String, body: [UInt8]) -> String {
        hex(hmacSHA256(key: Array(secret.utf8), message: body))
    }

    /// The Standard Webhooks signature (https://www.standardwebhooks.com): `v1,` + base64 HMAC-SHA256 over
    /// `id.timestamp.body`, keyed with the secret's UTF-8 bytes. A Standard Webhooks library verifies it with the
    /// secret `whsec_` + base64(secret's UTF-8 bytes).
    public static func standardWebhooksSignature(secret: String, id: String, timestamp: Int, body: [UInt8]) -> String {
        var message = Array("\(id).\(timestamp).".utf8)
        message.append(contentsOf: body)
        return "v1," + Base64.encode(hmacSHA256(key: Array(secret.utf8), message: message))
    }

    /// Constant-time comparison (`CRYPTO_memcmp`), for verifying signatures without a timing side channel.
    public static func constantTimeEquals(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        if a.isEmpty { return true }
        return a.withUnsafeBytes { x in b.withUnsafeBytes { y in CRYPTO_memcmp(x.baseAddress, y.baseAddress, a.count) == 0 } }
    }

    public static func hex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        out.reserveCapacity(bytes.count * 2)
        for byte in bytes {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0x0F)])
        }
        return String(decoding: out, as: UTF8.self)
    }
}
