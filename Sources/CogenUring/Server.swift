import Glibc
import Synchronization

/// A TCP or Unix-domain server: listens, runs one handler coroutine per connection, and
/// shuts down gracefully. With several threads, each runs a scheduler of its own: for TCP
/// each has its own `SO_REUSEPORT` listener on the same port (the kernel spreads
/// connections among them); a Unix path, which cannot be bound twice, is bound once and
/// each other scheduler serves a duplicate of that listening socket
/// (`fcntl(F_DUPFD_CLOEXEC)`), so they take connections from one queue.
///
/// Accepting survives descriptor exhaustion: `EMFILE`/`ENFILE` are counted, and accepting
/// resumes as soon as a connection of that scheduler ends, or after ``Configuration/acceptBackoff``,
/// never in a spin, while the established connections keep being served. With
/// ``Configuration/maxConnectionsPerScheduler`` a scheduler stops accepting at the cap
/// (its multishot accept is cancelled, so the kernel's backlog holds the rest) and
/// accepts again when one of its connections ends.
///
/// **Per-connection state needs no table.** A handler is a coroutine that lives as long as
/// its connection: its local variables are the connection's state, on no shared
/// structure, gone when it returns.
///
/// ```swift
/// let server = try Server(configuration: .init(address: .loopback(port: 8080))) { connection in
///     var requests = 0                  // this connection's own state
///     var pending: [UInt8] = []
///     while true {
///         // Idle between requests: shutdown ends this wait (ServerShutdownRequestedError).
///         let bytes = try await connection.receive()
///         if bytes.isEmpty { return }   // the peer closed
///         pending += bytes
///         while let end = pending.firstIndex(of: UInt8(ascii: "\n")) {
///             requests += 1
///             // In the middle of a request: plain socket calls, which shutdown lets
///             // finish within the grace period.
///             try await connection.socket.sendAll(Array("\(requests): ".utf8) + pending[...end])
///             pending.removeSubrange(...end)
///         }
///     }
/// }
/// // ... later, from a Task (never blocks a cooperative-pool thread):
/// let report = await server.gracefulShutdown(gracePeriod: .seconds(5))
/// ```
///
/// **Unix socket files.** Before binding a Unix path, a stale socket file there (one
/// nobody listens on: a `connect` is refused) is removed; a live one, or a file that is
/// not a socket, makes the initializer throw `EADDRINUSE`. The file is removed at the end
/// of the shutdown, if it is still the one this server bound. Abstract addresses have no
/// file.
public final class Server: Sendable {
    /// How a server listens and runs.
    public struct Configuration: Sendable {
        /// Where to listen; port 0 picks a free port (see ``Server/address``).
        public var address: SocketAddress
        /// Schedulers, each on its own thread with its own listener (TCP) or its own
        /// duplicate of the one listener (Unix).
        public var threads: Int = 1
        /// The `listen(2)` backlog of each listener.
        public var backlog: Int32 = 4096
        /// Options for accepted connections (`TCP_NODELAY` by default).
        public var connectionOptions: [SocketOption] = [.noDelay(true)]
        /// The wait before accepting again after `EMFILE`/`ENFILE`, unless a connection
        /// ends first.
        public var acceptBackoff: Duration = .milliseconds(50)
        /// The most connections each scheduler serves at once; `nil` (the default): no
        /// limit but the descriptor limit. At the cap a scheduler stops accepting (its
        /// multishot `IORING_OP_ACCEPT` is cancelled; no single-shot accept is issued), so
        /// further connections wait in the kernel's backlog, and it accepts again when one
        /// of its connections ends. Must be at least 1.
        public var maxConnectionsPerScheduler: Int? = nil
        /// The configuration of each scheduler.
        public var scheduler = Scheduler.Configuration()

        /// A server on `address`.
        public init(address: SocketAddress) { self.address = address }
    }

    /// What a server did, once shut down. Every connection is counted once: served,
    /// closed while idle, or cut.
    public struct Report: Sendable, Equatable, CustomStringConvertible {
        /// Connections whose handler ended by itself.
        public var served: Int
        /// Connections whose handler was cancelled at the end of the grace period.
        public var cut: Int
        /// Accepts that failed for lack of descriptors (`EMFILE`, `ENFILE`).
        public var descriptorExhaustions: Int
        /// Connections that ended because the shutdown found them idle: their handler was
        /// waiting in ``Connection/untilShutdown(_:)`` (or called it after the shutdown
        /// began), which threw ``ServerShutdownRequestedError``.
        public var closedWhileIdle: Int = 0

        public var description: String {
            "served \(served), closed while idle \(closedWhileIdle), cut \(cut), "
                + "descriptor exhaustions \(descriptorExhaustions)"
        }
    }

    /// One accepted connection as its handler sees it: the socket, and the server's
    /// shutdown signal.
    ///
    /// A handler separates idle time (waiting for the next request) from work (reading
    /// the rest of a request, sending the response): it waits for a request inside
    /// ``untilShutdown(_:)`` (or with ``receive(maxLength:deadline:placement:)``), which
    /// the shutdown ends at once with ``ServerShutdownRequestedError``; everything else
    /// runs on within the grace period, after which the handler is cancelled.
    ///
    /// Confined to the connection's scheduler thread, like its socket.
    public final class Connection: @unchecked Sendable {
        // @unchecked Sendable: confined to its scheduler's thread (as `Socket`).

        /// The connection; the server closes it after the handler returns or throws.
        public let socket: Socket
        private let state: State
        /// The handler's coroutine (cancelled at the end of the grace period).
        fileprivate var coroutine: AnyCoroutine?
        /// The coroutine inside `untilShutdown` (the handler's, or one it spawned), whose
        /// current wait a shutdown ends; nil when the connection is not idle.
        fileprivate var idleCoroutine: AnyCoroutine?
        /// The shutdown ended the wait of the current `untilShutdown`.
        fileprivate var interrupted = false
        /// `untilShutdown` threw `ServerShutdownRequestedError`.
        fileprivate var closedWhileIdle = false

        fileprivate init(socket: Socket, state: State) {
            self.socket = socket
            self.state = state
        }

        /// The scheduler the connection (and its handler) runs on.
        public var scheduler: Scheduler { socket.scheduler }

        /// Whether the server's shutdown has begun. Read on the connection's scheduler
        /// thread.
        public var isShuttingDown: Bool { state.isShuttingDown }

        /// Waits until the server's shutdown begins (at once if it has): for a coroutine
        /// beside the handler, e.g. one that tells a long-lived stream's peer to go away.
        /// - Parameter deadline: When to stop waiting.
        /// - Throws: ``TimeoutError``, `CancellationError`, ``SchedulerShutdownError``.
        ///
        /// No kernel operation: a signal the shutdown raises.
        public func waitForShutdown(deadline: Deadline? = nil) async throws {
            socket.scheduler.assertOnLoop()
            if state.isShuttingDown { return }
            try await state.shutdownBegan.wait(deadline: deadline)
        }

        /// Runs `body` as idle time: the wait for the next request. If the server's
        /// shutdown begins while `body` is parked (or had begun before the call), the wait
        /// ends at once and this throws ``ServerShutdownRequestedError``; if bytes won
        /// that race, `body` returns them normally and the handler serves that request
        /// within the grace period.
        ///
        /// `body` should wait once (one receive): the shutdown ends the wait `body` is
        /// parked in when it begins, and one more after the handlers queued then have run.
        /// Call it from a coroutine (the handler or one it spawned), one at a time per
        /// connection; in a plain task the shutdown cannot end its wait.
        /// - Parameter body: The wait, given the socket (e.g. `{ try await $0.receive() }`).
        /// - Returns: What `body` returns.
        /// - Throws: ``ServerShutdownRequestedError`` (whatever error the ended wait
        ///   gave), or what `body` throws.
        ///
        /// The shutdown ends a kernel operation with `IORING_OP_ASYNC_CANCEL` (on epoll, by
        /// taking it off its descriptor's queue); a wait for chunks of the multishot
        /// receive is resumed directly.
        public func untilShutdown<Value>(_ body: (Socket) async throws -> Value) async throws -> Value {
            socket.scheduler.assertOnLoop()
            guard !state.isShuttingDown else {
                closedWhileIdle = true
                throw ServerShutdownRequestedError()
            }
            // A plain task (not a coroutine) cannot have its wait ended: it waits as any.
            idleCoroutine = socket.scheduler.currentCoroutine()
            defer {
                idleCoroutine = nil
                interrupted = false
            }
            do {
                return try await body(socket)
            } catch {
                guard interrupted else { throw error }
                closedWhileIdle = true
                throw ServerShutdownRequestedError()
            }
        }

        /// Held bytes or shutdown, whichever comes first:
        /// ``Socket/waitForBytes(beyond:deadline:placement:)`` inside ``untilShutdown(_:)``,
        /// without the closure (a call through a closure makes the caller switch back to its
        /// executor afterwards: with a task executor preference, a lock of the task's status
        /// records per wait).
        /// - Parameters:
        ///   - count: How many held bytes the caller has looked at and still holds.
        ///   - deadline: When to give up.
        ///   - placement: Where the coroutine goes when bytes arrive after a wait.
        /// - Returns: `true` when more than `count` bytes are held; `false` at end of stream.
        /// - Throws: ``ServerShutdownRequestedError``, and what the wait throws.
        ///
        /// Uses the socket's multishot `IORING_OP_RECV` into the provided-buffer ring (or
        /// `IORING_OP_RECV`), `recv(2)` at readiness on epoll; the shutdown cancels a kernel
        /// wait (`IORING_OP_ASYNC_CANCEL`) or resumes a wait for chunks directly.
        public func waitForBytes(
            beyond count: Int, deadline: Deadline? = nil, placement: Placement = .back
        ) async throws -> Bool {
            socket.scheduler.assertOnLoop()
            guard !state.isShuttingDown else {
                closedWhileIdle = true
                throw ServerShutdownRequestedError()
            }
            idleCoroutine = socket.scheduler.currentCoroutine()
            defer {
                idleCoroutine = nil
                interrupted = false
            }
            do {
                return try await socket.waitForBytes(beyond: count, deadline: deadline, placement: placement)
            } catch {
                guard interrupted else { throw error }
                closedWhileIdle = true
                throw ServerShutdownRequestedError()
            }
        }

        /// Bytes or shutdown, whichever comes first: ``Socket/receive(maxLength:deadline:placement:)``
        /// inside ``untilShutdown(_:)``.
        /// - Parameters:
        ///   - maxLength: The most bytes to return.
        ///   - deadline: When to give up.
        ///   - placement: Where the coroutine goes when data arrives after a wait.
        /// - Returns: The bytes; empty at end of stream.
        /// - Throws: ``ServerShutdownRequestedError``, and what the receive throws.
        ///
        /// Uses `IORING_OP_RECV` (or the multishot receive from the provided-buffer ring),
        /// `recv(2)` on epoll; the shutdown cancels it (`IORING_OP_ASYNC_CANCEL`).
        public func receive(
            maxLength: Int = 65536, deadline: Deadline? = nil, placement: Placement = .back
        ) async throws -> [UInt8] {
            try await untilShutdown { try await $0.receive(maxLength: maxLength, deadline: deadline, placement: placement) }
        }

        /// Ends the handler's current wait if it is idle and parked (on the loop).
        fileprivate func interruptIfIdle() {
            guard !interrupted, let waiter = idleCoroutine?.waiter, waiter.isParked else { return }
            interrupted = true
            if let operation = waiter.operation {
                // Resumes after the final CQE: with TimeoutError, or the result that won.
                operation.requestCancel(.timeout)
            } else {
                scheduler.resumeRaw(waiter, throwing: ServerShutdownRequestedError(), placement: .back)
            }
        }
    }

    /// The schedulers, one per thread.
    public let schedulers: [Scheduler]
    /// The address the listeners are bound to (with the port `bind` chose).
    public let address: SocketAddress
    private let states: [State]
    private let unixFile: UnixSocketFile?
    private let shutdownBegun = Atomic<Bool>(false)

    /// Creates the schedulers and the listeners and starts serving; each connection's
    /// handler gets its socket.
    /// - Parameters:
    ///   - configuration: Address, threads, backlog, options, connection cap.
    ///   - handler: Runs once per connection, on the connection's scheduler; the server
    ///     closes the connection after it returns or throws (its error goes to the
    ///     scheduler's error handler).
    /// - Throws: As ``init(configuration:connectionHandler:)``.
    ///
    /// Listeners use plain `bind(2)`/`listen(2)`; accepts and all connection I/O go
    /// through each scheduler's ring (see ``Socket/accept(deadline:placement:)``).
    public convenience init(
        configuration: Configuration,
        handler: @escaping @Sendable (Socket) async throws -> Void
    ) throws {
        try self.init(configuration: configuration, connectionHandler: { try await handler($0.socket) })
    }

    /// Creates the schedulers and the listeners and starts serving; each connection's
    /// handler gets a ``Connection``: its socket and the server's shutdown signal.
    /// - Parameters:
    ///   - configuration: Address, threads, backlog, options, connection cap.
    ///   - connectionHandler: Runs once per connection, on the connection's scheduler;
    ///     the server closes the connection after it returns or throws (its error goes to
    ///     the scheduler's error handler, except ``ServerShutdownRequestedError``).
    /// - Throws: ``RingSetupError`` (also `EINVAL` when `threads` or
    ///   `maxConnectionsPerScheduler` is less than 1), ``SocketError`` (`EADDRINUSE`…),
    ///   ``IOError`` when a thread cannot be started (every scheduler is then shut down).
    ///
    /// Listeners use plain `bind(2)`/`listen(2)` (and `fcntl(F_DUPFD_CLOEXEC)` to share a
    /// Unix listener); accepts and all connection I/O go through each scheduler's ring.
    /// (Disfavoured so that a closure that would fit both initializers picks the
    /// ``Socket`` one, as before this one existed.)
    @_disfavoredOverload
    public init(
        configuration: Configuration,
        connectionHandler: @escaping @Sendable (Connection) async throws -> Void
    ) throws {
        guard configuration.threads >= 1 else {
            throw RingSetupError(
                errno: EINVAL, operation: "configure the server",
                message: "threads must be at least 1, got \(configuration.threads)")
        }
        if let cap = configuration.maxConnectionsPerScheduler, cap < 1 {
            throw RingSetupError(
                errno: EINVAL, operation: "configure the server",
                message: "maxConnectionsPerScheduler must be at least 1, got \(cap)")
        }
        let unixPath = configuration.address.unixFilePath
        var schedulers: [Scheduler] = []
        var states: [State] = []
        var address = configuration.address
        var unixFile: UnixSocketFile?
        do {
            for index in 0..<configuration.threads {
                let scheduler = try Scheduler(configuration: configuration.scheduler)
                schedulers.append(scheduler)
                let listener: Socket
                if configuration.address.family == .unix, let first = states.first?.listener {
                    listener = try first.duplicate(on: scheduler)
                } else {
                    if let unixPath { UnixSocketFile.removeIfStale(unixPath) }
                    var options: [SocketOption] = [.reuseAddress(true)]
                    if configuration.threads > 1 && configuration.address.family != .unix { options.append(.reusePort(true)) }
                    listener = try Socket.listening(
                        on: address, backlog: configuration.backlog, options: options, on: scheduler)
                    if index == 0 {
                        address = try listener.localAddress  // the others share its port
                        if let unixPath { unixFile = UnixSocketFile(path: unixPath) }
                    }
                }
                states.append(State(
                    scheduler: scheduler, listener: listener,
                    maxConnections: configuration.maxConnectionsPerScheduler ?? .max))
            }
        } catch {
            unixFile?.remove()
            throw error
        }
        self.schedulers = schedulers
        self.states = states
        self.address = address
        self.unixFile = unixFile
        for (index, state) in states.enumerated() {
            let options = configuration.connectionOptions
            let backoff = configuration.acceptBackoff
            state.scheduler.spawn("acceptor") {
                await state.acceptLoop(options: options, backoff: backoff, handler: connectionHandler)
            }
            do {
                try state.scheduler.start()
            } catch {
                // Started ones stop and shut down on their threads; the others here, unless
                // this thread runs a scheduler already (one per thread): they are then left
                // unstarted, their listeners open until the process ends.
                for (other, scheduler) in schedulers.enumerated() where other < index || Scheduler.current == nil {
                    scheduler.shutdown()
                }
                unixFile?.remove()
                throw error
            }
        }
    }

    /// The listeners' descriptors (tests read the kernel's accept queue through them).
    package var listenerDescriptors: [Int32] { states.map { $0.listener.descriptor } }

    /// Connections being served now, over all schedulers (handlers running). Safe from
    /// any thread; a relaxed read of one atomic per scheduler.
    public var connectionCount: Int { connectionCounts.reduce(0, +) }

    /// Connections being served now by each scheduler, in the order of ``schedulers``.
    /// Safe from any thread.
    public var connectionCounts: [Int] { states.map { $0.liveConnections.load(ordering: .relaxed) } }

    /// Stops accepting, ends idle connections at once, lets the other handlers finish
    /// within `gracePeriod`, cancels the rest, and shuts every scheduler down, blocking
    /// the calling thread until all that is done (it joins the schedulers' threads): for
    /// plain threads. From a Swift task use ``gracefulShutdown(gracePeriod:)``, which
    /// never blocks a cooperative-pool thread.
    ///
    /// Safe from any thread but the server's own schedulers'; call one of the two
    /// shutdowns, once.
    /// - Parameter gracePeriod: How long handlers may run on after accepting stops.
    /// - Returns: How many connections were served, closed while idle, and cut.
    ///
    /// Closing the listeners cancels their accepts (`IORING_OP_ASYNC_CANCEL`, then
    /// `IORING_OP_CLOSE`); an idle handler's receive is cancelled the same way.
    @discardableResult
    public func shutdown(gracePeriod: Duration = .seconds(5)) -> Report {
        if !shutdownBegun.exchange(true, ordering: .acquiringAndReleasing) {
            let deadline = Deadline.after(gracePeriod)
            for state in states {
                state.scheduler.execute {
                    state.scheduler.spawn("server shutdown") { await state.drain(until: deadline) }
                }
            }
        }
        for state in states { state.scheduler.join() }
        unixFile?.remove()
        return states.reduce(Report(served: 0, cut: 0, descriptorExhaustions: 0)) { total, state in
            let report = state.report.withLock { $0 }
            return Report(
                served: total.served + report.served, cut: total.cut + report.cut,
                descriptorExhaustions: total.descriptorExhaustions + report.descriptorExhaustions,
                closedWhileIdle: total.closedWhileIdle + report.closedWhileIdle)
        }
    }

    /// ``shutdown(gracePeriod:)`` for Swift tasks (a ServiceLifecycle `Service.run()`):
    /// it suspends instead of blocking, so no cooperative-pool thread is held during the
    /// grace period. A thread of its own (`pthread_create`, detached) does the joins and
    /// resumes the caller. Cancelling the calling task does not shorten the shutdown.
    ///
    /// Call one of the two shutdowns, once. Should no thread be available (`EAGAIN`),
    /// the joins run on the calling thread instead.
    /// - Parameter gracePeriod: How long handlers may run on after accepting stops.
    /// - Returns: How many connections were served, closed while idle, and cut.
    @discardableResult
    public func gracefulShutdown(gracePeriod: Duration = .seconds(5)) async -> Report {
        // The report goes through a pthread lock as well as the continuation
        // (ThreadSanitizer sees the lock; see `PthreadLock`).
        let outcome = PthreadLock<Report?>(nil)
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            let started = startDetachedThread { [self] in
                let report = shutdown(gracePeriod: gracePeriod)
                outcome.withLock { $0 = report }
                done.resume()
            }
            if !started {
                let report = shutdown(gracePeriod: gracePeriod)
                outcome.withLock { $0 = report }
                done.resume()
            }
        }
        return outcome.withLock { $0 } ?? Report(served: 0, cut: 0, descriptorExhaustions: 0)  // always set
    }
}

/// The server's connection wait ended because the server is shutting down: thrown by
/// ``Server/Connection/untilShutdown(_:)`` into an idle handler. A handler may let it
/// propagate (the server closes the connection and does not report it as an error).
public struct ServerShutdownRequestedError: Error, Sendable, CustomStringConvertible {
    /// Creates the error.
    public init() {}
    public var description: String { "the server is shutting down (the connection was idle)" }
}

/// Runs `body` on a new detached thread; `false` if none could be created.
private func startDetachedThread(_ body: @escaping @Sendable () -> Void) -> Bool {
    final class Box {
        let body: @Sendable () -> Void
        init(_ body: @escaping @Sendable () -> Void) { self.body = body }
    }
    let unmanaged = Unmanaged.passRetained(Box(body))
    var handle = pthread_t()
    let status = pthread_create(&handle, nil, { raw in
        // invariant: pthread_create passes the non-nil argument given below.
        Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue().body()
        return nil
    }, unmanaged.toOpaque())
    guard status == 0 else {
        unmanaged.release()
        return false
    }
    pthread_detach(handle)
    return true
}

/// One scheduler's share of a server: its listener, its live handlers, its counts.
private final class State: @unchecked Sendable {
    // @unchecked Sendable: everything but `report` (a pthread lock, seen by ThreadSanitizer)
    // and `liveConnections` (an atomic) is confined to the scheduler's thread.
    let scheduler: Scheduler
    let listener: Socket
    let maxConnections: Int
    /// `connections.count`, readable from any thread.
    let liveConnections = Atomic<Int>(0)
    private var connections: [Int: Server.Connection] = [:]
    private var nextKey = 0
    private var nextAcceptWake = Signal<Void>()
    private var drained = Signal<Void>()
    let shutdownBegan = Signal<Void>()
    private(set) var isShuttingDown = false
    private var served = 0
    private var cut = 0
    private var closedWhileIdle = 0
    private var exhaustions = 0
    let report = PthreadLock(Server.Report(served: 0, cut: 0, descriptorExhaustions: 0))

    init(scheduler: Scheduler, listener: Socket, maxConnections: Int) {
        self.scheduler = scheduler
        self.listener = listener
        self.maxConnections = maxConnections
    }

    func acceptLoop(
        options: [SocketOption], backoff: Duration,
        handler: @escaping @Sendable (Server.Connection) async throws -> Void
    ) async {
        while !isShuttingDown {
            if connections.count >= maxConnections {
                // At the cap: no accept until a connection ends; a multishot accept is
                // cancelled so the kernel's backlog holds the rest.
                listener.pauseAccepting()
                do { try await nextAcceptWake.wait() } catch { return }  // the scheduler is going down
                continue
            }
            let socket: Socket
            do {
                socket = try await listener.accept(placement: .front)
            } catch let error as SocketError where error.errno == EMFILE || error.errno == ENFILE {
                // Out of descriptors: wait for a connection to end (it frees one) or for
                // the backoff, whichever comes first; never retry in a spin.
                exhaustions += 1
                publish()
                _ = try? await nextAcceptWake.wait(deadline: .after(backoff))
                continue
            } catch {
                return  // the listener was closed (shutdown) or the scheduler is going down
            }
            for option in options { try? socket.setOption(option) }
            let connection = Server.Connection(socket: socket, state: self)
            let key = nextKey
            nextKey += 1
            connections[key] = connection
            liveConnections.store(connections.count, ordering: .relaxed)
            connection.coroutine = scheduler.spawn("connection") { [self] in
                defer { connectionEnded(key) }
                do {
                    try await handler(connection)
                } catch is ServerShutdownRequestedError {
                    // An idle connection at shutdown: an ordinary end.
                } catch {
                    try? await socket.close()
                    throw error
                }
                try? await socket.close()
            }
        }
    }

    private func connectionEnded(_ key: Int) {
        guard let connection = connections.removeValue(forKey: key) else { return }
        liveConnections.store(connections.count, ordering: .relaxed)
        if connection.coroutine?.cancelRequested == true {
            cut += 1
        } else if connection.closedWhileIdle {
            closedWhileIdle += 1
        } else {
            served += 1
        }
        connection.coroutine = nil
        publish()
        nextAcceptWake.signal(())
        if connections.isEmpty { drained.signal(()) }
    }

    private func publish() {
        let current = Server.Report(
            served: served, cut: cut, descriptorExhaustions: exhaustions, closedWhileIdle: closedWhileIdle)
        report.withLock { $0 = current }
    }

    /// Stop accepting; end idle connections; wait for the others until `deadline`; cancel
    /// the rest; stop.
    func drain(until deadline: Deadline) async {
        isShuttingDown = true
        shutdownBegan.signal(())
        try? await listener.close()
        nextAcceptWake.signal(())  // an acceptor paused at the cap or backing off
        for connection in connections.values { connection.interruptIfIdle() }
        if !connections.isEmpty {
            // Handlers that were queued (not parked) may have parked idle meanwhile.
            await scheduler.yield()
            for connection in connections.values { connection.interruptIfIdle() }
        }
        if !connections.isEmpty { _ = try? await drained.wait(deadline: deadline) }
        if !connections.isEmpty {
            for connection in connections.values { connection.coroutine?.cancel() }
            _ = try? await drained.wait()
        }
        publish()
        scheduler.stop()
    }
}
