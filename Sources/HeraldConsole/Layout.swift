/// The frame every console page shares (header, navigation, search, log-out) and the small pieces pages are
/// built from: badges, times, tables, forms.
///
/// All styling is inline in the page, with no external font, script or stylesheet, so the console works offline
/// and the Content-Security-Policy can forbid everything else. No JavaScript.
enum Layout {
    /// What a page needs to know about who is looking.
    struct Viewer: Sendable {
        /// The session's form token (empty for Bearer clients, which need none).
        var formToken: String
        var readOnly: Bool
        var loggedInWithCookie: Bool
    }

    /// Which navigation link is marked as the current page.
    enum Section: Sendable { case overview, endpoints, search, none }

    static func page(_ title: String, _ section: Section, _ viewer: Viewer?, _ content: HTML) -> HTML {
        func link(_ href: String, _ name: String, _ mine: Section) -> HTML {
            section == mine ? "<a href=\"\(href)\" aria-current=\"page\">\(name)</a>" : "<a href=\"\(href)\">\(name)</a>"
        }
        var nav: HTML = ""
        if let viewer {
            nav = """
                <nav>\(link("/", "Overview", .overview))\(link("/endpoints", "Endpoints", .endpoints))</nav>
                <form class="search" method="get" action="/search" role="search">\
                <input type="search" name="q" placeholder="delivery id, event id or type" aria-label="Search">\
                <button type="submit">Search</button></form>
                """
            if viewer.readOnly { nav += "<span class=\"tag\">read-only</span>" }
            if viewer.loggedInWithCookie {
                nav += """
                    <form method="post" action="/logout" class="logout">\(formToken(viewer))\
                    <button type="submit" class="link">Log out</button></form>
                    """
            }
        }
        return """
            <!doctype html>
            <html lang="en"><head><meta charset="utf-8">
            <meta name="viewport" content="width=device-width, initial-scale=1">
            <title>\(title) · Herald</title>
            <style>\(HTML(stringLiteral: css))</style></head>
            <body><header><a class="brand" href="/">Herald</a>\(nav)</header>
            <main>\(content)</main></body></html>
            """
    }

    /// The hidden field every POST form carries.
    static func formToken(_ viewer: Viewer) -> HTML {
        "<input type=\"hidden\" name=\"_form\" value=\"\(viewer.formToken)\">"
    }

    /// A POST form with one button, or nothing in read-only mode.
    static func action(_ viewer: Viewer, _ path: String, _ label: String, fields: HTML = "",
                              style: String = "") -> HTML {
        guard !viewer.readOnly else { return "" }
        return """
            <form method="post" action="\(path)" class="action">\(formToken(viewer))\(fields)\
            <button type="submit" class="\(style)">\(label)</button></form>
            """
    }

    /// A delivery's or an attempt's status as a coloured word.
    static func badge(_ status: String?) -> HTML {
        let word = status ?? "–"
        let kind: String
        switch word {
        case "delivered", "active", "closed", "alive", "accepted": kind = "ok"
        case "failed", "lost", "open", "disabled", "not accepted", "dead": kind = "bad"
        case "pending", "retry", "half-open", "in flight", "waiting": kind = "warn"
        default: kind = "muted"
        }
        return "<span class=\"badge \(kind)\">\(word)</span>"
    }

    /// "4 min ago", with the exact UTC time on hover.
    static func ago(_ seconds: String?, exact: String?) -> HTML {
        guard let seconds, let value = Double(seconds) else { return "–" }
        return "<time title=\"\(exact ?? "")\">\(relative(value))</time>"
    }

    static func relative(_ seconds: Double) -> String {
        let future = seconds < 0
        let s = abs(seconds)
        let text: String
        switch s {
        case ..<1: return "now"
        case ..<60: text = "\(Int(s)) s"
        case ..<3600: text = "\(Int(s / 60)) min"
        case ..<86400: text = "\(Int(s / 3600)) h \(Int(s.truncatingRemainder(dividingBy: 3600) / 60)) min"
        default: text = "\(Int(s / 86400)) d \(Int(s.truncatingRemainder(dividingBy: 86400) / 3600)) h"
        }
        return future ? "in \(text)" : "\(text) ago"
    }

    /// A table that scrolls sideways on a narrow screen instead of squeezing its columns; with `stacked`, each row
    /// becomes a small card of labelled values on a phone instead (its rows made with `row(_:_:)`).
    static func table(_ headings: [String], _ rows: [HTML], empty: String, stacked: Bool = false) -> HTML {
        guard !rows.isEmpty else { return "<p class=\"empty\">\(empty)</p>" }
        let head = HTML(joining: headings.map { "<th>\($0)</th>" })
        return """
            <div class="scroll"><table\(stacked ? " class=\"stack\"" as HTML : "")><thead><tr>\(head)</tr></thead>\
            <tbody>\(HTML(joining: rows))</tbody></table></div>
            """
    }

    /// One table row whose cells carry their column's heading (shown above the value on a phone).
    /// - Parameter cells: `(class, content)` per column, in the order of `headings`.
    static func row(_ headings: [String], _ cells: [(String, HTML)]) -> HTML {
        let parts = zip(headings, cells).map { heading, cell -> HTML in
            "<td class=\"\(cell.0)\" data-label=\"\(heading)\">\(cell.1)</td>"
        }
        return "<tr>\(HTML(joining: parts))</tr>"
    }

    /// Text cut to `limit` characters (with an ellipsis) for a table cell.
    static func excerpt(_ text: String?, _ limit: Int = 80) -> String {
        guard let text else { return "" }
        let flat = text.replacingOccurrences(of: "\r", with: " ").replacingOccurrences(of: "\n", with: " ")
        return flat.count > limit ? String(flat.prefix(limit - 1)) + "…" : flat
    }

    static func card(_ title: String, _ content: HTML, id: String? = nil) -> HTML {
        let anchor: HTML = id.map { " id=\"\($0)\"" } ?? ""
        return "<section class=\"card\"\(anchor)><h2>\(title)</h2>\(content)</section>"
    }

    /// A message at the top of a page after an action ("replayed 3 deliveries").
    static func notice(_ text: String?, bad: Bool = false) -> HTML {
        guard let text, !text.isEmpty else { return "" }
        return "<p class=\"notice\(bad ? " bad" : "")\" role=\"status\">\(text)</p>"
    }

    static let css = """
        :root{--fg:#1d2430;--muted:#5d6878;--line:#dfe3ea;--bg:#f5f7fa;--card:#fff;--accent:#2451b7;\
        --ok:#17803d;--okbg:#e5f5ea;--bad:#b42318;--badbg:#fdeceb;--warn:#8a5a00;--warnbg:#fff4d6}
        *{box-sizing:border-box}
        body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;\
        color:var(--fg);background:var(--bg)}
        header{display:flex;flex-wrap:wrap;align-items:center;gap:.5rem 1.25rem;padding:.6rem 1.25rem;\
        background:#17202e;color:#fff}
        header a{color:#d5def0;text-decoration:none}
        header a:hover,header a[aria-current]{color:#fff;text-decoration:underline}
        .brand{font-weight:700;font-size:1.1rem;color:#fff!important;letter-spacing:.02em}
        nav{display:flex;gap:1rem}
        .search{display:flex;gap:.3rem;flex:1 1 16rem;max-width:28rem}
        .search input{flex:1;min-width:0}
        .logout{margin-left:auto}
        .tag{font-size:.8rem;border:1px solid #8d9ab0;border-radius:1rem;padding:0 .5rem;color:#d5def0}
        main{max-width:1200px;margin:0 auto;padding:1rem 1.25rem 3rem}
        h1{font-size:1.4rem;margin:.5rem 0 1rem;word-break:break-word}
        h2{font-size:1.05rem;margin:0 0 .6rem}
        .card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:1rem;margin:0 0 1rem}
        .grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,22rem),1fr));gap:1rem;margin-bottom:1rem;align-items:start}
        .grid .card{margin:0}
        .kpis{display:grid;grid-template-columns:repeat(auto-fit,minmax(9rem,1fr));gap:.75rem;margin-bottom:1rem}
        .kpi{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:.7rem .9rem}
        .kpi b{display:block;font-size:1.5rem;font-variant-numeric:tabular-nums}
        .kpi span{color:var(--muted);font-size:.85rem}
        .kpi.bad b{color:var(--bad)}
        .scroll{overflow-x:auto}
        table{border-collapse:collapse;width:100%;font-size:.9rem}
        th,td{text-align:left;padding:.4rem .5rem;border-bottom:1px solid var(--line);vertical-align:top}
        th{color:var(--muted);font-weight:600;white-space:nowrap}
        td.num{text-align:right;font-variant-numeric:tabular-nums}
        td.nowrap,td.id{white-space:nowrap}
        .id{overflow-wrap:anywhere;font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.85em}
        a{color:var(--accent)}
        .badge{display:inline-block;padding:0 .45rem;border-radius:1rem;font-size:.8rem;font-weight:600;white-space:nowrap}
        .badge.ok{color:var(--ok);background:var(--okbg)}
        .badge.bad{color:var(--bad);background:var(--badbg)}
        .badge.warn{color:var(--warn);background:var(--warnbg)}
        .badge.muted{color:var(--muted);background:#eef0f4}
        .empty,.muted{color:var(--muted)}
        .notice{background:var(--okbg);border:1px solid #b9e2c5;border-radius:8px;padding:.6rem .9rem}
        .notice.bad{background:var(--badbg);border-color:#f3c1bc}
        pre{background:#f0f2f6;border:1px solid var(--line);border-radius:6px;padding:.6rem;margin:.4rem 0;\
        white-space:pre-wrap;word-break:break-all;max-height:22rem;overflow:auto;\
        font:12.5px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
        dl{display:grid;grid-template-columns:max-content 1fr;gap:.3rem 1rem;margin:0}
        dt{color:var(--muted)}
        dd{margin:0;word-break:break-word}
        .actions{display:flex;flex-wrap:wrap;gap:.5rem;align-items:flex-end}
        form.action{display:inline-flex;gap:.4rem;align-items:flex-end;flex-wrap:wrap;margin:0}
        label{display:flex;flex-direction:column;font-size:.85rem;color:var(--muted);gap:.15rem}
        input,select,button{font:inherit;padding:.35rem .6rem;border:1px solid #b7c0cf;border-radius:6px;background:#fff;color:var(--fg)}
        button{background:var(--accent);border-color:var(--accent);color:#fff;cursor:pointer;white-space:nowrap}
        button.danger{background:var(--bad);border-color:var(--bad)}
        button.quiet{background:#fff;color:var(--accent)}
        button.link{background:none;border:none;color:#d5def0;padding:0;text-decoration:underline}
        .timeline{list-style:none;margin:0;padding:0 0 0 1rem;border-left:2px solid var(--line)}
        .timeline li{position:relative;padding:0 0 1rem .75rem}
        .timeline li::before{content:"";position:absolute;left:-1.45rem;top:.3rem;width:.75rem;height:.75rem;\
        border-radius:50%;background:var(--muted);border:2px solid var(--card)}
        .timeline li.ok::before{background:var(--ok)}
        .timeline li.bad::before{background:var(--bad)}
        .timeline li.warn::before{background:#d19a00}
        .meta{display:flex;flex-wrap:wrap;gap:.3rem .9rem;align-items:center}
        .chart{display:grid;grid-template-columns:auto 1fr;column-gap:.4rem}
        .chart svg{width:100%;height:190px;display:block;border-bottom:1px solid #b7c0cf}
        .chart .y{display:flex;flex-direction:column;justify-content:space-between;font-size:.75rem;color:var(--muted);        text-align:right;line-height:1;height:190px}
        .chart .x{grid-column:2;display:flex;justify-content:space-between;font-size:.75rem;color:var(--muted);margin-top:.2rem}
        .legend{display:flex;flex-wrap:wrap;gap:.3rem 1rem;font-size:.85rem;color:var(--muted);margin-top:.4rem}
        .legend i{display:inline-block;width:.8rem;height:.8rem;border-radius:2px;margin-right:.3rem;vertical-align:-1px}
        .legend i.delivered{background:#2f9e58}
        .legend i.failed{background:#d64535}
        .login{max-width:24rem;margin:12vh auto}
        .login form{display:flex;flex-direction:column;gap:.8rem}
        .filters{display:flex;flex-wrap:wrap;gap:.5rem;align-items:flex-end;margin-bottom:.8rem}
        @media (max-width:640px){main{padding:.75rem .6rem 2rem}header{padding:.5rem .75rem}\
        .logout{margin-left:0}th,td{padding:.35rem .35rem}dl{grid-template-columns:1fr}dt{margin-top:.4rem}        .chart svg,.chart .y{height:140px}\
        table.stack thead{display:none}\
        table.stack tr{display:grid;grid-template-columns:1fr 1fr;gap:.2rem .8rem;padding:.55rem 0;\
        border-bottom:1px solid var(--line)}\
        table.stack td{border:none;padding:0;text-align:left;white-space:normal}\
        table.stack td:first-child{grid-column:1/-1}\
        table.stack td::before{content:attr(data-label);display:block;font-size:.75rem;color:var(--muted)}\
        table.stack td:first-child::before{content:none}}
        """
}
