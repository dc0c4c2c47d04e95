import CURing

/// `IORING_OP_NOP`: a round trip through the ring and nothing else.
final class NopOperation: IOOperation {
    @exclusivity(unchecked) var parked: Parked<Void>?

    init(scheduler: Scheduler) { super.init(scheduler: scheduler, label: "nop") }

    override func prepare(_ sqe: OpaquePointer, userData: UInt64) {
        cogen_prep_nop(sqe, userData)
    }

    override func complete(result: Int32, flags: UInt32) {
        finish(parked, result: result) { _ in () }
    }

    override func attempt() -> Int32 { 0 }
}

extension Scheduler {
    /// Sends a no-op through the I/O engine and waits for its completion.
    ///
    /// Useful to measure the cost of one operation's round trip through the scheduler.
    /// - Parameter placement: Where the coroutine goes when the completion arrives.
    /// - Throws: ``IOError`` if the kernel fails it; `CancellationError`.
    ///
    /// Uses `IORING_OP_NOP` (Linux 5.1).
    public func nop(placement: Placement = .back) async throws {
        try await perform(NopOperation(scheduler: self), deadline: nil, placement: placement) { $0.parked = $1 }
    }
}
