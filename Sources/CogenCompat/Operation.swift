public import FoundationEssentials
public import CogenUring

/// Where an operation stands (cogen's `RUNNING`, `FINALIZED`, `ERRORED`).
public enum OperationState: Sendable, Hashable {
    /// Not yet done.
    case running
    /// Its result was handed to the coroutine.
    case finalized
    /// It failed: its error was thrown into the coroutine.
    case errored
}

/// What every operation has, whatever its result type: its priority and state.
///
/// Subclass ``Operation`` (or ``TimedOperation``), not this class.
open class AnyOperation: @unchecked Sendable, CustomStringConvertible {
    // @unchecked Sendable: an operation is made, yielded and finished on one scheduler's
    // thread (cogen code builds it right where it yields it).

    /// The priority; `DEFAULT` is replaced by the scheduler's default when the operation is
    /// processed.
    @exclusivity(unchecked) public var prio: Priority
    /// Where the operation stands.
    @exclusivity(unchecked) public internal(set) var state: OperationState = .running

    /// Creates the operation.
    /// - Parameter prio: Its priority; `DEFAULT` uses the scheduler's.
    public init(prio: Priority = priority.DEFAULT) {
        self.prio = prio
    }

    open var description: String { "\(type(of: self))(prio: \(prio))" }
}

/// A cogen operation: what a coroutine yields to the scheduler, with `try await yield(op)`.
///
/// To write your own, subclass it and override ``process(_:_:)``. It runs on the
/// scheduler's thread when a coroutine yields the operation, with ``AnyOperation/prio``
/// already resolved, and its outcome is what `yield` gives the coroutine:
/// - return a value to continue the coroutine at once (cogen's "continue immediately");
/// - throw to raise the error in the coroutine;
/// - or park the coroutine with ``Scheduler/park(for:_:)`` (``Scheduler/park(timed:_:)``
///   for a ``TimedOperation``), keep the handle where the event that ends the wait will
///   find it, and later resume it with ``Scheduler/resume(_:returning:placement:)`` or
///   `throwing:`, at the front or the back of the run queue (``Scheduler/placement(_:)``
///   turns a priority bit into a placement). To requeue the yielding coroutine itself,
///   await ``Scheduler/requeue(_:afterQueuing:)``.
///
/// No kernel operation is involved unless the subclass performs one.
open class Operation<Result: Sendable>: AnyOperation, @unchecked Sendable {
    /// Does the operation's work for `coroutine`; see the class documentation.
    ///
    /// The base implementation throws ``UnsupportedOperation``: an operation that does
    /// nothing would leave its coroutine parked nowhere (cogen loses it; this
    /// implementation never loses a coroutine).
    /// - Parameters:
    ///   - scheduler: The scheduler running the coroutine.
    ///   - coroutine: The coroutine that yielded the operation.
    /// - Returns: What `yield` returns in the coroutine.
    /// - Throws: What `yield` throws in the coroutine.
    open func process(_ scheduler: Scheduler, _ coroutine: CoroutineInstance) async throws -> Result {
        throw UnsupportedOperation(operation: self)
    }
}

/// An ``Operation`` subclass that does not override ``Operation/process(_:_:)``.
public struct UnsupportedOperation: Error, @unchecked Sendable, CustomStringConvertible {
    /// The operation.
    public let operation: AnyOperation
    public var description: String { "\(operation) does not override process(_:_:)" }
}

/// An operation with a timeout (cogen's `TimedOperation`): strong (a fixed deadline) or
/// weak (an inactivity timeout: each bit of progress of a multi-step operation moves the
/// deadline), the scheduler's default timeout when it has none of its own.
///
/// A subclass parks with ``Scheduler/park(timed:_:)``, which applies the deadline and
/// turns its expiry into ``OperationTimeout``; override ``timedOut(_:)`` to undo what the
/// park registered (leave a wait list).
open class TimedOperation<Result: Sendable>: Operation<Result>, @unchecked Sendable {
    /// The timeout as given.
    public var timeout: Timeout
    /// Whether the timeout is an inactivity timeout (cogen's default) rather than a fixed
    /// deadline.
    public var weakTimeout: Bool

    /// Creates the operation.
    /// - Parameters:
    ///   - timeout: Seconds, ``Timeout/none`` (the scheduler's default applies) or
    ///     ``Timeout/never``; see ``Timeout``.
    ///   - weakTimeout: `true` (the default): an inactivity timeout.
    ///   - prio: Its priority.
    public init(timeout: Timeout? = nil, weakTimeout: Bool = true, prio: Priority = priority.DEFAULT) {
        self.timeout = timeout ?? .none
        self.weakTimeout = weakTimeout
        super.init(prio: prio)
    }

    /// Creates the operation with a timeout given as a `Duration`.
    /// - Parameters:
    ///   - timeout: How long, counted from the moment the operation is yielded.
    ///   - weakTimeout: `true` (the default): an inactivity timeout.
    ///   - prio: Its priority.
    public convenience init(timeout: Duration, weakTimeout: Bool = true, prio: Priority = priority.DEFAULT) {
        self.init(timeout: Timeout(timeout), weakTimeout: weakTimeout, prio: prio)
    }

    /// Creates the operation with a deadline given as a date.
    /// - Parameters:
    ///   - timeout: When to give up.
    ///   - weakTimeout: Ignored for a date (a fixed deadline); kept for cogen's signature.
    ///   - prio: Its priority.
    public convenience init(timeout: Date, weakTimeout: Bool = true, prio: Priority = priority.DEFAULT) {
        self.init(timeout: Timeout(timeout), weakTimeout: weakTimeout, prio: prio)
    }

    /// Called on the scheduler's thread when the deadline passed, before
    /// ``OperationTimeout`` is thrown into the coroutine: undo what the park registered.
    /// The base does nothing.
    /// - Parameter scheduler: The scheduler.
    open func timedOut(_ scheduler: Scheduler) {}

    /// The deadline of this operation processed now on `scheduler`.
    /// - Parameter scheduler: Whose default timeout applies.
    /// - Returns: `nil` for no deadline.
    public func deadline(on scheduler: Scheduler) -> Deadline? {
        timeout.deadline(default: scheduler.defaultTimeout)
    }

    /// The socket timeout this operation gives a multi-step socket operation: weak
    /// (inactivity) when ``weakTimeout`` and the timeout is relative, strong otherwise.
    func socketTimeout(on scheduler: Scheduler) -> SocketTimeout? {
        let effective = timeout.isSet ? timeout : scheduler.defaultTimeout
        switch effective {
        case .none, .never: return nil
        case .after(let duration): return weakTimeout ? .weak(duration) : .strong(duration)
        case .at(let instant): return .strong(instant - ContinuousClock.now)
        }
    }

    open override var description: String {
        "\(type(of: self))(timeout: \(timeout)\(weakTimeout ? ", weak" : ""), prio: \(prio))"
    }
}


/// Yields an operation to the scheduler and returns its result (cogen's
/// `result = yield op`).
///
/// - Parameter operation: What to do.
/// - Returns: The operation's result.
/// - Throws: What the operation throws: ``OperationTimeout``, ``ConnectionError``,
///   ``ConnectionClosed``, the error of a called coroutine…; ``RuntimeError`` when called
///   outside a coroutine of a CogenCompat scheduler.
///
/// Runs ``Operation/process(_:_:)`` on the scheduler's thread; the kernel operations are
/// those of the operation (socket operations name theirs).
public func yield<Result>(_ operation: Operation<Result>) async throws -> Result {
    let coroutine = try CoroutineInstance.currentOrThrow()
    let scheduler = coroutine.scheduler
    operation.prio = operation.prio.resolved(scheduler.defaultPriority)
    coroutine.lastOperation = operation
    do {
        let result = try await operation.process(scheduler, coroutine)
        operation.state = .finalized
        return result
    } catch {
        operation.state = .errored
        throw error
    }
}

/// A bare cooperative yield (cogen's `yield None`): every coroutine queued now runs before
/// this one continues.
///
/// Unlike cogen, a coroutine yielding while alone still lets the loop look at deadlines
/// and completions on the way, so a yielding loop cannot starve timers and I/O. Outside a
/// CogenCompat coroutine it yields the current task (on a scheduler's thread, once through
/// its run queue; elsewhere `Task.yield()`).
/// No kernel operation is involved.
public func yield() async {
    guard let coroutine = CoroutineInstance.current else {
        if let core = CogenUring.Scheduler.current { await core.yield() } else { await Task.yield() }
        return
    }
    await coroutine.scheduler.core.yield()
}

/// A call was made where it cannot work (Python's `RuntimeError`): `yield(op)` outside a
/// coroutine, an ``events/AddCoro`` or ``events/OldCall`` yielded a second time. Thrown into
/// the calling coroutine.
public struct RuntimeError: Error, Sendable, CustomStringConvertible {
    /// What was wrong.
    public let message: String

    /// Creates the error.
    /// - Parameter message: What was wrong.
    public init(_ message: String) {
        self.message = message
    }

    public var description: String { "RuntimeError: \(message)" }
}
