import Glibc

// Vectored sends: several buffers in one operation (an HTTP response's head and body
// without concatenating them).
extension Socket {
    /// Sends some of `buffers`, in order, in one operation, without concatenating them.
    /// - Parameters:
    ///   - buffers: What to send, in order; empty buffers are skipped. Held by the
    ///     operation until its final completion, even when the coroutine is cancelled or
    ///     times out.
    ///   - deadline: When to give up (the send is cancelled in the kernel).
    ///   - placement: Where the coroutine goes when the send completes.
    /// - Returns: How many bytes the kernel took, counted across the buffers (it may stop
    ///   in the middle of one); 0 when every buffer is empty. At most the first
    ///   1024 non-empty buffers (`IOV_MAX`) go in one send.
    /// - Throws: ``SocketError`` (``SocketError/isConnectionClosed`` for `EPIPE` and
    ///   `ECONNRESET`; `EBUSY` while another send is pending on this socket),
    ///   ``TimeoutError``, `CancellationError`.
    ///
    /// Uses `IORING_OP_SENDMSG` (Linux 5.3) with `MSG_NOSIGNAL`; on the epoll backend a
    /// non-blocking `sendmsg(2)`, tried at once and again when the socket is writable.
    public func send(_ buffers: [[UInt8]], deadline: Deadline? = nil, placement: Placement = .back) async throws -> Int {
        // The socket's spare operation, taken for the call (not held `inout` across a
        // suspension) and given back after it.
        var spare = spareSendMessage
        spareSendMessage = nil
        defer { spareSendMessage = spare }
        return try await sendMessage(
            buffers, from: VectoredPosition(), reusing: &spare, deadline: deadline, placement: placement)
    }

    /// Sends all of `buffers`, in order, in as many vectored sends as the kernel needs: a
    /// send that stops in the middle of a buffer goes on from there.
    /// - Parameters:
    ///   - buffers: What to send, in order; empty buffers are skipped. Held until the final
    ///     completion of the last send, even when the coroutine is cancelled or times out.
    ///   - timeout: Strong (whole send) or weak (inactivity: every send that moves bytes
    ///     moves the deadline), or none.
    ///   - placement: Where the coroutine goes when the last send completes.
    /// - Throws: ``TimeoutError`` (with the bytes sent so far), ``SocketError``
    ///   (``SocketError/isConnectionClosed`` for `EPIPE` and `ECONNRESET`; `EBUSY` while
    ///   another send is pending on this socket), `CancellationError`.
    ///
    /// Uses `IORING_OP_SENDMSG` (Linux 5.3) with `MSG_NOSIGNAL`, at most 1024 buffers
    /// (`IOV_MAX`) per send, as often as needed; on the epoll backend non-blocking
    /// `sendmsg(2)` calls.
    public func sendAll(_ buffers: [[UInt8]], timeout: SocketTimeout? = nil, placement: Placement = .back) async throws {
        var deadline: Deadline? = timeout.map {
            switch $0 { case .strong(let duration), .weak(let duration): .after(duration) }
        }
        var position = VectoredPosition()
        let total = position.remaining(in: buffers)
        var sent = 0
        var spare = spareSendMessage
        spareSendMessage = nil
        defer { spareSendMessage = spare }
        while sent < total {
            let count: Int
            do {
                count = try await sendMessage(
                    buffers, from: position, reusing: &spare, deadline: deadline, placement: placement)
            } catch is TimeoutError {
                throw TimeoutError(
                    operation: "send all \(total) bytes of \(buffers.count) buffers", bytesTransferred: sent)
            }
            sent += count
            position = position.advanced(by: count, in: buffers)
            if count > 0, case .weak(let duration) = timeout { deadline = .after(duration) }
        }
    }

    /// One `sendmsg` of the bytes from `position` on. `spare`: a finished operation to
    /// reuse when nothing else holds it any more (one per socket, not one per send).
    private func sendMessage(
        _ buffers: [[UInt8]], from position: VectoredPosition, reusing spare: inout SendMessageOperation?,
        deadline: Deadline?, placement: Placement
    ) async throws -> Int {
        scheduler.assertOnLoop()
        if trackedSends != nil { try await settleTrackedSendsBeforeSend(deadline: deadline) }
        let operation: SendMessageOperation
        if spare != nil && isKnownUniquelyReferenced(&spare) {
            // invariant: `spare != nil` (checked on the line above).
            operation = spare.unsafelyUnwrapped
            operation.reuse(buffers: buffers, from: position)
        } else {
            operation = SendMessageOperation(socket: self, buffers: buffers, from: position)
            spare = operation
        }
        // However this call ends, the operation is no longer in flight then (a pending
        // one resumes this frame only at its final completion): let go of the buffers,
        // so the caller's arrays are unique again.
        defer { operation.letGo() }
        guard operation.length > 0 else { return 0 }
        guard !sending else {
            throw SocketError(errno: EBUSY, operation: "send message (another send is pending on this socket)")
        }
        sending = true
        defer { sending = false }
        if descriptor >= 0 && !closing, let result = await scheduler.attemptInline(placement: placement, {
            operation.attempt()
        }) {
            if result >= 0 { return Int(result) }
            if result != -EAGAIN { throw SocketError(errno: -result, operation: "send message") }
            operation.knownNotReady = true
        }
        return try await run(operation, deadline: deadline, placement: placement) { $0.parked = $1 }
    }
}
