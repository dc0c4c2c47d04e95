import CURing
import Glibc

/// A kernel operation on a ``Socket``, awaited by a coroutine inside one of the socket's
/// methods; reports failures as ``SocketError``.
class SocketOperation: IOOperation {
    // Unowned: the awaiting frame is a method of this socket, which holds it (and with it
    // the descriptor and the receive buffer) until the final completion resumes it, a
    // cancelled or timed-out wait included; a frame never resumed keeps it for good. No
    // retain and release per operation (a weakly referenced socket's are slow-path ones).
    unowned(unsafe) let socket: Socket

    init(socket: Socket, label: StaticString) {
        self.socket = socket
        super.init(scheduler: socket.scheduler, label: label)
    }

    override func error(errno: Int32) -> any Error { SocketError(errno: errno, operation: "\(label)") }

    override var readinessDescriptor: Int32 { socket.descriptor }

    override var readinessOwner: UInt64 { socket.serial }
}



/// The non-blocking receive a readiness backend tries: `ReceiveOperation`, and the
/// socket's fast path before it makes one. The result reads like a CQE's.
///
/// `drained` is set when the call emptied the socket's receive queue: it returned fewer
/// bytes than the kernel was asked for (end of stream aside), or `EAGAIN`. Judged against
/// the length the call really asked for, and only for a call that was made: a short
/// transfer or an `EAGAIN` the fault injector makes says nothing about the queue.
@inline(__always)
func tryReceive(
    _ descriptor: Int32, into buffer: UnsafeMutableRawPointer, _ length: Int, drained: inout Bool
) -> Int32 {
    var asked = 0
    let result = nonBlockingCall(.receive, descriptor, length: length) {
        asked = $0
        return recv(descriptor, buffer, $0, Int32(MSG_DONTWAIT))
    }
    drained = asked > 0 && (result == -EAGAIN || (result > 0 && Int(result) < asked))
    return result
}

/// The non-blocking send (`MSG_NOSIGNAL`: a closed peer is `EPIPE`, never `SIGPIPE`) a
/// readiness backend tries: `SendOperation`, and the socket's fast path before it makes one.
@inline(__always)
func trySend(_ descriptor: Int32, _ bytes: UnsafeRawPointer, _ length: Int) -> Int32 {
    nonBlockingCall(.send, descriptor, length: length) {
        Glibc.send(descriptor, bytes, $0, Int32(MSG_DONTWAIT) | Int32(MSG_NOSIGNAL))
    }
}

/// `IORING_OP_ACCEPT` (5.5): one connection; the new descriptor is `SOCK_CLOEXEC`.
final class AcceptOperation: SocketOperation {
    @exclusivity(unchecked) var parked: Parked<Int32>?
    // The kernel writes the peer's address here: owned by the operation until its CQE.
    let address = UnsafeMutablePointer<sockaddr_storage>.allocate(capacity: 1)
    let addressLength = UnsafeMutablePointer<UInt32>.allocate(capacity: 1)

    init(socket: Socket) {
        address.initialize(to: sockaddr_storage())
        addressLength.initialize(to: UInt32(MemoryLayout<sockaddr_storage>.size))
        super.init(socket: socket, label: "accept")
    }

    deinit {
        address.deallocate()
        addressLength.deallocate()
    }

    override func prepare(_ sqe: OpaquePointer, userData: UInt64) {
        cogen_prep_accept(sqe, socket.descriptor, address, addressLength, userData)
    }

    override func complete(result: Int32, flags: UInt32) {
        finish(parked, result: result) { $0 }
    }

    /// The peer's address the kernel wrote, once the operation has accepted a connection
    /// (the kernel fills it even for a connection already reset); `nil` if it wrote none.
    var peerAddress: SocketAddress? {
        let length = addressLength.pointee
        guard length >= socklen_t(MemoryLayout<sa_family_t>.size), length <= socklen_t(MemoryLayout<sockaddr_storage>.size)
        else { return nil }
        return SocketAddress(storage: address.pointee, length: length)
    }

    override func attempt() -> Int32 {
        nonBlockingCall(.accept, socket.descriptor, length: 0) { _ in
            addressLength.pointee = UInt32(MemoryLayout<sockaddr_storage>.size)
            return Int(address.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                cogen_accept4(socket.descriptor, $0, addressLength)
            })
        }
    }
}

/// `IORING_OP_ACCEPT` with `IORING_ACCEPT_MULTISHOT` (5.19): armed once per listener,
/// one CQE per connection (`IORING_CQE_F_MORE` while it stays armed). No coroutine waits
/// on it: the listener queues the connections and wakes its acceptors.
final class MultishotAcceptOperation: IOOperation {
    // Weak: a listener nobody references any more must be able to go (its deinit cancels
    // this stream), while the operation stays in flight until its final CQE.
    weak var socket: Socket?
    let descriptor: Int32

    init(listener: Socket) {
        socket = listener
        descriptor = listener.descriptor
        super.init(scheduler: listener.scheduler, label: "accept")
    }

    override func prepare(_ sqe: OpaquePointer, userData: UInt64) {
        cogen_prep_multishot_accept(sqe, descriptor, userData)
    }

    override func complete(result: Int32, flags: UInt32) {
        let final = flags & UInt32(COGEN_CQE_F_MORE) == 0
        if let socket {
            socket.multishotAcceptCompleted(self, result: result, final: final)
        } else if result >= 0 {
            Glibc.close(result)  // the listener is gone: nobody will take this connection
        }
    }
}

/// `IORING_OP_RECV` with `IORING_RECV_MULTISHOT` from the scheduler's provided-buffer
/// ring (6.0): armed while the socket wants data, one CQE per chunk, naming the buffer the
/// kernel filled. No coroutine waits on it: the socket queues the chunks and wakes its
/// receiver.
///
/// It takes at most `limit` bytes (the socket's room under its read-ahead limit): each
/// receive takes at most `perReceive` bytes, and the kernel ends the multishot once
/// `limit - perReceive + 1` bytes have arrived (the multishot byte limit, 6.17), so the
/// last receive cannot go past `limit`. Where the kernel refuses the limit (`EINVAL`), the
/// socket arms single receives instead (`multishot` false: one buffer, one CQE, 5.7).
final class MultishotReceiveOperation: IOOperation {
    // Weak, as for the multishot accept: a socket nobody references any more goes, and
    // its deinit cancels this stream.
    weak var socket: Socket?
    let descriptor: Int32
    let pool: BufferPool
    let multishot: Bool
    private let perReceive: Int
    private let total: Int

    init(socket: Socket, pool: BufferPool, limit: Int, multishot: Bool) {
        self.socket = socket
        descriptor = socket.descriptor
        self.pool = pool
        self.multishot = multishot
        let limit = min(max(limit, 1), 1 << 30)
        perReceive = min(pool.size, limit)
        total = limit - perReceive + 1
        super.init(scheduler: socket.scheduler, label: "receive")
    }

    override func prepare(_ sqe: OpaquePointer, userData: UInt64) {
        // 0: a whole buffer (a cap equal to the buffer would only stop the kernel's
        // inline retries).
        let length = perReceive >= pool.size ? 0 : UInt32(perReceive)
        cogen_prep_recv_select(sqe, descriptor, pool.group, length, UInt32(total), multishot, userData)
    }

    override func complete(result: Int32, flags: UInt32) {
        if let socket {
            socket.multishotReceiveCompleted(self, result: result, flags: flags)
        } else if result > 0 && flags & UInt32(COGEN_CQE_F_BUFFER) != 0 {
            pool.taken()
            pool.giveBack(UInt16(truncatingIfNeeded: flags >> 16))  // nobody will read it
        }
    }
}

/// `IORING_OP_CONNECT` (5.5).
final class ConnectOperation: SocketOperation {
    @exclusivity(unchecked) var parked: Parked<Void>?
    // Read by the kernel until the CQE: owned by the operation.
    let address = UnsafeMutablePointer<sockaddr_storage>.allocate(capacity: 1)
    let addressLength: UInt32

    init(socket: Socket, to target: SocketAddress) {
        address.initialize(to: target.storage)
        addressLength = UInt32(target.length)
        super.init(socket: socket, label: "connect")
    }

    deinit { address.deallocate() }

    override func prepare(_ sqe: OpaquePointer, userData: UInt64) {
        cogen_prep_connect(sqe, socket.descriptor, address, addressLength, userData)
    }

    override func complete(result: Int32, flags: UInt32) {
        finish(parked, result: result) { _ in () }
    }

    override var interest: Readiness { .writable }

    /// The first try starts the connection (`EINPROGRESS` reads as "wait"); once the
    /// socket is writable, `SO_ERROR` holds the outcome.
    @exclusivity(unchecked) private var started = false

    override func attempt() -> Int32 {
        if !started {
            started = true
            let status = address.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(socket.descriptor, $0, addressLength)
            }
            if status == 0 { return 0 }
            return Glibc.errno == EINPROGRESS ? -EAGAIN : -Glibc.errno
        }
        var error: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        guard getsockopt(socket.descriptor, SOL_SOCKET, SO_ERROR, &error, &length) == 0 else { return -Glibc.errno }
        return -error
    }
}

/// `IORING_OP_RECV` (5.6) into the socket's own receive buffer.
final class ReceiveOperation: SocketOperation {
    @exclusivity(unchecked) var parked: Parked<Int>?
    @exclusivity(unchecked) private(set) var length: Int

    init(socket: Socket, length: Int) {
        self.length = length
        super.init(socket: socket, label: "receive")
    }

    /// Makes a finished operation (one nothing else holds any more) the next receive's.
    func reuse(length: Int) {
        self.length = length
        parked = nil
        cancelReason = nil
        userData = 0
        spuriousCancels = 0
        knownNotReady = false
    }

    override func prepare(_ sqe: OpaquePointer, userData: UInt64) {
        cogen_prep_recv(sqe, socket.descriptor, socket.receiveBuffer, length, 0, userData)
    }

    override func complete(result: Int32, flags: UInt32) {
        finish(parked, result: result) { Int($0) }
    }

    override func attempt() -> Int32 {
        var drained = false
        let result = tryReceive(socket.descriptor, into: socket.receiveBuffer, length, drained: &drained)
        // At the call, before any event is gathered (see `EpollBackend.noteDrained`).
        if drained { socket.scheduler.readiness?.noteDrained(socket.descriptor, owner: socket.serial) }
        return result
    }
}

/// `IORING_OP_SEND` (5.6) with `MSG_NOSIGNAL`, from bytes the operation holds.
final class SendOperation: SocketOperation {
    @exclusivity(unchecked) var parked: Parked<Int>?
    // Held until the CQE: the kernel reads from this array's storage. A Swift array's
    // contiguous storage does not move while a reference to it is held and nobody
    // mutates through it (a mutation elsewhere copies first). Let go at the final
    // completion, so the caller's array is unique again when its coroutine resumes.
    @exclusivity(unchecked) private(set) var bytes: [UInt8]
    /// Where the bytes to send start in that storage, and how many: taken once, so that
    /// preparing the SQE or trying the call touches no reference count.
    @exclusivity(unchecked) private var start: UnsafeRawPointer
    @exclusivity(unchecked) private var length: Int

    init(socket: Socket, bytes: [UInt8], offset: Int) {
        self.bytes = bytes
        (start, length) = Self.region(bytes, offset)
        super.init(socket: socket, label: "send")
    }

    private static func region(_ bytes: [UInt8], _ offset: Int) -> (UnsafeRawPointer, Int) {
        // invariant: `Socket.send` makes an operation only for `offset < bytes.count`, so the array has storage.
        precondition(offset < bytes.count, "a send has at least one byte")
        // invariant: non-empty (above), so `baseAddress` is non-nil.
        return bytes.withUnsafeBytes { (UnsafeRawPointer($0.baseAddress!) + offset, $0.count - offset) }
    }

    /// Makes a finished operation (one nothing else holds any more) the next send's.
    func reuse(bytes: [UInt8], offset: Int) {
        self.bytes = bytes
        (start, length) = Self.region(bytes, offset)
        parked = nil
        cancelReason = nil
        userData = 0
        spuriousCancels = 0
    }

    override func prepare(_ sqe: OpaquePointer, userData: UInt64) {
        cogen_prep_send(sqe, socket.descriptor, start, length, 0, userData)
    }

    override func complete(result: Int32, flags: UInt32) {
        bytes = []
        finish(parked, result: result) { Int($0) }
    }

    override var interest: Readiness { .writable }

    override func attempt() -> Int32 {
        trySend(socket.descriptor, start, length)
    }
}

/// `IORING_OP_SHUTDOWN` (5.11).
final class ShutdownOperation: SocketOperation {
    @exclusivity(unchecked) var parked: Parked<Void>?
    let how: Int32

    init(socket: Socket, how: Int32) {
        self.how = how
        super.init(socket: socket, label: "shutdown")
    }

    override func prepare(_ sqe: OpaquePointer, userData: UInt64) {
        cogen_prep_shutdown(sqe, socket.descriptor, how, userData)
    }

    override func attempt() -> Int32 { negativeErrno(Int(Glibc.shutdown(socket.descriptor, how))) }

    override func complete(result: Int32, flags: UInt32) {
        finish(parked, result: result) { _ in () }
    }
}

/// `IORING_OP_CLOSE` (5.6).
final class CloseOperation: SocketOperation {
    @exclusivity(unchecked) var parked: Parked<Void>?
    let descriptor: Int32

    init(socket: Socket, descriptor: Int32) {
        self.descriptor = descriptor
        super.init(socket: socket, label: "close")
    }

    override func prepare(_ sqe: OpaquePointer, userData: UInt64) {
        cogen_prep_close(sqe, descriptor, userData)
    }

    override func attempt() -> Int32 { negativeErrno(Int(Glibc.close(descriptor))) }

    override func complete(result: Int32, flags: UInt32) {
        finish(parked, result: result) { _ in () }
    }
}
