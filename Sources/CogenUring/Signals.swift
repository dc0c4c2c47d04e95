/// The coroutines waiting on one signal, in arrival order, linked through their waiters so
/// that one leaving early (deadline, cancellation, shutdown) unlinks in O(1): a signal
/// nobody raises does not accumulate dead waiters.
final class SignalList {
    private var head: ParkedCoroutine?
    private unowned(unsafe) var tail: ParkedCoroutine?
    /// For a named signal: its key, so the table entry goes when the last waiter leaves.
    private let key: AnyHashable?
    private unowned(unsafe) let scheduler: Scheduler?

    init(key: AnyHashable? = nil, scheduler: Scheduler? = nil) {
        self.key = key
        self.scheduler = scheduler
    }

    var isEmpty: Bool { head == nil }

    func append(_ waiter: ParkedCoroutine) {
        waiter.signalList = self
        waiter.signalPrevious = tail
        if let tail { tail.signalNext = waiter } else { head = waiter }
        tail = waiter
    }

    func remove(_ waiter: ParkedCoroutine) {
        guard waiter.signalList === self else { return }
        let next = waiter.signalNext
        if let previous = waiter.signalPrevious { previous.signalNext = next } else { head = next }
        if let next { next.signalPrevious = waiter.signalPrevious } else { tail = waiter.signalPrevious }
        waiter.signalNext = nil
        waiter.signalPrevious = nil
        waiter.signalList = nil
        if head == nil, let key, let scheduler { scheduler.namedSignals[key] = nil }
    }

    /// Resumes up to `limit` waiters in arrival order; returns how many were woken.
    ///
    /// `type` pins `Value` to the type the waiters parked with: passing an existential
    /// without it would open it, and resume the continuations with the wrong type.
    func wake<Value: Sendable>(
        _ value: Value, as type: Value.Type, placement: Placement, limit: Int, on scheduler: Scheduler
    ) -> Int {
        var woken = 0
        while woken < limit, let waiter = head {
            remove(waiter)
            let parked = Parked<Value>(waiter: waiter, generation: waiter.generation)
            if scheduler.resume(parked, returning: value, placement: placement) { woken += 1 }
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
    private let waiters = SignalList()

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
            // invariant: a signal is used only on its scheduler's thread (documented misuse otherwise).
            fatalError("Signal.wait must be called from a coroutine on its scheduler's thread")
        }
        let settings = ParkSettings(label: "wait for signal", deadline: deadline, placementOnExpiry: placementOnExpiry)
        return try await scheduler.suspend(settings) { (parked: Parked<Value>) in waiters.append(parked.waiter) }
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
            // invariant: a signal is used only on its scheduler's thread (documented misuse otherwise).
            fatalError("Signal.signal must be called on its scheduler's thread")
        }
        return waiters.wake(value, as: Value.self, placement: placement, limit: recipients ?? .max, on: scheduler)
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
        let settings = ParkSettings(label: "wait for signal", deadline: deadline, placementOnExpiry: placementOnExpiry)
        return try await suspend(settings) { (parked: Parked<any Sendable>) in
            let list: SignalList
            if let existing = namedSignals[key] {
                list = existing
            } else {
                list = SignalList(key: key, scheduler: self)
                namedSignals[key] = list
            }
            list.append(parked.waiter)
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
        return list.wake(value, as: (any Sendable).self, placement: placement, limit: recipients ?? .max, on: self)
    }
}
