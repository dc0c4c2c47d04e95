import Synchronization

/// Counters a scheduler keeps; readable from any thread.
public struct SchedulerStatistics: Sendable, CustomStringConvertible {
    /// Kernel operations started (SQEs for operations; cancel requests not included).
    public var operationsSubmitted: Int
    /// Final completions delivered to an operation.
    public var operationsCompleted: Int
    /// Cancellations requested in the kernel (`IORING_OP_ASYNC_CANCEL`).
    public var cancellations: Int
    /// Deadlines that passed (parked waits and operations).
    public var timeouts: Int
    /// Times the completion queue was found overflowing (completions kept by the kernel
    /// and flushed, never lost).
    public var completionQueueOverflows: Int
    /// Completions whose user_data named a released or reused slot; ignored.
    public var staleCompletions: Int
    /// Operations in the kernel now (in the in-flight table, multishot streams included):
    /// 0 once a scheduler has shut down.
    public var operationsInFlight: Int = 0
    /// Loop passes.
    public var passes: Int
    /// Jobs (coroutine steps) run.
    public var jobsRun: Int
    /// Jobs and actions that arrived from other threads.
    public var inboxItems: Int
    /// Socket operations whose system call completed at once, before any park (epoll).
    public var inlineCompletions: Int = 0
    /// Times the loop spun before sleeping (``Scheduler/Configuration/spinBeforeWait``).
    public var spins: Int = 0
    /// Spins that found no work and ended in a sleep.
    public var spinsExpired: Int = 0

    public var description: String {
        "submitted \(operationsSubmitted), completed \(operationsCompleted), cancellations \(cancellations), "
            + "in flight \(operationsInFlight), timeouts \(timeouts), CQ overflows \(completionQueueOverflows), "
            + "stale \(staleCompletions), "
            + "passes \(passes), jobs \(jobsRun), inbox \(inboxItems), inline \(inlineCompletions)"
            + (spins > 0 ? ", spins \(spins) (\(spinsExpired) expired)" : "")
    }
}

/// Single-writer counters: only the loop thread writes, so a relaxed load plus store is
/// enough (a plain `mov`, no locked instruction), and readers on other threads see a
/// recent value.
final class StatisticsCounters: Sendable {
    let submitted = Atomic<Int>(0)
    let completed = Atomic<Int>(0)
    let cancellations = Atomic<Int>(0)
    let timeouts = Atomic<Int>(0)
    let stale = Atomic<Int>(0)
    let inFlight = Atomic<Int>(0)
    let overflows = Atomic<Int>(0)
    let passes = Atomic<Int>(0)
    let jobs = Atomic<Int>(0)
    let inbox = Atomic<Int>(0)
    let inline = Atomic<Int>(0)
    let spins = Atomic<Int>(0)
    let spinsExpired = Atomic<Int>(0)
}

extension Atomic where Value == Int {
    @inline(__always)
    func increment(by amount: Int = 1) {
        store(load(ordering: .relaxed) &+ amount, ordering: .relaxed)
    }
    var value: Int { load(ordering: .relaxed) }
}
