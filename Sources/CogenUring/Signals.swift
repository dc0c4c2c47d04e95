/// The coroutines waiting on one signal, in arrival order.
///
/// Waiters that already left (deadline, cancellation) stay in the array until a signal
/// skips them or an append compacts the array, which keeps both operations O(1) amortized.
struct SignalWaiters<Value: Sendable> {
    private var waiters: [Parked<Value>] = []
    private var compactAt = 16

    var isEmpty: Bool { waiters.isEmpty }

    mutating func append(_ waiter: Parked<Value>) {
        if waiters.count >= compactAt {
            waiters.removeAll { !$0.isParked }
            compactAt = max(16, waiters.count * 2)
        }
        waiters.append(waiter)
    }

    /// Resumes up to `limit` waiters in arrival order; returns how many were woken.
    mutating func wake(
        _ value: Value, placement: Placement, limit: Int, on scheduler: Scheduler
    ) -> Int {
        var woken = 0
        var index = 0
        while index < waiters.count && woken < limit {
            if scheduler.resume(waiters[index], returning: value, placement: placement) {
                woken += 1
            }
            index += 1
        }
        waiters.removeFirst(index)
        return woken
    }
}

/// A signal coroutines wait on and others raise, carrying a value: cogen's
/// `WaitForSignal`/`Signal` on an object instead of a name.
///
/// Confined to one scheduler's thread.
public final class Signal<Value: Sendable>: @unchecked Sendable {
    // @unchecked Sendable: confined to the scheduler's thread (asserted).
    private var waiters = SignalWaiters<Value>()

    /// Creates a signal nobody waits on yet.
    public init() {}

    /// Whether coroutines are waiting.
    public var hasWaiters: Bool { !waiters.isEmpty }

    /// Parks the current coroutine until the signal is raised.
    /// - Parameters:
    ///   - deadline: When to stop waiting.
    ///   - placementOnExpiry: Where the coroutine goes if the deadline passes.
    /// - Returns: The value the signal was raised with.
    /// - Throws: ``TimeoutError``, `CancellationError`, ``SchedulerShutdownError``.
    ///
    /// No kernel operation is involved.
    public func wait(deadline: Deadline? = nil, placementOnExpiry: Placement = .back) async throws -> Value {
        guard let scheduler = Scheduler.current else {
            preconditionFailure("Signal.wait must be called from a coroutine on its scheduler's thread")
        }
        let waiter = Parked<Value>(scheduler: scheduler, label: "wait for signal")
        waiter.placementOnExpiry = placementOnExpiry
        return try await scheduler.suspend(waiter, deadline: deadline) { waiters.append($0) }
    }

    /// Raises the signal: resumes the waiting coroutines in the order they started waiting.
    /// - Parameters:
    ///   - value: What each `wait` returns.
    ///   - placement: Where the woken coroutines go; several at the front run last-first.
    ///   - recipients: Wake at most this many (`nil`: all).
    /// - Returns: The number of coroutines woken (0 when nobody waits; the signal is not
    ///   remembered).
    @discardableResult
    public func signal(
        _ value: Value, placement: Placement = .back, recipients: Int? = nil
    ) -> Int {
        guard let scheduler = Scheduler.current else {
            preconditionFailure("Signal.signal must be called on its scheduler's thread")
        }
        return waiters.wake(value, placement: placement, limit: recipients ?? .max, on: scheduler)
    }
}

extension Scheduler {
    /// Parks the current coroutine until the named signal is raised.
    /// - Parameters:
    ///   - name: Any hashable value naming the signal.
    ///   - deadline: When to stop waiting.
    ///   - placementOnExpiry: Where the coroutine goes if the deadline passes.
    /// - Returns: The value the signal was raised with.
    /// - Throws: ``TimeoutError``, `CancellationError`, ``SchedulerShutdownError``.
    ///
    /// No kernel operation is involved.
    public func wait(
        forSignal name: some Hashable & Sendable, deadline: Deadline? = nil,
        placementOnExpiry: Placement = .back
    ) async throws -> any Sendable {
        let key = AnyHashable(name)
        let waiter = Parked<any Sendable>(scheduler: self, label: "wait for signal")
        waiter.placementOnExpiry = placementOnExpiry
        return try await suspend(waiter, deadline: deadline) { waiter in
            namedSignals[key, default: SignalWaiters()].append(waiter)
        }
    }

    /// Raises a named signal: resumes its waiting coroutines in the order they started
    /// waiting.
    /// - Parameters:
    ///   - name: The signal's name.
    ///   - value: What each `wait(forSignal:)` returns.
    ///   - placement: Where the woken coroutines go; several at the front run last-first.
    ///   - recipients: Wake at most this many (`nil`: all).
    /// - Returns: The number of coroutines woken.
    @discardableResult
    public func signal(
        _ name: some Hashable & Sendable, value: any Sendable = (), placement: Placement = .back,
        recipients: Int? = nil
    ) -> Int {
        assertOnLoop()
        let key = AnyHashable(name)
        guard var waiters = namedSignals.removeValue(forKey: key) else { return 0 }
        let woken = waiters.wake(value, placement: placement, limit: recipients ?? .max, on: self)
        if !waiters.isEmpty { namedSignals[key] = waiters }
        return woken
    }
}
