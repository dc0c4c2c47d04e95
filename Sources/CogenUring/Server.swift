import Glibc

/// A TCP server: listens, runs one handler coroutine per connection, and shuts down
/// gracefully. With several threads, each runs a scheduler of its own with its own
/// `SO_REUSEPORT` listener on the same port; the kernel spreads connections among them.
///
/// Accepting survives descriptor exhaustion: `EMFILE`/`ENFILE` are counted, and accepting
/// resumes as soon as a connection of that scheduler ends, or after ``Configuration/acceptBackoff``,
/// never in a spin, while the established connections keep being served.
public final class Server: Sendable {
    /// How a server listens and runs.
    public struct Configuration: Sendable {
        /// Where to listen; port 0 picks a free port (see ``Server/address``).
        public var address: SocketAddress
        /// Schedulers, each on its own thread with its own listener.
        public var threads: Int = 1
        /// The `listen(2)` backlog of each listener.
        public var backlog: Int32 = 4096
        /// Options for accepted connections (`TCP_NODELAY` by default).
        public var connectionOptions: [SocketOption] = [.noDelay(true)]
        /// The wait before accepting again after `EMFILE`/`ENFILE`, unless a connection
        /// ends first.
        public var acceptBackoff: Duration = .milliseconds(50)
        /// The configuration of each scheduler.
        public var scheduler = Scheduler.Configuration()

        /// A server on `address`.
        public init(address: SocketAddress) { self.address = address }
    }

    /// What a server did, once shut down.
    public struct Report: Sendable, Equatable, CustomStringConvertible {
        /// Connections whose handler ended by itself.
        public var served: Int
        /// Connections whose handler was cancelled at the end of the grace period.
        public var cut: Int
        /// Accepts that failed for lack of descriptors (`EMFILE`, `ENFILE`).
        public var descriptorExhaustions: Int

        public var description: String {
            "served \(served), cut \(cut), descriptor exhaustions \(descriptorExhaustions)"
        }
    }

    /// The schedulers, one per thread.
    public let schedulers: [Scheduler]
    /// The address the listeners are bound to (with the port `bind` chose).
    public let address: SocketAddress
    private let states: [State]

    /// Creates the schedulers and the listeners and starts serving.
    /// - Parameters:
    ///   - configuration: Address, threads, backlog, options.
    ///   - handler: Runs once per connection, on the connection's scheduler; the server
    ///     closes the connection after it returns or throws (its error goes to the
    ///     scheduler's error handler).
    /// - Throws: ``RingSetupError`` (also `EINVAL` when `threads` is less than 1),
    ///   ``SocketError`` (`EADDRINUSE`…), ``IOError`` when a thread cannot be started (every
    ///   scheduler is then shut down).
    ///
    /// Listeners use plain `bind(2)`/`listen(2)`; accepts and all connection I/O go
    /// through each scheduler's ring (see ``Socket/accept(deadline:placement:)``).
    public init(
        configuration: Configuration,
        handler: @escaping @Sendable (Socket) async throws -> Void
    ) throws {
        guard configuration.threads >= 1 else {
            throw RingSetupError(
                errno: EINVAL, operation: "configure the server",
                message: "threads must be at least 1, got \(configuration.threads)")
        }
        var schedulers: [Scheduler] = []
        var states: [State] = []
        var address = configuration.address
        for index in 0..<configuration.threads {
            let scheduler = try Scheduler(configuration: configuration.scheduler)
            var options: [SocketOption] = [.reuseAddress(true)]
            if configuration.threads > 1 { options.append(.reusePort(true)) }
            let listener = try Socket.listening(
                on: address, backlog: configuration.backlog, options: options, on: scheduler)
            if index == 0 { address = try listener.localAddress }  // the others share its port
            schedulers.append(scheduler)
            states.append(State(scheduler: scheduler, listener: listener))
        }
        self.schedulers = schedulers
        self.states = states
        self.address = address
        for (index, state) in states.enumerated() {
            let listener = state.listener
            let options = configuration.connectionOptions
            let backoff = configuration.acceptBackoff
            state.scheduler.spawn("acceptor") {
                await state.acceptLoop(listener, options: options, backoff: backoff, handler: handler)
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
                throw error
            }
        }
    }

    /// Stops accepting, lets the handlers finish within `gracePeriod`, cancels the rest,
    /// and shuts every scheduler down. Safe from any thread; call it once.
    /// - Parameter gracePeriod: How long handlers may run on after accepting stops.
    /// - Returns: How many connections were served and how many were cut.
    @discardableResult
    public func shutdown(gracePeriod: Duration = .seconds(5)) -> Report {
        let deadline = Deadline.after(gracePeriod)
        for state in states {
            state.scheduler.execute {
                state.scheduler.spawn("server shutdown") { try await state.drain(until: deadline) }
            }
        }
        for state in states { state.scheduler.join() }
        return states.reduce(Report(served: 0, cut: 0, descriptorExhaustions: 0)) { total, state in
            let report = state.report.withLock { $0 }
            return Report(
                served: total.served + report.served, cut: total.cut + report.cut,
                descriptorExhaustions: total.descriptorExhaustions + report.descriptorExhaustions)
        }
    }
}

/// One scheduler's share of a server: its listener, its live handlers, its counts.
private final class State: @unchecked Sendable {
    // @unchecked Sendable: everything but `report` (a pthread lock, seen by ThreadSanitizer)
    // is confined to the scheduler's thread.
    let scheduler: Scheduler
    let listener: Socket
    private var handlers: [Int: AnyCoroutine] = [:]
    private var nextKey = 0
    private var nextAcceptWake = Signal<Void>()
    private var drained = Signal<Void>()
    private var served = 0
    private var cut = 0
    private var exhaustions = 0
    let report = PthreadLock(Server.Report(served: 0, cut: 0, descriptorExhaustions: 0))

    init(scheduler: Scheduler, listener: Socket) {
        self.scheduler = scheduler
        self.listener = listener
    }

    func acceptLoop(
        _ listener: Socket, options: [SocketOption], backoff: Duration,
        handler: @escaping @Sendable (Socket) async throws -> Void
    ) async {
        while true {
            let connection: Socket
            do {
                connection = try await listener.accept()
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
            for option in options { try? connection.setOption(option) }
            let socket = connection
            let key = nextKey
            nextKey += 1
            handlers[key] = scheduler.spawn("connection") { [self] in
                defer { connectionEnded(key) }
                do {
                    try await handler(socket)
                } catch {
                    try? await socket.close()
                    throw error
                }
                try? await socket.close()
            }
        }
    }

    private func connectionEnded(_ key: Int) {
        guard let coroutine = handlers.removeValue(forKey: key) else { return }
        if coroutine.cancelRequested { cut += 1 } else { served += 1 }
        publish()
        nextAcceptWake.signal(())
        if handlers.isEmpty { drained.signal(()) }
    }

    private func publish() {
        let current = Server.Report(served: served, cut: cut, descriptorExhaustions: exhaustions)
        report.withLock { $0 = current }
    }

    /// Stop accepting; wait for the handlers until `deadline`; cancel the rest; stop.
    func drain(until deadline: Deadline) async throws {
        try? await listener.close()
        if !handlers.isEmpty { _ = try? await drained.wait(deadline: deadline) }
        if !handlers.isEmpty {
            for coroutine in handlers.values { coroutine.cancel() }
            _ = try? await drained.wait()
        }
        publish()
        scheduler.stop()
    }
}
