/// The documented request body: `{"event":"<type>","timestamp":"<ISO-8601 UTC>","data":{…}}`.
///
/// Built once per attempt from the event row, deterministically: the same event always yields the same bytes,
/// so every retry and replay sends (and signs) a byte-identical body.
public struct Envelope: Sendable {
    public var eventType: String
    /// `occurred_at` of the event, ISO 8601 UTC with milliseconds (`2024-01-15T10:30:00.000Z`).
    public var timestamp: String
    /// The event's `data` as PostgreSQL renders `jsonb` (with blanks); compacted when encoded.
    public var dataJSON: String

    public init(eventType: String, timestamp: String, dataJSON: String) {
        self.eventType = eventType
        self.timestamp = timestamp
        self.dataJSON = dataJSON
    }

    /// The exact bytes to send and sign.
    public func encoded() -> [UInt8] {
        var body: [UInt8] = []
        body.reserveCapacity(dataJSON.utf8.count + eventType.utf8.count + timestamp.utf8.count + 40)
        body.append(contentsOf: #"{"event":"#.utf8)
        JSONString.append(eventType, to: &body)
        body.append(contentsOf: #","timestamp":"#.utf8)
        JSONString.append(timestamp, to: &body)
        body.append(contentsOf: #","data":"#.utf8)
        CompactJSON.compact(dataJSON, into: &body)
        body.append(UInt8(ascii: "}"))
        return body
    }
}

/// JSON string literals escaped the way `JSON.stringify` escapes them.
public enum JSONString {
    public static func append(_ string: String, to output: inout [UInt8]) {
        output.append(UInt8(ascii: "\""))
        for byte in string.utf8 {
            switch byte {
            case UInt8(ascii: "\""): output.append(contentsOf: #"\""#.utf8)
            case UInt8(ascii: "\\"): output.append(contentsOf: #"\\"#.utf8)
            case 0x08: output.append(contentsOf: #"\b"#.utf8)
            case 0x0C: output.append(contentsOf: #"\f"#.utf8)
            case 0x0A: output.append(contentsOf: #"\n"#.utf8)
            case 0x0D: output.append(contentsOf: #"\r"#.utf8)
            case 0x09: output.append(contentsOf: #"\t"#.utf8)
            case 0x00..<0x20:
                let hex = Array("0123456789abcdef".utf8)
                output.append(contentsOf: #"\u00"#.utf8)
                output.append(hex[Int(byte >> 4)])
                output.append(hex[Int(byte & 0xF)])
            default: output.append(byte)
            }
        }
        output.append(UInt8(ascii: "\""))
    }

    public static func quoted(_ string: String) -> String {
        var bytes: [UInt8] = []
        append(string, to: &bytes)
        return String(decoding: bytes, as: UTF8.self)
    }
}
