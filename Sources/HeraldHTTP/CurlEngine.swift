internal import CCurl
import Foundation
import HeraldCore
import Synchronization

/// Sends HTTP requests with one libcurl multi handle on one dedicated thread.
///
/// Why a thread of its own: waiting for sockets blocks, and blocking Swift's cooperative pool (two threads on a
/// two-core machine) would stall everything else. Why one multi handle for the life of the process: its
/// connection cache is what gives keep-alive reuse across deliveries to the same endpoint.
///
/// Why the multi_socket API on epoll rather than `curl_multi_perform` and `curl_multi_poll`: those visit every
/// transfer on every wake-up (a poll of each one's socket), so with 512 requests in flight each answer cost 512
/// system calls, about half of a worker's CPU with receivers answering in 200 ms (perf). Here curl tells the
/// engine which sockets to watch and for what (`SocketWatch`), and only the transfers whose sockets are ready
/// are run.
///
/// `submit` may be called from any thread; completions are called on the engine thread and must be quick.
public final class CurlEngine: Sendable {
    /// How requests are sent. Defaults are the secure ones.
    public struct Configuration: Sendable {
        /// Which addresses may be connected to (the SSRF guard). Default: public addresses only.
        public var addressPolicy: AddressPolicy = AddressPolicy()
        /// Response bytes kept per attempt; the rest is not read. Default 64 KiB.
        public var maxResponseBytes: Int = 64 * 1024
        /// A PEM bundle of trusted CAs, instead of the system's.
        public var caFile: String?
        public var userAgent: String = "Herald/\(HeraldVersion.current)"
        /// Connections kept open for reuse (CURLMOPT_MAXCONNECTS). At least the requests in flight, or connections
        /// are closed and opened again (a TLS handshake each) while the process runs at its concurrency.
        public var connectionCache: Int = 1024

        public init() {}
    }

    private struct Submission: Sendable {
        var request: HTTPRequest
        var completion: @Sendable (HTTPResponse) -> Void
    }

    private struct Shared: Sendable {
        var submissions: [Submission] = []
        var stopping = false
    }

    private let configuration: Configuration
    // The CURLM handle, stored as an address so the class can be Sendable: only the engine thread uses it after
    // `init`.
    private let multiAddress: UInt
    /// An eventfd that `submit` and `shutdown` write to, watched with curl's sockets: wakes the engine thread.
    /// Open for the engine's whole life (closed in `deinit`), so a late `wake()` never writes to a number the
    /// process has since reused for another file.
    private let wakeup: Int32
    private let shared = Mutex(Shared())
    private let finished = Mutex(false)

    public init(configuration: Configuration = Configuration()) {
        CurlEngine.globalInit
        self.configuration = configuration
        let multi = curl_multi_init()!
        _ = CCurl_multi_setopt_long(multi, CURLMOPT_MAXCONNECTS, configuration.connectionCache)
        multiAddress = UInt(bitPattern: multi)
        wakeup = eventfd(0, Int32(EFD_NONBLOCK | EFD_CLOEXEC))
        precondition(wakeup >= 0, "eventfd failed: errno \(errno)")
        let thread = Thread { [self] in self.run() }
        thread.name = "herald-http"
        thread.start()
    }

    /// Queues a request; `completion` is called once, on the engine thread, with the outcome.
    public func submit(_ request: HTTPRequest, completion: @escaping @Sendable (HTTPResponse) -> Void) {
        let accepted = shared.withLock { state -> Bool in
            if state.stopping { return false }
            state.submissions.append(Submission(request: request, completion: completion))
            return true
        }
        if accepted {
            wake()
        } else {
            completion(HTTPResponse(status: nil, body: [], bodyTruncated: false, retryAfter: nil,
                                    error: HTTPError(kind: .other, curlCode: nil, message: "the HTTP engine is shut down"),
                                    duration: .zero))
        }
    }

    /// Finishes the transfers in flight (each is bounded by its timeout), then stops the thread.
    public func shutdown() {
        shared.withLock { $0.stopping = true }
        wake()
        while !finished.withLock({ $0 }) { usleep(5_000) }
    }

    private func wake() {
        _ = eventfd_write(wakeup, 1)
    }

    deinit {
        _ = Glibc.close(wakeup)
    }

    private var multi: UnsafeMutableRawPointer { UnsafeMutableRawPointer(bitPattern: multiAddress)! }

    private static let globalInit: Void = {
        // Once per process: curl_global_init is not thread-safe, and a write to a closed socket must not kill us.
        curl_global_init(Int(CURL_GLOBAL_DEFAULT))
        signal(SIGPIPE, SIG_IGN)
    }()

    // MARK: The engine thread

    private func run() {
        var active: [UInt: Transfer] = [:]
        var idleHandles: [UnsafeMutableRawPointer] = []
        let watch = SocketWatch(wakeup: wakeup)
        let watchPointer = Unmanaged.passUnretained(watch).toOpaque()
        _ = CCurl_multi_setopt_pointer(multi, CURLMOPT_SOCKETDATA, watchPointer)
        _ = CCurl_multi_setopt_socket_function(multi) { _, socket, what, userp, _ in
            Unmanaged<SocketWatch>.fromOpaque(userp!).takeUnretainedValue().watch(socket, what)
            return 0
        }
        _ = CCurl_multi_setopt_pointer(multi, CURLMOPT_TIMERDATA, watchPointer)
        _ = CCurl_multi_setopt_timer_function(multi) { _, milliseconds, userp in
            Unmanaged<SocketWatch>.fromOpaque(userp!).takeUnretainedValue().timerDue =
                milliseconds < 0 ? nil : .now + .milliseconds(milliseconds)
            return 0
        }
        var running: Int32 = 0
        while true {
            let (incoming, stopping) = shared.withLock { state in
                let taken = state.submissions
                state.submissions.removeAll(keepingCapacity: true)
                return (taken, state.stopping)
            }
            for submission in incoming {
                let easy = idleHandles.popLast() ?? curl_easy_init()!
                let transfer = Transfer(easy: easy, submission: submission.request, completion: submission.completion,
                                        configuration: configuration)
                if let failure = transfer.configure() {
                    transfer.complete(result: failure)
                    curl_easy_reset(easy)
                    idleHandles.append(easy)
                    continue
                }
                active[UInt(bitPattern: easy)] = transfer
                curl_multi_add_handle(multi, easy)  // curl sets its timer to "now": the transfer starts below
            }

            if let due = watch.timerDue, due <= .now {
                watch.timerDue = nil  // the action may set the next one
                curl_multi_socket_action(multi, CCurl_socket_timeout(), 0, &running)
            }
            var queued: Int32 = 0
            while let message = curl_multi_info_read(multi, &queued) {
                guard message.pointee.msg == CURLMSG_DONE, let easy = message.pointee.easy_handle else { continue }
                let code = message.pointee.data.result
                curl_multi_remove_handle(multi, easy)
                if let transfer = active.removeValue(forKey: UInt(bitPattern: easy)) {
                    transfer.complete(result: code)
                }
                curl_easy_reset(easy)
                idleHandles.append(easy)
            }

            if stopping && active.isEmpty && shared.withLock({ $0.submissions.isEmpty }) { break }
            for (socket, events) in watch.wait(timeout: watch.timerDue.map { $0 - .now } ?? .seconds(1)) {
                curl_multi_socket_action(multi, socket, events, &running)
            }
        }
        idleHandles.forEach { curl_easy_cleanup($0) }
        curl_multi_cleanup(multi)
        watch.close()
        finished.withLock { $0 = true }
    }
}

/// The sockets libcurl asks the engine to watch, on one epoll instance, and the time it asks to be called back
/// (`timerDue`). Used only on the engine thread: curl calls `watch` from inside the multi calls made there.
private final class SocketWatch {
    private let epoll: Int32
    private let wakeup: Int32
    private var watched: Set<Int32> = []
    private var events = [epoll_event](repeating: epoll_event(), count: 256)
    var timerDue: ContinuousClock.Instant?

    init(wakeup: Int32) {
        epoll = epoll_create1(Int32(EPOLL_CLOEXEC))
        precondition(epoll >= 0, "epoll_create1 failed: errno \(errno)")
        self.wakeup = wakeup
        var event = epoll_event()
        event.events = EPOLLIN.rawValue
        event.data.fd = wakeup
        precondition(epoll_ctl(epoll, EPOLL_CTL_ADD, wakeup, &event) == 0, "epoll_ctl failed: errno \(errno)")
    }

    /// curl's socket callback: watch `socket` for `what` (CURL_POLL_IN, _OUT, _INOUT), or stop (_REMOVE).
    func watch(_ socket: Int32, _ what: Int32) {
        if what == CURL_POLL_REMOVE {
            // curl says so before it closes the socket, so its number is not reused while still registered.
            if watched.remove(socket) != nil { _ = epoll_ctl(epoll, EPOLL_CTL_DEL, socket, nil) }
            return
        }
        var event = epoll_event()
        event.events = (what & CURL_POLL_IN != 0 ? EPOLLIN.rawValue : 0) | (what & CURL_POLL_OUT != 0 ? EPOLLOUT.rawValue : 0)
        event.data.fd = socket
        let known = !watched.insert(socket).inserted
        if epoll_ctl(epoll, known ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, socket, &event) != 0 {
            // Registered under a number the kernel already dropped (closed), or the other way round: the other op.
            _ = epoll_ctl(epoll, known ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, socket, &event)
        }
    }

    /// Waits up to `timeout` (at most a second, at least nothing) for ready sockets; returns them with curl's
    /// CURL_CSELECT bits. A wake-up from `submit` or `shutdown` is consumed here and returns no socket.
    func wait(timeout: Duration) -> [(Int32, Int32)] {
        // Clamped first (curl's timers can be hours away), then rounded up, so a timer due in 0.3 ms is not
        // waited for with a busy loop of zero-timeout waits.
        let clamped = max(.zero, min(timeout, .seconds(1))).components
        let milliseconds = Int32(clamped.seconds * 1000 + (clamped.attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000)
        let count = events.withUnsafeMutableBufferPointer { buffer in
            epoll_wait(epoll, buffer.baseAddress, Int32(buffer.count), milliseconds)
        }
        guard count > 0 else { return [] }
        var ready: [(Int32, Int32)] = []
        ready.reserveCapacity(Int(count))
        for event in events[0..<Int(count)] {
            let socket = event.data.fd
            if socket == wakeup {
                var value: eventfd_t = 0
                _ = eventfd_read(wakeup, &value)
                continue
            }
            var bits: Int32 = 0
            if event.events & EPOLLIN.rawValue != 0 { bits |= CURL_CSELECT_IN }
            if event.events & EPOLLOUT.rawValue != 0 { bits |= CURL_CSELECT_OUT }
            if event.events & (EPOLLERR.rawValue | EPOLLHUP.rawValue) != 0 { bits |= CURL_CSELECT_ERR }
            ready.append((socket, bits))
        }
        return ready
    }

    /// Closes the epoll instance (the wake-up eventfd belongs to the engine).
    func close() {
        _ = Glibc.close(epoll)
    }
}

/// The state of one request while curl works on it. Owned by the engine thread; C callbacks reach it through
/// the `userdata` pointers curl hands back, as `Unmanaged` references that `Transfer` keeps valid.
private final class Transfer {
    let easy: UnsafeMutableRawPointer
    let request: HTTPRequest
    let completion: @Sendable (HTTPResponse) -> Void
    let configuration: CurlEngine.Configuration
    let started = ContinuousClock.now
    var headerList: UnsafeMutablePointer<curl_slist>?
    let errorBuffer = UnsafeMutablePointer<CChar>.allocate(capacity: Int(CURL_ERROR_SIZE) + 1)
    var body: [UInt8] = []
    var truncated = false
    var refusal: String?

    init(easy: UnsafeMutableRawPointer, submission: HTTPRequest, completion: @escaping @Sendable (HTTPResponse) -> Void,
         configuration: CurlEngine.Configuration) {
        self.easy = easy
        self.request = submission
        self.completion = completion
        self.configuration = configuration
        errorBuffer.initialize(repeating: 0, count: Int(CURL_ERROR_SIZE) + 1)
    }

    deinit {
        curl_slist_free_all(headerList)
        errorBuffer.deallocate()
    }

    /// Sets every option; returns a code when one is refused (e.g. an unsupported scheme).
    func configure() -> CURLcode? {
        let me = Unmanaged.passUnretained(self).toOpaque()
        var lines = ["Content-Type: application/json", "Expect:"]
        lines.append(contentsOf: request.headers)
        for line in lines { headerList = curl_slist_append(headerList, line) }
        let timeout = max(1, Int(request.timeout.milliseconds))
        var codes: [CURLcode] = [
            CCurl_easy_setopt_string(easy, CURLOPT_URL, request.url),
            CCurl_easy_setopt_long(easy, CURLOPT_NOSIGNAL, 1),
            CCurl_easy_setopt_string(easy, CURLOPT_PROTOCOLS_STR, "http,https"),
            CCurl_easy_setopt_long(easy, CURLOPT_FOLLOWLOCATION, 0),
            // Proxies from the environment would hide the real destination from the address policy.
            CCurl_easy_setopt_string(easy, CURLOPT_PROXY, ""),
            CCurl_easy_setopt_long(easy, CURLOPT_TIMEOUT_MS, timeout),
            CCurl_easy_setopt_long(easy, CURLOPT_CONNECTTIMEOUT_MS, timeout),
            CCurl_easy_setopt_long(easy, CURLOPT_SSL_VERIFYPEER, 1),
            CCurl_easy_setopt_long(easy, CURLOPT_SSL_VERIFYHOST, 2),
            CCurl_easy_setopt_long(easy, CURLOPT_TCP_NODELAY, 1),
            CCurl_easy_setopt_string(easy, CURLOPT_USERAGENT, configuration.userAgent),
            CCurl_easy_setopt_slist(easy, CURLOPT_HTTPHEADER, headerList),
            CCurl_easy_setopt_long(easy, CURLOPT_POST, 1),
            CCurl_easy_setopt_off_t(easy, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(request.body.count)),
            CCurl_easy_setopt_pointer(easy, CURLOPT_ERRORBUFFER, errorBuffer),
            CCurl_easy_setopt_pointer(easy, CURLOPT_PRIVATE, me),
            CCurl_easy_setopt_write_function(easy, transferWrite),
            CCurl_easy_setopt_pointer(easy, CURLOPT_WRITEDATA, me),
            CCurl_easy_setopt_opensocket_function(easy, transferOpenSocket),
            CCurl_easy_setopt_pointer(easy, CURLOPT_OPENSOCKETDATA, me),
        ]
        codes.append(request.body.withUnsafeBufferPointer { bytes in
            // COPYPOSTFIELDS copies, so the body need not outlive this call.
            CCurl_easy_setopt_pointer(easy, CURLOPT_COPYPOSTFIELDS, bytes.baseAddress ?? UnsafePointer(bitPattern: 1))
        })
        if let caFile = configuration.caFile {
            codes.append(CCurl_easy_setopt_string(easy, CURLOPT_CAINFO, caFile))
        }
        return codes.first { $0 != CURLE_OK }
    }

    func complete(result: CURLcode) {
        let duration = ContinuousClock.now - started
        var status: Int?
        var error: HTTPError?
        var responseCode: Int = 0
        _ = CCurl_easy_getinfo_long(easy, CURLINFO_RESPONSE_CODE, &responseCode)
        if result == CURLE_OK || (result == CURLE_WRITE_ERROR && truncated && responseCode > 0) {
            // A body larger than the cap is cut off on purpose; the status line already said what we need.
            status = responseCode
        } else {
            error = describe(result, duration: duration)
        }
        var retryAfter: String?
        var header: UnsafeMutablePointer<curl_header>?
        if status != nil, curl_easy_header(easy, "Retry-After", 0, UInt32(CURLH_HEADER), -1, &header) == CURLHE_OK,
           let value = header?.pointee.value {
            retryAfter = String(cString: value)
        }
        completion(HTTPResponse(status: status, body: body, bodyTruncated: truncated, retryAfter: retryAfter,
                                error: error, duration: duration))
    }

    private func describe(_ code: CURLcode, duration: Duration) -> HTTPError {
        let detail = String(cString: errorBuffer)
        let text = detail.isEmpty ? String(cString: curl_easy_strerror(code)) : detail
        let raw = Int(code.rawValue)
        switch code {
        case CURLE_OPERATION_TIMEDOUT:
            return HTTPError(kind: .timeout, curlCode: raw,
                             message: "timeout after \(Int(request.timeout.milliseconds)) ms (\(text))")
        case CURLE_COULDNT_CONNECT where refusal != nil, CURLE_COULDNT_RESOLVE_HOST where refusal != nil:
            return HTTPError(kind: .refusedAddress, curlCode: raw, message: refusal!)
        case CURLE_COULDNT_RESOLVE_HOST:
            return HTTPError(kind: .dns, curlCode: raw, message: "could not resolve host: \(text)")
        case CURLE_COULDNT_CONNECT:
            return HTTPError(kind: .connect, curlCode: raw, message: "could not connect: \(text)")
        case CURLE_SSL_CONNECT_ERROR, CURLE_PEER_FAILED_VERIFICATION, CURLE_SSL_CERTPROBLEM,
             CURLE_SSL_CIPHER, CURLE_SSL_CACERT_BADFILE, CURLE_SSL_ISSUER_ERROR:
            return HTTPError(kind: .tls, curlCode: raw, message: "TLS error: \(text)")
        case CURLE_UNSUPPORTED_PROTOCOL, CURLE_URL_MALFORMAT:
            return HTTPError(kind: .invalidURL, curlCode: raw, message: "invalid URL: \(text)")
        case CURLE_GOT_NOTHING, CURLE_RECV_ERROR, CURLE_SEND_ERROR, CURLE_PARTIAL_FILE, CURLE_WEIRD_SERVER_REPLY,
             CURLE_HTTP2, CURLE_HTTP2_STREAM:
            return HTTPError(kind: .connectionLost, curlCode: raw, message: "connection lost: \(text)")
        default:
            return HTTPError(kind: .other, curlCode: raw, message: "\(text) (curl error \(raw))")
        }
    }

    fileprivate func receive(_ bytes: UnsafeRawBufferPointer) -> Int {
        let room = configuration.maxResponseBytes - body.count
        if bytes.count > room {
            body.append(contentsOf: bytes.prefix(max(0, room)))
            truncated = true
            return 0  // stop reading: the status is known and the rest is not kept anyway
        }
        body.append(contentsOf: bytes)
        return bytes.count
    }

    /// Called by curl right before it connects, with the address it is about to use: checking here (rather than
    /// resolving first and pinning) judges the very address the socket connects to, so DNS rebinding between
    /// a check and the connect is impossible, and DNS stays inside curl's timeout.
    fileprivate func openSocket(family: Int32, type: Int32, protocol proto: Int32, address: UnsafePointer<sockaddr>) -> Int32 {
        guard refusal == nil else { return -1 }   // one refused address refuses the whole attempt
        guard let ip = IPAddress(socketAddress: address, family: family) else {
            refusal = "refused: address family \(family) is neither IPv4 nor IPv6"
            return -1
        }
        if case let .refused(reason) = configuration.addressPolicy.check(ip) {
            refusal = "refused: \(reason)"
            return -1
        }
        return socket(family, type | Int32(SOCK_CLOEXEC.rawValue), proto)
    }
}

private let transferWrite: curl_write_callback = { data, size, count, userdata in
    guard let userdata else { return 0 }
    let transfer = Unmanaged<Transfer>.fromOpaque(userdata).takeUnretainedValue()
    return transfer.receive(UnsafeRawBufferPointer(start: data, count: size * count))
}

private let transferOpenSocket: curl_opensocket_callback = { userdata, _, address in
    guard let userdata, let address else { return -1 }
    let transfer = Unmanaged<Transfer>.fromOpaque(userdata).takeUnretainedValue()
    return transfer.openSocket(family: CCurl_sockaddr_family(address), type: CCurl_sockaddr_socktype(address),
                               protocol: CCurl_sockaddr_protocol(address), address: CCurl_sockaddr_addr(address))
}
