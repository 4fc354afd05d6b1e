/// The overview's chart: delivered and failed attempts per minute over the last hour, as inline SVG.
///
/// Drawn on the server (no script, no chart library): one stacked bar per minute, failed on top in red, with the
/// counts in each bar's tooltip, so "when did it start failing?" is answered at a glance. The SVG holds only
/// shapes and stretches to the width of the screen; the axis labels are HTML around it, so they keep their size
/// on a phone.
enum AttemptsChart {
    /// One minute's counts.
    struct Minute: Sendable, Equatable {
        /// `HH:MM` (UTC).
        var label: String
        var delivered: Int
        var failed: Int

        init(label: String, delivered: Int, failed: Int) {
            self.label = label
            self.delivered = delivered
            self.failed = failed
        }
    }

    /// Plot units per minute and of the full height; the SVG is stretched to its box (`preserveAspectRatio="none"`).
    static let slot = 10
    static let height = 100

    static func svg(_ minutes: [Minute]) -> HTML {
        let scale = niceCeiling(minutes.map { $0.delivered + $0.failed }.max() ?? 0)
        let width = slot * max(minutes.count, 1)
        var shapes: [HTML] = []
        for fraction in [0.5, 1.0] {
            let y = Double(height) * (1 - fraction)
            shapes.append("<line x1=\"0\" x2=\"\(width)\" y1=\"\(y)\" y2=\"\(y)\" stroke=\"#dfe3ea\" vector-effect=\"non-scaling-stroke\"/>")
        }
        for (index, minute) in minutes.enumerated() {
            let x = index * slot + 1
            let delivered = Double(height) * Double(minute.delivered) / Double(scale)
            let failed = Double(height) * Double(minute.failed) / Double(scale)
            var bar: HTML = "<g><title>\(minute.label) UTC: \(minute.delivered) delivered, \(minute.failed) failed</title>"
            // A transparent full-height target, so the tooltip works on empty minutes too.
            bar += "<rect x=\"\(x)\" y=\"0\" width=\"\(slot - 2)\" height=\"\(height)\" fill=\"transparent\"/>"
            if minute.delivered > 0 {
                bar += "<rect x=\"\(x)\" y=\"\(Double(height) - delivered)\" width=\"\(slot - 2)\" height=\"\(delivered)\" fill=\"#2f9e58\"/>"
            }
            if minute.failed > 0 {
                bar += "<rect x=\"\(x)\" y=\"\(Double(height) - delivered - failed)\" width=\"\(slot - 2)\" height=\"\(failed)\" fill=\"#d64535\"/>"
            }
            shapes.append(bar + "</g>")
        }
        let delivered = minutes.reduce(0) { $0 + $1.delivered }
        let failed = minutes.reduce(0) { $0 + $1.failed }
        let summary = "Attempts per minute over the last hour: \(delivered) delivered, \(failed) failed"
        let ticks = stride(from: 0, to: minutes.count, by: 15).map { minutes[$0].label } + [minutes.last?.label ?? ""]
        return """
            <div class="chart"><div class="y"><span>\(scale)</span><span>\(scale / 2 == 0 ? "" : String(scale / 2))</span>\
            <span>0</span></div><svg viewBox="0 0 \(width) \(height)" preserveAspectRatio="none" role="img" \
            aria-label="\(summary)">\(HTML(joining: shapes))</svg>\
            <div class="x">\(HTML(joining: ticks.map { "<span>\($0)</span>" }))</div></div>\
            <div class="legend"><span><i class="delivered"></i>\(delivered) delivered</span>\
            <span><i class="failed"></i>\(failed) failed (retry, failed, lost)</span><span>per minute, UTC</span></div>
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
}
