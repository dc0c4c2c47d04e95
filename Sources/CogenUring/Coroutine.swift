import CURing
import Synchronization

/// The life of a coroutine.
public enum CoroutineState: Sendable, Hashable {
    /// Spawned; its first job has not run yet.
    case notStarted
    /// Started and not finished (running, queued or parked).
    case running
    /// Returned a value.
    case completed
    /// Threw an error.
    case failed
}

/// What every coroutine handle has, whatever its value type.
///
/// State belongs to the scheduler's thread; ``cancel()`` is safe from any thread.
public class AnyCoroutine: @unchecked Sendable {
    // @unchecked Sendable: mutable state is confined to the scheduler's thread.

    /// The scheduler the coroutine runs on.
    public let scheduler: Scheduler
    /// Who this is, for error reports.
    public let info: CoroutineInfo
    /// The coroutine's waiter from the scheduler's pool, held from its first step to its
    /// end and reused by every park. `cancel()` finds the current wait through it, so no
    /// park needs a cancellation handler.
    @usableFromInline var waiter: ParkedCoroutine? {
        get { waiterReference?.takeUnretainedValue() }
        set { waiterReference = newValue.map { Unmanaged.passUnretained($0) } }
    }
    /// Unmanaged: waiters live as long as their scheduler (see `ParkedCoroutine`), and
    /// every park reads this without reference counting.
    @usableFromInline @exclusivity(unchecked) var waiterReference: Unmanaged<ParkedCoroutine>?
    @usableFromInline @exclusivity(unchecked) var _state: CoroutineState = .notStarted
    @usableFromInline @exclusivity(unchecked) var cancelRequested = false
    /// The coroutine's task (identity only), its key in the scheduler's task table.
    @usableFromInline @exclusivity(unchecked) var task: UnsafeRawPointer?
    /// Errors go to the scheduler's error handler (top-level coroutines); a spawn-and-join
    /// child's error goes to its caller instead.
    @usableFromInline let reportsErrors: Bool

    @usableFromInline
    init(scheduler: Scheduler, name: String?, reportsErrors: Bool) {
        info = CoroutineInfo(
            id: scheduler.coroutineIDs.wrappingAdd(1, ordering: .relaxed).newValue, name: name)
        self.reportsErrors = reportsErrors
        self.scheduler = scheduler
    }

    /// Where the coroutine stands; read on the scheduler's thread.
    public var state: CoroutineState { _state }

    /// An object a layer built on the scheduler keeps with the coroutine (CogenCompat keeps
    /// its coroutine instance here, found again through ``Scheduler/runningCoroutine``).
    /// Read and written on the scheduler's thread.
    public var attachment: AnyObject? {
        get { _attachment }
        set { _attachment = newValue }
    }
    @exclusivity(unchecked) var _attachment: AnyObject?

    /// Cancels the coroutine: a parked coroutine is resumed with `CancellationError`, an
    /// operation in flight is cancelled in the kernel (`IORING_OP_ASYNC_CANCEL`), and the
    /// task is marked cancelled. Safe from any thread.
    public func cancel() {
        if scheduler.isOnLoop {
            cancelOnLoop()
        } else {
            scheduler.post { [self] in cancelOnLoop() }
        }
    }

    private func cancelOnLoop() {
        cancelRequested = true
        cancelTask()
        if let child { cogen_task_cancel(child) }
        if let waiter, waiter.isParked { waiter.cancelWait() }
    }

    /// Marks the task cancelled for code that checks `Task.isCancelled` (only while the
    /// coroutine runs: `task` is its live task then).
    func cancelTask() {
        if let task { cogen_task_cancel(task) }
    }

    /// The task of a `spawnAndJoin` child this coroutine waits for (alive meanwhile: the
    /// waiting frame holds it); cancelling the coroutine cancels it.
    @usableFromInline @exclusivity(unchecked) var child: UnsafeRawPointer?

    /// The outcome, in the non-generic base (see `Coroutine`). `storedValue` holds a
    /// `Value`.
    @usableFromInline @exclusivity(unchecked) var storedValue: (any Sendable)?
    @usableFromInline @exclusivity(unchecked) var storedError: (any Error)?
    /// The first joiner inline (the usual case: one caller), the others in an array.
    @usableFromInline @exclusivity(unchecked) var firstJoiner: Joiner?
    @usableFromInline @exclusivity(unchecked) var moreJoiners: [Joiner] = []

    @inlinable
    func addJoiner(_ joiner: Joiner) {
        if firstJoiner == nil { firstJoiner = joiner } else { moreJoiners.append(joiner) }
    }

    /// Takes the joiners, in the order they joined.
    @usableFromInline
    func takeJoiners() -> [Joiner] {
        guard let first = firstJoiner else { return [] }
        firstJoiner = nil
        let rest = moreJoiners
        moreJoiners = []
        return [first] + rest
    }

    /// Records a failure, reports it if top-level, and throws it into the joiners.
    @usableFromInline
    func fail(_ error: any Error) {
        _state = .failed
        storedError = error
        if reportsErrors { scheduler.errorHandler(info, error) }
        for joiner in takeJoiners() where joiner.waiter.generation == joiner.generation {
            scheduler.resumeRaw(joiner.waiter, throwing: error, placement: joiner.placement)
        }
    }

    /// Binds `current` and runs the body; the non-generic part of a coroutine's start.
    @usableFromInline
    func enter() {
        _state = .running
        // The job the loop is running is the task itself (a task is its own job).
        task = scheduler.runningTask
        assert(task != nil && task == cogen_current_task(), "a coroutine starts on its scheduler's loop")
        waiter = scheduler.acquireWaiter()
        // invariant: `enter` runs as the coroutine's first job on the loop, which set `runningTask`.
        scheduler.coroutinesByTask.insert(task!, self)
        scheduler.liveCoroutines &+= 1
    }

    @usableFromInline
    func leave() {
        if let task { scheduler.coroutinesByTask.remove(task) }
        task = nil
        if let waiter {
            scheduler.releaseWaiter(waiter)
            self.waiter = nil
        }
        scheduler.liveCoroutines &-= 1
    }
}

/// A handle to a coroutine: its state, its result or error, join and cancel.
///
/// State and result belong to the scheduler's thread; from other threads, await
/// ``value`` or call ``AnyCoroutine/cancel()``.
public final class Coroutine<Value: Sendable>: AnyCoroutine, @unchecked Sendable {
    // No stored properties of its own: everything lives in the non-generic base, so that
    // releasing a finished coroutine runs no generic code (an unspecialised deinit would
    // look up the metadata of every generic field, on every spawn).

    @usableFromInline
    override init(scheduler: Scheduler, name: String?, reportsErrors: Bool) {
        super.init(scheduler: scheduler, name: name, reportsErrors: reportsErrors)
    }

    /// The value returned, once completed; read on the scheduler's thread.
    public var result: Value? { storedValue as? Value }

    /// The error thrown, once failed; read on the scheduler's thread.
    public var error: (any Error)? { storedError }

    /// Waits for the coroutine from any task, on any thread.
    /// - Returns: Its value.
    /// - Throws: Its error.
    public var value: Value {
        get async throws {
            if scheduler.isOnLoop { return try await join() }
            // Join on the scheduler's thread, where the handle's state lives.
            return try await Task(executorPreference: scheduler) { try await self.join() }.value
        }
    }

    @inlinable
    func start(placement: Placement, _ body: sending @escaping () async throws -> Value) {
        scheduler.nextPlacement = placement
        // The runtime enqueues the new task's first job synchronously, on this thread,
        // at `nextPlacement`.
        let task = Task(executorPreference: scheduler) { [self] in
            try await main(body)
        }
        scheduler.nextPlacement = .back
        if cancelRequested { task.cancel() }
    }

    @inlinable
    func main(_ body: () async throws -> Value) async throws -> Value {
        enter()
        defer { leave() }
        do {
            let value = try await body()
            finish(value)
            return value
        } catch {
            fail(error)
            throw error
        }
    }

    @inlinable
    func finish(_ value: Value) {
        _state = .completed
        storedValue = value
        guard let first = firstJoiner else { return }
        firstJoiner = nil
        if moreJoiners.isEmpty {
            scheduler.resume(
                Parked<Value>(waiter: first.waiter, generation: first.generation),
                returning: value, placement: first.placement)
            return
        }
        firstJoiner = first
        for joiner in takeJoiners() {
            scheduler.resume(
                Parked<Value>(waiter: joiner.waiter, generation: joiner.generation),
                returning: value, placement: joiner.placement)
        }
    }

    /// Waits for the coroutine to finish; returns at once if it already has.
    ///
    /// - Parameters:
    ///   - deadline: When to stop waiting (the coroutine keeps running).
    ///   - placement: Where the joiner goes when the coroutine finishes.
    /// - Returns: The coroutine's value.
    /// - Throws: The coroutine's error, ``TimeoutError``, `CancellationError`.
    ///
    /// No kernel operation is involved. Call it from a coroutine of the same scheduler.
    @inlinable
    public func join(deadline: Deadline? = nil, placement: Placement = .back) async throws -> Value {
        switch _state {
        // invariant: a completed coroutine stored its body's `Value`.
        case .completed: return storedValue as! Value
        // invariant: a failed coroutine stored its error.
        case .failed: throw storedError!
        case .notStarted, .running: break
        }
        return try await scheduler.suspend(ParkSettings(label: "join", deadline: deadline)) { (parked: Parked<Value>) in
            addJoiner(Joiner(waiter: parked.waiter, generation: parked.generation, placement: placement))
        }
    }
}

/// A coroutine waiting in ``Coroutine/join(deadline:placement:)``: a ``Parked`` handle
/// without its value type.
@usableFromInline
struct Joiner {
    @usableFromInline unowned(unsafe) let waiter: ParkedCoroutine
    @usableFromInline let generation: UInt64
    @usableFromInline let placement: Placement

    @inlinable
    init(waiter: ParkedCoroutine, generation: UInt64, placement: Placement) {
        self.waiter = waiter
        self.generation = generation
        self.placement = placement
    }
}

extension Scheduler {
    /// Starts a coroutine. Safe from any thread.
    ///
    /// - Parameters:
    ///   - name: Shown in error reports.
    ///   - placement: Where its first step goes in the run queue (honoured on the
    ///     scheduler's thread; from other threads it goes to the back).
    ///   - body: The coroutine. An error escaping it goes to ``errorHandler``.
    /// - Returns: The coroutine's handle.
    @inlinable
    @discardableResult
    public func spawn<Value: Sendable>(
        _ name: String? = nil,
        placement: Placement = .back,
        _ body: sending @escaping () async throws -> Value
    ) -> Coroutine<Value> {
        spawn(name, placement: placement, reportsErrors: true, body)
    }

    @inlinable
    func spawn<Value: Sendable>(
        _ name: String?, placement: Placement, reportsErrors: Bool,
        _ body: sending @escaping () async throws -> Value
    ) -> Coroutine<Value> {
        let coroutine = Coroutine<Value>(scheduler: self, name: name, reportsErrors: reportsErrors)
        if isOnLoop {
            coroutine.start(placement: placement, body)
        } else {
            // From another thread: start it on the loop, so that all the handle's state
            // stays confined there.
            nonisolated(unsafe) let body = body
            post { coroutine.start(placement: .back, body) }
        }
        return coroutine
    }

    /// Runs `body` as a child on this scheduler and waits for it: cogen's `OldCall` shape.
    /// Its error propagates to the caller instead of the error handler.
    ///
    /// The child is a plain task on the scheduler, without a ``Coroutine`` handle: about
    /// half the cost of ``spawn(_:placement:_:)`` plus ``Coroutine/join(deadline:placement:)``.
    /// Cancelling the caller cancels the child, and the caller still waits for it to end.
    ///
    /// - Parameters:
    ///   - placement: Where the child's first step goes in the run queue.
    ///   - resumePlacement: Where the caller goes when the child finishes.
    ///   - body: The child.
    /// - Returns: The child's value.
    /// - Throws: The child's error.
    @inlinable
    public func spawnAndJoin<Value: Sendable>(
        placement: Placement = .back,
        resumePlacement: Placement = .front,
        _ body: sending @escaping () async throws -> Value
    ) async throws -> Value {
        assertOnLoop()
        nextPlacement = placement
        let child = Task(executorPreference: self) { [self] in
            // The caller is resumed by the task's completion, which the runtime enqueues
            // right after this closure returns, still inside this job: the placement set
            // here applies to it (the loop resets it after every job).
            defer { nextPlacement = resumePlacement }
            return try await body()
        }
        nextPlacement = .back
        let caller = currentCoroutine()
        caller?.child = unsafeBitCast(child, to: UnsafeRawPointer.self)
        defer { caller?.child = nil }
        return try await child.value
    }
}
