import Glibc

/// A buffered file object on a ``Socket`` (cogen's `_fileobject`, from
/// ``Socket/makefile(_:bufsize:)``): line and exact-length reads, buffered writes.
///
/// ```swift
/// let f = conn.makefile()
/// let line = try await f.readline()      // up to and including "\n"
/// try await f.write(Array("ok\n".utf8))
/// try await f.flush()                    // one sendall
/// ```
/// Its I/O methods are coroutines in cogen (`line = yield f.readline()`); here they are
/// `async` methods called directly, from a coroutine of the socket's scheduler. Each
/// yields socket operations with the socket's timeout at the moment of the call: a weak
/// (inactivity) timeout by default, a fixed deadline with `weakTimeout: false`; `prio`
/// decides where the coroutine goes when the I/O completes, as for the operations.
///
/// Nothing is lost (cogen lost it): at end of stream `read()` returns what arrived and
/// `readline` the partial line; only a read that gets no byte at all throws
/// ``ConnectionClosed``; bytes received before an ``OperationTimeout`` stay buffered for
/// the next read. Reads use `IORING_OP_RECV` (Linux 5.6), writes `IORING_OP_SEND` with
/// `MSG_NOSIGNAL`; the epoll backend runs the same definitions.
public final class SocketFile: @unchecked Sendable {
    // @unchecked Sendable: confined to its socket's scheduler thread.

    /// The socket (left open by ``close()``).
    public let sock: Socket
    /// Kept for cogen's signature.
    public let mode: String
    /// Bytes asked for per receive by ``read(_:prio:weakTimeout:)`` without a size.
    public let readChunkSize: Int
    /// Writes are sent when this many bytes are buffered (0: at once; 1: at each newline).
    public let writeLimit: Int
    /// Whether ``close()`` was called.
    public private(set) var closed = false
    /// Bytes a `read()` without a size gathered before it timed out; they come before the
    /// bytes buffered in the core socket.
    private var readBuffer: [UInt8] = []
    private var writeBuffer: [UInt8] = []

    init(_ sock: Socket, mode: String, bufsize: Int) {
        self.sock = sock
        self.mode = mode
        let size = bufsize < 0 ? 8192 : bufsize
        readChunkSize = size == 0 ? 1 : size == 1 ? 8192 : size
        writeLimit = size
    }

    /// The socket's descriptor.
    /// - Returns: The descriptor.
    public func fileno() -> Int32 { sock.fileno() }

    // MARK: Reading

    /// Reads `size` bytes, or everything up to the end of the stream.
    /// - Parameters:
    ///   - size: `>= 0`: exactly that many bytes (fewer only when the stream ends first),
    ///     the surplus received stays buffered; `< 0` (the default): until the end of the
    ///     stream.
    ///   - prio: `OP` bit: the coroutine goes to the front when data arrives.
    ///   - weakTimeout: `true`: the socket's timeout is an inactivity timeout; `false`: a
    ///     fixed deadline for the whole read.
    /// - Returns: The bytes; `read(0)` returns none.
    /// - Throws: ``ConnectionClosed`` when the stream ended before any byte;
    ///   ``OperationTimeout`` (the bytes received stay buffered); ``ConnectionError``.
    ///
    /// Uses `IORING_OP_RECV` (Linux 5.6) as often as needed; the epoll backend runs the
    /// same definition.
    public func read(_ size: Int = -1, prio: Priority = priority.DEFAULT, weakTimeout: Bool = true) async throws -> [UInt8] {
        try checkOpen()
        if size == 0 { return [] }
        if size > 0 {
            if readBuffer.count >= size { return take(size) }
            let operation = RecvAll(
                sock, size - readBuffer.count, timeout: sock.gettimeout(), weakTimeout: weakTimeout, prio: prio)
            operation.partialAtEnd = true
            let rest = try await yield(operation)
            return try whole(take(readBuffer.count) + rest)
        }
        let timeout = weakTimeout ? sock.gettimeout() : try fixed(sock.gettimeout())
        while true {
            do {
                readBuffer += try await yield(Recv(sock, readChunkSize, timeout: timeout, prio: prio))
            } catch let closed as ConnectionClosed where closed.errno == 0 {
                return try whole(take(readBuffer.count))
            } catch let timedOut as OperationTimeout {
                throw OperationTimeout(timedOut.operation, bytesTransferred: readBuffer.count)
            }
        }
    }

    /// Reads one line, up to and including `\n`.
    /// - Parameters:
    ///   - size: `< 0` (the default): no length limit; `>= 0`: the line if a newline comes
    ///     within `size` bytes, else exactly `size` bytes (the rest stays buffered).
    ///   - prio: `OP` bit: the coroutine goes to the front when data arrives.
    ///   - weakTimeout: `true`: the socket's timeout is an inactivity timeout; `false`: a
    ///     fixed deadline.
    /// - Returns: The line; at the end of the stream the partial line (no newline).
    /// - Throws: ``ConnectionClosed`` when the stream ended before any byte;
    ///   ``OperationTimeout`` (the bytes received stay buffered); ``ConnectionError``.
    ///
    /// Uses `IORING_OP_RECV` (Linux 5.6) as often as needed; the epoll backend runs the
    /// same definition.
    public func readline(_ size: Int = -1, prio: Priority = priority.DEFAULT, weakTimeout: Bool = true) async throws -> [UInt8] {
        try checkOpen()
        if size == 0 { return [] }
        let limit = size < 0 ? Int.max : size
        if let newline = readBuffer.prefix(limit).firstIndex(of: UInt8(ascii: "\n")) {
            return take(newline + 1)
        }
        if readBuffer.count >= limit { return take(limit) }
        let start = take(readBuffer.count)
        do {
            let rest = try await yield(RecvLine(
                sock, limit: limit - start.count, timeout: sock.gettimeout(), weakTimeout: weakTimeout, prio: prio))
            return try whole(start + rest)
        } catch {
            readBuffer = start + readBuffer
            throw error
        }
    }

    /// Reads lines until the end of the stream, or until `sizehint` bytes were read.
    /// - Parameters:
    ///   - sizehint: Stop once this many bytes were read; 0: no limit.
    ///   - prio: `OP` bit: the coroutine goes to the front when data arrives.
    ///   - weakTimeout: As for ``readline(_:prio:weakTimeout:)``.
    /// - Returns: The lines (the last one may lack its newline).
    /// - Throws: ``OperationTimeout``, ``ConnectionError``; ``ConnectionClosed`` only for
    ///   a reset, not for the end of the stream. The lines read before the error stay
    ///   buffered for the next read.
    ///
    /// Uses `IORING_OP_RECV` (Linux 5.6); the epoll backend runs the same definition.
    public func readlines(_ sizehint: Int = 0, prio: Priority = priority.DEFAULT, weakTimeout: Bool = true) async throws -> [[UInt8]] {
        var lines: [[UInt8]] = []
        var total = 0
        while sizehint <= 0 || total < sizehint {
            do {
                let line = try await readline(prio: prio, weakTimeout: weakTimeout)
                lines.append(line)
                total += line.count
            } catch let closed as ConnectionClosed where closed.errno == 0 {
                break
            } catch {
                // Nothing is lost: the lines already read go back in front of the buffer.
                readBuffer = Array(lines.joined()) + readBuffer
                throw error
            }
        }
        return lines
    }

    // MARK: Writing

    /// Buffers `data`; sends the buffer (one send-all) when it reaches the write limit
    /// (default 8192 bytes), at once when unbuffered, at a newline when line-buffered. A
    /// small write sends nothing until ``flush(prio:weakTimeout:)``, as in cogen.
    /// - Parameters:
    ///   - data: The bytes.
    ///   - prio: `OP` bit: the coroutine goes to the front when a send completes.
    ///   - weakTimeout: As for ``flush(prio:weakTimeout:)``.
    /// - Throws: What ``flush(prio:weakTimeout:)`` throws.
    ///
    /// Uses `IORING_OP_SEND` (Linux 5.6) with `MSG_NOSIGNAL` when it sends; the epoll
    /// backend runs the same definition.
    public func write(_ data: some Sequence<UInt8>, prio: Priority = priority.DEFAULT, weakTimeout: Bool = true) async throws {
        try checkOpen()
        let count = writeBuffer.count
        writeBuffer.append(contentsOf: data)
        if writeBuffer.count == count { return }
        if writeLimit == 0 || writeBuffer.count >= writeLimit
            || (writeLimit == 1 && writeBuffer[count...].contains(UInt8(ascii: "\n")))
        {
            try await flush(prio: prio, weakTimeout: weakTimeout)
        }
    }

    /// Buffers each of `lines` (no newline is added), then flushes if the limit is reached
    /// or the file is unbuffered or line-buffered.
    /// - Parameters:
    ///   - lines: The byte sequences.
    ///   - prio: `OP` bit: the coroutine goes to the front when a send completes.
    ///   - weakTimeout: As for ``flush(prio:weakTimeout:)``.
    /// - Throws: What ``flush(prio:weakTimeout:)`` throws.
    ///
    /// Uses `IORING_OP_SEND` (Linux 5.6) with `MSG_NOSIGNAL` when it sends; the epoll
    /// backend runs the same definition.
    public func writelines(_ lines: some Sequence<some Sequence<UInt8>>, prio: Priority = priority.DEFAULT, weakTimeout: Bool = true) async throws {
        try checkOpen()
        for line in lines { writeBuffer.append(contentsOf: line) }
        if writeLimit <= 1 || writeBuffer.count >= writeLimit {
            try await flush(prio: prio, weakTimeout: weakTimeout)
        }
    }

    /// Sends what is buffered, in one send-all with the socket's timeout.
    /// - Parameters:
    ///   - prio: `OP` bit: the coroutine goes to the front when the last send completes.
    ///   - weakTimeout: `true`: an inactivity timeout; `false`: a fixed deadline.
    /// - Throws: ``ConnectionClosed`` when the peer is gone; ``OperationTimeout`` (the
    ///   bytes not sent stay buffered); ``ConnectionError``.
    ///
    /// Uses `IORING_OP_SEND` (Linux 5.6) with `MSG_NOSIGNAL`, as often as needed; the
    /// epoll backend runs the same definition.
    public func flush(prio: Priority = priority.DEFAULT, weakTimeout: Bool = true) async throws {
        guard !writeBuffer.isEmpty else { return }
        let data = writeBuffer
        writeBuffer = []
        do {
            _ = try await yield(SendAll(sock, data, timeout: sock.gettimeout(), weakTimeout: weakTimeout, prio: prio))
        } catch let timedOut as OperationTimeout {
            writeBuffer = Array(data[min(timedOut.bytesTransferred, data.count)...]) + writeBuffer
            throw timedOut
        }
    }

    /// Flushes and detaches; the socket stays open. A second close does nothing.
    /// - Throws: What ``flush(prio:weakTimeout:)`` throws (the file is closed anyway).
    ///
    /// Uses `IORING_OP_SEND` (Linux 5.6) when data is buffered; the epoll backend runs the
    /// same definition.
    public func close() async throws {
        guard !closed else { return }
        defer { closed = true }
        try await flush()
    }

    // MARK: Helpers

    private func checkOpen() throws {
        if closed { throw ConnectionError(errno: EBADF, operation: "file", message: "I/O on a closed file object") }
    }

    private func take(_ count: Int) -> [UInt8] {
        defer { readBuffer.removeFirst(count) }
        return Array(readBuffer.prefix(count))
    }

    /// `bytes`, or ``ConnectionClosed`` when a read got none.
    private func whole(_ bytes: [UInt8]) throws -> [UInt8] {
        if bytes.isEmpty { throw ConnectionClosed.endOfStream }
        return bytes
    }

    /// A relative timeout (the socket's, else the scheduler's default) as a fixed date.
    private func fixed(_ timeout: Timeout) throws -> Timeout {
        let effective = timeout.isSet ? timeout : try CoroutineInstance.currentOrThrow().scheduler.defaultTimeout
        guard case .after(let duration) = effective else { return effective }
        return .at(ContinuousClock.now + duration)
    }
}
