public import CogenUring
import Glibc

/// The timeout new sockets get (``sockets/setdefaulttimeout(_:)``).
private let defaultSocketTimeout = PthreadLock<Timeout>(.none)

/// cogen's socket (`cogen.core.sockets.Socket`) on a ``CogenUring/Socket``: plain methods
/// for the set-up (`bind`, `listen`, options, timeout), and factories of the operations a
/// coroutine yields to do I/O.
///
/// ```swift
/// let listener = try sockets.Socket(on: sched)
/// try listener.bind(.loopback())
/// try listener.listen(16)
/// sched.add {
///     let (conn, _) = try await yield(listener.accept())
///     let data = try await yield(conn.recv(1024))
///     try await yield(conn.sendall(data))
///     try await conn.close()
///     return nil
/// }
/// ```
/// Every operation goes through the scheduler's ring (or the epoll backend, which runs
/// the same operation definitions); none is tried inline first. When it completes, the
/// coroutine goes to the front of the run queue if the operation's priority has the `OP`
/// bit, to the back otherwise. One receive and one send may be pending at the same time; a
/// second concurrent receive (or send) fails with ``ConnectionError`` (`EBUSY`).
///
/// Use a socket on the thread of the scheduler it was made for: from its coroutines, or
/// before ``Scheduler/run()`` on the thread that will run it.
public final class Socket: @unchecked Sendable, CustomStringConvertible {
    // @unchecked Sendable: confined to its scheduler's thread, like the core socket.

    /// The core socket underneath. ``connect(_:weakTimeout:prio:)`` replaces it (the core
    /// connects a socket of its own making).
    public private(set) var core: CogenUring.Socket
    /// The address family.
    public let family: SocketAddress.Family
    private var timeout: Timeout
    /// Options set so far, applied again to the socket a connect makes.
    private var options: [RawOption] = []
    private var bound = false

    private enum RawOption {
        case option(SocketOption)
        case raw(level: Int32, name: Int32, value: Int32)
    }

    /// Creates a TCP socket (cogen's `Socket(family)`).
    /// - Parameters:
    ///   - family: `.ipv4` (the default), `.ipv6` or `.unix`.
    ///   - timeout: The timeout its operation factories use; `nil` or ``Timeout/none``:
    ///     the module default (``sockets/getdefaulttimeout()``).
    ///   - scheduler: Whose ring runs its operations; by default the scheduler running on
    ///     this thread (pass it when creating sockets before ``Scheduler/run()``).
    /// - Throws: ``ConnectionError`` from `socket(2)` (`EMFILE`…).
    ///
    /// A plain `socket(2)` call with `SOCK_CLOEXEC` (no ring operation).
    public init(family: SocketAddress.Family = .ipv4, timeout: Timeout? = nil, on scheduler: Scheduler? = nil) throws {
        do {
            core = try CogenUring.Socket(family: family, on: scheduler?.core)
        } catch {
            throw cogenError(error)
        }
        self.family = family
        self.timeout = Self.initialTimeout(timeout)
    }

    /// Wraps a core socket (cogen's `Socket(_sock=…)`).
    /// - Parameters:
    ///   - core: The socket; it now belongs to this wrapper.
    ///   - timeout: The timeout its operation factories use; `nil`: the module default.
    public init(wrapping core: CogenUring.Socket, timeout: Timeout? = nil) {
        self.core = core
        family = core.family
        self.timeout = Self.initialTimeout(timeout)
    }

    private static func initialTimeout(_ timeout: Timeout?) -> Timeout {
        // cogen: `_timeout or getdefaulttimeout()`.
        if let timeout, timeout.isSet { return timeout }
        return sockets.getdefaulttimeout()
    }

    // MARK: Plain methods

    /// Binds the socket to a local address.
    /// - Parameter address: The address; port 0 lets the kernel choose (see
    ///   ``getsockname()``).
    /// - Throws: ``ConnectionError`` (`EADDRINUSE`…).
    ///
    /// A plain `bind(2)` call (`IORING_OP_BIND` needs Linux 6.11 and is not used).
    public func bind(_ address: SocketAddress) throws {
        do { try core.bind(to: address) } catch { throw cogenError(error) }
        bound = true
    }

    /// Binds the socket to an IP address given as text (cogen's `bind((host, port))`).
    /// - Parameters:
    ///   - host: An IPv4 or IPv6 address in numeric form (no name lookup).
    ///   - port: The port; 0 lets the kernel choose.
    /// - Throws: ``ConnectionError`` (`EINVAL` for a bad address, `EADDRINUSE`…).
    ///
    /// A plain `bind(2)` call.
    public func bind(_ host: String, _ port: UInt16) throws {
        try bind(Self.address(host, port))
    }

    /// Starts listening (cogen's `listen(backlog)`).
    /// - Parameter backlog: The `listen(2)` backlog.
    /// - Throws: ``ConnectionError``.
    ///
    /// A plain `listen(2)` call (`IORING_OP_LISTEN` needs Linux 6.11 and is not used).
    public func listen(_ backlog: Int = 128) throws {
        do { try core.listen(backlog: Int32(clamping: backlog)) } catch { throw cogenError(error) }
    }

    /// The descriptor (changes when ``connect(_:weakTimeout:prio:)`` connects; -1 once
    /// closed).
    /// - Returns: The descriptor.
    public func fileno() -> Int32 { core.descriptor }

    /// The local address.
    /// - Returns: The address (after `bind` with port 0, the port chosen).
    /// - Throws: ``ConnectionError``.
    ///
    /// A plain `getsockname(2)` call.
    public func getsockname() throws -> SocketAddress {
        do { return try core.localAddress } catch { throw cogenError(error) }
    }

    /// The peer's address.
    /// - Returns: The address.
    /// - Throws: ``ConnectionError`` (`ENOTCONN` when not connected).
    ///
    /// A plain `getpeername(2)` call.
    public func getpeername() throws -> SocketAddress {
        do { return try core.remoteAddress } catch { throw cogenError(error) }
    }

    /// Sets a socket option (cogen's `setsockopt`, for the options a server sets).
    /// - Parameter option: The option and its value.
    /// - Throws: ``ConnectionError``.
    ///
    /// A plain `setsockopt(2)` call.
    public func setOption(_ option: SocketOption) throws {
        do { try core.setOption(option) } catch { throw cogenError(error) }
        options.append(.option(option))
    }

    /// Sets an integer socket option (cogen's `setsockopt(level, name, value)`).
    /// - Parameters:
    ///   - level: `SOL_SOCKET`, `IPPROTO_TCP`…
    ///   - name: `SO_SNDBUF`, `TCP_NODELAY`…
    ///   - value: The value.
    /// - Throws: ``ConnectionError``.
    ///
    /// A plain `setsockopt(2)` call.
    public func setsockopt(_ level: Int32, _ name: Int32, _ value: Int32) throws {
        try Self.setRaw(core.descriptor, level, name, value)
        options.append(.raw(level: level, name: name, value: value))
    }

    private static func setRaw(_ descriptor: Int32, _ level: Int32, _ name: Int32, _ value: Int32) throws {
        var value = value
        guard Glibc.setsockopt(descriptor, level, name, &value, socklen_t(MemoryLayout<Int32>.size)) == 0 else {
            throw ConnectionError(errno: Glibc.errno, operation: "setsockopt")
        }
    }

    /// Sets the timeout the operation factories give their operations (cogen's
    /// `settimeout`); operations made earlier keep theirs.
    /// - Parameter timeout: Seconds, a `Duration`, a date, `nil`/``Timeout/none`` (the
    ///   scheduler's default applies) or ``Timeout/never``.
    public func settimeout(_ timeout: Timeout?) {
        self.timeout = timeout ?? .none
    }

    /// The timeout the operation factories use (cogen's `gettimeout`).
    /// - Returns: The timeout.
    public func gettimeout() -> Timeout { timeout }

    /// cogen's `setblocking`: a cogen socket never blocks the thread.
    /// - Parameter flag: `false` does nothing.
    /// - Throws: ``UnsupportedSocketMode`` for `true` (cogen: `RuntimeError("You can't.")`).
    public func setblocking(_ flag: Bool) throws {
        if flag { throw UnsupportedSocketMode() }
    }

    /// Shuts down one or both directions; after `.write` the peer reads end of stream.
    /// - Parameter how: `.read`, `.write` or `.both`.
    /// - Throws: ``ConnectionError`` (`ENOTCONN`…).
    ///
    /// Uses `IORING_OP_SHUTDOWN` (Linux 5.11); the coroutine goes to the front of the run
    /// queue when it is done (cogen's `shutdown` is a plain call). The epoll backend runs
    /// the same operation as a `shutdown(2)` call.
    public func shutdown(_ how: ShutdownDirection) async throws {
        do { try await core.shutdown(how, placement: .front) } catch { throw cogenError(error) }
    }

    /// Closes the socket. Operations still pending on it (in other coroutines) end with
    /// ``ConnectionError`` (`EBADF`); a second close does nothing.
    /// - Throws: ``ConnectionError`` from `close`.
    ///
    /// Uses `IORING_OP_ASYNC_CANCEL` (Linux 5.5) per pending operation, then
    /// `IORING_OP_CLOSE` (5.6); the coroutine goes to the front of the run queue when it is
    /// done (cogen's `close` is a plain call). The epoll backend runs the same operations
    /// as system calls.
    public func close() async throws {
        do { try await core.close(placement: .front) } catch { throw cogenError(error) }
    }

    // MARK: Operation factories

    /// A receive to yield: up to `bufsize` bytes, with this socket's timeout.
    /// - Parameters:
    ///   - bufsize: The most bytes returned.
    ///   - weakTimeout: Kept for cogen's signature (one receive has one deadline).
    ///   - prio: `OP` bit: the coroutine goes to the front when data arrives.
    /// - Returns: The ``Recv`` operation; see it for what `yield` returns and throws.
    public func recv(_ bufsize: Int = 4096, weakTimeout: Bool = true, prio: Priority = priority.DEFAULT) -> Recv {
        Recv(self, bufsize, timeout: timeout, weakTimeout: weakTimeout, prio: prio)
    }

    /// A send to yield: one send of some of `data`, with this socket's timeout.
    /// - Parameters:
    ///   - data: The bytes (`Array("text".utf8)`, `"text".utf8`).
    ///   - weakTimeout: Kept for cogen's signature (one send has one deadline).
    ///   - prio: `OP` bit: the coroutine goes to the front when the send completes.
    /// - Returns: The ``Send`` operation.
    public func send(_ data: some Sequence<UInt8>, weakTimeout: Bool = true, prio: Priority = priority.DEFAULT) -> Send {
        Send(self, Array(data), timeout: timeout, weakTimeout: weakTimeout, prio: prio)
    }

    /// A send to yield: one send of some of `data` (shared, not copied), with this
    /// socket's timeout.
    /// - Parameters:
    ///   - data: The bytes.
    ///   - weakTimeout: Kept for cogen's signature (one send has one deadline).
    ///   - prio: `OP` bit: the coroutine goes to the front when the send completes.
    /// - Returns: The ``Send`` operation.
    public func send(_ data: [UInt8], weakTimeout: Bool = true, prio: Priority = priority.DEFAULT) -> Send {
        Send(self, data, timeout: timeout, weakTimeout: weakTimeout, prio: prio)
    }

    /// A send-all to yield: all of `data`, with this socket's timeout.
    /// - Parameters:
    ///   - data: The bytes.
    ///   - weakTimeout: `true` (the default): the timeout is an inactivity timeout, each
    ///     partial send moves the deadline; `false`: a fixed deadline.
    ///   - prio: `OP` bit: the coroutine goes to the front when the last send completes.
    /// - Returns: The ``SendAll`` operation.
    public func sendall(_ data: some Sequence<UInt8>, weakTimeout: Bool = true, prio: Priority = priority.DEFAULT) -> SendAll {
        SendAll(self, Array(data), timeout: timeout, weakTimeout: weakTimeout, prio: prio)
    }

    /// A send-all to yield: all of `data` (shared, not copied), with this socket's timeout.
    /// - Parameters:
    ///   - data: The bytes.
    ///   - weakTimeout: `true` (the default): the timeout is an inactivity timeout, each
    ///     partial send moves the deadline; `false`: a fixed deadline.
    ///   - prio: `OP` bit: the coroutine goes to the front when the last send completes.
    /// - Returns: The ``SendAll`` operation.
    public func sendall(_ data: [UInt8], weakTimeout: Bool = true, prio: Priority = priority.DEFAULT) -> SendAll {
        SendAll(self, data, timeout: timeout, weakTimeout: weakTimeout, prio: prio)
    }

    /// An accept to yield, with this socket's timeout.
    /// - Parameters:
    ///   - weakTimeout: Kept for cogen's signature.
    ///   - prio: `OP` bit: the coroutine goes to the front when a connection arrives.
    /// - Returns: The ``Accept`` operation.
    public func accept(weakTimeout: Bool = true, prio: Priority = priority.DEFAULT) -> Accept {
        Accept(self, timeout: timeout, weakTimeout: weakTimeout, prio: prio)
    }

    /// A connect to yield, with this socket's timeout.
    /// - Parameters:
    ///   - address: The peer.
    ///   - weakTimeout: Kept for cogen's signature.
    ///   - prio: `OP` bit: the coroutine goes to the front when the connection is made.
    /// - Returns: The ``Connect`` operation.
    public func connect(_ address: SocketAddress, weakTimeout: Bool = true, prio: Priority = priority.DEFAULT) -> Connect {
        Connect(self, address, timeout: timeout, weakTimeout: weakTimeout, prio: prio)
    }

    /// A connect to an IP address given as text (cogen's `connect((host, port))`).
    /// - Parameters:
    ///   - host: An IPv4 or IPv6 address in numeric form (no name lookup).
    ///   - port: The port.
    ///   - weakTimeout: Kept for cogen's signature.
    ///   - prio: `OP` bit: the coroutine goes to the front when the connection is made.
    /// - Returns: The ``Connect`` operation.
    /// - Throws: ``ConnectionError`` (`EINVAL`) for an address that does not parse.
    public func connect(
        _ host: String, _ port: UInt16, weakTimeout: Bool = true, prio: Priority = priority.DEFAULT
    ) throws -> Connect {
        connect(try Self.address(host, port), weakTimeout: weakTimeout, prio: prio)
    }

    /// A file transfer to yield. As in cogen it does **not** use this socket's timeout (the
    /// scheduler's default still applies); construct ``SendFile`` for a timeout of its own.
    /// - Parameters:
    ///   - file: An open file descriptor; it must stay open until the operation ends.
    ///   - offset: Where to start; `nil`: the file's current position.
    ///   - length: How many bytes; `nil`: up to the end of the file.
    ///   - blocksize: Bytes read and sent per step; 0: 1 MiB.
    ///   - weakTimeout: For a timeout: each chunk sent moves the deadline when `true`.
    ///   - prio: `OP` bit: the coroutine goes to the front when the last chunk is sent.
    /// - Returns: The ``SendFile`` operation.
    public func sendfile(
        _ file: Int32, offset: Int64? = nil, length: Int? = nil, blocksize: Int = 4096,
        weakTimeout: Bool = true, prio: Priority = priority.DEFAULT
    ) -> SendFile {
        SendFile(file, self, offset: offset, length: length, blocksize: blocksize, weakTimeout: weakTimeout, prio: prio)
    }

    /// A buffered file object on this socket (cogen's `makefile`); closing it leaves the
    /// socket open.
    /// - Parameters:
    ///   - mode: Kept for cogen's signature (reading and writing both work).
    ///   - bufsize: Negative (the default): 8192; 0: unbuffered; 1: line-buffered writes;
    ///     otherwise the read chunk size and the write buffer limit.
    /// - Returns: The file object; its I/O methods are `async` (`try await f.readline()`).
    public func makefile(_ mode: String = "r", bufsize: Int = -1) -> SocketFile {
        SocketFile(self, mode: mode, bufsize: bufsize)
    }

    // MARK: For the operations

    /// A core socket connected by ``Connect`` takes this one's place, with its options.
    func adopt(_ connected: CogenUring.Socket) throws {
        for option in options {
            switch option {
            case .option(let option):
                do { try connected.setOption(option) } catch { throw cogenError(error) }
            case .raw(let level, let name, let value):
                try Self.setRaw(connected.descriptor, level, name, value)
            }
        }
        core = connected
    }

    /// Whether ``Connect`` can replace the core socket (nothing bound to it).
    var isBound: Bool { bound }

    static func address(_ host: String, _ port: UInt16) throws -> SocketAddress {
        do {
            return host.contains(":") ? try SocketAddress(ipv6: host, port: port) : try SocketAddress(ipv4: host, port: port)
        } catch {
            throw cogenError(error)
        }
    }

    public var description: String { "<Socket fd=\(core.descriptor) \(family) timeout=\(timeout)>" }
}

/// Thrown by ``Socket/setblocking(_:)`` when asked to block (cogen's
/// `RuntimeError("You can't.")`): a cogen socket never blocks the thread.
public struct UnsupportedSocketMode: Error, Sendable, CustomStringConvertible {
    public var description: String { "You can't: a cogen socket never blocks" }
}

// MARK: - Operations

/// The base of the socket operations (cogen's `SocketOperation`): a ``TimedOperation`` on a
/// ``Socket``, whose coroutine resumes at the front of the run queue when the operation
/// completes if its priority has the `OP` bit, at the back otherwise.
///
/// Errors: the peer gone (end of stream on a receive, `EPIPE`, `ECONNRESET`, `ECONNABORTED`) is
/// ``ConnectionClosed``; any other errno ``ConnectionError`` with that errno; the deadline
/// ``OperationTimeout`` with the bytes moved so far (received bytes stay readable).
/// Every operation goes through the io_uring ring; the epoll backend runs the same
/// operation definitions (each system call made when the descriptor is ready).
public class SocketOperation<Result: Sendable>: TimedOperation<Result>, @unchecked Sendable {
    /// The socket.
    public let sock: Socket

    init(sock: Socket, timeout: Timeout?, weakTimeout: Bool, prio: Priority) {
        self.sock = sock
        super.init(timeout: timeout, weakTimeout: weakTimeout, prio: prio)
    }

    public override func process(_ scheduler: Scheduler, _ coroutine: CoroutineInstance) async throws -> Result {
        do {
            return try await perform(on: scheduler, placement: scheduler.placement(prio.favoursOperation))
        } catch {
            throw cogenError(error, for: self)
        }
    }

    /// The work, on the core socket; errors are mapped by ``process(_:_:)``.
    func perform(on scheduler: Scheduler, placement: Placement) async throws -> Result {
        // invariant: every (internal) subclass overrides `perform` or `process`.
        fatalError("\(type(of: self)) overrides perform(on:placement:)")
    }

    public override var description: String {
        "\(type(of: self))(\(sock), timeout: \(timeout)\(weakTimeout ? ", weak" : ""), prio: \(prio))"
    }
}

/// Receives up to `bufsize` bytes (cogen's `Recv`); `yield` returns 1…`bufsize` bytes.
///
/// Throws ``ConnectionClosed`` at end of stream (cogen's `'Empty recv.'`),
/// ``OperationTimeout`` when the deadline passes (nothing is lost: the receive is
/// cancelled), ``ConnectionError`` (`EBUSY`) if another receive is pending on the socket.
///
/// Uses `IORING_OP_RECV` (Linux 5.6); with the scheduler's provided buffers, one multishot
/// `IORING_OP_RECV` per socket (`IORING_RECV_MULTISHOT` into a buffer ring, Linux 6.0)
/// that stays armed. The epoll backend runs the same definition (`recv(2)` when readable).
public final class Recv: SocketOperation<[UInt8]>, @unchecked Sendable {
    /// The most bytes returned.
    public let bufsize: Int

    /// Creates the receive (cogen's `Recv(sock, len, timeout=…)`).
    /// - Parameters:
    ///   - sock: The socket.
    ///   - bufsize: The most bytes returned; at least 1 (yielding it with less throws
    ///     ``ValueError``).
    ///   - timeout: Its own timeout; by default none (the scheduler's default applies).
    ///     ``Socket/recv(_:weakTimeout:prio:)`` passes the socket's.
    ///   - weakTimeout: Kept for cogen's signature.
    ///   - prio: `OP` bit: resume at the front when data arrives.
    public init(
        _ sock: Socket, _ bufsize: Int = 4096, timeout: Timeout? = nil, weakTimeout: Bool = true,
        prio: Priority = priority.DEFAULT
    ) {
        self.bufsize = bufsize
        super.init(sock: sock, timeout: timeout, weakTimeout: weakTimeout, prio: prio)
    }

    // `process` itself, not `perform`: one async frame less per receive.
    public override func process(_ scheduler: Scheduler, _ coroutine: CoroutineInstance) async throws -> [UInt8] {
        guard bufsize > 0 else { throw ValueError("Recv: bufsize must be at least 1, got \(bufsize)") }
        let bytes: [UInt8]
        do {
            bytes = try await sock.core.receive(
                maxLength: bufsize, deadline: deadline(on: scheduler),
                placement: scheduler.placement(prio.favoursOperation))
        } catch {
            throw cogenError(error, for: self)
        }
        if bytes.isEmpty { throw ConnectionClosed.endOfStream }
        return bytes
    }
}

/// Receives exactly `length` bytes (cogen's `RecvAll`); `yield` returns them.
///
/// The timeout is weak by default (each received chunk moves the deadline), strong with
/// `weakTimeout: false`. Throws ``ConnectionClosed`` when the stream ends first and
/// ``OperationTimeout`` when the deadline passes; in both cases the bytes received stay
/// readable by the next receive.
///
/// Uses `IORING_OP_RECV` (Linux 5.6) as often as needed (multishot with provided buffers,
/// 6.0). The epoll backend runs the same definition.
public final class RecvAll: SocketOperation<[UInt8]>, @unchecked Sendable {
    /// How many bytes.
    public let length: Int
    /// At end of stream, return what arrived (possibly nothing) instead of throwing: the
    /// buffered file's `read(size)`.
    var partialAtEnd = false

    /// Creates the read.
    /// - Parameters:
    ///   - sock: The socket.
    ///   - length: How many bytes.
    ///   - timeout: Its own timeout; by default none (the scheduler's default applies).
    ///   - weakTimeout: `true`: an inactivity timeout; `false`: a fixed deadline.
    ///   - prio: `OP` bit: resume at the front when the last bytes arrive.
    public init(
        _ sock: Socket, _ length: Int, timeout: Timeout? = nil, weakTimeout: Bool = true,
        prio: Priority = priority.DEFAULT
    ) {
        self.length = length
        super.init(sock: sock, timeout: timeout, weakTimeout: weakTimeout, prio: prio)
    }

    override func perform(on scheduler: Scheduler, placement: Placement) async throws -> [UInt8] {
        do {
            return try await sock.core.receive(exactly: length, timeout: socketTimeout(on: scheduler), placement: placement)
        } catch let end as EndOfStreamError where partialAtEnd {
            // The bytes that arrived are buffered in the core socket: no I/O.
            guard end.bytesAvailable > 0 else { return [] }
            return try await sock.core.receive(maxLength: end.bytesAvailable, placement: placement)
        }
    }
}

/// Receives one line up to and including `\n`, at most `limit` bytes: the buffered file's
/// `readline`. Without a newline within `limit` bytes it returns exactly `limit` bytes and
/// keeps the rest buffered; at end of stream it returns the partial line (empty when
/// nothing was left).
///
/// Uses `IORING_OP_RECV` (Linux 5.6) as often as needed; the epoll backend runs the same
/// definition.
final class RecvLine: SocketOperation<[UInt8]>, @unchecked Sendable {
    let limit: Int

    init(_ sock: Socket, limit: Int, timeout: Timeout?, weakTimeout: Bool, prio: Priority) {
        self.limit = limit
        super.init(sock: sock, timeout: timeout, weakTimeout: weakTimeout, prio: prio)
    }

    override func perform(on scheduler: Scheduler, placement: Placement) async throws -> [UInt8] {
        do {
            return try await sock.core.receiveLine(limit: limit, timeout: socketTimeout(on: scheduler), placement: placement)
        } catch is LineTooLongError {
            // `limit` bytes are buffered in the core socket: no I/O.
            return try await sock.core.receive(exactly: limit, placement: placement)
        }
    }
}

/// The base of ``Send`` and ``SendAll``: a socket operation carrying the bytes to send.
public class SendingOperation: SocketOperation<Int>, @unchecked Sendable {
    /// The bytes to send.
    public let data: [UInt8]

    /// Creates the operation (cogen's `Send(sock, buff, timeout=…)`, `SendAll(…)`).
    /// - Parameters:
    ///   - sock: The socket.
    ///   - data: The bytes.
    ///   - timeout: Its own timeout; by default none (the scheduler's default applies).
    ///   - weakTimeout: For ``SendAll``: `true`, an inactivity timeout; `false`, a fixed
    ///     deadline. One ``Send`` has one deadline.
    ///   - prio: `OP` bit: resume at the front when the (last) send completes.
    public init(
        _ sock: Socket, _ data: [UInt8], timeout: Timeout? = nil, weakTimeout: Bool = true,
        prio: Priority = priority.DEFAULT
    ) {
        self.data = data
        super.init(sock: sock, timeout: timeout, weakTimeout: weakTimeout, prio: prio)
    }

    /// Creates the operation from any byte sequence (`"text".utf8`), copied into an array.
    /// - Parameters:
    ///   - sock: The socket.
    ///   - data: The bytes.
    ///   - timeout: Its own timeout; by default none (the scheduler's default applies).
    ///   - weakTimeout: As for the array form.
    ///   - prio: `OP` bit: resume at the front when the (last) send completes.
    public convenience init(
        _ sock: Socket, _ data: some Sequence<UInt8>, timeout: Timeout? = nil, weakTimeout: Bool = true,
        prio: Priority = priority.DEFAULT
    ) {
        self.init(sock, Array(data), timeout: timeout, weakTimeout: weakTimeout, prio: prio)
    }
}

/// Sends some of the data (cogen's `Send`); `yield` returns how many bytes the kernel took
/// (at least 1, maybe fewer than all).
///
/// Throws ``ConnectionClosed`` when the peer is gone (`EPIPE`, `ECONNRESET`, `ECONNABORTED`),
/// ``OperationTimeout``, ``ConnectionError`` (`EBUSY` if another send is pending).
///
/// Uses `IORING_OP_SEND` (Linux 5.6) with `MSG_NOSIGNAL` (a closed peer is an error, never
/// `SIGPIPE`). The epoll backend runs the same definition (`send(2)` when writable).
public final class Send: SendingOperation, @unchecked Sendable {
    public override func process(_ scheduler: Scheduler, _ coroutine: CoroutineInstance) async throws -> Int {
        do {
            return try await sock.core.send(
                data, deadline: deadline(on: scheduler), placement: scheduler.placement(prio.favoursOperation))
        } catch {
            throw cogenError(error, for: self)
        }
    }
}

/// Sends all of the data (cogen's `SendAll`); `yield` returns its length.
///
/// The timeout is weak by default (an inactivity timeout: each partial send moves the
/// deadline), strong with `weakTimeout: false` (a fixed deadline); a date is always a
/// fixed deadline. Throws ``ConnectionClosed`` when the peer is gone,
/// ``OperationTimeout`` (``OperationTimeout/bytesTransferred``: the bytes sent).
///
/// Uses `IORING_OP_SEND` (Linux 5.6) with `MSG_NOSIGNAL`, as often as needed. The epoll
/// backend runs the same definition.
public final class SendAll: SendingOperation, @unchecked Sendable {
    public override func process(_ scheduler: Scheduler, _ coroutine: CoroutineInstance) async throws -> Int {
        do {
            try await sock.core.sendAll(
                data, timeout: socketTimeout(on: scheduler), placement: scheduler.placement(prio.favoursOperation))
        } catch {
            throw cogenError(error, for: self)
        }
        return data.count
    }
}

/// Accepts a connection (cogen's `Accept`); `yield` returns the connected ``Socket`` (with
/// the module's default timeout, not the listener's, as in cogen) and the peer's address.
///
/// A connection the peer reset (or closed) before it was accepted is returned like any
/// other, with the peer's address (``CogenUring/Socket/peerAddress``: the one the accept
/// wrote, or `getsockopt(SO_PEERNAME)` after the multishot accept, which writes none); its
/// first receive or send reports the reset (``ConnectionClosed``), as in cogen. Throws
/// ``OperationTimeout``, ``ConnectionError`` (`EMFILE`…).
///
/// Uses one multishot `IORING_OP_ACCEPT` per listener (`IORING_ACCEPT_MULTISHOT`, Linux
/// 5.19) that stays armed and queues connections, or one `IORING_OP_ACCEPT` (5.5) per
/// accept when multishot is off. The epoll backend runs the same definition (`accept4(2)`
/// when readable).
public final class Accept: SocketOperation<(Socket, SocketAddress)>, @unchecked Sendable {
    /// Creates the accept (cogen's `Accept(sock, timeout=…)`).
    /// - Parameters:
    ///   - sock: The listening socket.
    ///   - timeout: Its own timeout; by default none (the scheduler's default applies).
    ///   - weakTimeout: Kept for cogen's signature.
    ///   - prio: `OP` bit: resume at the front when a connection arrives.
    public init(_ sock: Socket, timeout: Timeout? = nil, weakTimeout: Bool = true, prio: Priority = priority.DEFAULT) {
        super.init(sock: sock, timeout: timeout, weakTimeout: weakTimeout, prio: prio)
    }

    override func perform(on scheduler: Scheduler, placement: Placement) async throws -> (Socket, SocketAddress) {
        let connection = try await sock.core.accept(deadline: deadline(on: scheduler), placement: placement)
        return (Socket(wrapping: connection), Self.peerAddress(of: connection))
    }

    /// cogen's `addr`, which never fails the accept (Python's `accept` reads the address
    /// the kernel recorded, as ``CogenUring/Socket/peerAddress`` does, even for a connection
    /// already reset); should the kernel have none, the unspecified address of the family
    /// (`0.0.0.0:0`, `[::]:0`, an unnamed Unix address).
    static func peerAddress(of connection: CogenUring.Socket) -> SocketAddress {
        if let address = connection.peerAddress { return address }
        let unspecified: SocketAddress? = switch connection.family {
        case .ipv4: try? SocketAddress(ipv4: "0.0.0.0", port: 0)
        case .ipv6: try? SocketAddress(ipv6: "::", port: 0)
        case .unix: try? SocketAddress(unixPath: "")
        }
        return unspecified ?? .loopback(port: 0)  // never nil: the literals parse
    }
}

/// Connects the socket (cogen's `Connect`); `yield` returns the socket itself.
///
/// A refused connection throws ``ConnectionError`` with `ECONNREFUSED` (cogen's epoll
/// backend reported `ConnectionClosed('Hang up.')` instead); an unreachable one
/// `ENETUNREACH`…; the deadline ``OperationTimeout``. Connecting a socket that is already
/// connected returns at once (cogen's `EISCONN`). The core connects a socket of its own
/// making, which replaces the wrapped one, with the options set so far: a socket that was
/// bound cannot connect (``ConnectionError`` `EINVAL`).
///
/// Uses `IORING_OP_CONNECT` (Linux 5.5). The epoll backend runs the same definition
/// (`connect(2)`, then waits for writability).
public final class Connect: SocketOperation<Socket>, @unchecked Sendable {
    /// The peer.
    public let address: SocketAddress

    /// Creates the connect (cogen's `Connect(sock, addr, timeout=…)`).
    /// - Parameters:
    ///   - sock: The socket.
    ///   - address: The peer.
    ///   - timeout: Its own timeout; by default none (the scheduler's default applies).
    ///   - weakTimeout: Kept for cogen's signature.
    ///   - prio: `OP` bit: resume at the front when the connection is made.
    public init(
        _ sock: Socket, _ address: SocketAddress, timeout: Timeout? = nil, weakTimeout: Bool = true,
        prio: Priority = priority.DEFAULT
    ) {
        self.address = address
        super.init(sock: sock, timeout: timeout, weakTimeout: weakTimeout, prio: prio)
    }

    override func perform(on scheduler: Scheduler, placement: Placement) async throws -> Socket {
        if (try? sock.core.remoteAddress) != nil { return sock }
        guard !sock.isBound, address.family == sock.family else {
            let reason = sock.isBound ? "a bound socket cannot connect here" : "the address is of another family"
            throw ConnectionError(errno: EINVAL, operation: "connect to \(address)", message: "connect to \(address): \(reason)")
        }
        let connected = try await CogenUring.Socket.connect(
            to: address, deadline: deadline(on: scheduler), placement: placement, on: scheduler.core)
        try sock.adopt(connected)
        return sock
    }

    public override var description: String { "Connect(\(sock), \(address), timeout: \(timeout), prio: \(prio))" }
}

/// Sends a region of a file over the socket (cogen's `SendFile`); `yield` returns the
/// bytes sent (fewer than `length` if the file ends first).
///
/// The timeout is weak by default (each chunk sent moves the deadline), strong with
/// `weakTimeout: false`; ``OperationTimeout/bytesTransferred`` counts the bytes sent.
///
/// Reads each chunk with `IORING_OP_READ` and sends it with `IORING_OP_SEND` (both Linux
/// 5.6, `MSG_NOSIGNAL`), as the core's `Socket.sendFile` does (no `IORING_OP_SPLICE`
/// zero-copy path yet). The epoll backend runs the same definitions.
public final class SendFile: SocketOperation<Int>, @unchecked Sendable {
    /// The file descriptor.
    public let file: Int32
    /// Where to start; `nil`: the file's current position when the operation runs.
    public let offset: Int64?
    /// How many bytes; `nil`: up to the end of the file.
    public let length: Int?
    /// Bytes per step.
    public let blocksize: Int

    /// Creates the transfer (cogen's `SendFile(file, sock, offset, length, blocksize)`).
    /// - Parameters:
    ///   - file: An open file descriptor; it must stay open until the operation ends.
    ///   - sock: The socket.
    ///   - offset: Where to start; `nil`: the file's current position (cogen also reads
    ///     an explicit 0 that way; here 0 is the start of the file).
    ///   - length: How many bytes; `nil`: up to the end of the file.
    ///   - blocksize: Bytes read and sent per step; 0: 1 MiB (cogen: everything at once).
    ///   - timeout: Its own timeout; by default none (the scheduler's default applies).
    ///   - weakTimeout: `true`: an inactivity timeout; `false`: a fixed deadline.
    ///   - prio: `OP` bit: resume at the front when the last chunk is sent.
    public init(
        _ file: Int32, _ sock: Socket, offset: Int64? = nil, length: Int? = nil, blocksize: Int = 4096,
        timeout: Timeout? = nil, weakTimeout: Bool = true, prio: Priority = priority.DEFAULT
    ) {
        self.file = file
        self.offset = offset
        self.length = length
        self.blocksize = blocksize > 0 ? blocksize : 1 << 20
        super.init(sock: sock, timeout: timeout, weakTimeout: weakTimeout, prio: prio)
    }

    override func perform(on scheduler: Scheduler, placement: Placement) async throws -> Int {
        let start = offset ?? Int64(lseek(file, 0, SEEK_CUR))
        guard start >= 0 else { throw ConnectionError(errno: Glibc.errno, operation: "sendfile (the file's position)") }
        return try await sock.core.sendFile(
            file, offset: start, count: length ?? Int.max, chunkSize: blocksize,
            timeout: socketTimeout(on: scheduler), placement: placement)
    }
}

extension ConnectionClosed {
    /// A receive found the end of the stream (cogen's `ConnectionClosed('Empty recv.')`).
    static var endOfStream: ConnectionClosed {
        ConnectionClosed(errno: 0, operation: "recv", message: "Empty recv.")
    }
}

/// cogen's `cogen.core.sockets`, so that ported code keeps its shape:
/// `let sock = try sockets.Socket()`, `try await yield(sockets.Recv(sock, 100, timeout: 0.5))`.
public enum sockets {
    public typealias Socket = CogenCompat.Socket
    /// cogen's later name for ``ConnectionError``.
    public typealias SocketError = CogenCompat.ConnectionError
    public typealias ConnectionError = CogenCompat.ConnectionError
    public typealias ConnectionClosed = CogenCompat.ConnectionClosed
    public typealias OperationTimeout = CogenCompat.OperationTimeout
    public typealias SocketOperation<Result: Sendable> = CogenCompat.SocketOperation<Result>
    public typealias Recv = CogenCompat.Recv
    public typealias RecvAll = CogenCompat.RecvAll
    public typealias SendingOperation = CogenCompat.SendingOperation
    public typealias Send = CogenCompat.Send
    public typealias SendAll = CogenCompat.SendAll
    public typealias Accept = CogenCompat.Accept
    public typealias Connect = CogenCompat.Connect
    public typealias SendFile = CogenCompat.SendFile
    public typealias SocketFile = CogenCompat.SocketFile

    /// Sets the timeout every socket created from now on gets (cogen's
    /// `setdefaulttimeout`); process-wide, like Python's. Existing sockets keep theirs;
    /// accepted sockets get this one.
    /// - Parameter timeout: The timeout; `nil` or ``Timeout/none``: none of their own.
    public static func setdefaulttimeout(_ timeout: Timeout?) {
        defaultSocketTimeout.withLock { $0 = timeout ?? .none }
    }

    /// The timeout new sockets get (cogen's `getdefaulttimeout`).
    /// - Returns: The timeout; ``Timeout/none`` unless set.
    public static func getdefaulttimeout() -> Timeout {
        defaultSocketTimeout.withLock { $0 }
    }
}
