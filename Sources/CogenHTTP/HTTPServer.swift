public import CogenUring
import Synchronization
public import HTTPTypes
public import Logging
internal import CURing

/// An HTTP/1.1 server on CogenUring: N schedulers, one ring each; one coroutine per
/// connection on the scheduler that accepted it, and the responder runs there, on the ring
/// thread, with no hop to another executor.
///
/// Accepts go through `IORING_OP_ACCEPT` (multishot), receives through the multishot
/// `IORING_OP_RECV` into the scheduler's provided-buffer ring, responses through
/// `IORING_OP_SEND` / `IORING_OP_SENDMSG`; on epoll, `accept4`, `recv`, `send`/`sendmsg` at
/// readiness.
public final class HTTPServer: Sendable {
    /// How the server listens, and what it allows its clients.
    public struct Configuration: Sendable {
        /// Where to listen (TCP or a Unix path); port 0 picks a free port (see ``HTTPServer/address``).
        public var address: SocketAddress
        /// Schedulers, one thread each; by default the CPUs the process may use
        /// (`sched_getaffinity`).
        public var threads: Int = HTTPServer.availableCPUs
        /// The I/O engine of every scheduler.
        public var backend: Backend {
            get { scheduler.backend }
            set { scheduler.backend = newValue }
        }
        /// The `Server` header of every response; `nil` sends none.
        public var serverName: String? = "cogen"
        /// Sizes a request must fit, each checked while receiving.
        public var limits = Limits()
        /// Deadlines for slow or silent clients.
        public var timeouts = Timeouts()
        /// The most connections each scheduler serves at once (`nil`: no cap but the
        /// descriptor limit); further ones wait in the kernel's backlog.
        public var maxConnectionsPerScheduler: Int? = nil
        /// The `listen(2)` backlog of each listener.
        public var backlog: Int32 = 4096
        /// Each scheduler's configuration (ring size, buffers, read-ahead limit). The server
        /// raises a read-ahead limit below `max(maxChunkExtensionLength, maxTrailerSize) +
        /// 1024`: a chunk line is looked at whole among the held bytes. (Heads need no
        /// room: the parser copies them as they arrive.)
        public var scheduler = Scheduler.Configuration()
        /// The grace period of a shutdown that ServiceLifecycle (``run()``) starts.
        public var shutdownGracePeriod: Duration = .seconds(10)
        /// Where responder errors and rejected requests are logged.
        public var logger = Logger(label: "cogen.http")

        /// A server on `address`, with the defaults.
        public init(address: SocketAddress) { self.address = address }
    }

    /// The sizes a request must fit. Each is checked as the bytes arrive, never after.
    public struct Limits: Sendable, Hashable {
        /// The longest request line, CRLF excluded: 414 past it.
        public var maxRequestLineLength = 8192
        /// The largest header section: 431 past it.
        public var maxHeaderSectionSize = 16384
        /// The most header field lines: 431 past it.
        public var maxFieldCount = 100
        /// The largest request body, `Content-Length` or chunked: 413 past it (or, once the
        /// response head was sent, the connection closes).
        public var maxBodySize: Int64 = 1 << 20
        /// The longest chunk extension of one chunk line: 400 past it.
        public var maxChunkExtensionLength = 1024
        /// The largest trailer section of a chunked body: 431 past it.
        public var maxTrailerSize = 8192
        /// The most requests answered from one receive before their responses are sent.
        public var maxPipelinedRequests = 64
        /// Whole-body responses to pipelined requests are coalesced into one send of at
        /// most this many bytes.
        public var maxCoalescedBytes = 65536
        /// An unread request body is read and dropped, up to this many bytes, before the
        /// next request; a longer one closes the connection instead.
        public var maxDrainSize: Int64 = 65536

        /// The defaults.
        public init() {}
    }

    /// Deadlines for slow or silent clients.
    public struct Timeouts: Sendable, Hashable {
        /// From a request's first byte to the end of its head: 408, then close. A total
        /// deadline, not reset by each byte (slowloris).
        public var requestHead: Duration = .seconds(10)
        /// Between requests, before a request's first byte: the connection closes silently.
        public var idle: Duration = .seconds(60)
        /// The longest wait for the next bytes of a request body: 408 (or a close, once
        /// the response head was sent).
        public var bodyInactivity: Duration = .seconds(30)
        /// The longest wait for a blocked send to make progress: the connection is cut.
        public var sendInactivity: Duration = .seconds(30)
        /// After an error response: how long the half-closed connection is drained (RFC
        /// 9112 §9.6 lingering close) so the client reads the response.
        public var linger: Duration = .seconds(2)

        /// The defaults.
        public init() {}
    }

    /// The CPUs this process may run on (`sched_getaffinity`, `CPU_COUNT`), at least 1.
    public static var availableCPUs: Int { Int(cogen_available_cpus()) }

    /// The address the listeners are bound to (with the port `bind` chose).
    public var address: SocketAddress { server.address }

    /// The configuration the server runs with (after the adjustments its initializer makes:
    /// the read-ahead floor, at least one pipelined request).
    public let configuration: Configuration
    /// The connection server underneath: listeners, schedulers, graceful shutdown.
    let server: Server
    /// How many `run()` calls (ServiceLifecycle) are waiting for their stop signal: tests
    /// wait for it before they cancel the task that runs the group.
    let serviceWaiters = Atomic<Int>(0)
    /// Per-scheduler counters and `Date` caches.
    let contexts: SchedulerContexts

    /// Starts serving: binds, listens, and starts the schedulers' threads.
    /// - Parameters:
    ///   - configuration: Address, threads, backend, limits, timeouts.
    ///   - responder: Answers every request (a ``Router``, or a type of your own).
    /// - Throws: ``RingSetupError``, ``SocketError`` (`EADDRINUSE`…), ``IOError``.
    ///
    /// Uses `IORING_OP_ACCEPT` (multishot) per listener; epoll: `accept4(2)`.
    public init(configuration: Configuration, responder: some HTTPResponder) throws {
        var configuration = configuration
        // A chunk line or a trailer line is looked at whole in the socket's held bytes
        // (the head parser copies as it goes and needs no room): keep the read-ahead limit
        // above those limits.
        let needed = max(configuration.limits.maxChunkExtensionLength, configuration.limits.maxTrailerSize) + 1024
        if configuration.scheduler.readAheadLimit < needed { configuration.scheduler.readAheadLimit = needed }
        configuration.limits.maxPipelinedRequests = max(1, configuration.limits.maxPipelinedRequests)
        var serverConfiguration = Server.Configuration(address: configuration.address)
        serverConfiguration.threads = configuration.threads
        serverConfiguration.backlog = configuration.backlog
        serverConfiguration.maxConnectionsPerScheduler = configuration.maxConnectionsPerScheduler
        serverConfiguration.scheduler = configuration.scheduler
        let setup = ConnectionSetup(configuration: configuration, responder: responder)
        let contexts = SchedulerContexts(serverLine: setup.serverLine)
        self.configuration = configuration
        self.contexts = contexts
        self.server = try Server(configuration: serverConfiguration, connectionHandler: { connection in
            let context = contexts.context(for: connection.scheduler)
            let exchange = HTTPExchange(connection: connection, setup: setup, context: context)
            await exchange.serve()
        })
    }

    /// Starts serving with a closure as the responder.
    /// - Parameters:
    ///   - configuration: Address, threads, backend, limits, timeouts.
    ///   - handler: Answers every request.
    /// - Throws: As ``init(configuration:responder:)``.
    public convenience init(
        configuration: Configuration, handler: @escaping @Sendable (HTTPExchange) async throws -> Void
    ) throws {
        try self.init(configuration: configuration, responder: ClosureResponder(handler))
    }

    /// The counters so far, summed over the schedulers. Safe from any thread.
    public var statistics: Statistics { contexts.statistics }

    /// The listeners' descriptors, while they are open (tests identify them).
    var listenerDescriptors: [Int32] { server.listenerDescriptors }

    /// Stops accepting, closes idle keep-alive connections at once, lets requests in
    /// flight finish within `gracePeriod`, then cuts the rest; blocks the calling thread
    /// until the schedulers are shut down. From a task, use ``gracefulShutdown(gracePeriod:)``.
    /// - Parameter gracePeriod: How long requests in flight may run on.
    /// - Returns: What was served and cut.
    @discardableResult
    public func shutdown(gracePeriod: Duration = .seconds(5)) -> Report {
        report(server.shutdown(gracePeriod: gracePeriod))
    }

    /// ``shutdown(gracePeriod:)`` without blocking a cooperative-pool thread.
    /// - Parameter gracePeriod: How long requests in flight may run on.
    /// - Returns: What was served and cut.
    @discardableResult
    public func gracefulShutdown(gracePeriod: Duration = .seconds(5)) async -> Report {
        report(await server.gracefulShutdown(gracePeriod: gracePeriod))
    }

    private func report(_ serverReport: Server.Report) -> Report {
        var report = Report()
        report.served = serverReport.served
        report.closedWhileIdle = serverReport.closedWhileIdle
        report.cut = serverReport.cut
        report.statistics = statistics
        return report
    }
}

/// What every connection of a server shares (immutable): configuration, responder, and
/// the pre-rendered bytes of the `Server` header.
final class ConnectionSetup: Sendable {
    let limits: HTTPServer.Limits
    let timeouts: HTTPServer.Timeouts
    let parserLimits: RequestHeadParser.Limits
    let logger: Logger
    let responder: any HTTPResponder
    /// `Server: <name>\r\n`, or empty.
    let serverLine: [UInt8]
    /// `timeouts.idle` in nanoseconds (set once per request).
    let idleNanoseconds: UInt64

    init(configuration: HTTPServer.Configuration, responder: any HTTPResponder) {
        limits = configuration.limits
        timeouts = configuration.timeouts
        parserLimits = RequestHeadParser.Limits(
            maxRequestLineLength: configuration.limits.maxRequestLineLength,
            maxHeaderSectionSize: configuration.limits.maxHeaderSectionSize,
            maxFieldCount: configuration.limits.maxFieldCount,
            maxContentLength: configuration.limits.maxBodySize)
        logger = configuration.logger
        self.responder = responder
        idleNanoseconds = Deadline.nanoseconds(of: configuration.timeouts.idle)
        if let name = configuration.serverName {
            // Only visible ASCII and spaces go into the header line.
            let clean = name.utf8.map { $0 >= 0x20 && $0 < 0x7F ? $0 : UInt8(ascii: " ") }
            serverLine = Array("Server: ".utf8) + clean + [13, 10]
        } else {
            serverLine = []
        }
    }
}

extension HTTPServer {
    /// What the server has done so far: a snapshot of per-scheduler counters (relaxed
    /// atomics, summed), safe to read from any thread.
    public struct Statistics: Sendable, Hashable, CustomStringConvertible {
        /// Connections accepted.
        public var connectionsAccepted = 0
        /// Connections open now.
        public var connectionsOpen = 0
        /// Requests whose head was parsed.
        public var requests = 0
        /// Responses sent, by status class: index 0 for 1xx (100 Continue excluded) … 4 for 5xx.
        public var responsesByClass: [Int] = [0, 0, 0, 0, 0]
        /// Requests rejected by the parser or the body decoder (400, 413, 414, 417, 431, 501, 505).
        public var parseErrors = 0
        /// Request-head deadlines that passed (408).
        public var headTimeouts = 0
        /// Idle keep-alive connections closed by the idle timeout.
        public var idleTimeouts = 0
        /// Request bodies that stalled past the body inactivity timeout.
        public var bodyTimeouts = 0
        /// Responder errors (a 500 before the head was sent, a cut connection after).
        public var handlerErrors = 0

        /// Creates zeroed statistics.
        public init() {}

        public var description: String {
            "connections \(connectionsAccepted) (open \(connectionsOpen)), requests \(requests), "
                + "responses 1xx-5xx \(responsesByClass), parse errors \(parseErrors), "
                + "timeouts head \(headTimeouts) idle \(idleTimeouts) body \(bodyTimeouts), "
                + "handler errors \(handlerErrors)"
        }
    }

    /// What a shutdown did: connections served to their end, closed while idle, or cut
    /// at the end of the grace period, and the requests served.
    public struct Report: Sendable, Hashable, CustomStringConvertible {
        /// Connections whose coroutine ended by itself (the peer closed, or a request
        /// asked for `Connection: close`), during the server's life or its grace period.
        public var served = 0
        /// Idle keep-alive connections the shutdown closed at once.
        public var closedWhileIdle = 0
        /// Connections still in a request at the end of the grace period, cut.
        public var cut = 0
        /// The counters at the end.
        public var statistics = Statistics()

        /// Creates an empty report.
        public init() {}

        public var description: String {
            "served \(served), closed while idle \(closedWhileIdle), cut \(cut); \(statistics)"
        }
    }
}
