import CogenUring

/// A coroutine started by ``Scheduler/add(_:first:_:)`` (cogen's `CoroutineInstance`):
/// its state, its result or error, and what ``events/Join`` waits for.
///
/// Read it on the scheduler's thread (or after the scheduler has returned).
public final class CoroutineInstance: @unchecked Sendable, CustomStringConvertible {
    // @unchecked Sendable: mutable state is confined to the scheduler's thread.

    /// cogen's coroutine states.
    public enum State: Int, Sendable, Hashable, Comparable {
        /// Added; its first step has not run (cogen's `NEED_INIT`, printed `NOTSTARTED`).
        case notStarted
        /// Started and not finished.
        case running
        /// Returned a value.
        case completed
        /// Threw an error (kept in ``CoroutineInstance/exception``) and no joiner has been
        /// resumed yet; a caller rethrows the error and leaves it in this state.
        case failed
        /// Its outcome was taken by a caller (a result) or a joiner (a result, or `nil`
        /// after a failure: ``CoroutineInstance/exception`` is kept).
        case finalized

        public static func < (lhs: State, rhs: State) -> Bool { lhs.rawValue < rhs.rawValue }
    }

    /// The scheduler it runs on.
    public let scheduler: Scheduler
    /// Its name, for error reports.
    public let name: String
    /// Where it stands.
    public internal(set) var state: State = .notStarted
    /// What it returned (`nil` until it completed, or when it returned nothing).
    public internal(set) var result: (any Sendable)?
    /// The error that ended it, if it failed.
    public internal(set) var exception: CoroutineException?
    /// Whether it has not finished yet (cogen's `running`).
    public var isRunning: Bool { state < .completed }

    /// The operation it yielded last, for error reports.
    @exclusivity(unchecked) var lastOperation: AnyOperation?
    /// Coroutines joining it, in the order they joined.
    var joiners: [Parked<(any Sendable)?>] = []
    /// The coroutine waiting for it to end (`OldCall`): resumed at once when it ends.
    var caller: Parked<(any Sendable)?>?
    /// Coroutine-local values (``Local``).
    var locals: [ObjectIdentifier: Any] = [:]

    init(scheduler: Scheduler, name: String) {
        self.scheduler = scheduler
        self.name = name
    }

    /// The coroutine running on the calling thread, if any.
    public static var current: CoroutineInstance? {
        CogenUring.Scheduler.current?.runningCoroutine?.attachment as? CoroutineInstance
    }

    /// The current coroutine, for `yield(op)`: outside one, a ``RuntimeError`` thrown
    /// into the caller.
    static func currentOrThrow() throws -> CoroutineInstance {
        guard let coroutine = current else {
            throw RuntimeError("yield: not inside a coroutine of a CogenCompat scheduler (add it with sched.add)")
        }
        return coroutine
    }

    /// The current coroutine, for ``Local``, whose documentation confines it to coroutines.
    static func requireCurrent() -> CoroutineInstance {
        guard let coroutine = current else {
            // invariant: `Local` is used only inside coroutines of a CogenCompat scheduler (documented misuse otherwise).
            fatalError("Local.value: not inside a coroutine of a CogenCompat scheduler")
        }
        return coroutine
    }

    /// The body of every coroutine: binds it, applies the two-phase start, runs `body`,
    /// and hands the outcome to its caller or joiners.
    func run(_ body: () async throws -> (any Sendable)?) async {
        let core = scheduler.core
        core.runningCoroutine?.attachment = self
        state = .running
        // cogen's two-phase start: the first turn only creates the generator; with
        // anything else queued, the body starts on the next turn, from the back.
        if !core.isRunQueueEmpty { await core.yield() }
        let outcome: Swift.Result<(any Sendable)?, any Error>
        do {
            outcome = .success(try await body())
        } catch {
            outcome = .failure(error)
        }
        finish(outcome)
        core.runningCoroutine?.attachment = nil
    }

    /// cogen's completion processing (`CoroutineInstance.process` on a finished instance).
    private func finish(_ outcome: Swift.Result<(any Sendable)?, any Error>) {
        switch outcome {
        case .success(let value):
            state = .completed
            result = value
        case .failure(let error):
            state = .failed
            exception = CoroutineException(error, in: self)
        }
        var waking = joiners
        joiners = []
        let core = scheduler.core
        // The joiners not resumed at once: front in reverse order unless the scheduler's
        // default priority is LAST (back, in order).
        let placement: Placement = scheduler.defaultPriority.rawValue != 0 ? .front : .back
        if let caller {
            self.caller = nil
            for joiner in waking { wake(joiner, placement: placement) }
            // The caller continues immediately: it is the last one pushed to the front.
            switch outcome {
            case .success(let value):
                state = .finalized
                core.resume(caller, returning: value, placement: .front)
            case .failure(let error):
                core.resume(caller, throwing: error, placement: .front)
            }
            return
        }
        if case .failure(let error) = outcome, !(error is SchedulerShutdownError), let exception {
            scheduler.errorHandler(exception)
        }
        // A top-level coroutine: the joiner that came last continues immediately.
        guard let last = waking.popLast() else { return }
        for joiner in waking { wake(joiner, placement: placement) }
        wake(last, placement: .front)
    }

    /// Resumes a joiner with the result (`nil` after a failure, the error staying in
    /// ``exception``). Like cogen's `finalize`, a joiner that got the outcome makes the
    /// coroutine ``State/finalized``, failed or not (cogen-semantics.md §3.2).
    private func wake(_ joiner: Parked<(any Sendable)?>, placement: Placement) {
        if scheduler.core.resume(joiner, returning: result, placement: placement) { state = .finalized }
    }

    public var description: String {
        "<CoroutineInstance \(name) \(state)>"
    }
}

/// Coroutine-local storage (cogen's `local`): each coroutine sees its own value.
///
/// ```swift
/// let requestID = Local<Int>()
/// requestID.value = 7          // in one coroutine
/// requestID.value              // nil in another
/// ```
/// Use it inside coroutines of a CogenCompat scheduler (outside one, reading or setting
/// ``value`` stops the program with a message saying so). A coroutine called with
/// ``events/Call(_:)`` (or a plain `await`) shares its caller's values; one started with
/// ``events/AddCoro`` or ``events/OldCall`` has its own.
public final class Local<Value>: @unchecked Sendable {
    // @unchecked Sendable: values live in coroutines, read on their scheduler's thread.

    /// Creates the storage.
    public init() {}

    /// The current coroutine's value; `nil` when it set none.
    public var value: Value? {
        get { CoroutineInstance.requireCurrent().locals[ObjectIdentifier(self)] as? Value }
        set { CoroutineInstance.requireCurrent().locals[ObjectIdentifier(self)] = newValue }
    }
}
