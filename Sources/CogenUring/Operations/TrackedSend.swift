import CURing
import Glibc

/// A socket's tracked sends (``Socket/sendTracked(_:)-([UInt8])``): bytes the socket sends
/// on its own, in order, without a coroutine waiting for each send's completion.
///
/// Two byte arrays: `sending`, which the one operation in flight reads from (frozen until
/// that operation's final completion: the kernel reads its storage), and `queued`, where
/// later tracked sends append. When `sending` is all sent, the two swap (the old storage
/// is kept for the next bytes): at most one send in flight per socket, so the order is
/// the order of the calls, and the bytes of many small calls go out in one send.
final class TrackedSends {
    // Loop-confined, never accessed reentrantly.
    @exclusivity(unchecked) var sending: [UInt8] = []
    /// How much of `sending` the kernel has taken.
    @exclusivity(unchecked) var sent = 0
    @exclusivity(unchecked) var queued: [UInt8] = []
    /// The one operation, reused; in flight while `isBusy`.
    @exclusivity(unchecked) var operation: TrackedSendOperation?
    @exclusivity(unchecked) var isBusy = false
    /// The error of a tracked send, until an operation on the socket throws it.
    @exclusivity(unchecked) var failure: SocketError?
    /// Coroutines waiting for room under the limit (backpressure) or for the queue to drain
    /// (flush, close, a plain send): resumed at every completion, each checks its own
    /// condition.
    @exclusivity(unchecked) var waiters: [Parked<Void>] = []
    /// `close()` is settling the queue: no new tracked sends.
    @exclusivity(unchecked) var closing = false
    @exclusivity(unchecked) var limit = TrackedSends.defaultLimit
    @exclusivity(unchecked) var linger: Duration = .seconds(30)

    /// Bytes queued beyond which ``Socket/sendTracked(_:)-([UInt8])`` waits.
    static let defaultLimit = 64 << 10
    /// Arrays this small are copied into the socket's own storage (which it keeps, so an
    /// echo allocates nothing per message); larger ones sent from an idle queue are held
    /// as they are (no copy; the caller's next mutation of it copies instead).
    static let copyLimit = 4096
    /// `sending` storage kept beyond this is given back once sent.
    static let keptCapacity = 64 << 10

    /// Bytes handed to tracked sends that the kernel has not taken yet.
    var bytesLeft: Int { sending.count - sent + queued.count }
}

/// `IORING_OP_SEND` (5.6) with `MSG_NOSIGNAL` of a socket's tracked bytes; on the
/// readiness backend a non-blocking `send(2)`, retried when the socket is writable. No
/// coroutine waits on it: its completion goes to the socket, which sends the rest (a
/// partial send), then what was queued meanwhile, or stores the error.
///
/// While in flight it holds its socket (`keepAlive`): a socket with tracked sends left
/// stays until they are done (the cycle socket → state → operation → socket ends at the
/// final completion of the last one).
final class TrackedSendOperation: SocketOperation {
    @exclusivity(unchecked) var keepAlive: Socket?
    @exclusivity(unchecked) private var start: UnsafeRawPointer?
    @exclusivity(unchecked) private var length = 0

    init(socket: Socket) {
        super.init(socket: socket, label: "tracked send")
    }

    /// Points the operation at `bytes[offset...]`; the caller keeps `bytes` unmutated (and
    /// alive) until the final completion.
    func aim(at bytes: [UInt8], from offset: Int) {
        (start, length) = bytes.withUnsafeBytes { ($0.baseAddress.map { UnsafeRawPointer($0) + offset }, $0.count - offset) }
        cancelReason = nil
        userData = 0
        spuriousCancels = 0
        knownNotReady = false
    }

    override func prepare(_ sqe: OpaquePointer, userData: UInt64) {
        cogen_prep_send(sqe, socket.descriptor, start, length, 0, userData)
    }

    override func complete(result: Int32, flags: UInt32) {
        // invariant: in flight only while `keepAlive` holds the socket (set at submit).
        guard let socket = keepAlive else { return }
        socket.trackedSendCompleted(self, result: result)
    }

    override var interest: Readiness { .writable }

    override func attempt() -> Int32 {
        guard let start else { return 0 }
        return trySend(socket.descriptor, start, length)
    }
}
