/// Internal base of everything a scheduler holds parked: a coroutine waiting for a resume,
/// for a deadline, or for the final completion of a kernel operation.
///
/// Waiters are confined to their scheduler's thread. The cancellation handler is the only
/// code that touches one from elsewhere, and it only posts a closure to the loop's inbox.
public class ParkedCoroutine: @unchecked Sendable {
    // Unowned: a scheduler outlives its parked coroutines (teardown is explicit, through
    // `shutdown()`, which resumes every one of them first).
    unowned(unsafe) let scheduler: Scheduler
    /// Index in the scheduler's timer heap, or -1 without a deadline.
    var heapIndex = -1
    // Intrusive doubly linked list of parked waiters, so that `shutdown()` can resume each.
    var listNext: ParkedCoroutine?
    unowned(unsafe) var listPrevious: ParkedCoroutine?
    var isLinked = false
    /// What a timeout error names.
    var label: StaticString

    init(scheduler: Scheduler, label: StaticString) {
        self.scheduler = scheduler
        self.label = label
    }

    /// The scheduler this coroutine is parked on.
    public var owner: Scheduler { scheduler }

    /// Whether the coroutine is still parked (not yet resumed by anyone).
    public var isParked: Bool { fatalError("abstract") }

    /// The deadline passed.
    func expire() { fatalError("abstract") }
    /// The coroutine's task was cancelled (called on the loop thread).
    func cancel() { fatalError("abstract") }
    /// `shutdown()` is tearing the scheduler down.
    func abortForShutdown() { fatalError("abstract") }
}

/// A coroutine suspended by ``Scheduler/park(deadline:placementOnExpiry:_:)``, waiting for
/// ``Scheduler/resume(_:returning:placement:)`` or ``Scheduler/resume(_:throwing:placement:)``.
///
/// This is the mechanism every operation of the library is built on, and it is public so
/// that users can write their own: keep the handle wherever the event that ends the wait
/// will find it, then resume it once with a value or an error at a placement. A handle can
/// be resumed only once; later resumes return `false` and do nothing. Use it on its
/// scheduler's thread only (from another thread, go through ``Scheduler/execute(_:)``).
public class Parked<Value: Sendable>: ParkedCoroutine, @unchecked Sendable {
    var continuation: UnsafeContinuation<Value, any Error>?
    /// For sleeps: the deadline resumes with this value instead of a timeout error.
    var valueOnExpiry: Value?
    var placementOnExpiry: Placement = .back

    override public var isParked: Bool { continuation != nil }

    override func expire() {
        scheduler.statistics.timeouts.increment()
        if let value = valueOnExpiry {
            scheduler.resume(self, returning: value, placement: placementOnExpiry)
        } else {
            scheduler.resume(
                self, throwing: TimeoutError(operation: "\(label)"), placement: placementOnExpiry)
        }
    }

    override func cancel() {
        scheduler.resume(self, throwing: CancellationError(), placement: .back)
    }

    override func abortForShutdown() {
        scheduler.resume(self, throwing: SchedulerShutdownError(), placement: .back)
    }
}

extension Scheduler {
    /// Parks the current coroutine until someone resumes it through the handle that
    /// `register` receives.
    ///
    /// `register` runs synchronously before the coroutine suspends; it stores the handle
    /// where the event that ends the wait will find it. It may also resume the handle at
    /// once, in which case the coroutine does not suspend at all. Task cancellation resumes
    /// the coroutine with `CancellationError`; a passed deadline with ``TimeoutError``.
    ///
    /// - Parameters:
    ///   - deadline: When to give up; `nil` waits without limit.
    ///   - placementOnExpiry: Where the coroutine goes when the deadline passes.
    ///   - register: Receives the handle to resume.
    /// - Returns: The value passed to ``resume(_:returning:placement:)``.
    /// - Throws: The error passed to ``resume(_:throwing:placement:)``, ``TimeoutError``,
    ///   `CancellationError`, or ``SchedulerShutdownError``.
    ///
    /// No kernel operation is involved; a deadline is an entry in the scheduler's timer
    /// heap, not a kernel timer.
    public func park<Value: Sendable>(
        deadline: Deadline? = nil,
        placementOnExpiry: Placement = .back,
        _ register: (Parked<Value>) -> Void
    ) async throws -> Value {
        let waiter = Parked<Value>(scheduler: self, label: "wait")
        waiter.placementOnExpiry = placementOnExpiry
        return try await suspend(waiter, deadline: deadline, register)
    }

    /// Parks `waiter` (already configured) with cancellation handling; the shared path of
    /// every suspension in the library.
    func suspend<Value: Sendable, W: Parked<Value>>(
        _ waiter: W,
        deadline: Deadline?,
        _ register: (W) -> Void
    ) async throws -> Value {
        assertOnLoop()
        return try await withTaskCancellationHandler {
            try await withUnsafeThrowingContinuation { (continuation: UnsafeContinuation<Value, any Error>) in
                if shuttingDown {
                    continuation.resume(throwing: SchedulerShutdownError())
                    return
                }
                waiter.continuation = continuation
                link(waiter)
                if let deadline { timers.insert(waiter, deadline: deadline.nanoseconds) }
                register(waiter)
                // A task cancelled before this point ran its handler when there was no
                // continuation to resume yet; honour the cancellation now.
                if Task.isCancelled && waiter.isParked { waiter.cancel() }
            }
        } onCancel: {
            self.requestCancel(of: waiter)
        }
    }

    /// Resumes a parked coroutine with a value.
    ///
    /// - Parameters:
    ///   - parked: The handle ``park(deadline:placementOnExpiry:_:)`` gave out.
    ///   - value: What `park` returns in the coroutine.
    ///   - placement: Front or back of the run queue.
    /// - Returns: `false` if the coroutine had already been resumed (by a deadline, a
    ///   cancellation or an earlier call); nothing is done then.
    @discardableResult
    public func resume<Value: Sendable>(
        _ parked: Parked<Value>, returning value: sending Value, placement: Placement = .back
    ) -> Bool {
        assertOnLoop()
        guard let continuation = take(parked) else { return false }
        nextPlacement = placement
        continuation.resume(returning: value)
        // The runtime enqueued the job synchronously inside `resume`; if the coroutine had
        // not suspended yet it simply continues, and the placement must not leak.
        nextPlacement = .back
        return true
    }

    /// Resumes a parked coroutine by throwing an error into it.
    ///
    /// - Parameters:
    ///   - parked: The handle ``park(deadline:placementOnExpiry:_:)`` gave out.
    ///   - error: What `park` throws in the coroutine.
    ///   - placement: Front or back of the run queue.
    /// - Returns: `false` if the coroutine had already been resumed; nothing is done then.
    @discardableResult
    public func resume<Value: Sendable>(
        _ parked: Parked<Value>, throwing error: any Error, placement: Placement = .back
    ) -> Bool {
        assertOnLoop()
        guard let continuation = take(parked) else { return false }
        nextPlacement = placement
        continuation.resume(throwing: error)
        nextPlacement = .back
        return true
    }

    @inline(__always)
    func take<Value>(_ parked: Parked<Value>) -> UnsafeContinuation<Value, any Error>? {
        guard let continuation = parked.continuation else { return nil }
        parked.continuation = nil
        if parked.heapIndex >= 0 { timers.remove(parked) }
        unlink(parked)
        return continuation
    }

    @inline(__always)
    func link(_ waiter: ParkedCoroutine) {
        waiter.listNext = parkedHead
        parkedHead?.listPrevious = waiter
        parkedHead = waiter
        waiter.isLinked = true
        parkedCount &+= 1
    }

    @inline(__always)
    func unlink(_ waiter: ParkedCoroutine) {
        guard waiter.isLinked else { return }
        waiter.isLinked = false
        let next = waiter.listNext
        if let previous = waiter.listPrevious {
            previous.listNext = next
        } else {
            parkedHead = next
        }
        next?.listPrevious = waiter.listPrevious
        waiter.listNext = nil
        waiter.listPrevious = nil
        parkedCount &-= 1
    }

    /// Called by a task's cancellation handler, on any thread.
    func requestCancel(of waiter: ParkedCoroutine) {
        if isOnLoop {
            if waiter.isParked { waiter.cancel() }
        } else {
            post { if waiter.isParked { waiter.cancel() } }
        }
    }
}
