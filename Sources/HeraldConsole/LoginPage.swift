/// `GET /login`: the one page served without a session. It shows nothing from the database.
enum LoginPage {
    static func render(failed: Bool, configuration: ConsoleConfiguration) -> HTML {
        let hint = configuration.tokenWasGenerated
            ? "The token was printed once when the console started (the line <code>console token: …</code>)."
            : "The token is the value of HERALD_CONSOLE_TOKEN."
        let content: HTML = """
            <div class="login card"><h1>Herald console</h1>\
            \(failed ? Layout.notice("That token is not the console's token.", bad: true) : "")\
            <form method="post" action="/login"><label>Access token\
            <input type="password" name="token" autocomplete="current-password" required autofocus></label>\
            <button type="submit">Log in</button></form>\
            <p class="muted">\(HTML(stringLiteral: hint))</p></div>
            """
        return Layout.page("Log in", .none, nil, content)
    }
}
