import CURing
import Glibc

/// `IORING_OP_READ` (5.6) from a descriptor at an offset into memory the operation owns.
final class ReadOperation: IOOperation {
    @exclusivity(unchecked) var parked: Parked<Int>?
    let descriptor: Int32
    let offset: UInt64
    // The kernel writes here until the CQE: owned by the operation.
    let buffer: UnsafeMutableRawBufferPointer

    init(scheduler: Scheduler, descriptor: Int32, offset: UInt64, length: Int) {
        self.descriptor = descriptor
        self.offset = offset
        buffer = .allocate(byteCount: max(length, 1), alignment: 16)
        super.init(scheduler: scheduler, label: "read")
    }

    deinit { buffer.deallocate() }

    override func prepare(_ sqe: OpaquePointer, userData: UInt64) {
        cogen_prep_read(sqe, descriptor, buffer.baseAddress, UInt32(buffer.count), offset, userData)
    }

    override func complete(result: Int32, flags: UInt32) {
        finish(parked, result: result) { Int($0) }
    }

    /// Files are always "ready": `pread` does not return `EAGAIN` for them.
    override func attempt() -> Int32 {
        // Past Int64.max the offset wraps negative, and pread says EINVAL.
        negativeErrno(pread(descriptor, buffer.baseAddress, buffer.count, off_t(truncatingIfNeeded: offset)))
    }
}

extension Socket {
    /// Sends a region of a file: read through the ring, then sent, chunk by chunk.
    /// - Parameters:
    ///   - file: An open file descriptor (it must stay open until this returns).
    ///   - offset: Where the region starts in the file.
    ///   - count: How many bytes; fewer are sent if the file ends first.
    ///   - chunkSize: Bytes read and sent per step.
    ///   - timeout: Strong (whole transfer) or weak (inactivity: each chunk moves it).
    ///   - placement: Where the coroutine goes when the last send completes.
    /// - Returns: The bytes sent.
    /// - Throws: ``TimeoutError`` (with the bytes sent so far), ``SocketError`` (`EINVAL`
    ///   for a negative `offset` or a `chunkSize` less than 1), ``IOError`` for the file.
    ///
    /// Uses `IORING_OP_READ` and `IORING_OP_SEND` (Linux 5.6). (A zero-copy path through
    /// `IORING_OP_SPLICE`, 5.7, is not used yet.)
    public func sendFile(
        _ file: Int32, offset: Int64 = 0, count: Int, chunkSize: Int = 65536,
        timeout: SocketTimeout? = nil, placement: Placement = .back
    ) async throws -> Int {
        guard offset >= 0 else { throw Self.invalid("send file", "offset must not be negative, got \(offset)") }
        guard chunkSize > 0 else { throw Self.invalid("send file", "chunkSize must be at least 1, got \(chunkSize)") }
        var deadline: Deadline? = timeout.map {
            switch $0 { case .strong(let d), .weak(let d): .after(d) }
        }
        var sent = 0
        while sent < count {
            let want = min(chunkSize, count - sent)
            let chunk: [UInt8]
            do {
                let read = ReadOperation(
                    scheduler: scheduler, descriptor: file, offset: UInt64(offset) + UInt64(sent), length: want)
                let got: Int = try await scheduler.perform(read, deadline: deadline, placement: placement) {
                    $0.parked = $1
                }
                if got == 0 { break }  // the file ended
                chunk = Array(UnsafeRawBufferPointer(rebasing: read.buffer[..<got]))
                try await sendAll(chunk, timeout: deadline.map { .strong($0.remaining) }, placement: placement)
            } catch let error as TimeoutError {
                throw TimeoutError(operation: "send file", bytesTransferred: sent + error.bytesTransferred)
            }
            sent += chunk.count
            if case .weak(let duration) = timeout { deadline = .after(duration) }
        }
        return sent
    }
}
