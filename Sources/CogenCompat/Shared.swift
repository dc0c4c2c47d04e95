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
/// The first access from inside a running scheduler binds the box to that scheduler's
/// thread; a later access from another running scheduler's thread stops the program.
/// Access from outside any running scheduler (set-up code, or reading results after
/// `run()` returned) is allowed: make sure the scheduler is not running then.
public final class Shared<Value>: @unchecked Sendable {
    // @unchecked Sendable: access is confined to one scheduler's thread (checked), or happens
    // while no scheduler runs.
    private var storage: Value
    private let owner = Atomic<UInt>(0)

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
        let bound = owner.load(ordering: .relaxed)
        if bound == me { return }
        if bound == 0 {
            let (exchanged, original) = owner.compareExchange(expected: 0, desired: me, ordering: .relaxed)
            if exchanged || original == me { return }
        }
        preconditionFailure("Shared: used from two schedulers' threads")
    }
}
