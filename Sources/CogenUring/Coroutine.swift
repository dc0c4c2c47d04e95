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

/// A handle to a coroutine: its state, its result or error, join and cancel.
///
/// State and result belong to the scheduler's thread; from other threads, await
/// ``value`` or call ``cancel()``.
public final class Coroutine<Value: Sendable>: @unchecked Sendable {
    // @unchecked Sendable: mutable state is confined to the scheduler's thread; `task` is
    // set once, on that thread, before anyone else can see the handle from it.
    public let scheduler: Scheduler
    /// Who this is, for error reports.
    public let info: CoroutineInfo
    /// Where the coroutine stands; read on the scheduler's thread.
    public private(set) var state: CoroutineState = .notStarted
    private var outcome: Result<Value, any Error>?
    private var joiners: [(Parked<Value>, Placement)] = []
    private var task: Task<Value, any Error>?
    private var cancelRequested = false
    /// Errors go to the scheduler's error handler (top-level coroutines); a spawn-and-join
    /// child's error goes to its caller instead.
    let reportsErrors: Bool

    init(scheduler: Scheduler, name: String?, reportsErrors: Bool) {
        self.scheduler = scheduler
        info = CoroutineInfo(
            id: scheduler.coroutineIDs.wrappingAdd(1, ordering: .relaxed).newValue, name: name)
        self.reportsErrors = reportsErrors
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

    func start(
        placement: Placement,
        _ body: sending @escaping () async throws -> Value
    ) {
        scheduler.nextPlacement = placement
        // The runtime enqueues the new task's first job synchronously, on this thread,
        // at `nextPlacement`.
        task = Task(executorPreference: scheduler) { [self] in try await self.main(body) }
        scheduler.nextPlacement = .back
        if cancelRequested { task?.cancel() }
    }

    private func main(_ body: () async throws -> Value) async throws -> Value {
        state = .running
        scheduler.liveCoroutines &+= 1
        defer { scheduler.liveCoroutines &-= 1 }
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

    private func finish(_ result: Result<Value, any Error>) {
        outcome = result
        state = result.isSuccess ? .completed : .failed
        let waiting = joiners
        joiners = []
        for (parked, placement) in waiting {
            switch result {
            case .success(let value): scheduler.resume(parked, returning: value, placement: placement)
            case .failure(let error): scheduler.resume(parked, throwing: error, placement: placement)
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
    public func join(deadline: Deadline? = nil, placement: Placement = .back) async throws -> Value {
        if let outcome { return try outcome.get() }
        let waiter = Parked<Value>(scheduler: scheduler, label: "join")
        return try await scheduler.suspend(waiter, deadline: deadline) { waiter in
            joiners.append((waiter, placement))
        }
    }

    /// Cancels the coroutine's task: a parked coroutine is resumed with
    /// `CancellationError`, an operation in flight is cancelled in the kernel
    /// (`IORING_OP_ASYNC_CANCEL`). Safe from any thread.
    public func cancel() {
        if scheduler.isOnLoop {
            cancelRequested = true
            task?.cancel()
        } else {
            scheduler.post { [self] in
                cancelRequested = true
                task?.cancel()
            }
        }
    }
}

extension Result {
    fileprivate var isSuccess: Bool {
        if case .success = self { return true }
        return false
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
    @discardableResult
    public func spawn<Value: Sendable>(
        _ name: String? = nil,
        placement: Placement = .back,
        _ body: sending @escaping () async throws -> Value
    ) -> Coroutine<Value> {
        spawn(name, placement: placement, reportsErrors: true, body)
    }

    func spawn<Value: Sendable>(
        _ name: String?, placement: Placement, reportsErrors: Bool,
        _ body: sending @escaping () async throws -> Value
    ) -> Coroutine<Value> {
        if isOnLoop {
            let coroutine = Coroutine<Value>(scheduler: self, name: name, reportsErrors: reportsErrors)
            coroutine.start(placement: placement, body)
            return coroutine
        }
        // From another thread: create the handle and the task on the loop, so that all
        // the handle's state stays confined to it.
        nonisolated(unsafe) let body = body
        let coroutine = Coroutine<Value>(scheduler: self, name: name, reportsErrors: reportsErrors)
        post { coroutine.start(placement: .back, body) }
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
    public func spawnAndJoin<Value: Sendable>(
        placement: Placement = .back,
        resumePlacement: Placement = .front,
        _ body: sending @escaping () async throws -> Value
    ) async throws -> Value {
        let child = spawn(nil, placement: placement, reportsErrors: false, body)
        return try await child.join(placement: resumePlacement)
    }
}

