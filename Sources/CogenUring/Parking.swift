/// What a passed deadline does to a parked coroutine.
@usableFromInline
enum Expiry {
    /// Throws ``TimeoutError``.
    case timeout
    /// Returns normally (a sleep); only for `Parked<Void>`.
    case returnVoid
}

/// A coroutine's place while parked: its continuation and everything that may end the
/// wait (a resume, a deadline, a cancellation, a shutdown, a kernel completion).
///
/// Waiters come from their scheduler's pool and go back to it; they are freed only with
/// the scheduler. A coroutine holds one for its whole life and reuses it for every park (a
/// coroutine parks at most once at a time), so a park allocates nothing. A generation,
/// bumped at every park, tells a ``Parked`` handle of an earlier park apart: resuming it
/// does nothing. That is also what makes the handle a plain value without reference
/// counting: the object it points to outlives it, whatever it is used for next.
///
/// Confined to its scheduler's thread. The task cancellation handler of a non-coroutine
/// task is the only code that refers to one from elsewhere, and it only posts to the inbox.
public final class ParkedCoroutine: @unchecked Sendable {
    // @unchecked Sendable: loop-confined (see above). @exclusivity(unchecked): loop-confined
    // and never accessed reentrantly; dynamic checks would cost a TLS lookup per access.

    // Unowned: the scheduler's pool owns its waiters, never the other way round.
    @usableFromInline unowned(unsafe) let scheduler: Scheduler
    /// The suspended continuation, type-erased (an `UnsafeContinuation<Value, any Error>`
    /// for the `Value` of the current park); nil when not parked.
    @usableFromInline @exclusivity(unchecked) var continuation: UnsafeRawPointer?
    /// Bumped at every park; ``Parked`` handles carry the generation they were made for.
    @usableFromInline @exclusivity(unchecked) var generation: UInt64 = 0
    /// The sequence number of this waiter's entry in the timer heap (kept after its park
    /// ends, for the next park: see `TimerHeap`); 0 without one.
    @exclusivity(unchecked) var timerSequence: UInt64 = 0
    /// The waiter's slot in the timer heap's table, valid while `timerSequence != 0`.
    @exclusivity(unchecked) var timerSlot: UInt32 = 0
    /// When its entry comes due, valid while `timerSequence != 0`.
    @exclusivity(unchecked) var timerEntryDeadline: UInt64 = 0
    /// The current park waits on a deadline: `timerDeadline`.
    @exclusivity(unchecked) var timerArmed = false
    /// The current park's deadline, valid while `timerArmed`.
    @exclusivity(unchecked) var timerDeadline: UInt64 = 0
    // Membership in a signal's waiter list, so a waiter that leaves early unlinks in O(1).
    @exclusivity(unchecked) var signalNext: ParkedCoroutine?
    @exclusivity(unchecked) unowned(unsafe) var signalPrevious: ParkedCoroutine?
    var signalList: SignalList? {
        get { signalListReference?.takeUnretainedValue() }
        set { signalListReference = newValue.map { Unmanaged.passUnretained($0) } }
    }
    /// The kernel operation the coroutine waits for: deadlines and cancellations go to it.
    /// Unowned: the in-flight table holds the operation until its final completion, which
    /// ends the park (and clears this) before the operation can go.
    var operation: IOOperation? {
        get { operationReference?.takeUnretainedValue() }
        set { operationReference = newValue.map { Unmanaged.passUnretained($0) } }
    }
    // Unmanaged storage: every resume checks both, and an unowned optional is retained
    // (and released) just to be compared with nil.
    @exclusivity(unchecked) var signalListReference: Unmanaged<SignalList>?
    @exclusivity(unchecked) var operationReference: Unmanaged<IOOperation>?
    @exclusivity(unchecked) var label: StaticString = "wait"
    @exclusivity(unchecked) var expiry = Expiry.timeout
    @exclusivity(unchecked) var placementOnExpiry = Placement.back

    @usableFromInline
    init(scheduler: Scheduler) {
        self.scheduler = scheduler
    }

    var isParked: Bool { continuation != nil }

    /// The deadline passed.
    final func expire() {
        scheduler.statistics.timeouts.increment()
        if let operation {
            operation.requestCancel(.timeout)
        } else if expiry == .returnVoid {
            scheduler.resumeVoid(self, placement: placementOnExpiry)
        } else {
            scheduler.resumeRaw(self, throwing: TimeoutError(operation: "\(label)"), placement: placementOnExpiry)
        }
    }

    /// The wait was cancelled (called on the loop thread).
    @usableFromInline
    final func cancelWait() {
        if let operation {
            operation.requestCancel(.cancelled)
        } else {
            scheduler.resumeRaw(self, throwing: CancellationError(), placement: .back)
        }
    }

    /// `shutdown()` is tearing the scheduler down.
    final func abortForShutdown() {
        if let operation {
            operation.requestCancel(.shutdown)
        } else {
            scheduler.resumeRaw(self, throwing: SchedulerShutdownError(), placement: .back)
        }
    }
}

/// A handle to a coroutine suspended by ``Scheduler/park(deadline:placementOnExpiry:_:)``,
/// to resume it with ``Scheduler/resume(_:returning:placement:)`` or
/// ``Scheduler/resume(_:throwing:placement:)``.
///
/// This is the mechanism every operation of the library is built on, and it is public so
/// that users can write their own: keep the handle wherever the event that ends the wait
/// will find it, then resume it once with a value or an error at a placement. A handle
/// resumes only the park it was made for: once that park has ended (by a resume, a
/// deadline, a cancellation), resuming it returns `false` and does nothing. Use it on its
/// scheduler's thread only (from another thread, go through ``Scheduler/execute(_:)``).
public struct Parked<Value: Sendable>: Sendable, Equatable {
    // Unowned: waiters live as long as their scheduler (see `ParkedCoroutine`); a handle
    // used after its scheduler is gone is a programming error.
    // Unmanaged rather than unowned: reading it costs no reference counting.
    @usableFromInline let waiterReference: Unmanaged<ParkedCoroutine>
    @usableFromInline let generation: UInt64

    @usableFromInline var waiter: ParkedCoroutine { waiterReference.takeUnretainedValue() }

    @usableFromInline
    init(waiter: ParkedCoroutine, generation: UInt64) {
        self.waiterReference = Unmanaged.passUnretained(waiter)
        self.generation = generation
    }

    /// Whether the park this handle was made for is still going on.
    public var isParked: Bool { waiter.generation == generation && waiter.continuation != nil }

    /// The scheduler the coroutine is parked on.
    public var scheduler: Scheduler { waiter.scheduler }

    /// Whether two handles are for the same park.
    public static func == (lhs: Parked, rhs: Parked) -> Bool {
        lhs.waiterReference.toOpaque() == rhs.waiterReference.toOpaque() && lhs.generation == rhs.generation
    }
}

extension Scheduler {
    /// Parks the current coroutine until someone resumes it through the handle that
    /// `register` receives.
    ///
    /// `register` runs synchronously before the coroutine suspends; it stores the handle
    /// where the event that ends the wait will find it. It may also resume the handle at
    /// once, in which case the coroutine does not suspend at all. Cancelling the coroutine
    /// resumes it with `CancellationError`; a passed deadline with ``TimeoutError``.
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
    @inlinable
    public func park<Value: Sendable>(
        deadline: Deadline? = nil,
        placementOnExpiry: Placement = .back,
        _ register: (Parked<Value>) -> Void
    ) async throws -> Value {
        try await suspend(
            ParkSettings(label: "wait", deadline: deadline, placementOnExpiry: placementOnExpiry),
            register)
    }

    /// Parks the current task: the one path of every suspension in the library.
    ///
    /// A coroutine's own task needs no cancellation handler per park: cancelling the
    /// coroutine finds its current wait directly. Any other task parking here (a child
    /// task, a plain `Task`) gets a per-park cancellation handler.
    // Not `@inline(__always)`: forced into its callers it saves an async frame, but the
    // caller then switches back to its executor after the resume (a second
    // `swift_task_switch` and status lock per park: +70 instructions per request, measured).
    @inlinable
    func suspend<Value: Sendable>(
        _ settings: ParkSettings,
        _ register: (Parked<Value>) -> Void
    ) async throws -> Value {
        assertOnLoop()
        // Unmanaged: the running coroutine is alive (its task holds it), and its waiter
        // with it; held strongly across the suspension they cost a retain and a release
        // each per park.
        if let coroutine = currentCoroutineReference(),
           let waiter = coroutine._withUnsafeGuaranteedRef({ $0.waiterReference })
        {
            // Inheriting the executor: the continuation resumes the task on this
            // scheduler (its executor preference) and the code after it runs there, with
            // no executor check after the resume (`withUnsafeThrowingContinuation`'s
            // isolation hop costs a `swift_task_switch` and the task's status lock per
            // park). Sound here: a coroutine of this scheduler runs only on its thread.
            return try await _unsafeInheritExecutor_withUnsafeThrowingContinuation { continuation in
                coroutine._withUnsafeGuaranteedRef { coroutine in
                    waiter._withUnsafeGuaranteedRef { waiter in
                        install(continuation, in: waiter, for: coroutine, settings, register)
                    }
                }
            }
        }
        let waiter = acquireWaiter()
        defer { releaseWaiter(waiter) }
        // The waiter is ours until released, so this park's generation is the next one;
        // the cancellation handler must not touch a later park of the recycled waiter.
        let generation = waiter.generation &+ 1
        return try await withTaskCancellationHandler {
            try await withUnsafeThrowingContinuation { continuation in
                install(continuation, in: waiter, for: nil, settings, register)
                // A task cancelled before this point ran its handler when there was no
                // continuation to resume yet; honour the cancellation now.
                if Task.isCancelled && waiter.continuation != nil { waiter.cancelWait() }
            }
        } onCancel: {
            self.requestCancel(of: waiter, generation: generation)
        }
    }

    /// Parks on `waiter` (or refuses at once) and hands out the handle.
    @inlinable
    func install<Value: Sendable>(
        _ continuation: UnsafeContinuation<Value, any Error>, in waiter: ParkedCoroutine,
        for coroutine: AnyCoroutine?, _ settings: ParkSettings, _ register: (Parked<Value>) -> Void
    ) {
        if let refusal = refusal(for: coroutine) {
            continuation.resume(throwing: refusal)
            return
        }
        waiter.continuation = unsafeBitCast(continuation, to: UnsafeRawPointer.self)
        let generation = beginPark(waiter, settings)
        register(Parked(waiter: waiter, generation: generation))
    }

    /// Resumes a parked coroutine with a value.
    ///
    /// - Parameters:
    ///   - parked: The handle ``park(deadline:placementOnExpiry:_:)`` gave out.
    ///   - value: What `park` returns in the coroutine.
    ///   - placement: Front or back of the run queue.
    /// - Returns: `false` if that park had already ended (by a deadline, a cancellation or
    ///   an earlier resume); nothing is done then.
    @inlinable
    @discardableResult
    public func resume<Value: Sendable>(
        _ parked: Parked<Value>, returning value: sending Value, placement: Placement = .back
    ) -> Bool {
        assertOnLoop()
        let continuation = parked.waiterReference._withUnsafeGuaranteedRef { waiter -> UnsafeRawPointer? in
            guard waiter.generation == parked.generation, let raw = waiter.continuation else { return nil }
            waiter.continuation = nil
            endPark(waiter)
            return raw
        }
        guard let raw = continuation else { return false }
        nextPlacement = placement
        unsafeBitCast(raw, to: UnsafeContinuation<Value, any Error>.self).resume(returning: value)
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
    /// - Returns: `false` if that park had already ended; nothing is done then.
    @inlinable
    @discardableResult
    public func resume<Value: Sendable>(
        _ parked: Parked<Value>, throwing error: any Error, placement: Placement = .back
    ) -> Bool {
        parked.waiterReference._withUnsafeGuaranteedRef { waiter in
            guard waiter.generation == parked.generation else { return false }
            return resumeRaw(waiter, throwing: error, placement: placement)
        }
    }

    /// Throws into whatever the waiter's current park awaits. Resuming with an error does
    /// not touch the result's storage, so the continuation's value type does not matter.
    @usableFromInline
    @discardableResult
    func resumeRaw(_ waiter: ParkedCoroutine, throwing error: any Error, placement: Placement) -> Bool {
        assertOnLoop()
        guard let raw = waiter.continuation else { return false }
        waiter.continuation = nil
        endPark(waiter)
        nextPlacement = placement
        unsafeBitCast(raw, to: UnsafeContinuation<Void, any Error>.self).resume(throwing: error)
        nextPlacement = .back
        return true
    }

    /// Ends a sleep (a park whose value type is `Void`).
    func resumeVoid(_ waiter: ParkedCoroutine, placement: Placement) {
        resume(Parked<Void>(waiter: waiter, generation: waiter.generation), returning: (), placement: placement)
    }

    /// The coroutine whose own task is running now, if the current task is one.
    @usableFromInline
    func currentCoroutine() -> AnyCoroutine? {
        currentCoroutineReference()?.takeUnretainedValue()
    }

    /// `currentCoroutine()` without reference counting: valid while that task runs.
    @usableFromInline
    func currentCoroutineReference() -> Unmanaged<AnyCoroutine>? {
        guard let task = runningTask else { return nil }
        return coroutinesByTask.reference(task)
    }

    /// Why a park must fail at once: shutdown, or the coroutine was cancelled.
    @usableFromInline
    func refusal(for coroutine: AnyCoroutine?) -> (any Error)? {
        if shuttingDown { return SchedulerShutdownError() }
        if let coroutine, coroutine.cancelRequested { return CancellationError() }
        return nil
    }

    /// A waiter from the pool (or a new one, which joins `allWaiters` for good).
    @usableFromInline
    func acquireWaiter() -> ParkedCoroutine {
        if let waiter = waiterPool.popLast() { return waiter }
        let waiter = ParkedCoroutine(scheduler: self)
        allWaiters.append(waiter)
        return waiter
    }

    /// Gives a waiter back once nothing can park on it any more.
    @usableFromInline
    func releaseWaiter(_ waiter: ParkedCoroutine) {
        assert(waiter.continuation == nil, "a waiter goes back to the pool only when not parked")
        waiterPool.append(waiter)
    }

    /// Non-generic half of parking: the generation, the count, the deadline.
    @usableFromInline
    func beginPark(_ waiter: ParkedCoroutine, _ settings: ParkSettings) -> UInt64 {
        waiter.generation &+= 1
        waiter.label = settings.label
        waiter.expiry = settings.expiry
        waiter.placementOnExpiry = settings.placementOnExpiry
        parkedCount &+= 1
        if let deadline = settings.deadline { timers.insert(waiter, deadline: deadline.nanoseconds) }
        return waiter.generation
    }

    /// Non-generic half of resuming: undoes `beginPark`.
    @usableFromInline
    func endPark(_ waiter: ParkedCoroutine) {
        if waiter.timerArmed { timers.remove(waiter) }
        if let list = waiter.signalListReference { list._withUnsafeGuaranteedRef { $0.remove(waiter) } }
        if waiter.operationReference != nil { waiter.operationReference = nil }
        parkedCount &-= 1
    }

    /// Called by a task's cancellation handler, on any thread.
    @usableFromInline
    func requestCancel(of waiter: ParkedCoroutine, generation: UInt64) {
        if isOnLoop {
            if waiter.isParked && waiter.generation == generation { waiter.cancelWait() }
        } else {
            post { if waiter.isParked && waiter.generation == generation { waiter.cancelWait() } }
        }
    }
}

/// How a park behaves, gathered so the generic path passes one value.
@usableFromInline
struct ParkSettings {
    @usableFromInline var label: StaticString
    @usableFromInline var deadline: Deadline?
    @usableFromInline var placementOnExpiry: Placement
    @usableFromInline var expiry: Expiry

    @inlinable
    init(label: StaticString, deadline: Deadline?, placementOnExpiry: Placement = .back, expiry: Expiry = .timeout) {
        self.label = label
        self.deadline = deadline
        self.placementOnExpiry = placementOnExpiry
        self.expiry = expiry
    }
}
