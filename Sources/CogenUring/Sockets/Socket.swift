import CURing
import Glibc
import Synchronization

/// Serial numbers of sockets: a descriptor number is reused as soon as it is closed, a
/// serial never is (the epoll engine tells a reused number's new socket from the old one).
private let socketSerials = Atomic<UInt64>(0)

/// How long a socket operation may take.
public enum SocketTimeout: Sendable, Hashable {
    /// A fixed deadline for the whole operation (cogen's strong timeout).
    case strong(Duration)
    /// An inactivity timeout: each bit of progress of a multi-step operation (bytes sent
    /// by a send-all, received by an exact read) moves the deadline to now + this
    /// (cogen's weak timeout, its default).
    case weak(Duration)
}

/// The socket options a server sets.
public enum SocketOption: Sendable, Hashable {
    /// `TCP_NODELAY`: send small segments at once.
    case noDelay(Bool)
    /// `SO_REUSEADDR`: bind a port with connections still in `TIME_WAIT`.
    case reuseAddress(Bool)
    /// `SO_REUSEPORT`: several listeners on one port, the kernel spreading connections.
    case reusePort(Bool)
    /// `SO_KEEPALIVE`: probe idle connections.
    case keepAlive(Bool)
}

/// Which directions ``Socket/shutdown(_:placement:)`` closes.
public enum ShutdownDirection: Sendable, Hashable {
    /// No more receives (`SHUT_RD`).
    case read
    /// No more sends: the peer reads end of stream (`SHUT_WR`).
    case write
    /// Both (`SHUT_RDWR`).
    case both
}

/// The peer closed the connection before an exact-length read was complete. The bytes
/// that did arrive stay readable.
public struct EndOfStreamError: Error, Sendable, CustomStringConvertible {
    /// Bytes that arrived, still buffered in the socket.
    public let bytesAvailable: Int
    /// Bytes the read wanted.
    public let bytesWanted: Int
    public var description: String {
        "end of stream after \(bytesAvailable) of \(bytesWanted) bytes"
    }
}

/// No newline came within the limit of a line read. The bytes stay readable.
public struct LineTooLongError: Error, Sendable, CustomStringConvertible {
    /// The limit that was reached.
    public let limit: Int
    public var description: String { "line too long: no newline within \(limit) bytes" }
}

/// A wait for received bytes (``Socket/waitForBytes(beyond:deadline:placement:)``) asked
/// for more than ``Scheduler/Configuration/readAheadLimit`` allows a socket to hold. The
/// bytes held stay readable.
public struct ReadAheadLimitError: Error, Sendable, CustomStringConvertible {
    /// The read-ahead limit.
    public let limit: Int
    /// Bytes the socket held.
    public let bytesHeld: Int
    public var description: String {
        "read-ahead limit reached: \(bytesHeld) bytes held, the wait needs more than the limit of \(limit)"
    }
}

/// A TCP (IPv4, IPv6) or Unix stream socket whose operations are io_uring SQEs.
///
/// A socket belongs to one scheduler and is used from its coroutines. One receive and one
/// send may be pending at the same time; a second concurrent receive (or send) is refused
/// with `EBUSY`. Every descriptor is `O_CLOEXEC`; sends use `MSG_NOSIGNAL`, so a closed
/// peer is an error, never `SIGPIPE`. Buffers the kernel writes into belong to the socket
/// and stay alive until the operation's final completion, whatever happens to the
/// coroutine that asked.
public final class Socket: @unchecked Sendable {
    // @unchecked Sendable: confined to its scheduler's thread (asserted in debug builds).
    // @exclusivity(unchecked): confined and never accessed reentrantly; dynamic checks
    // would cost a thread-local lookup per access on every receive and send.

    /// The scheduler whose ring runs this socket's operations.
    public let scheduler: Scheduler
    /// The address family.
    public let family: SocketAddress.Family
    /// This socket's serial number, unique in the process: the epoll engine's readiness
    /// registrations belong to it, not to the descriptor number, which the kernel reuses as
    /// soon as a dropped socket's `deinit` closes it.
    let serial: UInt64
    /// The descriptor, or -1 once closed.
    @exclusivity(unchecked) public private(set) var descriptor: Int32
    /// Where receives land: the kernel writes here until the receive's final CQE (the
    /// receive's awaiting frame holds the socket, so this outlives it).
    @exclusivity(unchecked) private(set) var receiveBuffer: UnsafeMutableRawPointer
    @exclusivity(unchecked) private var receiveCapacity: Int
    /// Bytes received and not yet consumed (partial exact reads, timeouts).
    @exclusivity(unchecked) private var readBuffer: [UInt8] = []
    @exclusivity(unchecked) private var receiving = false
    /// `close()` has begun: no new operation, nothing more queued.
    @exclusivity(unchecked) private(set) var closing = false
    @exclusivity(unchecked) var sending = false
    @exclusivity(unchecked) private var pending: [IOOperation] = []
    @exclusivity(unchecked) private var closeWaiters: [Parked<Void>] = []
    // Multishot accept: connections the kernel accepted and no coroutine took yet, the
    // error to hand to the next acceptor, and the acceptors waiting.
    @exclusivity(unchecked) private(set) var multishotAccept: MultishotAcceptOperation?
    @exclusivity(unchecked) private var accepted: [Int32] = []
    @exclusivity(unchecked) private var acceptedHead = 0
    @exclusivity(unchecked) private var acceptError: SocketError?
    @exclusivity(unchecked) private var acceptors: [(Parked<Void>, Placement)] = []
    // Multishot receive: chunks the kernel put in ring buffers, not yet copied out; the end
    // of stream or the error that follows them; the coroutine waiting for them.
    private struct Chunk {
        var buffer: UInt16
        var length: Int
        var offset: Int
    }
    @exclusivity(unchecked) private var multishotReceive: MultishotReceiveOperation?
    /// Chunks copied out of the ring for a lagging reader (see `spillChunks`): they come
    /// after `readBuffer` and before `chunks`; those before `spilledHead` were read.
    @exclusivity(unchecked) private var spilled: [UInt8] = []
    @exclusivity(unchecked) private var spilledHead = 0
    @exclusivity(unchecked) private var chunks: [Chunk] = []
    /// Bytes in `chunks` not yet copied out.
    @exclusivity(unchecked) private var chunkBytes = 0
    @exclusivity(unchecked) private var chunksHead = 0
    @exclusivity(unchecked) private var receivedEnd = false
    @exclusivity(unchecked) private var receiveFailure: SocketError?
    @exclusivity(unchecked) private var starvedForBuffers = false
    @exclusivity(unchecked) private var receiver: (Parked<Void>, Placement)?
    /// The byte limit the waiting `receiver`'s receive is armed with when buffers come
    /// back (`buffersReturned`): the read-ahead limit plus what an exact read still misses,
    /// or the room left beside the bytes an in-place reader holds (`waitForBytes`).
    @exclusivity(unchecked) private var receiverRoom = 0
    /// The last send's operation, for the next send to reuse (one allocation per socket,
    /// not per send) once nothing else holds it: the in-flight table and the readiness
    /// index let go of an operation at its final completion.
    @exclusivity(unchecked) private var spareSend: SendOperation?
    /// The receive operation of the 5.x and epoll paths, reused (see `receiveIntoBuffer`).
    @exclusivity(unchecked) private var spareReceive: ReceiveOperation?
    /// The same for vectored sends (`Socket+Vectored.swift`).
    @exclusivity(unchecked) var spareSendMessage: SendMessageOperation?
    /// Tracked sends (`Socket+TrackedSend.swift`), made at the first one.
    @exclusivity(unchecked) var trackedSends: TrackedSends?

    /// Connections queued beyond this pause the multishot accept (backpressure: the
    /// kernel's backlog holds the rest).
    static let acceptQueueLimit = 256

    /// A call with an argument out of range: `EINVAL` with what was wrong.
    static func invalid(_ operation: String, _ message: String) -> SocketError {
        SocketError(errno: EINVAL, operation: operation, message: message)
    }

    init(descriptor: Int32, family: SocketAddress.Family, scheduler: Scheduler) {
        // The readiness engine tries each system call without blocking: O_NONBLOCK. (Not
        // on io_uring, which returns EAGAIN for a non-blocking socket instead of polling.)
        if scheduler.backendKind == .epoll {
            _ = fcntl(descriptor, F_SETFL, fcntl(descriptor, F_GETFL) | O_NONBLOCK)
        }
        self.descriptor = descriptor
        self.family = family
        self.scheduler = scheduler
        serial = socketSerials.wrappingAdd(1, ordering: .relaxed).newValue
        receiveCapacity = 0
        receiveBuffer = UnsafeMutableRawPointer.allocate(byteCount: 1, alignment: 16)
    }

    deinit {
        // Only streams can be pending (every other operation's awaiting frame holds the
        // socket until the operation's final completion): cancel
        // them, on the loop. A socket dropped without `close()` leaks neither its
        // descriptor, nor the connections it queued, nor ring buffers.
        for operation in pending {
            if scheduler.isOnLoop {
                operation.requestCancel(.closed)
            } else {
                nonisolated(unsafe) let operation = operation
                scheduler.post { operation.requestCancel(.closed) }
            }
        }
        // The epoll engine may still hold a registration for this descriptor number: it is
        // tied to `serial`, so the next socket given the same number registers afresh
        // (the kernel drops a closed descriptor from the epoll set by itself).
        if descriptor >= 0 { Glibc.close(descriptor) }
        for fd in accepted[acceptedHead...] { Glibc.close(fd) }
        if let pool = scheduler.bufferPool, chunksHead < chunks.count {
            // The ring is the loop's: buffers go back there, whichever thread drops us.
            let held = chunks[chunksHead...].map(\.buffer)
            if scheduler.isOnLoop {
                for buffer in held { pool.giveBack(buffer) }
            } else {
                nonisolated(unsafe) let pool = pool
                scheduler.post { for buffer in held { pool.giveBack(buffer) } }
            }
        }
        receiveBuffer.deallocate()
    }

    /// Creates an unconnected stream socket.
    /// - Parameters:
    ///   - family: IPv4, IPv6 or Unix.
    ///   - scheduler: Whose ring runs its operations; the current scheduler by default.
    /// - Throws: ``SocketError`` from `socket(2)` (`EMFILE`, `ENFILE`…); `EINVAL` when no
    ///   scheduler is given and none runs on the calling thread.
    ///
    /// A plain `socket(2)` call, `SOCK_CLOEXEC`: it never blocks.
    public convenience init(family: SocketAddress.Family, on scheduler: Scheduler? = nil) throws(SocketError) {
        guard let scheduler = scheduler ?? Scheduler.current else {
            throw SocketError(
                errno: EINVAL, operation: "socket",
                message: "no scheduler given and none running on this thread (pass `on:` or call it from a coroutine)")
        }
        let domain: Int32 = switch family {
        case .ipv4: AF_INET
        case .ipv6: AF_INET6
        case .unix: AF_UNIX
        }
        // Blocking mode on purpose: io_uring never blocks the thread (it polls internally,
        // FEAT_FAST_POLL), and returns EAGAIN instead of waiting on an O_NONBLOCK socket.
        let descriptor = Glibc.socket(domain, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard descriptor >= 0 else { throw SocketError(errno: Glibc.errno, operation: "socket") }
        self.init(descriptor: descriptor, family: family, scheduler: scheduler)
    }

    /// A socket bound to `address` and listening.
    /// - Parameters:
    ///   - address: Where to listen; port 0 picks a free port (see ``localAddress``).
    ///   - backlog: The `listen(2)` backlog.
    ///   - options: Set before `bind`; `SO_REUSEADDR` is on by default.
    ///   - scheduler: Whose ring runs its operations; the current scheduler by default.
    /// - Returns: The listening socket.
    /// - Throws: ``SocketError`` (`EADDRINUSE`…).
    ///
    /// Plain `bind(2)` and `listen(2)` calls (`IORING_OP_BIND`/`LISTEN` need Linux 6.11).
    public static func listening(
        on address: SocketAddress, backlog: Int32 = 1024,
        options: [SocketOption] = [.reuseAddress(true)], on scheduler: Scheduler? = nil
    ) throws(SocketError) -> Socket {
        let socket = try Socket(family: address.family, on: scheduler)
        for option in options { try socket.setOption(option) }
        try socket.bind(to: address)
        try socket.listen(backlog: backlog)
        return socket
    }

    /// Binds the socket to an address.
    /// - Parameter address: The local address; port 0 picks a free port.
    /// - Throws: ``SocketError``.
    public func bind(to address: SocketAddress) throws(SocketError) {
        var storage = address.storage
        let status = withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.bind(descriptor, $0, address.length) }
        }
        guard status == 0 else { throw SocketError(errno: Glibc.errno, operation: "bind to \(address)") }
    }

    /// Starts listening for connections.
    /// - Parameter backlog: The `listen(2)` backlog.
    /// - Throws: ``SocketError``.
    public func listen(backlog: Int32 = 1024) throws(SocketError) {
        guard Glibc.listen(descriptor, backlog) == 0 else {
            throw SocketError(errno: Glibc.errno, operation: "listen")
        }
    }

    /// Sets a socket option.
    /// - Parameter option: The option and its value.
    /// - Throws: ``SocketError``.
    public func setOption(_ option: SocketOption) throws(SocketError) {
        let (level, name, on): (Int32, Int32, Bool) = switch option {
        case .noDelay(let on): (Int32(IPPROTO_TCP), TCP_NODELAY, on)
        case .reuseAddress(let on): (SOL_SOCKET, SO_REUSEADDR, on)
        case .reusePort(let on): (SOL_SOCKET, SO_REUSEPORT, on)
        case .keepAlive(let on): (SOL_SOCKET, SO_KEEPALIVE, on)
        }
        var value: Int32 = on ? 1 : 0
        guard setsockopt(descriptor, level, name, &value, socklen_t(MemoryLayout<Int32>.size)) == 0 else {
            throw SocketError(errno: Glibc.errno, operation: "setsockopt \(option)")
        }
    }

    /// The local address (after `bind`, the port it got).
    public var localAddress: SocketAddress {
        get throws(SocketError) { try address(getsockname, "getsockname") }
    }

    /// The peer's address as the kernel recorded it when the connection was made; unlike
    /// ``remoteAddress`` (`getpeername(2)`, `ENOTCONN` once the peer has reset the
    /// connection), still there after a reset, even one that came before the accept.
    ///
    /// For a socket accepted by one `IORING_OP_ACCEPT` (`accept4(2)` on the epoll backend),
    /// the address that accept wrote: no system call. Otherwise (the multishot accept,
    /// `IORING_ACCEPT_MULTISHOT`, shares one `sockaddr` between all its connections, so it
    /// reports none; a connected socket) a `getsockopt(SO_PEERNAME)` call, which reads the
    /// same record (`getpeername(2)` for Unix-domain sockets). `nil` when there is no peer
    /// (not connected, closed).
    public var peerAddress: SocketAddress? {
        guard descriptor >= 0 else { return nil }
        if let acceptedPeerAddress { return acceptedPeerAddress }
        guard family != .unix else { return try? remoteAddress }
        var storage = sockaddr_storage()
        // SO_PEERNAME wants a length no longer than the address it holds.
        var length = socklen_t(family == .ipv4 ? MemoryLayout<sockaddr_in>.size : MemoryLayout<sockaddr_in6>.size)
        let status = withUnsafeMutablePointer(to: &storage) {
            getsockopt(descriptor, SOL_SOCKET, SO_PEERNAME, $0, &length)
        }
        guard status == 0 else { return nil }
        return SocketAddress(storage: storage, length: length)
    }

    /// The address a single-shot accept wrote (see ``peerAddress``).
    @exclusivity(unchecked) private var acceptedPeerAddress: SocketAddress?

    /// The peer's address.
    ///
    /// A `getpeername(2)` call: it throws ``SocketError`` (`ENOTCONN`) once the peer has
    /// reset the connection, even for a connection just accepted (``peerAddress`` does
    /// not).
    public var remoteAddress: SocketAddress {
        get throws(SocketError) { try address(getpeername, "getpeername") }
    }

    private func address(
        _ call: (Int32, UnsafeMutablePointer<sockaddr>, UnsafeMutablePointer<socklen_t>) -> Int32, _ name: String
    ) throws(SocketError) -> SocketAddress {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let status = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { call(descriptor, $0, &length) }
        }
        guard status == 0 else { throw SocketError(errno: Glibc.errno, operation: name) }
        return SocketAddress(storage: storage, length: length)
    }

    // MARK: Operations

    /// Runs a socket operation, tracking it so `close()` can cancel it and wait for it.
    @inline(__always)
    func run<Value: Sendable, Operation: SocketOperation>(
        _ operation: Operation, deadline: Deadline?, placement: Placement,
        bind: (Operation, Parked<Value>) -> Void
    ) async throws -> Value {
        scheduler.assertOnLoop()
        guard descriptor >= 0 && !closing else {
            throw SocketError(errno: EBADF, operation: "\(operation.label) (the socket is closed)")
        }
        pending.append(operation)
        defer { ended(operation) }
        return try await scheduler.perform(operation, deadline: deadline, placement: placement, bind: bind)
    }

    private func ended(_ operation: IOOperation) {
        if let index = pending.firstIndex(where: { $0 === operation }) { pending.remove(at: index) }
        if pending.isEmpty && !closeWaiters.isEmpty {
            let waiters = closeWaiters
            closeWaiters = []
            for waiter in waiters { scheduler.resume(waiter, returning: ()) }
        }
    }

    /// Accepts one connection.
    /// - Parameters:
    ///   - deadline: When to give up.
    ///   - placement: Where the coroutine goes when the connection arrives.
    /// - Returns: The connected socket, `O_CLOEXEC`. A connection the peer has already
    ///   reset is returned too (its first receive or send reports the reset; its
    ///   ``peerAddress`` is the peer's, where ``remoteAddress`` throws). A
    ///   connection the kernel could not hand over (`ECONNABORTED`) is skipped.
    /// - Throws: ``SocketError`` (`EMFILE`, `ENFILE`…), ``TimeoutError``, `CancellationError`.
    ///
    /// Uses one multishot `IORING_OP_ACCEPT` per listener (`IORING_ACCEPT_MULTISHOT`,
    /// Linux 5.19) that stays armed and queues connections, when the kernel has it and
    /// ``Scheduler/Configuration/useMultishotAccept`` is on; otherwise one
    /// `IORING_OP_ACCEPT` (5.5) per call, cancelled in the kernel at the deadline.
    public func accept(deadline: Deadline? = nil, placement: Placement = .back) async throws -> Socket {
        guard scheduler.multishotAccept else {
            while true {
                let operation = AcceptOperation(socket: self)
                let descriptor: Int32
                // The readiness engine tries accept4 first for an acceptor at `.front`: a
                // connection already queued is taken at once and the acceptor goes on,
                // within the per-turn budget, so a burst is taken up to 16 per pass (one
                // per pass left the last of 200 connections waiting 250 ms behind the busy
                // ones). At `.back` the accept completes like any completion, after the
                // pass (cogen's run order).
                if placement == .front && self.descriptor >= 0 && !closing,
                   let result = await scheduler.attemptInline(placement: placement, { operation.attempt() })
                {
                    if result >= 0 {
                        let connection = Socket(descriptor: result, family: family, scheduler: scheduler)
                        connection.acceptedPeerAddress = operation.peerAddress
                        return connection
                    }
                    if result == -ECONNABORTED { continue }
                    if result != -EAGAIN { throw SocketError(errno: -result, operation: "accept") }
                    operation.knownNotReady = true
                }
                do {
                    descriptor = try await run(operation, deadline: deadline, placement: placement) { $0.parked = $1 }
                } catch let error as SocketError where error.errno == ECONNABORTED {
                    continue  // a connection that went away before it was accepted: take the next
                }
                let connection = Socket(descriptor: descriptor, family: family, scheduler: scheduler)
                connection.acceptedPeerAddress = operation.peerAddress
                return connection
            }
        }
        scheduler.assertOnLoop()
        while true {
            if acceptedHead < accepted.count {
                let descriptor = accepted[acceptedHead]
                acceptedHead += 1
                if acceptedHead == accepted.count {
                    accepted.removeAll(keepingCapacity: true)
                    acceptedHead = 0
                }
                return Socket(descriptor: descriptor, family: family, scheduler: scheduler)
            }
            if let error = acceptError {
                acceptError = nil
                throw error
            }
            guard descriptor >= 0 && !closing else {
                throw SocketError(errno: EBADF, operation: "accept (the socket is closed)")
            }
            if multishotAccept == nil {
                let operation = MultishotAcceptOperation(listener: self)
                multishotAccept = operation
                pending.append(operation)
                scheduler.start(operation)
            }
            let settings = ParkSettings(label: "accept", deadline: deadline)
            scheduler.streamWaiters += 1
            defer { scheduler.streamWaiters -= 1 }
            let _: Void = try await scheduler.suspend(settings) { acceptors.append(($0, placement)) }
        }
    }

    /// A CQE of the listener's multishot accept.
    func multishotAcceptCompleted(_ operation: MultishotAcceptOperation, result: Int32, final: Bool) {
        if result >= 0 {
            if descriptor < 0 || closing {
                Glibc.close(result)  // accepted as the listener was closing: nobody will take it
            } else {
                accepted.append(result)
                if accepted.count - acceptedHead >= Self.acceptQueueLimit { operation.requestCancel(.paused) }
            }
        } else if result != -ECANCELED && result != -ECONNABORTED {
            // (ECONNABORTED: a connection that went away before it was accepted; the
            // acceptor takes the next.)
            acceptError = SocketError(errno: -result, operation: "accept")
        }
        if final {
            multishotAccept = nil
            ended(operation)
        }
        // One event, one acceptor: the first still waiting.
        while let (parked, placement) = acceptors.first {
            acceptors.removeFirst()
            if scheduler.resume(parked, returning: (), placement: placement) { break }
        }
    }

    /// Connects to an address.
    /// - Parameters:
    ///   - address: The peer.
    ///   - deadline: When to give up (the connect is cancelled in the kernel).
    ///   - placement: Where the coroutine goes when the connection is made.
    ///   - scheduler: Whose ring runs the socket; the current scheduler by default.
    /// - Returns: The connected socket.
    /// - Throws: ``SocketError`` (`ECONNREFUSED`, `ENETUNREACH`…), ``TimeoutError``.
    ///
    /// Uses `IORING_OP_CONNECT` (Linux 5.5).
    public static func connect(
        to address: SocketAddress, deadline: Deadline? = nil, placement: Placement = .back,
        on scheduler: Scheduler? = nil
    ) async throws -> Socket {
        let socket = try Socket(family: address.family, on: scheduler)
        do {
            let _: Void = try await socket.run(
                ConnectOperation(socket: socket, to: address), deadline: deadline, placement: placement
            ) { $0.parked = $1 }
        } catch let error as SocketError {
            try? await socket.close()
            throw SocketError(errno: error.errno, operation: "connect to \(address)")
        } catch {
            try? await socket.close()
            throw error
        }
        return socket
    }

    /// Receives what is available, up to `maxLength` bytes.
    /// - Parameters:
    ///   - maxLength: The most bytes to return.
    ///   - deadline: When to give up (the receive is cancelled in the kernel).
    ///   - placement: Where the coroutine goes when data arrives after a wait (bytes
    ///     already received are returned at once, without a trip through the run queue).
    /// - Returns: The bytes; empty at end of stream.
    /// - Throws: ``SocketError`` (``SocketError/isConnectionClosed`` on a reset; `EINVAL`
    ///   when `maxLength` is less than 1), ``TimeoutError``, `CancellationError`.
    ///
    /// Uses `IORING_OP_RECV` (Linux 5.6).
    public func receive(
        maxLength: Int = 65536, deadline: Deadline? = nil, placement: Placement = .back
    ) async throws -> [UInt8] {
        var bytes: [UInt8] = []
        _ = try await receive(into: &bytes, maxLength: maxLength, deadline: deadline, placement: placement)
        return bytes
    }

    /// Receives what is available, up to `maxLength` bytes, into `buffer`: its contents are
    /// replaced and its storage reused, so a loop that receives into one array and sends
    /// it allocates nothing per message once the array is large enough (the array must not
    /// be shared when it is passed in, or it is copied first, as any array would be).
    /// - Parameters:
    ///   - buffer: Receives the bytes; emptied first.
    ///   - maxLength: The most bytes to receive.
    ///   - deadline: When to give up (the receive is cancelled in the kernel).
    ///   - placement: Where the coroutine goes when data arrives after a wait (bytes
    ///     already received are returned at once, without a trip through the run queue).
    /// - Returns: How many bytes `buffer` now holds; 0 at end of stream.
    /// - Throws: As ``receive(maxLength:deadline:placement:)``; `buffer` is then empty
    ///   and the bytes stay readable. ``SocketError`` `EINVAL` when `maxLength` is less
    ///   than 1.
    ///
    /// Uses `IORING_OP_RECV` (Linux 5.6), or the multishot receive from the provided-buffer
    /// ring (6.0), like ``receive(maxLength:deadline:placement:)``.
    @inline(__always)  // receive(maxLength:) is this, without an extra async frame
    public func receive(
        into buffer: inout [UInt8], maxLength: Int = 65536, deadline: Deadline? = nil, placement: Placement = .back
    ) async throws -> Int {
        scheduler.assertOnLoop()
        guard maxLength > 0 else { throw Self.invalid("receive", "maxLength must be at least 1, got \(maxLength)") }
        buffer.removeAll(keepingCapacity: true)
        if !readBuffer.isEmpty {
            let count = min(maxLength, readBuffer.count)
            buffer.append(contentsOf: readBuffer.prefix(count))
            consumeReadBuffer(count)
            return count
        }
        if scheduler.bufferPool != nil {
            try await receiveChunks(
                maxLength: maxLength, deadline: deadline, placement: placement,
                reserve: { buffer.reserveCapacity($0) }
            ) {
                buffer.append(contentsOf: $0)
            }
            return buffer.count
        }
        return try await receiveIntoBuffer(maxLength: maxLength, deadline: deadline, placement: placement) {
            buffer.append(contentsOf: $0)
        }
    }

    /// Appends up to `maxLength` newly received bytes to `readBuffer`; 0 at end of stream.
    /// `wanted` of them the caller is sure to take (an exact read's missing bytes).
    private func fill(maxLength: Int, wanted: Int = 0, deadline: Deadline?, placement: Placement) async throws -> Int {
        // The exact room the first time, not the array's doubling (what a socket holds is
        // what it read); doubling when a long line keeps asking for more.
        Self.reserve(&readBuffer, readBuffer.count + maxLength)
        if scheduler.bufferPool != nil {
            var count = 0
            try await receiveChunks(maxLength: maxLength, wanted: wanted, deadline: deadline, placement: placement) {
                readBuffer.append(contentsOf: $0)
                count += $0.count
            }
            return count
        }
        return try await receiveIntoBuffer(maxLength: maxLength, deadline: deadline, placement: placement) {
            readBuffer.append(contentsOf: $0)
        }
    }

    /// Arrays that grew past this give their storage back once mostly read.
    private static let keptCapacity = 64 << 10

    /// Room for `count` bytes: exactly that when the array must grow the first time, at
    /// least twice its storage after that (appends stay linear).
    private static func reserve(_ bytes: inout [UInt8], _ count: Int) {
        if bytes.capacity < count { bytes.reserveCapacity(bytes.capacity == 0 ? count : max(count, bytes.capacity * 2)) }
    }

    /// Drops the first `count` bytes of `readBuffer`; storage it no longer needs goes back.
    /// Every spilled byte has been read: storage past `keptCapacity` goes back.
    private func emptySpilled() {
        if spilled.capacity > Self.keptCapacity { spilled = [] } else { spilled.removeAll(keepingCapacity: true) }
        spilledHead = 0
    }

    private func consumeReadBuffer(_ count: Int) {
        if count == readBuffer.count {
            // (removeFirst of everything would give the storage up, and the next fill
            // allocate it again.)
            readBuffer.removeAll(keepingCapacity: readBuffer.capacity <= Self.keptCapacity)
            return
        }
        readBuffer.removeFirst(count)
        if readBuffer.capacity > Self.keptCapacity && readBuffer.count <= readBuffer.capacity / 4 {
            readBuffer = readBuffer.isEmpty ? [] : Array(readBuffer)
        }
    }

    /// Bytes taken from the kernel and not yet returned by a receive: `readBuffer`, the
    /// spilled bytes and the chunks. What the read-ahead limit bounds (the bytes an exact
    /// or line read is still collecting count too, and a waiting read may always arm).
    var heldBytes: Int { readBuffer.count + (spilled.count - spilledHead) + chunkBytes }

    /// The storage the socket's own byte arrays keep (tests).
    var heldCapacity: Int { readBuffer.capacity + spilled.capacity }

    /// The provided-buffer path: waits for chunks, then copies out up to `maxLength`
    /// bytes, giving each buffer back once emptied. Nothing copied: end of stream.
    @inline(__always)
    private func receiveChunks(
        maxLength: Int, wanted: Int = 0, deadline: Deadline?, placement: Placement, reserve: (Int) -> Void = { _ in },
        _ take: (UnsafeRawBufferPointer) -> Void
    ) async throws {
        guard !receiving else {
            throw SocketError(errno: EBUSY, operation: "receive (another receive is pending on this socket)")
        }
        try throwTrackedSendFailure()
        receiving = true
        defer { receiving = false }
        guard let pool = scheduler.bufferPool else { return }
        while chunksHead == chunks.count && spilledHead == spilled.count && !receivedEnd && receiveFailure == nil {
            guard descriptor >= 0 && !closing else {
                throw SocketError(errno: EBADF, operation: "receive (the socket is closed)")
            }
            // Nothing is held but what this read is collecting: the whole limit is room,
            // beyond what the read still wants.
            receiverRoom = scheduler.readAheadLimit + wanted
            if multishotReceive == nil && !starvedForBuffers { armReceive(pool, limit: receiverRoom) }
            let settings = ParkSettings(label: "receive", deadline: deadline)
            scheduler.streamWaiters += 1
            defer { scheduler.streamWaiters -= 1 }
            let _: Void = try await scheduler.suspend(settings) { receiver = ($0, placement) }
        }
        var remaining = maxLength
        // The exact size, not a whole buffer's: most receives are far smaller.
        reserve(min(spilled.count - spilledHead + chunkBytes, maxLength))
        if spilledHead < spilled.count {
            // Spilled bytes come first: they arrived before any chunk still held.
            let count = min(remaining, spilled.count - spilledHead)
            let start = spilledHead
            spilled.withUnsafeBytes { take(UnsafeRawBufferPointer(rebasing: $0[start..<(start + count)])) }
            spilledHead += count
            if spilledHead == spilled.count { emptySpilled() }
            remaining -= count
        }
        while remaining > 0 && chunksHead < chunks.count {
            let chunk = chunks[chunksHead]
            let count = min(remaining, chunk.length - chunk.offset)
            take(UnsafeRawBufferPointer(rebasing: pool.bytes(chunk.buffer, count: chunk.length)[chunk.offset..<(chunk.offset + count)]))
            remaining -= count
            chunkBytes -= count
            if chunk.offset + count == chunk.length {
                chunksHead += 1
                pool.giveBack(chunk.buffer)
            } else {
                chunks[chunksHead].offset += count
            }
        }
        if chunksHead == chunks.count {
            chunks.removeAll(keepingCapacity: true)
            chunksHead = 0
        }
        if remaining == maxLength, let failure = receiveFailure {
            receiveFailure = nil
            throw failure
        }
        rearmAfterRead(pool)
    }

    /// The receive ended at its byte limit: armed again once the reader has brought what
    /// is held to half the limit, with the room left as the new limit.
    private func rearmAfterRead(_ pool: BufferPool) {
        guard multishotReceive == nil && !starvedForBuffers && !receivedEnd && receiveFailure == nil
            && descriptor >= 0 && !closing
        else { return }
        let held = heldBytes
        if held <= scheduler.readAheadLimit / 2 { armReceive(pool, limit: scheduler.readAheadLimit - held) }
    }

    /// Arms the receive for at most `limit` bytes (see `MultishotReceiveOperation`).
    private func armReceive(_ pool: BufferPool, limit: Int) {
        let operation = MultishotReceiveOperation(
            socket: self, pool: pool, limit: limit, multishot: !scheduler.receiveLimitRefused)
        multishotReceive = operation
        pending.append(operation)
        scheduler.start(operation)
    }

    /// A CQE of the socket's multishot receive.
    func multishotReceiveCompleted(_ operation: MultishotReceiveOperation, result: Int32, flags: UInt32) {
        let pool = operation.pool
        if result > 0 && flags & UInt32(COGEN_CQE_F_BUFFER) != 0 {
            let buffer = UInt16(truncatingIfNeeded: flags >> 16)
            pool.taken()
            if closing {
                pool.giveBack(buffer)
            } else {
                chunks.append(Chunk(buffer: buffer, length: Int(result), offset: 0))
                chunkBytes += Int(result)
                if chunks.count - chunksHead >= pool.maxPerConnection { spillChunks(pool) }
            }
        } else if result == -EINVAL && operation.multishot && !scheduler.receiveLimitRefused {
            // A kernel before 6.17 refuses the multishot's byte limit: single receives
            // from the ring from now on (armed again at the next wait).
            scheduler.receiveLimitRefused = true
        } else if result == 0 {
            receivedEnd = true
        } else if result == -ENOBUFS {
            // The ring was empty: nothing lost (the bytes wait in the socket). Armed again
            // at the next wait if buffers came back meanwhile, else when one comes back.
            if pool.available == 0 {
                starvedForBuffers = true
                pool.starving(self)
            }
        } else if result < 0 && result != -ECANCELED {
            receiveFailure = SocketError(errno: -result, operation: "receive")
        }
        if flags & UInt32(COGEN_CQE_F_MORE) == 0 {
            multishotReceive = nil
            ended(operation)
        }
        if let (parked, placement) = receiver {
            receiver = nil
            scheduler.resume(parked, returning: (), placement: placement)
        }
    }

    /// A connection whose reader lags must not keep the shared ring: past
    /// `maxPerConnection` buffers its chunks are copied, in order, to the connection's own
    /// memory and the ring buffers go back at once. The read-ahead limit bounds what it
    /// holds either way (the receive's byte limit), so this moves bytes, never adds any.
    private func spillChunks(_ pool: BufferPool) {
        if spilledHead > 0 {
            spilled.removeFirst(spilledHead)
            spilledHead = 0
        }
        Self.reserve(&spilled, spilled.count + chunkBytes)
        for chunk in chunks[chunksHead...] {
            spilled.append(contentsOf: pool.bytes(chunk.buffer, count: chunk.length)[chunk.offset...])
            pool.giveBack(chunk.buffer)
        }
        chunks.removeAll(keepingCapacity: true)
        chunksHead = 0
        chunkBytes = 0
    }

    /// The buffer pool has buffers again after this socket's receive found none.
    func buffersReturned() {
        starvedForBuffers = false
        if receiver != nil, multishotReceive == nil, !closing, let pool = scheduler.bufferPool {
            armReceive(pool, limit: receiverRoom)  // as its waiter would have
        }
    }

    // MARK: In-place receives

    /// How often an in-place read found the bytes it held in more than one place
    /// (`readBuffer`, `spilled`, ring buffers) and gathered them into `readBuffer` (tests:
    /// bytes in one place are passed where they lie).
    @exclusivity(unchecked) private(set) var inPlaceGathers = 0

    /// Lets `body` read the received bytes no receive has returned yet, where they lie, and
    /// consume a prefix of them.
    ///
    /// Synchronous: it looks only at what the socket already holds (an empty buffer when
    /// nothing is held) and never waits; ``waitForBytes(beyond:deadline:placement:)``
    /// waits for more. The bytes are passed without a copy when they lie in one place: a
    /// single provided ring buffer, or the socket's own array (where the 5.x and epoll
    /// paths receive, and where bytes held beyond the ring go). When they straddle two
    /// places (two ring buffers, or a ring buffer and the socket's array) they are first
    /// gathered, in order, into the socket's array and the ring buffers go back: that is the
    /// one case that copies, and each byte is gathered at most once.
    ///
    /// The pointer is valid only inside `body`: the ring buffer it points into goes back to
    /// the kernel once consumed, and the socket's array moves. Nothing may retain it.
    /// `body` must not use the socket (a nested in-place read throws `EBUSY`).
    ///
    /// - Parameter body: Gets the unconsumed bytes, oldest first; returns how many of them
    ///   it consumed (from the front, `0...buffer.count`) and a result. Consumed bytes are
    ///   gone: no receive returns them again. The rest stay readable, by this method or any
    ///   receive, and count against ``Scheduler/Configuration/readAheadLimit``.
    /// - Returns: `body`'s result.
    /// - Throws: What `body` throws (then nothing is consumed); ``SocketError`` `EINVAL`
    ///   when `body` consumed more than it was given or a negative count (nothing is
    ///   consumed), `EBUSY` while a receive is pending on this socket, `EBADF` once the
    ///   socket is closed.
    ///
    /// No system call. Consuming the bytes of a provided buffer (`IORING_OP_PROVIDE_BUFFERS`
    /// ring, `io_uring_buf_ring_add`) gives it back to the kernel, and may arm the socket's
    /// multishot `IORING_OP_RECV` again under the read-ahead rules.
    // Pre-specialized for the results CogenHTTP reads with (a request, a body piece, a
    // count): unspecialized, every call looked up the `(consumed:result:)` tuple's
    // metadata in the runtime's locked cache (~0.4 % of a plaintext request's CPU).
    @_specialize(exported: true, where Result == Bool)
    @_specialize(exported: true, where Result == Int)
    @_specialize(exported: true, where Result == (Int, Int))
    public func withReceivedBytes<Result>(
        _ body: (UnsafeRawBufferPointer) throws -> (consumed: Int, result: Result)
    ) throws -> Result {
        scheduler.assertOnLoop()
        try throwTrackedSendFailure()  // a failed tracked send is reported by the next operation
        guard !receiving else {
            throw SocketError(errno: EBUSY, operation: "read in place (another receive is pending on this socket)")
        }
        guard descriptor >= 0 && !closing else {
            throw SocketError(errno: EBADF, operation: "read in place (the socket is closed)")
        }
        // Set while `body` runs: a nested read is refused, nothing is given back meanwhile.
        receiving = true
        defer { receiving = false }
        let pool = scheduler.bufferPool
        let places = (readBuffer.isEmpty ? 0 : 1) + (spilledHead < spilled.count ? 1 : 0) + (chunks.count - chunksHead)
        if places > 1 { gatherHeldBytes(pool) }
        // Now at most one place holds bytes.
        let available: Int
        let outcome: (consumed: Int, result: Result)
        if !readBuffer.isEmpty {
            available = readBuffer.count
            outcome = try readBuffer.withUnsafeBytes(body)
        } else if spilledHead < spilled.count {
            let start = spilledHead
            available = spilled.count - start
            outcome = try spilled.withUnsafeBytes { try body(UnsafeRawBufferPointer(rebasing: $0[start...])) }
        } else if chunksHead < chunks.count, let pool {
            let chunk = chunks[chunksHead]
            available = chunk.length - chunk.offset
            outcome = try body(UnsafeRawBufferPointer(rebasing: pool.bytes(chunk.buffer, count: chunk.length)[chunk.offset...]))
        } else {
            available = 0
            outcome = try body(UnsafeRawBufferPointer(start: nil, count: 0))
        }
        let consumed = outcome.consumed
        guard consumed >= 0 && consumed <= available else {
            throw Self.invalid("read in place", "consumed \(consumed) of \(available) bytes")
        }
        if consumed > 0 { consumeHeld(consumed, pool) }
        return outcome.result
    }

    /// Moves every held byte, in order, into `readBuffer`; ring buffers go back.
    private func gatherHeldBytes(_ pool: BufferPool?) {
        inPlaceGathers += 1
        Self.reserve(&readBuffer, heldBytes)
        if spilledHead < spilled.count {
            readBuffer.append(contentsOf: spilled[spilledHead...])
            emptySpilled()
        }
        guard let pool, chunksHead < chunks.count else { return }
        for chunk in chunks[chunksHead...] {
            readBuffer.append(contentsOf: pool.bytes(chunk.buffer, count: chunk.length)[chunk.offset...])
        }
        // Given back only once the chunks are gone from the socket's books: a giveBack may
        // re-arm this socket (`buffersReturned`).
        let buffers = chunks[chunksHead...].map(\.buffer)
        chunks.removeAll(keepingCapacity: true)
        chunksHead = 0
        chunkBytes = 0
        for buffer in buffers { pool.giveBack(buffer) }
    }

    /// Drops the first `count` bytes held, all in one place (after `gatherHeldBytes`).
    private func consumeHeld(_ count: Int, _ pool: BufferPool?) {
        if !readBuffer.isEmpty {
            consumeReadBuffer(count)
        } else if spilledHead < spilled.count {
            spilledHead += count
            if spilledHead == spilled.count { emptySpilled() }
        } else if let pool, chunksHead < chunks.count {
            let chunk = chunks[chunksHead]
            chunkBytes -= count
            if chunk.offset + count == chunk.length {
                chunks.removeAll(keepingCapacity: true)  // it was the only one
                chunksHead = 0
                pool.giveBack(chunk.buffer)
            } else {
                chunks[chunksHead].offset += count
            }
        }
        if let pool { rearmAfterRead(pool) }
    }

    /// Waits until the socket holds more than `count` received bytes, for
    /// ``withReceivedBytes(_:)`` to read in place: a parser that needs the rest of a
    /// message waits beyond what it has looked at (the count of the buffer it was given,
    /// less what it consumed), not beyond what is held now: bytes that came meanwhile
    /// return the wait at once.
    ///
    /// The bytes held count against ``Scheduler/Configuration/readAheadLimit``, and so do
    /// the ones waited for: a wait for more than the limit throws ``ReadAheadLimitError``
    /// at once (nothing is received; the bytes held stay readable), so a protocol can
    /// answer "too large" (an HTTP server's 431) instead of holding more. Keep a parser's
    /// own limit under the read-ahead limit.
    ///
    /// - Parameters:
    ///   - count: How many held bytes the caller has looked at and still holds.
    ///   - deadline: When to give up.
    ///   - placement: Where the coroutine goes when bytes arrive after a wait (bytes
    ///     already held return at once, without a trip through the run queue).
    /// - Returns: `true` when more than `count` bytes are held now; `false` when the peer
    ///   ended the stream first (the bytes held stay readable; later waits return `false`
    ///   again).
    /// - Throws: ``ReadAheadLimitError`` when `count` is at least the read-ahead limit,
    ///   ``TimeoutError`` (its `bytesTransferred`: bytes that arrived during the wait,
    ///   still held), ``SocketError`` (``SocketError/isConnectionClosed`` on a reset;
    ///   `EINVAL` for a negative `count`; `EBUSY` while another receive is pending; `EBADF`
    ///   once closed), `CancellationError`. Bytes held stay readable after each.
    ///
    /// Uses the socket's multishot `IORING_OP_RECV` (`IORING_RECV_MULTISHOT`, Linux 6.0)
    /// into the provided-buffer ring, armed with the room left under the read-ahead limit
    /// as its byte limit (6.17; one buffer-select receive at a time before), the bytes
    /// staying in the ring buffers they landed in; otherwise `IORING_OP_RECV` (5.6) into
    /// the socket's own buffer, or `recv(2)` when epoll reports the socket readable, each
    /// for at most the room left.
    // Inlined into `Server.Connection.waitForBytes` (the idle wait of every request on a
    // server connection): one async frame fewer per request.
    @inline(__always)
    public func waitForBytes(
        beyond count: Int, deadline: Deadline? = nil, placement: Placement = .back
    ) async throws -> Bool {
        scheduler.assertOnLoop()
        try throwTrackedSendFailure()  // a failed tracked send is reported by the next operation
        let start = heldBytes
        guard count >= 0 else { throw Self.invalid("wait for bytes", "count must not be negative, got \(count)") }
        if start > count { return true }
        let limit = scheduler.readAheadLimit
        guard count < limit else { throw ReadAheadLimitError(limit: limit, bytesHeld: start) }
        guard let pool = scheduler.bufferPool else {
            // The 5.x and epoll paths: receives into `readBuffer` (the only place bytes are
            // held without a ring), each for the room left.
            while readBuffer.count <= count {
                let received: Int
                do {
                    received = try await receiveIntoBuffer(
                        maxLength: limit - readBuffer.count, deadline: deadline, placement: placement
                    ) {
                        Self.reserve(&readBuffer, readBuffer.count + $0.count)
                        readBuffer.append(contentsOf: $0)
                    }
                } catch is TimeoutError {
                    throw TimeoutError(operation: "wait for bytes", bytesTransferred: heldBytes - start)
                }
                if received == 0 { return false }
            }
            return true
        }
        guard !receiving else {
            throw SocketError(errno: EBUSY, operation: "wait for bytes (another receive is pending on this socket)")
        }
        receiving = true
        defer { receiving = false }
        while heldBytes <= count {
            if receivedEnd { return false }
            if let failure = receiveFailure {
                receiveFailure = nil
                throw failure
            }
            guard descriptor >= 0 && !closing else {
                throw SocketError(errno: EBADF, operation: "wait for bytes (the socket is closed)")
            }
            // Armed again when it ended (at its byte limit, for want of buffers), for the
            // room left beside what is held: a reader that consumed everything gets the limit.
            receiverRoom = limit - heldBytes
            if multishotReceive == nil && !starvedForBuffers { armReceive(pool, limit: receiverRoom) }
            let settings = ParkSettings(label: "wait for bytes", deadline: deadline)
            scheduler.streamWaiters += 1
            defer { scheduler.streamWaiters -= 1 }
            do {
                let _: Void = try await scheduler.suspend(settings) { receiver = ($0, placement) }
            } catch {
                receiver = nil
                if error is TimeoutError {
                    throw TimeoutError(operation: "wait for bytes", bytesTransferred: heldBytes - start)
                }
                throw error
            }
        }
        return true
    }

    /// The 5.x and epoll path: one receive of up to `maxLength` bytes, handed to `take`.
    /// The epoll fast path receives into the scheduler's scratch buffer and copies out at
    /// once; a receive that waits uses the socket's own buffer (on epoll at most
    /// `keptReceiveCapacity`), given back afterwards when larger than that.
    @inline(__always)
    private func receiveIntoBuffer(
        maxLength: Int, deadline: Deadline?, placement: Placement, _ take: (UnsafeRawBufferPointer) -> Void
    ) async throws -> Int {
        guard !receiving else {
            throw SocketError(errno: EBUSY, operation: "receive (another receive is pending on this socket)")
        }
        try throwTrackedSendFailure()
        receiving = true
        defer { receiving = false }
        var notReady = false
        if descriptor >= 0 && !closing, let readiness = scheduler.readiness {
            if readiness.isKnownDrained(descriptor, owner: serial) {
                // The last receive emptied the queue and no edge came since: wait for one
                // (no `recv(2)` that would return `EAGAIN`; see `EpollBackend.isKnownDrained`).
                notReady = true
            } else {
                let length = min(maxLength, Scheduler.receiveScratchLimit)
                let scratch = scheduler.receiveScratch(length)
                let descriptor = descriptor
                let serial = serial
                if let result = await scheduler.attemptInline(placement: placement, isReceive: true, {
                    var drained = false
                    let result = tryReceive(descriptor, into: scratch, length, drained: &drained)
                    // Marked at the call: `attemptInline` may yield before it returns.
                    if drained { readiness.noteDrained(descriptor, owner: serial) }
                    if result > 0 { take(UnsafeRawBufferPointer(start: scratch, count: Int(result))) }
                    return result
                }) {
                    if result >= 0 { return Int(result) }
                    if result != -EAGAIN { throw SocketError(errno: -result, operation: "receive") }
                    notReady = true
                }
            }
        }
        // A huge exact read must not make a huge buffer (a receive may return less than
        // asked, and its caller asks again). On epoll a receive that waited takes at most
        // what the socket's kept buffer holds (the fast path takes the rest at once).
        let maxLength = min(maxLength, scheduler.attemptsInline ? Self.keptReceiveCapacity : Scheduler.receiveScratchLimit)
        // One receive operation per socket, reused once nothing else holds it (a request/
        // response loop on epoll parks on a receive per request: no allocation for it).
        let operation: ReceiveOperation
        if spareReceive != nil && isKnownUniquelyReferenced(&spareReceive) {
            // invariant: `spareReceive != nil` (checked on the line above).
            operation = spareReceive.unsafelyUnwrapped
            operation.reuse(length: maxLength)
        } else {
            operation = ReceiveOperation(socket: self, length: maxLength)
            spareReceive = operation
        }
        operation.knownNotReady = notReady
        if receiveCapacity < maxLength {
            receiveBuffer.deallocate()
            receiveBuffer = UnsafeMutableRawPointer.allocate(byteCount: maxLength, alignment: 16)
            receiveCapacity = maxLength
        }
        // The operation's final completion has come when `run` returns or throws.
        defer {
            if receiveCapacity > Self.keptReceiveCapacity {
                receiveBuffer.deallocate()
                receiveBuffer = UnsafeMutableRawPointer.allocate(byteCount: 1, alignment: 16)
                receiveCapacity = 0
            }
        }
        let count = try await run(operation, deadline: deadline, placement: placement) { $0.parked = $1 }
        take(UnsafeRawBufferPointer(start: receiveBuffer, count: count))
        return count
    }

    /// A socket's own receive buffer up to this size stays for its next receive.
    private static let keptReceiveCapacity = 16 << 10

    /// Receives exactly `count` bytes.
    /// - Parameters:
    ///   - count: How many bytes.
    ///   - timeout: Strong (whole read) or weak (inactivity), or none.
    ///   - placement: Where the coroutine goes when data arrives.
    /// - Returns: `count` bytes.
    /// - Throws: ``EndOfStreamError`` if the peer closes first, ``TimeoutError`` (with the
    ///   bytes received so far), ``SocketError`` (`EINVAL` for a negative `count`). Bytes
    ///   received before an error stay readable.
    ///
    /// Uses `IORING_OP_RECV` (Linux 5.6), as often as needed; each call asks for the
    /// missing bytes plus at most ``Scheduler/Configuration/readAheadLimit``, which stay
    /// for the next read.
    public func receive(
        exactly count: Int, timeout: SocketTimeout? = nil, placement: Placement = .back
    ) async throws -> [UInt8] {
        guard count >= 0 else { throw Self.invalid("receive exactly", "count must not be negative, got \(count)") }
        var deadline = timeout.map { Self.deadline(for: $0) }
        while readBuffer.count < count {
            let received: Int
            do {
                // What is missing, and at most the read-ahead limit beyond it.
                received = try await fill(
                    maxLength: count - readBuffer.count + scheduler.readAheadLimit, wanted: count - readBuffer.count,
                    deadline: deadline, placement: placement)
            } catch is TimeoutError {
                throw TimeoutError(operation: "receive exactly \(count) bytes", bytesTransferred: readBuffer.count)
            }
            if received == 0 { throw EndOfStreamError(bytesAvailable: readBuffer.count, bytesWanted: count) }
            if case .weak(let duration) = timeout { deadline = .after(duration) }
        }
        // Two statements: the slice is gone before the bytes are dropped, which then
        // move in place instead of copying the whole buffer.
        let bytes = Array(readBuffer[..<count])
        consumeReadBuffer(count)
        return bytes
    }

    /// Receives one line, up to and including its `\n`.
    /// - Parameters:
    ///   - limit: The longest line accepted, newline included.
    ///   - timeout: Strong (whole read) or weak (inactivity), or none.
    ///   - placement: Where the coroutine goes when data arrives.
    /// - Returns: The line with its newline; at end of stream the bytes before it (no
    ///   newline), or empty when none are left.
    /// - Throws: ``LineTooLongError`` when `limit` bytes hold no newline,
    ///   ``TimeoutError`` (with the bytes received so far), ``SocketError`` (`EINVAL` when
    ///   `limit` is less than 1). In each case the bytes received stay readable.
    ///
    /// Uses `IORING_OP_RECV` (Linux 5.6), as often as needed.
    public func receiveLine(
        limit: Int = 65536, timeout: SocketTimeout? = nil, placement: Placement = .back
    ) async throws -> [UInt8] {
        guard limit > 0 else { throw Self.invalid("receive a line", "limit must be at least 1, got \(limit)") }
        var deadline = timeout.map { Self.deadline(for: $0) }
        var searched = 0
        while true {
            // Another coroutine's receive may have taken buffered bytes while this one waited.
            searched = min(searched, readBuffer.count)
            if let newline = readBuffer[searched...].prefix(limit - searched).firstIndex(of: UInt8(ascii: "\n")) {
                let line = Array(readBuffer[...newline])
                consumeReadBuffer(line.count)
                return line
            }
            searched = readBuffer.count
            if searched >= limit { throw LineTooLongError(limit: limit) }
            let received: Int
            do {
                // Bytes past the newline are read ahead: at most the limit.
                received = try await fill(
                    maxLength: min(max(limit - searched, 1), scheduler.readAheadLimit), deadline: deadline,
                    placement: placement)
            } catch is TimeoutError {
                throw TimeoutError(operation: "receive a line", bytesTransferred: readBuffer.count)
            }
            if received == 0 {
                let rest = readBuffer
                readBuffer = []
                return rest
            }
            if case .weak(let duration) = timeout { deadline = .after(duration) }
        }
    }

    /// Sends some of `bytes`.
    /// - Parameters:
    ///   - bytes: What to send; held by the operation until its completion.
    ///   - deadline: When to give up (the send is cancelled in the kernel).
    ///   - placement: Where the coroutine goes when the send completes.
    /// - Returns: How many bytes the kernel took.
    /// - Throws: ``SocketError`` (``SocketError/isConnectionClosed`` for `EPIPE` and
    ///   `ECONNRESET`), ``TimeoutError``, `CancellationError`.
    ///
    /// Uses `IORING_OP_SEND` (Linux 5.6) with `MSG_NOSIGNAL`.
    public func send(_ bytes: [UInt8], deadline: Deadline? = nil, placement: Placement = .back) async throws -> Int {
        try await send(bytes, from: 0, deadline: deadline, placement: placement)
    }

    @inline(__always)
    private func send(_ bytes: [UInt8], from offset: Int, deadline: Deadline?, placement: Placement) async throws -> Int {
        scheduler.assertOnLoop()
        if trackedSends != nil { try await settleTrackedSendsBeforeSend(deadline: deadline) }
        guard offset < bytes.count else { return 0 }
        guard !sending else {
            throw SocketError(errno: EBUSY, operation: "send (another send is pending on this socket)")
        }
        sending = true
        defer { sending = false }
        var notReady = false
        if descriptor >= 0 && !closing, let result = await scheduler.attemptInline(placement: placement, {
            // invariant: `offset < bytes.count` (checked above), so the array has storage.
            bytes.withUnsafeBytes { trySend(descriptor, $0.baseAddress! + offset, $0.count - offset) }
        }) {
            if result >= 0 { return Int(result) }
            if result != -EAGAIN { throw SocketError(errno: -result, operation: "send") }
            notReady = true
        }
        let operation: SendOperation
        if spareSend != nil && isKnownUniquelyReferenced(&spareSend) {
            // invariant: `spareSend != nil` (checked on the line above).
            operation = spareSend.unsafelyUnwrapped
            operation.reuse(bytes: bytes, offset: offset)
        } else {
            operation = SendOperation(socket: self, bytes: bytes, offset: offset)
            spareSend = operation
        }
        operation.knownNotReady = notReady
        return try await run(operation, deadline: deadline, placement: placement) { $0.parked = $1 }
    }

    /// Sends all of `bytes`, in as many sends as the kernel needs.
    /// - Parameters:
    ///   - bytes: What to send.
    ///   - timeout: Strong (whole send) or weak (inactivity), or none.
    ///   - placement: Where the coroutine goes when the last send completes.
    /// - Throws: ``TimeoutError`` (with the bytes sent so far), ``SocketError``.
    ///
    /// Uses `IORING_OP_SEND` (Linux 5.6) with `MSG_NOSIGNAL`, as often as needed.
    public func sendAll(_ bytes: [UInt8], timeout: SocketTimeout? = nil, placement: Placement = .back) async throws {
        var deadline = timeout.map { Self.deadline(for: $0) }
        var sent = 0
        while sent < bytes.count {
            do {
                sent += try await send(bytes, from: sent, deadline: deadline, placement: placement)
            } catch is TimeoutError {
                throw TimeoutError(operation: "send all \(bytes.count) bytes", bytesTransferred: sent)
            }
            if case .weak(let duration) = timeout { deadline = .after(duration) }
        }
    }

    private static func deadline(for timeout: SocketTimeout) -> Deadline {
        switch timeout {
        case .strong(let duration), .weak(let duration): .after(duration)
        }
    }

    /// Shuts down one or both directions; after `.write` the peer reads end of stream.
    /// - Parameters:
    ///   - direction: Which directions.
    ///   - placement: Where the coroutine goes when done.
    /// - Throws: ``SocketError``.
    ///
    /// Uses `IORING_OP_SHUTDOWN` (Linux 5.11).
    public func shutdown(_ direction: ShutdownDirection, placement: Placement = .back) async throws {
        let how = switch direction {
        case .read: Int32(SHUT_RD)
        case .write: Int32(SHUT_WR)
        case .both: Int32(SHUT_RDWR)
        }
        let _: Void = try await run(ShutdownOperation(socket: self, how: how), deadline: nil, placement: placement) {
            $0.parked = $1
        }
    }

    /// Closes the socket: operations still pending on it are cancelled in the kernel and
    /// their coroutines resume with a ``SocketError`` (`EBADF`, "the socket was closed")
    /// once their final completions have arrived; then the descriptor is closed. A second
    /// close does nothing. Tracked sends (``sendTracked(_:)-([UInt8])``) are flushed first:
    /// the close waits until they have completed, at most ``trackedSendLinger``, then
    /// cancels what is left; their stored error is thrown once the descriptor is closed.
    /// - Parameter placement: Where the coroutine goes when done.
    /// - Throws: ``SocketError`` from `close`, or the stored error of a tracked send.
    ///
    /// Uses `IORING_OP_ASYNC_CANCEL` (5.5) per pending operation, then `IORING_OP_CLOSE` (5.6).
    public func close(placement: Placement = .back) async throws {
        scheduler.assertOnLoop()
        guard descriptor >= 0 && !closing else { return }
        // Tracked sends first: flushed (up to their linger), their error thrown once closed.
        let trackedFailure = trackedSends == nil ? nil : await settleTrackedSendsForClose()
        try await closeDescriptor(placement: placement)
        if let trackedFailure { throw trackedFailure }
    }

    private func closeDescriptor(placement: Placement) async throws {
        guard descriptor >= 0 && !closing else { return }
        closing = true
        let descriptor = self.descriptor
        for operation in pending { operation.requestCancel(.closed) }
        // Acceptors learn the listener is gone; queued connections are closed.
        let waiting = acceptors
        acceptors = []
        for (parked, placement) in waiting {
            scheduler.resume(parked, throwing: SocketError(errno: EBADF, operation: "accept (the socket was closed)"),
                             placement: placement)
        }
        for fd in accepted[acceptedHead...] { Glibc.close(fd) }
        accepted = []
        acceptedHead = 0
        // A receiver waiting for chunks learns the socket is gone; held buffers go back.
        if let (parked, placement) = receiver {
            receiver = nil
            scheduler.resume(parked, throwing: SocketError(errno: EBADF, operation: "receive (the socket was closed)"),
                             placement: placement)
        }
        if let pool = scheduler.bufferPool {
            for chunk in chunks[chunksHead...] { pool.giveBack(chunk.buffer) }
            pool.forget(self)
        }
        chunks = []
        chunksHead = 0
        chunkBytes = 0
        spilled = []
        spilledHead = 0
        if !pending.isEmpty {
            // Not cancellable: the descriptor must not be closed under a pending operation.
            let _: Void = try await scheduler.park { (parked: Parked<Void>) in closeWaiters.append(parked) }
        }
        guard self.descriptor >= 0 else { return }
        self.descriptor = -1
        readBuffer = []
        let operation = CloseOperation(socket: self, descriptor: descriptor)
        do {
            let _: Void = try await scheduler.perform(operation, deadline: nil, placement: placement) { $0.parked = $1 }
        } catch {
            // The park was refused (shutdown, a cancelled coroutine) before the close went
            // to the kernel: close it here rather than leak it.
            if operation.userData == 0 { Glibc.close(descriptor) }
            throw error
        }
    }
}
