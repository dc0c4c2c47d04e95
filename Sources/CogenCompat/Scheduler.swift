public import CogenUring
import Glibc

/// cogen's scheduler on CogenUring: coroutines added to it run on one thread, over io_uring
/// (or epoll), in cogen's run order.
///
/// ```swift
/// let sched = try Scheduler(defaultPriority: priority.FIRST)
/// sched.add { try await yield(events.Sleep(0.1)); return nil }
/// sched.run()
/// ```
/// Add coroutines from any thread before ``run()``, or from coroutines. Everything else
/// happens on the thread that runs it.
public final class Scheduler: @unchecked Sendable {
    // @unchecked Sendable: mutable state is confined to the loop thread; `add` from another
    // thread goes through the core's inbox.

    /// The CogenUring scheduler underneath (its ring, timers and run queue).
    public let core: CogenUring.Scheduler
    /// Replaces `DEFAULT` in every operation, and decides where woken joiners go.
    public let defaultPriority: Priority
    /// Applied to every timed operation that has no timeout of its own.
    public let defaultTimeout: Timeout
    /// Receives every error that escapes a coroutine nobody called (an ``events/OldCall``
    /// callee's error goes to its caller instead); the other coroutines keep running. The
    /// default writes cogen's report to standard error. Set it before ``run()``.
    public var errorHandler: @Sendable (CoroutineException) -> Void = Scheduler.reportError

    /// Coroutines waiting for a signal, by name, in arrival order.
    var signalWaiters: [AnyHashable: [Parked<(any Sendable)?>]] = [:]
    /// A signal waiting for enough recipients, by name (one per name).
    var parkedSignals: [AnyHashable: (signal: Signal, signaler: Parked<Int>)] = [:]
    private var names = 0

    /// Creates a scheduler and its ring.
    /// - Parameters:
    ///   - defaultPriority: Used by operations whose priority is `DEFAULT`; `LAST` by default.
    ///   - defaultTimeout: For timed operations without a timeout of their own; none by
    ///     default.
    ///   - backend: `.automatic` (io_uring where the kernel allows it, else epoll),
    ///     `.ioUring` or `.epoll`.
    ///   - configuration: The core scheduler's settings (its `backend` is replaced).
    /// - Throws: `RingSetupError` when `.ioUring` is asked for and the kernel refuses it, or
    ///   a configuration value is out of range; ``ValueError`` when `defaultPriority` is
    ///   `DEFAULT`.
    ///
    /// Uses `io_uring_setup` (Linux 5.1), as `CogenUring.Scheduler` does.
    public init(
        defaultPriority: Priority = priority.LAST,
        defaultTimeout: Timeout = .none,
        backend: Backend = .automatic,
        configuration: CogenUring.Scheduler.Configuration = .init()
    ) throws {
        guard !defaultPriority.isDefault else {
            throw ValueError("the default priority cannot be DEFAULT (use LAST, CORO, OP or FIRST)")
        }
        var configuration = configuration
        configuration.backend = backend
        core = try CogenUring.Scheduler(configuration: configuration)
        self.defaultPriority = defaultPriority
        self.defaultTimeout = defaultTimeout
    }

    // MARK: Coroutines

    /// Adds a coroutine (cogen's `sched.add`).
    /// - Parameters:
    ///   - name: Shown in error reports; a number by default.
    ///   - first: cogen's inverted flag: `true` (the default) queues it at the **back**,
    ///     `false` at the front. Its first turn only starts it: with others queued, its body
    ///     begins one turn later, from the back (cogen's two-phase start).
    ///   - body: The coroutine; its return value is its result (`nil` for none).
    /// - Returns: Its handle, for ``events/Join`` and its result.
    ///
    /// Safe from any thread; no kernel operation.
    @discardableResult
    public func add(
        _ name: String? = nil, first: Bool = true,
        _ body: sending @escaping () async throws -> (any Sendable)?
    ) -> CoroutineInstance {
        let coroutine = CoroutineInstance(scheduler: self, name: name ?? "coroutine")
        start(coroutine, placement: first ? .back : .front, body)
        return coroutine
    }

    func start(
        _ coroutine: CoroutineInstance, placement: Placement,
        _ body: sending @escaping () async throws -> (any Sendable)?
    ) {
        nonisolated(unsafe) let body = body
        if core.isOnLoop {
            core.spawn(coroutine.name, placement: placement) { await coroutine.run(body) }
        } else {
            // Before `run()` or from another thread: start it on the loop, where the
            // placement can be honoured.
            core.execute { [core] in
                core.spawn(coroutine.name, placement: placement) { await coroutine.run(body) }
            }
        }
    }

    // MARK: Running

    /// What ``run()`` and ``shutdown()`` report.
    public typealias RunReport = CogenUring.Scheduler.RunReport

    /// Runs the coroutines on the calling thread until nothing can make progress: nothing
    /// runnable, no I/O in flight, no pending deadline.
    /// - Returns: The report; ``RunReport/parkedCoroutines`` counts the coroutines left
    ///   parked without a deadline (on a signal, a join, a queue), which cogen abandons.
    ///   ``shutdown()`` resumes them with `SchedulerShutdownError`.
    ///
    /// The loop waits in `io_uring_submit_and_wait_timeout` (or `epoll_pwait2`).
    @discardableResult
    public func run() -> RunReport { core.run() }

    /// Runs one pass of the loop without waiting in the kernel, for a host that drives the
    /// scheduler from its own loop (cogen's `iter_run`).
    /// - Returns: `true` while there is more to do.
    public func runOnce() -> Bool { core.runOnce() == nil }

    /// cogen's `iter_run()`: a sequence whose every step runs one pass of the loop;
    /// it ends when nothing can make progress any more.
    /// - Returns: The sequence.
    public func iterRun() -> IterRun { IterRun(scheduler: self) }

    /// Stops the loop, resumes every parked coroutine with `SchedulerShutdownError`, lets
    /// them finish and closes the ring. The scheduler cannot run again.
    /// - Returns: What was left.
    @discardableResult
    public func shutdown() -> RunReport { core.shutdown() }

    // MARK: For operations

    /// The placement a priority bit gives: front when set, back otherwise.
    /// - Parameter favoured: The bit (``Priority/favoursCoroutine`` or
    ///   ``Priority/favoursOperation``).
    /// - Returns: `.front` or `.back`.
    @inlinable
    public func placement(_ favoured: Bool) -> Placement { favoured ? .front : .back }

    /// Parks the current coroutine for `operation` until someone resumes the handle that
    /// `register` receives.
    /// - Parameters:
    ///   - operation: The operation being processed (for errors).
    ///   - register: Stores the handle.
    /// - Returns: The value the handle is resumed with.
    /// - Throws: The error it is resumed with.
    public func park<Value: Sendable>(
        for operation: AnyOperation, _ register: (Parked<Value>) -> Void
    ) async throws -> Value {
        try await core.park(register)
    }

    /// Parks the current coroutine with `operation`'s deadline (its own timeout or the
    /// scheduler's default). When the deadline passes, the coroutine goes to the back of
    /// the run queue, ``TimedOperation/timedOut(_:)`` runs and ``OperationTimeout`` is
    /// thrown.
    /// - Parameters:
    ///   - operation: The operation being processed.
    ///   - register: Stores the handle.
    /// - Returns: The value the handle is resumed with.
    /// - Throws: ``OperationTimeout``, or the error the handle is resumed with.
    public func park<Value: Sendable, Result>(
        timed operation: TimedOperation<Result>, _ register: (Parked<Value>) -> Void
    ) async throws -> Value {
        do {
            return try await core.park(deadline: operation.deadline(on: self), placementOnExpiry: .back, register)
        } catch is TimeoutError {
            operation.timedOut(self)
            throw OperationTimeout(operation)
        }
    }

    /// Resumes a parked coroutine with a value, at the front or the back of the run queue.
    /// - Parameters:
    ///   - parked: Its handle.
    ///   - value: What its `yield` returns.
    ///   - placement: Front or back.
    /// - Returns: `false` if that park had already ended.
    @discardableResult
    public func resume<Value: Sendable>(_ parked: Parked<Value>, returning value: sending Value, placement: Placement) -> Bool {
        core.resume(parked, returning: value, placement: placement)
    }

    /// Resumes a parked coroutine by throwing `error` at its `yield`.
    /// - Parameters:
    ///   - parked: Its handle.
    ///   - error: What its `yield` throws.
    ///   - placement: Front or back.
    /// - Returns: `false` if that park had already ended.
    @discardableResult
    public func resume<Value: Sendable>(_ parked: Parked<Value>, throwing error: any Error, placement: Placement) -> Bool {
        core.resume(parked, throwing: error, placement: placement)
    }

    /// Requeues the current coroutine at `placement` and runs `afterQueuing` before it
    /// suspends: coroutines `afterQueuing` resumes at the front run before it.
    /// - Parameters:
    ///   - placement: Where the current coroutine goes.
    ///   - afterQueuing: Wakes others.
    public func requeue(_ placement: Placement, afterQueuing: () -> Void = {}) async {
        await core.yield(placement: placement, afterQueuing: afterQueuing)
    }

    /// The default ``errorHandler``: writes ``errorReport(_:)`` to standard error.
    /// - Parameter exception: The error and its coroutine.
    @Sendable
    public static func reportError(_ exception: CoroutineException) {
        let text = errorReport(exception)
        _ = text.withCString { Glibc.write(2, $0, strlen($0)) }
    }

    /// cogen's report of an unhandled coroutine error: a line of dashes, the error, the
    /// coroutine and the operation it yielded last, a line of dashes.
    /// - Parameter exception: The error and its coroutine.
    /// - Returns: The report, ending with a newline.
    public static func errorReport(_ exception: CoroutineException) -> String {
        let dashes = String(repeating: "-", count: 40)
        let last = exception.coroutine.lastOperation.map { "\($0)" } ?? "None"
        return """
            \(dashes)
            Exception happened during processing of coroutine.
            \(type(of: exception.error)): \(exception.error)
            Coroutine \(exception.coroutine) killed. Last op: \(last)
            \(dashes)

            """
    }
}

/// cogen's `iter_run()`: each step runs one pass of the scheduler's loop.
public struct IterRun: Sequence, IteratorProtocol {
    let scheduler: Scheduler
    var finished = false

    /// Runs one pass.
    /// - Returns: `()` while there was more to do, `nil` once the scheduler is idle.
    public mutating func next() -> Void? {
        if finished { return nil }
        if !scheduler.runOnce() { finished = true }
        return ()
    }
}

/// The core's park handle, for operations written against CogenCompat alone.
public typealias Parked<Value: Sendable> = CogenUring.Parked<Value>
/// Front or back of the run queue: where a resumed coroutine goes.
public typealias Placement = CogenUring.Placement
/// Which engine a scheduler runs on: `.automatic`, `.ioUring` or `.epoll`.
public typealias Backend = CogenUring.Backend
