/// A coroutine waiting on a signal, linked in its signal's list so that leaving early
/// (deadline, cancellation, shutdown) unlinks it in O(1): a signal nobody raises does not
/// accumulate dead waiters.
final class SignalWaiter<Value: Sendable>: Parked<Value>, @unchecked Sendable {
    // The list outlives every waiter linked in it (the signal or the named-signal table
    // holds it until it is empty).
    unowned(unsafe) var list: SignalList<Value>?
    var next: SignalWaiter<Value>?
    unowned(unsafe) var previous: SignalWaiter<Value>?

    override func expire() {
        list?.remove(self)
        super.expire()
    }

    override func cancel() {
        list?.remove(self)
        super.cancel()
    }

    override func abortForShutdown() {
        list?.remove(self)
        super.abortForShutdown()
    }
}

/// The coroutines waiting on one signal, in arrival order.
final class SignalList<Value: Sendable> {
    private var head: SignalWaiter<Value>?
    private unowned(unsafe) var tail: SignalWaiter<Value>?
    /// For a named signal: its key, so the table entry goes when the last waiter leaves.
    private let key: AnyHashable?
    private unowned(unsafe) let scheduler: Scheduler?

    init(key: AnyHashable? = nil, scheduler: Scheduler? = nil) {
        self.key = key
        self.scheduler = scheduler
    }

    var isEmpty: Bool { head == nil }

    func append(_ waiter: SignalWaiter<Value>) {
        waiter.list = self
        waiter.previous = tail
        if let tail { tail.next = waiter } else { head = waiter }
        tail = waiter
    }

    func remove(_ waiter: SignalWaiter<Value>) {
        guard waiter.list === self else { return }
        let next = waiter.next
        if let previous = waiter.previous { previous.next = next } else { head = next }
        if let next { next.previous = waiter.previous } else { tail = waiter.previous }
        waiter.next = nil
        waiter.previous = nil
        waiter.list = nil
        if head == nil, let key, let scheduler { scheduler.namedSignals[key] = nil }
    }

    /// Resumes up to `limit` waiters in arrival order; returns how many were woken.
    func wake(_ value: Value, placement: Placement, limit: Int, on scheduler: Scheduler) -> Int {
        var woken = 0
        while woken < limit, let waiter = head {
            remove(waiter)
            if scheduler.resume(waiter, returning: value, placement: placement) { woken += 1 }
        }
        return woken
    }
}

/// A signal coroutines wait on and others raise, carrying a value: cogen's
/// `WaitForSignal`/`Signal` on an object instead of a name.
///
/// Confined to one scheduler's thread.
public final class Signal<Value: Sendable>: @unchecked Sendable {
    // @unchecked Sendable: confined to the scheduler's thread (asserted).
    private let waiters = SignalList<Value>()

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
        let waiter = SignalWaiter<Value>(scheduler: scheduler, label: "wait for signal")
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
        let waiter = SignalWaiter<any Sendable>(scheduler: self, label: "wait for signal")
        waiter.placementOnExpiry = placementOnExpiry
        return try await suspend(waiter, deadline: deadline) { waiter in
            let list: SignalList<any Sendable>
            if let existing = namedSignals[key] {
                list = existing
            } else {
                list = SignalList(key: key, scheduler: self)
                namedSignals[key] = list
            }
            list.append(waiter)
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
        guard let list = namedSignals[AnyHashable(name)] else { return 0 }
        return list.wake(value, placement: placement, limit: recipients ?? .max, on: self)
    }
}
