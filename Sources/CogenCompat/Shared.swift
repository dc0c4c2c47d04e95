import CogenUring
import Synchronization

/// A box for state that coroutines of one scheduler share, as cogen code shares lists and
/// dicts: `Sendable`, with every access checked to happen on that scheduler's thread.
///
/// ```swift
/// let log = Shared<[String]>([])
/// sched.add { log.value.append("a"); return nil }
/// sched.add { log.value.append("b"); return nil }
/// sched.run()
/// print(log.value)   // after run() returned: ["a", "b"]
/// ```
/// An access from inside a running scheduler binds the box to that scheduler; an access
/// from another scheduler while the bound one is still running stops the program (two
/// threads would race on the value). Once the bound scheduler has returned from `run()`,
/// another scheduler may take the box over, so one box can serve schedulers that run one
/// after the other. Access from outside any running scheduler (set-up code, or reading
/// results after `run()` returned) is allowed: make sure no scheduler using it runs then.
public final class Shared<Value>: @unchecked Sendable {
    // @unchecked Sendable: access is confined to one scheduler's thread (checked), or happens
    // while no scheduler runs.
    private var storage: Value
    private let owner = Atomic<UInt>(0)
    private let binding = PthreadLock(Binding())

    private struct Binding: ~Copyable {
        weak var scheduler: CogenUring.Scheduler?
    }

    /// Creates the box.
    /// - Parameter value: The initial value.
    public init(_ value: Value) {
        storage = value
    }

    /// The value.
    public var value: Value {
        get {
            check()
            return storage
        }
        _modify {
            check()
            yield &storage
        }
        set {
            check()
            storage = newValue
        }
    }

    /// Calls `body` with the value, in place.
    /// - Parameter body: Reads or changes the value.
    /// - Returns: What `body` returns.
    public func withValue<R>(_ body: (inout Value) throws -> R) rethrows -> R {
        check()
        return try body(&storage)
    }

    @inline(__always)
    private func check() {
        guard let scheduler = CogenUring.Scheduler.current else { return }
        let me = UInt(bitPattern: Unmanaged.passUnretained(scheduler).toOpaque())
        if owner.load(ordering: .relaxed) == me { return }
        bind(to: scheduler, me)
    }

    /// The slow path: the first access from a scheduler, or one from a new scheduler.
    @inline(never)
    private func bind(to scheduler: CogenUring.Scheduler, _ me: UInt) {
        binding.withLock { binding in
            if let bound = binding.scheduler, bound !== scheduler, bound.isRunning {
                // invariant: one box is not used by two running schedulers (documented misuse: a data race).
                fatalError("Shared: used from two schedulers that run at the same time")
            }
            binding.scheduler = scheduler
            owner.store(me, ordering: .relaxed)
        }
    }
}
