import CURing
import Glibc

/// Where a vectored send stands in its list of buffers: the buffer it is in, and how far
/// into that buffer.
struct VectoredPosition: Equatable {
    var index = 0
    var offset = 0

    /// The position `count` bytes further on, past empty buffers; `buffers.count` (offset
    /// 0) once everything is sent.
    func advanced(by count: Int, in buffers: [[UInt8]]) -> VectoredPosition {
        var position = self
        var left = count
        while position.index < buffers.count {
            let rest = buffers[position.index].count - position.offset
            if left < rest {
                position.offset += left
                return position
            }
            left -= rest
            position.index += 1
            position.offset = 0
        }
        return position
    }

    /// The bytes from here to the end of `buffers`.
    func remaining(in buffers: [[UInt8]]) -> Int {
        guard index < buffers.count else { return 0 }
        var total = buffers[index].count - offset
        for buffer in buffers[(index + 1)...] { total += buffer.count }
        return total
    }
}

/// `IORING_OP_SENDMSG` (5.3) with `MSG_NOSIGNAL`: one send of several buffers, without
/// concatenating them. On the readiness backend, a non-blocking `sendmsg(2)`
/// (`MSG_DONTWAIT | MSG_NOSIGNAL`).
///
/// The operation owns what the kernel reads until its final completion, whatever happens
/// to the coroutine that asked: the buffers (each array's storage stays where it is while
/// the operation holds a reference to it and nobody mutates through it), the iovecs that
/// point into them, and the `msghdr` that points to the iovecs. One operation sends at
/// most ``vectorLimit`` iovecs, starting at a position (a buffer and an offset in it);
/// empty buffers are skipped.
final class SendMessageOperation: SocketOperation {
    /// The most iovecs one `sendmsg` takes (the kernel's `UIO_MAXIOV`, glibc's `IOV_MAX`):
    /// more buffers go out in groups.
    static let vectorLimit = 1024

    @exclusivity(unchecked) var parked: Parked<Int>?
    /// Held until the final completion (let go then, so the caller's arrays are unique
    /// again when its coroutine resumes).
    @exclusivity(unchecked) private(set) var buffers: [[UInt8]]
    @exclusivity(unchecked) private var vectors: UnsafeMutablePointer<iovec>
    @exclusivity(unchecked) private var capacity: Int
    private let message: UnsafeMutablePointer<msghdr>
    /// The bytes this operation's iovecs cover.
    @exclusivity(unchecked) private(set) var length = 0

    init(socket: Socket, buffers: [[UInt8]], from position: VectoredPosition) {
        self.buffers = buffers
        capacity = max(1, min(buffers.count - position.index, Self.vectorLimit))
        vectors = UnsafeMutablePointer<iovec>.allocate(capacity: capacity)
        message = UnsafeMutablePointer<msghdr>.allocate(capacity: 1)
        message.initialize(to: msghdr())
        super.init(socket: socket, label: "send message")
        fill(from: position)
    }

    deinit {
        vectors.deallocate()
        message.deallocate()
    }

    /// Makes a finished operation (one nothing else holds any more) the next send's.
    func reuse(buffers: [[UInt8]], from position: VectoredPosition) {
        self.buffers = buffers
        let needed = max(1, min(buffers.count - position.index, Self.vectorLimit))
        if needed > capacity {
            vectors.deallocate()
            vectors = UnsafeMutablePointer<iovec>.allocate(capacity: needed)
            capacity = needed
        }
        parked = nil
        cancelReason = nil
        userData = 0
        knownNotReady = false
        fill(from: position)
    }

    /// Lets go of the buffers once the operation is not in flight (it never went to the
    /// kernel, or its final completion has arrived).
    func letGo() {
        buffers = []
    }

    /// Points the iovecs at the bytes from `position` on: at most `capacity` non-empty
    /// buffers, the first from its offset.
    private func fill(from position: VectoredPosition) {
        var count = 0
        var total = 0
        var index = position.index
        var offset = position.offset
        while index < buffers.count && count < capacity {
            let base: UnsafeMutableRawPointer? = buffers[index].withUnsafeBytes {
                $0.baseAddress.map { UnsafeMutableRawPointer(mutating: $0) }
            }
            let size = buffers[index].count - offset
            if size > 0, let base {
                vectors[count] = iovec(iov_base: base + offset, iov_len: size)
                count += 1
                total += size
            }
            index += 1
            offset = 0
        }
        length = total
        message.pointee.msg_iov = vectors
        message.pointee.msg_iovlen = count
    }

    override func prepare(_ sqe: OpaquePointer, userData: UInt64) {
        cogen_prep_sendmsg(sqe, socket.descriptor, message, 0, userData)
    }

    override func complete(result: Int32, flags: UInt32) {
        buffers = []
        finish(parked, result: result) { Int($0) }
    }

    override var interest: Readiness { .writable }

    override func attempt() -> Int32 {
        negativeErrno(sendmsg(socket.descriptor, message, Int32(MSG_DONTWAIT) | Int32(MSG_NOSIGNAL)))
    }
}
