import Glibc

// Tracked sends: sends whose completion does not bring a coroutine back. A request/response
// loop (receive, send, receive…) pays one trip through the run queue per request instead of
// two: the send's completion is handled by the socket, and the coroutine is already parked
// on its next receive.
extension Socket {
    /// Sends `bytes` after every earlier tracked send of this socket, without waiting for
    /// the send to complete: the socket sends them on its own (the rest of a partial send
    /// too), and the coroutine goes on at once.
    ///
    /// Ownership: the bytes are the socket's from the call on. Up to 4 KiB, and whatever is
    /// queued behind a send in flight, are copied into the socket's own storage (kept for
    /// the next sends: an echo allocates nothing per message); a larger array sent from
    /// an idle queue is held as it is, without a copy, until the final completion of the
    /// send that carries its last byte (the caller's next mutation of it copies it, as
    /// any shared array's would).
    ///
    /// Order: tracked sends leave in the order of the calls; at most one is in flight per
    /// socket, and what is queued meanwhile goes out in one send after it. A plain
    /// ``send(_:deadline:placement:)``, ``sendAll(_:timeout:placement:)`` or vectored
    /// send first waits until the tracked bytes are all sent (keeping the order); a tracked
    /// send while a plain send is pending is refused (`EBUSY`).
    ///
    /// Errors: a failure of a tracked send (a reset peer: ``SocketError/isConnectionClosed``)
    /// is stored, the bytes not sent yet are dropped, and the error is thrown once, by the
    /// next operation on the socket: a receive (bytes an exact or line read left in the
    /// socket's own buffer are still returned first), a send, a tracked send,
    /// ``flushTrackedSends(deadline:)`` or ``close(placement:)``.
    ///
    /// Backpressure: when a send is in flight and the bytes not yet taken by the kernel,
    /// with these, would exceed ``trackedSendLimit`` (64 KiB by default), the call first
    /// waits (parks) until they fit or everything is sent: a slow reader costs the socket
    /// at most the limit, or one call's bytes when that is larger. That wait is the only
    /// one; when it ends with an error (cancelled, shut down) the bytes were not queued.
    ///
    /// While tracked sends are in flight, ``Scheduler/run(untilStopped:)`` does not return
    /// and the operations count in ``SchedulerStatistics/operationsInFlight``; the socket is
    /// kept alive until they are done, even if dropped (then its `deinit` closes it).
    /// - Parameter bytes: What to send.
    /// - Throws: ``SocketError``: the stored error of an earlier tracked send, `EBADF` once
    ///   the socket is closing, `EBUSY` while a plain send is pending, or the error of the
    ///   send tried at once (epoll); `CancellationError`, ``SchedulerShutdownError`` from
    ///   the backpressure wait.
    ///
    /// Uses `IORING_OP_SEND` (Linux 5.6) with `MSG_NOSIGNAL`, one in flight per socket,
    /// submitted again from its completion for the rest; on the epoll backend a
    /// non-blocking `send(2)` tried at once when nothing is queued, the rest sent when the
    /// socket is writable.
    public func sendTracked(_ bytes: [UInt8]) async throws {
        scheduler.assertOnLoop()
        var state = try beginTrackedSend()
        if state.isBusy && state.bytesLeft + bytes.count > state.limit {
            try await waitForTrackedSends(state, room: bytes.count, deadline: nil)
            state = try beginTrackedSend()  // closed or failed meanwhile?
        }
        try enqueueTracked(bytes, state)
    }

    /// ``sendTracked(_:)-([UInt8])`` when it need not wait, taking the bytes' storage
    /// instead of copying them: a synchronous call for a caller that reuses one output
    /// array. When nothing is queued, `bytes`' storage becomes the send's and `bytes` gets
    /// the socket's spare one back, empty (two arrays alternate, nothing is copied or
    /// allocated); behind a send in flight the bytes are appended to the queue. Does
    /// nothing and returns `false` when the bytes would exceed ``trackedSendLimit`` behind
    /// the ones in flight (then call ``sendTracked(_:)-([UInt8])``, which waits for room).
    /// - Parameter bytes: What to send; empty (keeping some capacity) when this returns `true`.
    /// - Returns: Whether the bytes were handed over.
    /// - Throws: As ``sendTracked(_:)-([UInt8])``, except its backpressure wait's errors.
    ///
    /// Uses `IORING_OP_SEND` (Linux 5.6) with `MSG_NOSIGNAL`; on the epoll backend a
    /// non-blocking `send(2)` tried at once when nothing is queued.
    public func sendTrackedIfRoom(_ bytes: inout [UInt8]) throws -> Bool {
        scheduler.assertOnLoop()
        let state = try beginTrackedSend()
        if bytes.isEmpty { return true }
        if state.isBusy {
            if state.bytesLeft + bytes.count > state.limit { return false }
            state.queued.append(contentsOf: bytes)
            bytes.removeAll(keepingCapacity: true)
            return true
        }
        let (offset, wouldBlock) = try sendInlineFirst(bytes)
        if offset == bytes.count {
            bytes.removeAll(keepingCapacity: true)
            return true
        }
        swap(&state.sending, &bytes)
        if !bytes.isEmpty { bytes.removeAll(keepingCapacity: true) }
        state.sent = offset
        submitTracked(state, knownNotReady: wouldBlock)
        return true
    }

    /// Sends `buffers`, in order, as tracked sends: ``sendTracked(_:)-([UInt8])`` for each,
    /// as one stream of bytes (the buffers are copied into the socket's storage except for
    /// a large first one sent from an idle queue; empty buffers are skipped).
    /// - Parameter buffers: What to send, in order.
    /// - Throws: As ``sendTracked(_:)-([UInt8])``.
    ///
    /// Uses `IORING_OP_SEND` (Linux 5.6) with `MSG_NOSIGNAL`, one in flight per socket; on
    /// the epoll backend non-blocking `send(2)` calls.
    public func sendTracked(_ buffers: [[UInt8]]) async throws {
        scheduler.assertOnLoop()
        var state = try beginTrackedSend()
        let total = buffers.reduce(0) { $0 + $1.count }
        if state.isBusy && state.bytesLeft + total > state.limit {
            try await waitForTrackedSends(state, room: total, deadline: nil)
            state = try beginTrackedSend()
        }
        for buffer in buffers { try enqueueTracked(buffer, state) }
    }

    /// Waits until every tracked send of this socket has completed.
    /// - Parameter deadline: When to give up (the sends go on).
    /// - Throws: The stored error of a tracked send (``SocketError``), ``TimeoutError``,
    ///   `CancellationError`, ``SchedulerShutdownError``.
    ///
    /// No operation of its own: it parks until the tracked `IORING_OP_SEND`s (epoll:
    /// `send(2)` calls) have completed.
    public func flushTrackedSends(deadline: Deadline? = nil) async throws {
        scheduler.assertOnLoop()
        guard let state = trackedSends else { return }
        try await waitForTrackedSends(state, room: nil, deadline: deadline)
    }

    /// Bytes passed to tracked sends that the kernel has not taken yet.
    public var trackedBytesPending: Int { trackedSends?.bytesLeft ?? 0 }

    /// The most bytes tracked sends may have queued before ``sendTracked(_:)-([UInt8])``
    /// waits (64 KiB by default, the default read-ahead limit: a slow reader's connection
    /// holds about as much on its way out as on its way in; at least 1). Set on the
    /// socket's scheduler thread.
    public var trackedSendLimit: Int {
        get { trackedSends?.limit ?? TrackedSends.defaultLimit }
        set { trackedState().limit = max(1, newValue) }
    }

    /// How long ``close(placement:)`` waits for tracked sends to complete before it
    /// cancels what is left (30 seconds by default). Set on the socket's scheduler thread.
    public var trackedSendLinger: Duration {
        get { trackedSends?.linger ?? .seconds(30) }
        set { trackedState().linger = newValue }
    }

    // MARK: Internals

    private func trackedState() -> TrackedSends {
        if let trackedSends { return trackedSends }
        let state = TrackedSends()
        trackedSends = state
        return state
    }

    private func beginTrackedSend() throws(SocketError) -> TrackedSends {
        let state = trackedState()
        if let failure = state.failure {
            state.failure = nil
            throw failure
        }
        guard descriptor >= 0 && !closing && !state.closing else {
            throw SocketError(errno: EBADF, operation: "tracked send (the socket is closed)")
        }
        guard !sending else {
            throw SocketError(errno: EBUSY, operation: "tracked send (a plain send is pending on this socket)")
        }
        return state
    }

    /// On epoll, a non-blocking `send(2)` of `bytes` before any queuing: how many it took,
    /// and whether it found the socket not writable (`EAGAIN`). On io_uring: (0, false).
    private func sendInlineFirst(_ bytes: [UInt8]) throws(SocketError) -> (offset: Int, wouldBlock: Bool) {
        guard scheduler.attemptsInline else { return (0, false) }
        let descriptor = descriptor
        let result = bytes.withUnsafeBytes { buffer -> Int32 in
            guard let base = buffer.baseAddress else { return 0 }
            return trySend(descriptor, base, buffer.count)
        }
        if result >= 0 { return (Int(result), false) }
        if result != -EAGAIN { throw SocketError(errno: -result, operation: "tracked send") }
        return (0, true)
    }

    /// Queues `bytes` behind the send in flight, or starts a send of them (on epoll,
    /// tried at once first).
    private func enqueueTracked(_ bytes: [UInt8], _ state: TrackedSends) throws(SocketError) {
        guard !bytes.isEmpty else { return }
        if state.isBusy {
            state.queued.append(contentsOf: bytes)
            return
        }
        var (offset, wouldBlock) = try sendInlineFirst(bytes)
        if offset == bytes.count { return }
        if bytes.count - offset > TrackedSends.copyLimit {
            state.sending = bytes  // held, not copied
        } else {
            state.sending.removeAll(keepingCapacity: true)
            state.sending.append(contentsOf: bytes[offset...])
            offset = 0
        }
        state.sent = offset
        // On epoll, `EAGAIN`: not writable, wait for the edge. A short send is tried again
        // first: the socket may still be writable (a send asked for fewer bytes, as the
        // fault injector's short transfers do), and an edge-triggered registration that
        // exists already would report no new edge.
        submitTracked(state, knownNotReady: wouldBlock)
    }

    /// Starts the send of `state.sending[state.sent...]`.
    private func submitTracked(_ state: TrackedSends, knownNotReady: Bool) {
        guard !scheduler.shuttingDown, descriptor >= 0 else {
            failTracked(state, SocketError(errno: ECANCELED, operation: "tracked send (the scheduler is shutting down)"))
            return
        }
        let operation: TrackedSendOperation
        if let existing = state.operation {
            operation = existing
        } else {
            operation = TrackedSendOperation(socket: self)
            state.operation = operation
        }
        operation.aim(at: state.sending, from: state.sent)
        operation.knownNotReady = knownNotReady
        operation.keepAlive = self
        state.isBusy = true
        let userData = scheduler.inFlight.insert(operation)
        operation.userData = userData
        scheduler.backend.submit(operation, userData: userData)
        scheduler.statistics.submitted.increment()
    }

    /// The final completion of the tracked send in flight (no coroutine involved).
    func trackedSendCompleted(_ operation: TrackedSendOperation, result: Int32) {
        guard let state = trackedSends, state.isBusy else {
            operation.keepAlive = nil
            return
        }
        if result < 0 {
            let reason = operation.cancelReason == nil ? "" : " (cancelled: the socket closed or the scheduler shut down)"
            failTracked(state, SocketError(errno: -result, operation: "tracked send\(reason)"))
        } else {
            state.sent += Int(result)
            if operation.cancelReason == .closed || operation.cancelReason == .shutdown, state.bytesLeft > 0 {
                // A close or the shutdown cancelled it: what is left is not sent.
                failTracked(state, SocketError(errno: ECANCELED, operation: "tracked send (cancelled: the socket closed or the scheduler shut down)"))
            } else if state.sent < state.sending.count {
                submitTracked(state, knownNotReady: false)  // the rest, before anything queued
            } else if !state.queued.isEmpty {
                swap(&state.sending, &state.queued)
                if state.queued.capacity > TrackedSends.keptCapacity {
                    state.queued = []
                } else {
                    state.queued.removeAll(keepingCapacity: true)
                }
                state.sent = 0
                submitTracked(state, knownNotReady: false)
            } else {
                state.isBusy = false
                state.sent = 0
                if state.sending.capacity > TrackedSends.keptCapacity {
                    state.sending = []
                } else {
                    state.sending.removeAll(keepingCapacity: true)
                }
                operation.keepAlive = nil
            }
        }
        wakeTrackedWaiters(state)  // each checks its own condition
    }

    /// Stores the first error, drops what is left, ends the in-flight state.
    private func failTracked(_ state: TrackedSends, _ error: SocketError) {
        if state.failure == nil { state.failure = error }
        state.isBusy = false
        state.sending = []
        state.queued = []
        state.sent = 0
        state.operation?.keepAlive = nil
        wakeTrackedWaiters(state)
    }

    private func wakeTrackedWaiters(_ state: TrackedSends) {
        guard !state.waiters.isEmpty else { return }
        let waiters = state.waiters
        state.waiters = []
        for waiter in waiters { scheduler.resume(waiter, returning: ()) }
    }

    /// Parks until nothing is in flight, or (`room`) until `room` more bytes fit under the
    /// limit; throws (and clears) the stored error.
    private func waitForTrackedSends(_ state: TrackedSends, room: Int?, deadline: Deadline?) async throws {
        while true {
            if let failure = state.failure {
                state.failure = nil
                throw failure
            }
            if !state.isBusy { return }
            if let room, state.bytesLeft + room <= state.limit { return }
            let _: Void = try await scheduler.park(deadline: deadline) { state.waiters.append($0) }
        }
    }

    /// The stored error of a tracked send, thrown (once) by the next receive.
    @inline(__always)
    func throwTrackedSendFailure() throws(SocketError) {
        if let state = trackedSends, let failure = state.failure {
            state.failure = nil
            throw failure
        }
    }

    /// Before a plain send: waits until the tracked sends are done (their order first), at
    /// most until the send's deadline, throwing their stored error.
    func settleTrackedSendsBeforeSend(deadline: Deadline?) async throws {
        guard let state = trackedSends else { return }
        try await waitForTrackedSends(state, room: nil, deadline: deadline)
    }

    /// Before `close()`: no new tracked sends; waits up to the linger for those left, then
    /// cancels them and waits for their final completion (the descriptor must not be
    /// closed under them). Returns the stored error, for `close()` to throw once closed.
    func settleTrackedSendsForClose() async -> SocketError? {
        guard let state = trackedSends else { return nil }
        state.closing = true
        if state.isBusy {
            let deadline = Deadline.after(state.linger)
            while state.isBusy {
                do {
                    let _: Void = try await scheduler.park(deadline: deadline) { state.waiters.append($0) }
                } catch {
                    break  // the linger passed, or the wait was cancelled or refused
                }
            }
            if state.isBusy, let operation = state.operation {
                operation.requestCancel(.closed)
                while state.isBusy {
                    do {
                        let _: Void = try await scheduler.park { state.waiters.append($0) }
                    } catch {
                        break  // refused (a cancelled coroutine, a shutdown): the operation holds its bytes
                    }
                }
            }
        }
        let failure = state.failure
        state.failure = nil
        return failure
    }
}
