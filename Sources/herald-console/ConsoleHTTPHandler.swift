import HeraldConsole
import NIOCore
import NIOHTTP1
import NIOPosix

/// Turns NIO's HTTP/1.1 request parts into a `ConsoleRequest`, runs the console on the blocking thread pool
/// (pages query PostgreSQL through libpq, which blocks), and writes the `ConsoleResponse` back on the event loop.
final class ConsoleHTTPHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    /// The largest request body read: the console's forms are a few hundred bytes.
    static let bodyLimit = 64 * 1024

    private let app: ConsoleApp
    private let threadPool: NIOThreadPool
    private var head: HTTPRequestHead?
    private var body: [UInt8] = []
    private var tooLarge = false

    init(app: ConsoleApp, threadPool: NIOThreadPool) {
        self.app = app
        self.threadPool = threadPool
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
            body = []
            tooLarge = false
        case .body(var buffer):
            if tooLarge || body.count + buffer.readableBytes > ConsoleHTTPHandler.bodyLimit {
                tooLarge = true
            } else {
                body += buffer.readBytes(length: buffer.readableBytes) ?? []
            }
        case .end:
            guard let head else { return }
            self.head = nil
            let keepAlive = head.isKeepAlive
            if tooLarge {
                write(ConsoleResponse.text("request body too large", status: 413), head: head, keepAlive: false,
                      context: context)
                return
            }
            let request = ConsoleRequest(method: head.method.rawValue, target: head.uri,
                                         headers: head.headers.map { ($0.name, $0.value) }, body: body)
            body = []
            let app = self.app
            let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            threadPool.runIfActive(eventLoop: context.eventLoop) { app.handle(request) }.whenComplete { result in
                let (handler, context) = bound.value
                let response = (try? result.get()) ?? ConsoleResponse.text("the console is shutting down", status: 503)
                if request.method == "POST" || response.status >= 500 {
                    // Actions and failures only, and never a header or a form field: no token reaches the log.
                    say("\(request.method) \(request.path) \(response.status)")
                }
                handler.write(response, head: head, keepAlive: keepAlive, context: context)
            }
        }
    }

    private func write(_ response: ConsoleResponse, head: HTTPRequestHead, keepAlive: Bool,
                       context: ChannelHandlerContext) {
        var headers = HTTPHeaders(response.headers)
        headers.replaceOrAdd(name: "Content-Length", value: String(response.body.count))
        if !keepAlive { headers.replaceOrAdd(name: "Connection", value: "close") }
        let status = HTTPResponseStatus(statusCode: response.status)
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))),
                      promise: nil)
        if head.method != .HEAD && !response.body.isEmpty {
            var buffer = context.channel.allocator.buffer(capacity: response.body.count)
            buffer.writeBytes(response.body)
            context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        }
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in
            if !keepAlive { channel.close(promise: nil) }
        }
    }
}
