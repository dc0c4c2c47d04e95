import Glibc

/// A kernel operation a coroutine waits for: its description and the storage the kernel
/// may touch, in one object that lives in the in-flight table until its final completion.
///
/// A deadline or a cancellation does not resume the coroutine: it asks the kernel to
/// cancel the operation (`IORING_OP_ASYNC_CANCEL`), and the coroutine resumes when the
/// operation's own final completion arrives: with the timeout or cancellation error if the
/// kernel cancelled it, with its real result if it had completed anyway.
///
/// Subclasses (one per file in `Operations/`) build the SQE and turn the completion into
/// the coroutine's value; they are not generic, so nothing on the path needs a metadata
/// lookup.
class IOOperation: KernelOperation {
    // Loop-confined and never accessed reentrantly: no dynamic exclusivity checks (a
    // thread-local lookup per access), as for the scheduler's own state.
    unowned(unsafe) let scheduler: Scheduler
    @exclusivity(unchecked) var userData: UInt64 = 0
    @exclusivity(unchecked) var cancelReason: CancelReason?
    @exclusivity(unchecked) var placement: Placement = .back
    let label: StaticString
    /// Started with `Scheduler.start`: a multishot stream no coroutine waits on.
    @exclusivity(unchecked) var isStream = false
    /// A readiness backend's fast path (`attemptInline`) has just got `EAGAIN` for it.
    @exclusivity(unchecked) var knownNotReady = false
    /// `-ECANCELED` completions nobody asked for (each is retried, up to a bound).
    @exclusivity(unchecked) var spuriousCancels = 0
    static let spuriousCancelRetries = 16

    init(scheduler: Scheduler, label: StaticString) {
        self.scheduler = scheduler
        self.label = label
    }

    // invariant: every (internal) subclass overrides both.
    func prepare(_ sqe: OpaquePointer, userData: UInt64) { fatalError("abstract") }
    // invariant: every (internal) subclass overrides both.
    func complete(result: Int32, flags: UInt32) { fatalError("abstract") }

    // The same operation for a readiness backend (epoll): the descriptor and readiness to
    // wait for, and the non-blocking system call to try, whose result reads like a CQE's
    // (`>= 0`, or `-errno`; `-EAGAIN`: wait for the readiness, then try again).

    /// The descriptor whose readiness the operation waits for; -1 when it never waits.
    var readinessDescriptor: Int32 { -1 }

    /// Who owns `readinessDescriptor`: a socket's serial number, or 0 for a descriptor the
    /// library does not own (``Scheduler/poll(_:events:deadline:placement:)``). A readiness
    /// registration made for one owner is not trusted for another: the descriptor may have
    /// been closed (and its registration dropped by the kernel) and its number reused.
    var readinessOwner: UInt64 { 0 }

    /// The readiness the operation waits for.
    var interest: Readiness { .readable }

    /// Tries the operation once without blocking.
    func attempt() -> Int32 { -ENOSYS }

    /// The error a `-ECANCELED` completion means after our own cancel request, if any.
    final func cancellationError(for result: Int32) -> (any Error)? {
        guard result == -ECANCELED, let cancelReason else { return nil }
        switch cancelReason {
        case .timeout: return TimeoutError(operation: "\(label)")
        case .cancelled: return CancellationError()
        case .shutdown: return SchedulerShutdownError()
        case .closed: return SocketError(errno: EBADF, operation: "\(label) (the socket was closed)")
        case .paused: return nil
        }
    }

    /// The error a failed completion (`-errno`) means; socket operations give ``SocketError``.
    func error(errno: Int32) -> any Error { IOError(errno: errno, operation: "\(label)") }

    /// Resumes the coroutine with the outcome of a final completion: the error of our own
    /// cancellation, an ``IOError`` for a negative result, or `value(result)`.
    final func finish<Value: Sendable>(_ parked: Parked<Value>?, result: Int32, value: (Int32) -> Value) {
        guard let parked else { return }
        if let error = cancellationError(for: result) {
            finish(parked, .failure(error))
        } else if result < 0 {
            finish(parked, .failure(error(errno: -result)))
        } else {
            finish(parked, .success(value(result)))
        }
    }

    /// Resumes the coroutine with the operation's outcome, at its placement.
    final func finish<Value: Sendable>(_ parked: Parked<Value>, _ outcome: Result<Value, any Error>) {
        switch outcome {
        case .success(let value): scheduler.resume(parked, returning: value, placement: placement)
        case .failure(let error): scheduler.resume(parked, throwing: error, placement: placement)
        }
    }

    final func requestCancel(_ reason: CancelReason) {
        guard cancelReason == nil else { return }
        cancelReason = reason
        // A stream being cancelled is awaited (by a close, a pause, the shutdown): from
        // now on it keeps `run()` alive like any operation until its final CQE.
        if isStream {
            isStream = false
            scheduler.streams -= 1
        }
        scheduler.cancelInKernel(self, userData: userData)
    }
}

/// What a readiness backend waits for before retrying an operation.
enum Readiness {
    case readable, writable
}

/// `-errno` of the last failed call, in a CQE's convention.
@inline(__always)
func negativeErrno(_ status: Int) -> Int32 {
    status >= 0 ? Int32(truncatingIfNeeded: status) : -Glibc.errno
}

extension Scheduler {
    /// Starts `operation` in the kernel and parks the coroutine until its final completion;
    /// `bind` gives the operation the handle to resume.
    @inline(__always)
    func perform<Value: Sendable, Operation: IOOperation>(
        _ operation: Operation, deadline: Deadline?, placement: Placement,
        bind: (Operation, Parked<Value>) -> Void
    ) async throws -> Value {
        operation.placement = placement
        return try await suspend(ParkSettings(label: operation.label, deadline: deadline)) { (parked: Parked<Value>) in
            bind(operation, parked)
            parked.waiter.operation = operation
            let userData = inFlight.insert(operation)
            operation.userData = userData
            backend.submit(operation, userData: userData)
            statistics.submitted.increment()
        }
    }

    /// Starts an operation no coroutine waits on (a multishot stream owned by a socket);
    /// its completions go to the operation itself.
    func start(_ operation: IOOperation) {
        operation.isStream = true
        streams += 1
        let userData = inFlight.insert(operation)
        operation.userData = userData
        backend.submit(operation, userData: userData)
        statistics.submitted.increment()
    }

    /// A readiness backend's fast path: tries an operation's system call at once, before
    /// anything is allocated or parked. When it completes, the coroutine does not wait for
    /// a completion: with `.front` it goes on right away (the front of the run queue,
    /// without the trip), with `.back` it goes to the back of the run queue as a
    /// completion would send it, or goes on when that queue is empty (the back of an empty
    /// queue). A receive that finds bytes already there goes on right away whatever its
    /// placement, as a receive served from the ring's buffered chunks does on io_uring:
    /// nothing was waited for. Going on without a trip is allowed `inlineBudgetPerTurn`
    /// times per turn, so the loop still looks at timers and completions, and a socket that
    /// is always readable cannot keep the thread. The same placements as the normal path,
    /// minus the park, the registration and the completion's delivery.
    /// - Parameters:
    ///   - placement: The operation's placement.
    ///   - isReceive: A receive: bytes found at once were already received.
    ///   - attempt: The non-blocking system call; its result reads like a CQE's.
    /// - Returns: The call's result (`>= 0` or `-errno`); `-EAGAIN` when it must wait for
    ///   readiness (give the operation `knownNotReady`, so the backend does not try the
    ///   call again); `nil` when it was not tried (io_uring, no budget left, or a shutdown
    ///   or cancellation that the normal path reports).
    @inline(__always)
    func attemptInline(placement: Placement, isReceive: Bool = false, _ attempt: () -> Int32) async -> Int32? {
        guard attemptsInline, !shuttingDown, !Task.isCancelled else { return nil }
        if placement == .front && inlineBudget <= 0 { return nil }
        let result = attempt()
        if result == -EAGAIN { return result }
        statistics.inline.increment()
        if inlineBudget > 0 && (placement == .front || isReceive || runQueue.isEmpty) {
            inlineBudget -= 1
        } else {
            // Completed: requeued at the back like any completion. A cancellation now
            // does not undo it (the result stands).
            await yield(placement: .back)
        }
        return result
    }

    /// A final `-ECANCELED` that nobody asked for (no deadline, cancellation, close or
    /// shutdown): the kernel dropped the request without running it (as it may when the
    /// worker or task it belonged to goes away), so nothing was transferred. The operation
    /// is submitted again, at most `spuriousCancelRetries` times; then its coroutine gets
    /// the error. Streams end instead (their socket arms them again).
    /// - Returns: Whether it was submitted again (its completion is then not delivered).
    func resubmitsAfterSpuriousCancel(_ operation: IOOperation) -> Bool {
        guard operation.cancelReason == nil, !operation.isStream, !shuttingDown,
              operation.spuriousCancels < IOOperation.spuriousCancelRetries
        else { return false }
        operation.spuriousCancels += 1
        operation.knownNotReady = false
        let userData = inFlight.insert(operation)
        operation.userData = userData
        backend.submit(operation, userData: userData)
        statistics.submitted.increment()
        return true
    }

    func cancelInKernel(_ operation: any KernelOperation, userData: UInt64) {
        statistics.cancellations.increment()
        backend.cancel(operation, userData: userData)
    }
}
