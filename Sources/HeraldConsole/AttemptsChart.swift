/// The overview's chart: delivered and failed attempts per minute over the last hour, as inline SVG.
///
/// Drawn on the server (no script, no chart library): one stacked bar per minute, failed on top in red, with the
/// counts in each bar's tooltip, so "when did it start failing?" is answered at a glance on any screen.
public enum AttemptsChart {
    /// One minute's counts.
    public struct Minute: Sendable, Equatable {
        /// `HH:MM` (UTC).
        public var label: String
        public var delivered: Int
        public var failed: Int

        public init(label: String, delivered: Int, failed: Int) {
            self.label = label
            self.delivered = delivered
            self.failed = failed
        }
    }

    static let width = 720.0
    static let height = 200.0
    static let left = 44.0
    static let bottom = 22.0
    static let top = 8.0

    public static func svg(_ minutes: [Minute]) -> HTML {
        let peak = minutes.map { $0.delivered + $0.failed }.max() ?? 0
        let scale = niceCeiling(peak)
        let plotHeight = height - bottom - top
        let slot = (width - left) / Double(max(minutes.count, 1))
        let bar = max(slot - 2, 1)
        var shapes: [HTML] = []
        for fraction in [0.0, 0.5, 1.0] {
            let y = top + plotHeight * (1 - fraction)
            shapes.append("""
                <line x1="\(format(left))" x2="\(format(width))" y1="\(format(y))" y2="\(format(y))" stroke="#dfe3ea"/>\
                <text x="\(format(left - 6))" y="\(format(y + 4))" text-anchor="end" font-size="11" fill="#5d6878">\
                \(Int(Double(scale) * fraction))</text>
                """)
        }
        for (index, minute) in minutes.enumerated() {
            let x = left + Double(index) * slot + 1
            let deliveredHeight = plotHeight * Double(minute.delivered) / Double(scale)
            let failedHeight = plotHeight * Double(minute.failed) / Double(scale)
            let base = top + plotHeight
            let tooltip = "\(minute.label) UTC: \(minute.delivered) delivered, \(minute.failed) failed"
            var group: HTML = "<g><title>\(tooltip)</title>"
            // An invisible full-height target so the tooltip works on empty minutes too.
            group += "<rect x=\"\(format(x))\" y=\"\(format(top))\" width=\"\(format(bar))\" height=\"\(format(plotHeight))\" fill=\"transparent\"/>"
            if minute.delivered > 0 {
                group += "<rect x=\"\(format(x))\" y=\"\(format(base - deliveredHeight))\" width=\"\(format(bar))\" height=\"\(format(deliveredHeight))\" fill=\"#2f9e58\"/>"
            }
            if minute.failed > 0 {
                group += "<rect x=\"\(format(x))\" y=\"\(format(base - deliveredHeight - failedHeight))\" width=\"\(format(bar))\" height=\"\(format(failedHeight))\" fill=\"#d64535\"/>"
            }
            group += "</g>"
            shapes.append(group)
            if index % 10 == 0 || index == minutes.count - 1 {
                shapes.append("""
                    <text x="\(format(x + bar / 2))" y="\(format(height - 6))" text-anchor="middle" font-size="11" \
                    fill="#5d6878">\(minute.label)</text>
                    """)
            }
        }
        let total = minutes.reduce(0) { $0 + $1.delivered + $1.failed }
        let summary = "Attempts per minute over the last hour: \(minutes.reduce(0) { $0 + $1.delivered }) delivered, "
            + "\(minutes.reduce(0) { $0 + $1.failed }) failed"
        return """
            <div class="chart"><svg viewBox="0 0 \(Int(width)) \(Int(height))" role="img" aria-label="\(summary)">\
            \(HTML(joining: shapes))</svg>\
            <div class="legend"><span><i style="background:#2f9e58"></i>delivered</span>\
            <span><i style="background:#d64535"></i>failed (retry, failed, lost)</span>\
            <span>\(total) attempts in the hour</span></div></div>
            """
    }

    /// The smallest of 1, 2, 5 × 10ⁿ at or above `value` (at least 1), so the axis reads in round numbers.
    static func niceCeiling(_ value: Int) -> Int {
        var magnitude = 1
        while true {
            for step in [1, 2, 5] where step * magnitude >= value { return step * magnitude }
            magnitude *= 10
        }
    }

    static func format(_ value: Double) -> String {
        String(Double(Int(value * 10)) / 10)
    }
}
