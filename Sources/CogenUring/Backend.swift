import CURing

/// The I/O engine a scheduler runs on.
public enum Backend: Sendable, Hashable, CustomStringConvertible {
    /// io_uring: every operation is an SQE and each CQE resumes its coroutine.
    case ioUring
    /// epoll: each operation's non-blocking system call is tried, and on `EAGAIN` retried
    /// when epoll reports the descriptor ready. The same operations, placements, errors,
    /// timeouts and cancellation as io_uring. A receive or send that completes at once
    /// does not park: its coroutine keeps the placement (the back of the run queue, or
    /// the front), at most 16 times per turn without a trip through the loop.
    case epoll
    /// io_uring when the kernel allows it (ring setup, `IORING_FEAT_FAST_POLL`, and the
    /// opcodes the library uses all succeed), epoll otherwise. The environment variable
    /// `COGEN_BACKEND=io_uring|epoll|auto` overrides this choice (and only this one). One
    /// log line (swift-log, label "cogen") says which engine was chosen and why.
    case automatic

    public var description: String {
        switch self {
        case .ioUring: "io_uring"
        case .epoll: "epoll"
        case .automatic: "automatic"
        }
    }
}

/// One completion as the scheduler sees it, from either backend.
struct Completion {
    var userData: UInt64
    var result: Int32
    var flags: UInt32
}

/// The seam between the scheduler and its I/O engine. The scheduler owns the in-flight
/// table, the timers and the run queue; a backend only moves operations to the kernel and
/// completions back, so a second engine (epoll) slots in without touching the scheduler.
///
/// Every method but `wake()` is called on the loop thread only.
protocol IOBackend: AnyObject {
    var kind: Backend { get }
    /// Called on the loop thread when `run()` first starts there (binds a SINGLE_ISSUER
    /// ring to it and arms the wake-up).
    func activate()
    /// Starts an operation whose completion will carry `userData`.
    func submit(_ operation: any KernelOperation, userData: UInt64)
    /// Asks the kernel to cancel the operation carrying `userData`; its final completion
    /// still arrives (with `-ECANCELED` or its real result).
    func cancel(_ operation: any KernelOperation, userData: UInt64)
    /// Hands pending submissions to the kernel and collects up to `completions.count`
    /// ready completions without blocking. Returns how many were written.
    func poll(into completions: UnsafeMutableBufferPointer<Completion>) -> Int
    /// Like `poll`, but blocks until a completion, a wake-up, or `timeout` nanoseconds
    /// (`nil`: no limit).
    func wait(timeout: UInt64?, into completions: UnsafeMutableBufferPointer<Completion>) -> Int
    /// Wakes a blocked `wait`; callable from any thread.
    func wake()
    /// Releases the kernel resources; the loop thread, after the last completion.
    func close()
    /// A shared receive-buffer pool the kernel fills (io_uring provided buffers), or nil
    /// when the engine has none.
    func makeBufferPool(count: Int, size: Int, maxPerConnection: Int) -> BufferPool?
    /// A description of the setup for logs and `--stats`.
    var setupDescription: String { get }
}

/// user_data layout, shared by both backends:
///
///     63            32 31             0
///     +---------------+---------------+
///     |  generation   |  slot index   |
///     +---------------+---------------+
///
/// Generations start at 1 and are bumped each time a slot is released, so a completion
/// for an operation whose slot was since reused (a stale CQE) never matches. Values with
/// generation 0 are reserved: 0 tags completions to ignore (our own cancel requests),
/// 1 tags the wake-up read, and `UInt64.max` is liburing's internal wait timeout.
enum UserData {
    static let ignored: UInt64 = 0
    static let wake: UInt64 = 1

    @inline(__always)
    static func make(index: UInt32, generation: UInt32) -> UInt64 {
        UInt64(generation) << 32 | UInt64(index)
    }
}

/// The operations the kernel currently holds, indexed by the low half of user_data.
///
/// An operation stays here, and with it every buffer, address and timespec the kernel may
/// read or write, until its final completion arrives, even when the coroutine that started
/// it was cancelled or timed out.
struct InFlightTable {
    // Unmanaged: the table holds one reference per operation in flight, taken at insert
    // and handed back by `remove`; looking an operation up for each completion costs no
    // reference counting.
    private var slots: [Unmanaged<IOOperation>?] = []
    private var generations: [UInt32] = []
    private var free: [UInt32] = []
    private(set) var count = 0
    /// Where `count` is published for other threads (`SchedulerStatistics.operationsInFlight`).
    var counters: StatisticsCounters?

    mutating func insert(_ operation: IOOperation) -> UInt64 {
        let index: UInt32
        let reference = Unmanaged.passRetained(operation)
        if let reused = free.popLast() {
            index = reused
            slots[Int(index)] = reference
        } else {
            index = UInt32(slots.count)
            slots.append(reference)
            generations.append(1)
        }
        count += 1
        counters?.inFlight.increment()
        return UserData.make(index: index, generation: generations[Int(index)])
    }

    /// The operation `userData` names, or nil for a stale or foreign value; valid while it
    /// is in the table.
    @inline(__always)
    func lookup(_ userData: UInt64) -> Unmanaged<IOOperation>? {
        let index = Int(truncatingIfNeeded: userData & 0xFFFF_FFFF)
        let generation = UInt32(truncatingIfNeeded: userData >> 32)
        guard index < slots.count, generation != 0, generations[index] == generation else {
            return nil
        }
        return slots[index]
    }

    /// Calls `body` with every operation in flight.
    func forEach(_ body: (IOOperation) -> Void) {
        for case let reference? in slots { body(reference.takeUnretainedValue()) }
    }

    /// Releases the slot of a finished operation; its user_data is stale from now on.
    /// - Returns: The table's reference, which the caller releases when done with it.
    @inline(__always)
    mutating func remove(_ userData: UInt64) -> Unmanaged<IOOperation> {
        let index = Int(truncatingIfNeeded: userData & 0xFFFF_FFFF)
        // invariant: called only after `lookup(userData)` found this slot occupied.
        let reference = slots[index].unsafelyUnwrapped
        slots[index] = nil
        var next = generations[index] &+ 1
        if next == 0 { next = 1 }
        generations[index] = next
        free.append(UInt32(index))
        count -= 1
        counters?.inFlight.increment(by: -1)
        return reference
    }
}

/// Why an operation's cancellation was requested.
enum CancelReason {
    case timeout, cancelled, shutdown
    /// The socket was closed while the operation was pending.
    case closed
    /// A multishot operation stopped for backpressure; it is armed again later.
    case paused
}

/// Non-generic face of a kernel operation, for the backends and the in-flight table.
///
/// An operation is one description that both backends run: io_uring builds an SQE from it;
/// the epoll backend (issue 4) asks for its readiness interest and its non-blocking
/// syscall. Implementations live one per file under `Operations/`.
protocol KernelOperation: AnyObject {
    /// io_uring: fills the SQE (opcode, descriptor, buffers) and stamps `userData`.
    func prepare(_ sqe: OpaquePointer, userData: UInt64)
    /// A completion arrived; after the final one (no `IORING_CQE_F_MORE`) the operation
    /// has left the in-flight table.
    func complete(result: Int32, flags: UInt32)
    /// A multishot stream no coroutine waits on (it does not keep `run()` alive by itself).
    var isStream: Bool { get }
    /// epoll: the descriptor whose readiness the operation waits for (-1: never waits).
    var readinessDescriptor: Int32 { get }
    /// epoll: the owner of `readinessDescriptor` (a socket's serial; 0: not ours).
    var readinessOwner: UInt64 { get }
    /// epoll: the readiness to wait for.
    var interest: Readiness { get }
    /// epoll: the non-blocking system call, once; a CQE-like result, `-EAGAIN` to wait.
    func attempt() -> Int32
    /// epoll: the caller's fast path has just tried `attempt()` and got `-EAGAIN`: wait for
    /// readiness without a second, failing system call.
    var knownNotReady: Bool { get }
}
