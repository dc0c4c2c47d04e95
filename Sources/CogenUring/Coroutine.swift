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
    @usableFromInline @exclusivity(unchecked) var waiter: ParkedCoroutine?
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
        if let waiter, waiter.isParked { waiter.cancelWait() }
    }

    func cancelTask() { fatalError("abstract") }

    /// Binds `current` and runs the body; the non-generic part of a coroutine's start.
    @usableFromInline
    func enter() {
        _state = .running
        // The job the loop is running is the task itself (a task is its own job).
        task = scheduler.runningTask
        assert(task != nil && task == cogen_current_task(), "a coroutine starts on its scheduler's loop")
        waiter = scheduler.acquireWaiter()
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
    @usableFromInline @exclusivity(unchecked) var outcome: Result<Value, any Error>?
    @usableFromInline @exclusivity(unchecked) var joiners: [(Parked<Value>, Placement)] = []
    @usableFromInline @exclusivity(unchecked) var runningTask: Task<Value, any Error>?

    @usableFromInline
    override init(scheduler: Scheduler, name: String?, reportsErrors: Bool) {
        super.init(scheduler: scheduler, name: name, reportsErrors: reportsErrors)
    }

    /// The value returned, once completed; read on the scheduler's thread.
    public var result: Value? {
        if case .success(let value) = outcome { return value }
        return nil
    }

    /// The error thrown, once failed; read on the scheduler's thread.
    public var error: (any Error)? {
        if case .failure(let error) = outcome { return error }
        return nil
    }

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

    override func cancelTask() { runningTask?.cancel() }

    @inlinable
    func start(placement: Placement, _ body: sending @escaping () async throws -> Value) {
        scheduler.nextPlacement = placement
        // The runtime enqueues the new task's first job synchronously, on this thread,
        // at `nextPlacement`.
        runningTask = Task(executorPreference: scheduler) { [self] in
            try await main(body)
        }
        scheduler.nextPlacement = .back
        if cancelRequested { runningTask?.cancel() }
    }

    @inlinable
    func main(_ body: () async throws -> Value) async throws -> Value {
        enter()
        defer { leave() }
        do {
            let value = try await body()
            finish(.success(value))
            return value
        } catch {
            finish(.failure(error))
            if reportsErrors { scheduler.errorHandler(info, error) }
            throw error
        }
    }

    @inlinable
    func finish(_ result: Result<Value, any Error>) {
        outcome = result
        switch result {
        case .success(let value):
            _state = .completed
            if joiners.isEmpty { return }
            let waiting = joiners
            joiners = []
            for (parked, placement) in waiting {
                scheduler.resume(parked, returning: value, placement: placement)
            }
        case .failure(let error):
            _state = .failed
            if joiners.isEmpty { return }
            let waiting = joiners
            joiners = []
            for (parked, placement) in waiting {
                scheduler.resume(parked, throwing: error, placement: placement)
            }
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
        if let outcome { return try outcome.get() }
        return try await scheduler.suspend(ParkSettings(label: "join", deadline: deadline)) { parked in
            joiners.append((parked, placement))
        }
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

    /// Runs `body` as a new coroutine and waits for it: cogen's `OldCall` shape. Its
    /// error propagates to the caller instead of the error handler.
    ///
    /// - Parameters:
    ///   - placement: Where the child's first step goes in the run queue.
    ///   - resumePlacement: Where the caller goes when the child finishes.
    ///   - body: The child coroutine.
    /// - Returns: The child's value.
    /// - Throws: The child's error; `CancellationError`.
    @inlinable
    public func spawnAndJoin<Value: Sendable>(
        placement: Placement = .back,
        resumePlacement: Placement = .front,
        _ body: sending @escaping () async throws -> Value
    ) async throws -> Value {
        let child = spawn(nil, placement: placement, reportsErrors: false, body)
        return try await child.join(placement: resumePlacement)
    }
}
