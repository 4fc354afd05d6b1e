import Foundation
import HeraldConsole
import HeraldCore
import HeraldPostgres
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

// herald-console: the operator web console (issue 14), started by `herald console`. A program of its own so that
// `herald`'s release build does not compile SwiftNIO (see docs/ARCHITECTURE.md, "The console").

let usage = """
    usage: herald console [--database-url URL]

    Serves the operator console on HERALD_CONSOLE_ADDR (default 127.0.0.1:8400).
      DATABASE_URL / --database-url    the database
      HERALD_CONSOLE_TOKEN             access token (on loopback, generated and printed once when unset)
      HERALD_CONSOLE_TLS_CERT, _KEY    PEM files: serve https (needed off loopback, unless behind a proxy)
      HERALD_CONSOLE_BEHIND_PROXY=1    a proxy in front serves https: cookies are marked Secure
      HERALD_CONSOLE_READONLY=1        no actions: pages only
    """

/// One line on standard output, unbuffered, so a script reading it (the token line) sees it at once.
func say(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("error: \(TerminalText.neutralized(message))\n".utf8))
    exit(1)
}

var arguments = Array(CommandLine.arguments.dropFirst())
var databaseURL = ProcessInfo.processInfo.environment["DATABASE_URL"] ?? ""
while let argument = arguments.first {
    arguments.removeFirst()
    switch argument {
    case "-h", "--help":
        print(usage)
        exit(0)
    case "--database-url":
        guard let value = arguments.first else { fail("--database-url needs a value") }
        arguments.removeFirst()
        databaseURL = value
    default:
        fail("unknown argument '\(argument)'\n\(usage)")
    }
}
guard !databaseURL.isEmpty else { fail("set DATABASE_URL (or pass --database-url) to the database Herald uses") }

let configuration: ConsoleConfiguration
do {
    configuration = try ConsoleConfiguration.fromEnvironment(ProcessInfo.processInfo.environment)
} catch {
    fail(error.description)
}

// Fail at start, with the reason, rather than on the first page.
do {
    let probe = try PostgresConnection(databaseURL)
    _ = try probe.query("SELECT 1 FROM webhook_endpoint_health LIMIT 1")
    probe.close()
} catch let error as PostgresError {
    fail("\(error.description)\(error.sqlState == "42P01" ? " (run herald migrate first)" : "")")
}

var tls: NIOSSLContext?
if let certificate = configuration.tlsCertificatePath, let key = configuration.tlsKeyPath {
    do {
        let chain = try NIOSSLCertificate.fromPEMFile(certificate).map { NIOSSLCertificateSource.certificate($0) }
        let tlsConfiguration = TLSConfiguration.makeServerConfiguration(
            certificateChain: chain, privateKey: .privateKey(try NIOSSLPrivateKey(file: key, format: .pem)))
        tls = try NIOSSLContext(configuration: tlsConfiguration)
    } catch {
        fail("HERALD_CONSOLE_TLS_CERT / HERALD_CONSOLE_TLS_KEY: cannot load them (\(error))")
    }
}

let app = ConsoleApp(configuration: configuration, databaseURL: databaseURL)
let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
let threadPool = NIOThreadPool(numberOfThreads: 4)
threadPool.start()
let sslContext = tls
let bootstrap = ServerBootstrap(group: group)
    .serverChannelOption(.backlog, value: 256)
    .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
    .childChannelInitializer { channel in
        channel.eventLoop.makeCompletedFuture {
            if let sslContext {
                try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: sslContext))
            }
            try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
            try channel.pipeline.syncOperations.addHandler(ConsoleHTTPHandler(app: app, threadPool: threadPool))
        }
    }
let server: Channel
do {
    server = try bootstrap.bind(host: configuration.host, port: configuration.port).wait()
} catch {
    fail("cannot listen on \(configuration.host):\(configuration.port): \(error)")
}

let port = server.localAddress?.port ?? configuration.port
let shownHost = configuration.host.contains(":") ? "[\(configuration.host)]" : configuration.host
say("console: \(configuration.servesTLS ? "https" : "http")://\(shownHost):\(port)/"
    + (configuration.readOnly ? " (read-only)" : ""))
if configuration.tokenWasGenerated {
    // Printed once; not stored anywhere. A restart makes a new one.
    say("console token: \(configuration.token)")
}

// SIGINT / SIGTERM: stop accepting, let the event loop finish, exit 0.
let signalSources = [SIGINT, SIGTERM].map { signalNumber in
    signal(signalNumber, SIG_IGN)
    let source = DispatchSource.makeSignalSource(signal: signalNumber, queue: .global())
    source.setEventHandler { server.close(promise: nil) }
    source.resume()
    return source
}

try? server.closeFuture.wait()
withExtendedLifetime(signalSources) {}
try? group.syncShutdownGracefully()
try? threadPool.syncShutdownGracefully()
