import ArgumentParser
import Foundation
import HeraldCore
import HeraldWorker
import Logging
import Metrics
import Prometheus

struct Work: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Deliver webhooks: claim due deliveries, POST them, retry with backoff, log every attempt.",
        discussion: """
            Every option can also be set in the environment (shown in brackets); flags win. Run as many \
            processes as you like, on one machine or many: they share the work through the database.
            SIGTERM or SIGINT stops claiming and waits for requests in flight; a second signal exits at once.
            """)

    @OptionGroup var database: DatabaseOptions

    @Option(help: "Deliveries in flight in this process [HERALD_CONCURRENCY, default 1024].")
    var concurrency: Int?
    @Option(name: .customLong("timeout-ms"), help: "Whole-attempt timeout in ms [HERALD_TIMEOUT_MS, default 5000].")
    var timeoutMilliseconds: Int?
    @Option(name: .customLong("max-attempts"), help: "Attempts before a delivery fails [HERALD_MAX_ATTEMPTS, default 10].")
    var maxAttempts: Int?
    @Option(name: .customLong("backoff-base-ms"), help: "Wait after the first failure [HERALD_BACKOFF_BASE_MS, default 5000].")
    var backoffBaseMilliseconds: Int?
    @Option(name: .customLong("backoff-max-ms"), help: "Longest wait between attempts [HERALD_BACKOFF_MAX_MS, default 36000000 = 10 h].")
    var backoffMaxMilliseconds: Int?
    @Option(name: .customLong("allowed-networks"), help: "Non-public CIDRs that may be delivered to, comma-separated [HERALD_ALLOWED_NETWORKS].")
    var allowedNetworks: String?
    @Option(name: .customLong("ca-file"), help: "PEM file of CAs to trust instead of the system's [HERALD_CA_FILE].")
    var caFile: String?
    @Option(name: .customLong("poll-ms"), help: "Look for due retries this often [HERALD_POLL_MS, default 500].")
    var pollMilliseconds: Int?
    @Option(name: .customLong("lease-ms"), help: "Claim lease [HERALD_LEASE_MS, default max(30 s, 6 × timeout)].")
    var leaseMilliseconds: Int?
    @Option(name: .customLong("worker-id"), help: "Name in leased_by and webhook_logs.worker [HERALD_WORKER_ID, default host:pid].")
    var workerID: String?
    @Option(name: .customLong("endpoint-concurrency"), help: "Most requests in flight per endpoint, all workers together; the adaptive limit stays at or below it [HERALD_ENDPOINT_CONCURRENCY, default 50].")
    var endpointConcurrency: Int?
    @Option(name: .customLong("circuit-threshold"), help: "Failures in a row that pause an endpoint [HERALD_CIRCUIT_THRESHOLD, default 10].")
    var circuitThreshold: Int?
    @Option(name: .customLong("circuit-cooldown-ms"), help: "First pause of a failing endpoint, doubling up to 1 h [HERALD_CIRCUIT_COOLDOWN_MS, default 30000].")
    var circuitCooldownMilliseconds: Int?
    @Option(name: .customLong("disable-after"), help: "Disable a config failing this long, e.g. 5d [HERALD_DISABLE_AFTER, default 5d].")
    var disableAfter: String?
    @Option(help: "Prune what finished longer ago than this, e.g. 30d, or off [HERALD_RETENTION, default off].")
    var retention: String?
    @Option(name: .customLong("metrics-addr"), help: "Serve /metrics and /healthz on host:port, or off [HERALD_METRICS_ADDR, default 127.0.0.1:9464].")
    var metricsAddress: String?

    func run() throws {
        try bootstrapLogging()
        let logger = Logger(label: "herald.work")
        var environment = ProcessInfo.processInfo.environment
        let flags: [(String, String?)] = [
            ("DATABASE_URL", database.databaseURL),
            ("HERALD_CONCURRENCY", concurrency.map(String.init)),
            ("HERALD_TIMEOUT_MS", timeoutMilliseconds.map(String.init)),
            ("HERALD_MAX_ATTEMPTS", maxAttempts.map(String.init)),
            ("HERALD_BACKOFF_BASE_MS", backoffBaseMilliseconds.map(String.init)),
            ("HERALD_BACKOFF_MAX_MS", backoffMaxMilliseconds.map(String.init)),
            ("HERALD_ALLOWED_NETWORKS", allowedNetworks),
            ("HERALD_CA_FILE", caFile),
            ("HERALD_POLL_MS", pollMilliseconds.map(String.init)),
            ("HERALD_LEASE_MS", leaseMilliseconds.map(String.init)),
            ("HERALD_WORKER_ID", workerID),
            ("HERALD_ENDPOINT_CONCURRENCY", endpointConcurrency.map(String.init)),
            ("HERALD_CIRCUIT_THRESHOLD", circuitThreshold.map(String.init)),
            ("HERALD_CIRCUIT_COOLDOWN_MS", circuitCooldownMilliseconds.map(String.init)),
            ("HERALD_DISABLE_AFTER", disableAfter),
            ("HERALD_RETENTION", retention),
        ]
        for case let (name, value?) in flags { environment[name] = value }
        var configuration: WorkerConfiguration
        do {
            configuration = try WorkerConfiguration.fromEnvironment(environment)
            try configuration.validate()
        } catch {
            throw CommandFailure(error.description)
        }
        let openFiles = OpenFileLimit.ensure(configuration.concurrency + OpenFileLimit.reserve)
        let fitted = OpenFileLimit.concurrency(asked: configuration.concurrency, limit: openFiles)
        if fitted < configuration.concurrency {
            logger.warning(
                "the open-file limit is too low for HERALD_CONCURRENCY; running with fewer requests in flight",
                metadata: ["open_files.limit": "\(openFiles)", "concurrency.asked": "\(configuration.concurrency)",
                           "concurrency": "\(fitted)",
                           "fix": "raise the limit (ulimit -n, LimitNOFILE= in systemd, --ulimit nofile= in Docker) or lower HERALD_CONCURRENCY"])
            configuration.concurrency = fitted
        }
        let metricsAddress = self.metricsAddress ?? environment["HERALD_METRICS_ADDR"] ?? "127.0.0.1:9464"
        configuration.sampleBacklog = metricsAddress != "off"
        let registry = PrometheusCollectorRegistry()
        if metricsAddress != "off" {
            var factory = PrometheusMetricsFactory(registry: registry)
            factory.durationHistogramBuckets["herald_attempt_duration_seconds"] =
                [.milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100),
                 .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2.5), .seconds(5), .seconds(10)]
            factory.valueHistogramBuckets["herald_claim_batch_size"] = [0, 1, 4, 16, 64, 256, 1024]
            MetricsSystem.bootstrap(factory)
        }
        var startup = Logger.Metadata()
        startup["metrics"] = "\(metricsAddress)"

        for (key, value) in configuration.summary { startup[key] = "\(value)" }

        let worker = Worker(configuration: configuration, logger: logger)
        // Before "starting" is logged: a supervisor (or a test) that sends SIGTERM as soon as it reads that line must
        // find the trap in place. Before the trap a SIGTERM kills the worker at once, and one that lands inside its
        // set-up (SIG_IGN, then the dispatch source) can be lost, leaving the worker running.
        let signals = SignalTrap { count in
            if count == 1 {
                worker.stop()
            } else {
                logger.warning("second signal: exiting now; leases of attempts in flight will expire and be retried")
                Foundation.exit(1)
            }
        }
        logger.info("herald \(HeraldVersion.current) starting", metadata: startup)
        var server: MetricsServer?
        if metricsAddress != "off" {
            do {
                server = try MetricsServer(address: metricsAddress, registry: registry) { worker.isHealthy }
            } catch {
                // Metrics are not worth refusing to deliver over (e.g. a second worker on the same port).
                logger.warning("no /metrics and /healthz", metadata: ["error": "\(error)"])
            }
        }
        worker.run()
        _ = signals
        _ = server
        logger.info("stopped")
    }
}

/// SIGTERM and SIGINT, handled on a dispatch queue instead of in a signal handler, so the handler may log.
final class SignalTrap {
    private let sources: [any DispatchSourceSignal]

    init(_ handler: @escaping @Sendable (Int) -> Void) {
        let queue = DispatchQueue(label: "herald.signals")
        let counter = Counter()
        sources = [SIGTERM, SIGINT].map { number in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: queue)
            source.setEventHandler { handler(counter.increment()) }
            source.resume()
            return source
        }
    }

    /// Only touched on the serial signal queue.
    private final class Counter: @unchecked Sendable {
        private var value = 0
        func increment() -> Int {
            value += 1
            return value
        }
    }
}
