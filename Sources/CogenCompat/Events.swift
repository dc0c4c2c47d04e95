public import CogenUring
public import FoundationEssentials

/// Suspends the coroutine for a while (cogen's `Sleep`).
///
/// When the time has passed the coroutine goes to the back of the run queue; priority has
/// no effect. `Sleep(0)`, `Sleep(nil)` and `Sleep(-1)` never wake, unless the scheduler has
/// a default timeout (which applies to the first two).
/// An entry in the scheduler's timer heap; the loop waits with `io_uring_enter`'s timeout
/// (`IORING_ENTER_EXT_ARG`, Linux 5.11).
public final class Sleep: Operation<Void>, @unchecked Sendable {
    /// When to wake.
    public let timeout: Timeout

    /// Sleeps `seconds` seconds.
    /// - Parameter seconds: How long; see the class documentation for 0, `nil` and -1.
    public init(_ seconds: Double?) {
        timeout = seconds.map { Timeout(seconds: $0) } ?? .none
        super.init()
    }

    /// Sleeps for a duration.
    /// - Parameter duration: How long.
    public init(_ duration: Duration) {
        timeout = Timeout(duration)
        super.init()
    }

    /// Sleeps until a date (cogen's `datetime`); a date in the past wakes at the next
    /// timer check.
    /// - Parameter date: When to wake.
    public init(_ date: Date) {
        timeout = Timeout(date)
        super.init()
    }

    /// Sleeps until a Unix timestamp (cogen's documented `Sleep(timestamp=…)`).
    /// - Parameter timestamp: Seconds since 1970.
    public convenience init(timestamp: Double) {
        self.init(Date(timeIntervalSince1970: timestamp))
    }

    public override func process(_ scheduler: Scheduler, _ coroutine: CoroutineInstance) async throws {
        let deadline: Deadline? = switch timeout {
        case .at(let instant): .at(instant)
        case .after(let duration): .after(duration)
        case .none: scheduler.defaultTimeout.deadline(default: .never)
        case .never: nil
        }
        if let deadline {
            try await scheduler.core.sleep(until: deadline, placement: .back)
        } else {
            // Never woken: parked without a deadline, as cogen leaves it (`run()` reports it).
            try await scheduler.core.park { (_: Parked<Void>) in }
        }
    }

    public override var description: String { "Sleep(\(timeout))" }
}

/// Waits for a ``Signal`` of the given name (cogen's `WaitForSignal`); returns the value
/// the signal carries.
///
/// Where the waiter goes when the signal comes is decided by the signal's priority.
/// No kernel operation: a wait list in the scheduler.
public final class WaitForSignal: TimedOperation<(any Sendable)?>, @unchecked Sendable {
    /// The signal's name.
    public let name: AnyHashable
    private var parked: Parked<(any Sendable)?>?

    /// Creates the wait.
    /// - Parameters:
    ///   - name: Any hashable value; names match by equality.
    ///   - timeout: See ``Timeout``; the scheduler's default applies when none.
    ///   - weakTimeout: Kept for cogen's signature (a wait makes no progress).
    ///   - prio: Ignored by the placement, as in cogen.
    public init(
        _ name: some Hashable & Sendable, timeout: Timeout? = nil, weakTimeout: Bool = true,
        prio: Priority = priority.DEFAULT
    ) {
        self.name = AnyHashable(name)
        super.init(timeout: timeout, weakTimeout: weakTimeout, prio: prio)
    }

    public override func process(_ scheduler: Scheduler, _ coroutine: CoroutineInstance) async throws -> (any Sendable)? {
        if let parked = scheduler.parkedSignals[name],
           parked.signal.recipients <= (scheduler.signalWaiters[name]?.count ?? 0) + 1
        {
            // A signal was waiting for enough recipients and this one completes them: it is
            // delivered now, with the signal's priority; this waiter is the last one.
            scheduler.parkedSignals[name] = nil
            let others = scheduler.signalWaiters.removeValue(forKey: name) ?? []
            let signal = parked.signal
            let favourWaiters = signal.prio.favoursOperation
            let value = signal.value
            for waiter in others {
                scheduler.resume(waiter, returning: value, placement: scheduler.placement(favourWaiters))
            }
            await scheduler.requeue(scheduler.placement(favourWaiters)) {
                scheduler.resume(
                    parked.signaler, returning: others.count + 1,
                    placement: scheduler.placement(signal.prio.favoursCoroutine))
            }
            return value
        }
        return try await scheduler.park(timed: self) { (handle: Parked<(any Sendable)?>) in
            parked = handle
            scheduler.signalWaiters[name, default: []].append(handle)
        }
    }

    public override func timedOut(_ scheduler: Scheduler) {
        guard let parked else { return }
        scheduler.signalWaiters[name]?.removeAll { $0 == parked }
        if scheduler.signalWaiters[name]?.isEmpty == true { scheduler.signalWaiters[name] = nil }
    }

    public override var description: String { "WaitForSignal(\(name), timeout: \(timeout))" }
}

/// Wakes the coroutines waiting for a signal name (cogen's `Signal`); returns how many it
/// woke.
///
/// Waiters go to the front (in reverse order) with the `OP` bit, to the back in arrival
/// order without; the signaler then goes to the front with the `CORO` bit, to the back
/// without; it never continues immediately. With `recipients` set and fewer waiters, the
/// signal waits (one per name: a newer one replaces it, and the replaced signaler resumes
/// with 0) until enough arrive. Signals are not remembered: a later wait waits for the
/// next signal. No kernel operation.
public final class Signal: Operation<Int>, @unchecked Sendable {
    /// The signal's name.
    public let name: AnyHashable
    /// What the waiters receive.
    public let value: (any Sendable)?
    /// How many waiters must be there before the signal is delivered.
    public let recipients: Int

    /// Creates the signal.
    /// - Parameters:
    ///   - name: Any hashable value.
    ///   - value: What each waiter's `yield` returns.
    ///   - recipients: Waiters needed before delivery; 0 delivers at once.
    ///   - prio: See the class documentation.
    public init(
        _ name: some Hashable & Sendable, value: (any Sendable)? = nil, recipients: Int = 0,
        prio: Priority = priority.DEFAULT
    ) {
        self.name = AnyHashable(name)
        self.value = value
        self.recipients = recipients
        super.init(prio: prio)
    }

    public override func process(_ scheduler: Scheduler, _ coroutine: CoroutineInstance) async throws -> Int {
        let waiting = scheduler.signalWaiters[name]?.count ?? 0
        if waiting < recipients {
            if let replaced = scheduler.parkedSignals.removeValue(forKey: name) {
                // cogen forgets the replaced signaler forever; it resumes here, having woken
                // nobody.
                scheduler.resume(replaced.signaler, returning: 0, placement: .back)
            }
            return try await scheduler.park(for: self) { (handle: Parked<Int>) in
                scheduler.parkedSignals[name] = (self, handle)
            }
        }
        let waiters = scheduler.signalWaiters.removeValue(forKey: name) ?? []
        let placement = scheduler.placement(prio.favoursOperation)
        for waiter in waiters {
            scheduler.resume(waiter, returning: value, placement: placement)
        }
        await scheduler.requeue(scheduler.placement(prio.favoursCoroutine))
        return waiters.count
    }

    public override var description: String { "Signal(\(name), recipients: \(recipients), prio: \(prio))" }
}

/// Starts a new coroutine (cogen's `AddCoro`); returns its handle.
///
/// The new coroutine goes to the back with the `OP` bit, to the front without (its first
/// turn only starts it). The adder continues at once with the `CORO` bit, and goes to the
/// back without. Yield it once: a second yield throws ``RuntimeError`` into the yielding
/// coroutine. No kernel operation.
public final class AddCoro: Operation<CoroutineInstance>, @unchecked Sendable {
    private let name: String?
    private var body: (() async throws -> (any Sendable)?)?

    /// Creates the operation.
    /// - Parameters:
    ///   - name: The new coroutine's name.
    ///   - prio: See the class documentation.
    ///   - body: The new coroutine.
    public init(
        _ name: String? = nil, prio: Priority = priority.DEFAULT,
        _ body: sending @escaping () async throws -> (any Sendable)?
    ) {
        self.name = name
        self.body = body
        super.init(prio: prio)
    }

    public override func process(_ scheduler: Scheduler, _ coroutine: CoroutineInstance) async throws -> CoroutineInstance {
        guard let body else {
            throw RuntimeError("an AddCoro operation is yielded once; its coroutine was already added (make a new AddCoro)")
        }
        self.body = nil
        let new = scheduler.add(name, first: prio.favoursOperation, body)
        if !prio.favoursCoroutine { await scheduler.requeue(.back) }
        return new
    }
}

/// Waits for a coroutine to end (cogen's `Join`); returns its result, or `nil` if it
/// failed (the error stays in ``CoroutineInstance/exception``). Either way the target is
/// then ``CoroutineInstance/State/finalized``, as in cogen.
///
/// When the target ends, the last joiner continues at once and the others go to the front
/// in reverse order (to the back in order when the scheduler's default priority is
/// `LAST`); the join's own priority is ignored, as in cogen. Joining a coroutine that has
/// already ended returns at once. No kernel operation.
public final class Join: TimedOperation<(any Sendable)?>, @unchecked Sendable {
    /// The coroutine waited for.
    public let target: CoroutineInstance
    private var parked: Parked<(any Sendable)?>?

    /// Creates the join.
    /// - Parameters:
    ///   - target: The coroutine to wait for.
    ///   - timeout: See ``Timeout``; the scheduler's default applies when none.
    ///   - weakTimeout: Kept for cogen's signature.
    ///   - prio: Ignored by the placement, as in cogen.
    public init(
        _ target: CoroutineInstance, timeout: Timeout? = nil, weakTimeout: Bool = true,
        prio: Priority = priority.DEFAULT
    ) {
        self.target = target
        super.init(timeout: timeout, weakTimeout: weakTimeout, prio: prio)
    }

    public override func process(_ scheduler: Scheduler, _ coroutine: CoroutineInstance) async throws -> (any Sendable)? {
        switch target.state {
        case .completed, .failed, .finalized:
            // The joiner takes the outcome (`nil` after a failure): finalized, as when
            // the target ends while joined.
            target.state = .finalized
            return target.result
        case .notStarted, .running:
            return try await scheduler.park(timed: self) { (handle: Parked<(any Sendable)?>) in
                parked = handle
                target.joiners.append(handle)
            }
        }
    }

    public override func timedOut(_ scheduler: Scheduler) {
        guard let parked else { return }
        target.joiners.removeAll { $0 == parked }
    }

    public override var description: String { "Join(\(target), timeout: \(timeout))" }
}

/// Calls a coroutine as a new coroutine of its own and waits for it (cogen's `OldCall`,
/// the `Call` operation of cogen ≤ 0.1.8); returns its result or rethrows its error.
///
/// The callee goes to the front with `LAST`, to the back with any other priority; the
/// caller continues at once when it ends. Slower than ``events/Call(_:)``, which runs the
/// callee directly. Yield it once: a second yield throws ``RuntimeError`` into the
/// yielding coroutine. No kernel operation.
public final class OldCall<Value: Sendable>: Operation<Value>, @unchecked Sendable {
    private let name: String?
    private var body: (() async throws -> Value)?

    /// Creates the call.
    /// - Parameters:
    ///   - name: The callee's name.
    ///   - prio: See the class documentation.
    ///   - body: The callee.
    public init(_ name: String? = nil, prio: Priority = priority.DEFAULT, _ body: sending @escaping () async throws -> Value) {
        self.name = name
        self.body = body
        super.init(prio: prio)
    }

    public override func process(_ scheduler: Scheduler, _ coroutine: CoroutineInstance) async throws -> Value {
        guard let body else {
            throw RuntimeError("an OldCall operation is yielded once; its callee already ran (make a new OldCall)")
        }
        self.body = nil
        nonisolated(unsafe) let callee = body
        let placement: Placement = prio.rawValue == 0 ? .front : .back
        let result: (any Sendable)? = try await scheduler.park(for: self) { (handle: Parked<(any Sendable)?>) in
            let instance = CoroutineInstance(scheduler: scheduler, name: name ?? "callee")
            instance.caller = handle
            scheduler.start(instance, placement: placement) { try await callee() }
        }
        // invariant: the callee returned a `Value` (or threw, which `park` rethrew).
        return result as! Value
    }
}

/// Calls `callee` directly in the calling coroutine (cogen's fast `Call`, that is
/// `yield callee(args)`): no operation object, no new task.
///
/// As in cogen, the callee's body starts after the coroutines queued now have had a turn
/// (one bare yield, only when the run queue is not empty), and the caller continues at once
/// with its result or its error. A plain `try await callee()` skips that yield.
/// - Parameter callee: The callee.
/// - Returns: Its result.
/// - Throws: Its error.
@inlinable
public func Call<Value>(_ callee: () async throws -> Value) async rethrows -> Value {
    if let core = CogenUring.Scheduler.current, !core.isRunQueueEmpty { await core.yield() }
    return try await callee()
}

/// cogen's `cogen.core.events`, so that ported code keeps its shape:
/// `try await yield(events.Sleep(1))`.
public enum events {
    public typealias Operation<Result: Sendable> = CogenCompat.Operation<Result>
    public typealias TimedOperation<Result: Sendable> = CogenCompat.TimedOperation<Result>
    public typealias Sleep = CogenCompat.Sleep
    public typealias WaitForSignal = CogenCompat.WaitForSignal
    public typealias Signal = CogenCompat.Signal
    public typealias AddCoro = CogenCompat.AddCoro
    public typealias Join = CogenCompat.Join
    public typealias OldCall<Value: Sendable> = CogenCompat.OldCall<Value>
    public typealias OperationTimeout = CogenCompat.OperationTimeout
    public typealias ConnectionError = CogenCompat.ConnectionError
    public typealias ConnectionClosed = CogenCompat.ConnectionClosed
    public typealias CoroutineException = CogenCompat.CoroutineException

    /// cogen's fast `Call`: see ``CogenCompat/Call(_:)``.
    /// - Parameter callee: The callee.
    /// - Returns: Its result.
    /// - Throws: Its error.
    @inlinable
    public static func Call<Value>(_ callee: () async throws -> Value) async rethrows -> Value {
        try await CogenCompat.Call(callee)
    }
}
