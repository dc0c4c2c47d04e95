import CURing
import Glibc

// Fault injection, for tests only: everything below but `enterKernel` and
// `nonBlockingCall` (which then only make their call) is compiled in debug builds, so
// a release build contains no injector. Faults are physical: a short transfer asks the
// kernel for fewer bytes, never truncates what it moved; a result is made up only for a
// request the kernel never ran (an accept replaced by a NOP, a system call skipped).

/// Enters the kernel (`io_uring_enter` through liburing), unless the fault injector makes
/// it fail with `EINTR` or `EBUSY` without entering.
@inline(__always)
func enterKernel(_ call: () -> Int32) -> Int32 {
    #if DEBUG
    if let status = FaultInjector.current?.enterFailure() { return status }
    #endif
    return call()
}

/// What a non-blocking attempt is, for the fault injector.
enum AttemptKind {
    case receive, send, accept
}

/// A readiness backend's non-blocking system call, in a CQE's convention (`>= 0` or
/// `-errno`); `EINTR` is retried here. `call` gets the byte count to ask for, which the
/// fault injector may lower (a short transfer), or it may skip the call and report
/// `EAGAIN`, `EINTR` or `EMFILE`.
@inline(__always)
func nonBlockingCall(_ kind: AttemptKind, _ descriptor: Int32, length: Int, _ call: (Int) -> Int) -> Int32 {
    while true {
        #if DEBUG
        var length = length
        if let injected = FaultInjector.current?.attempt(kind, descriptor, &length) {
            if injected == -EINTR { continue }  // as a real one: retried
            return injected
        }
        #endif
        let status = negativeErrno(call(length))
        if status != -EINTR { return status }
    }
}

#if DEBUG
/// A fault the injector can cause (debug builds only).
enum Fault: String, CaseIterable, Sendable, CustomStringConvertible {
    /// Both backends: a receive or send asks for fewer bytes than it was given.
    case shortTransfer
    /// Both backends: the peer resets the connection (`SO_LINGER` 0, then close); the soak's
    /// client does it, the injector only counts.
    case connectionReset
    /// Both backends: an accept fails with `EMFILE` (epoll: before the system call;
    /// io_uring: the accept SQE becomes a NOP whose completion reads `-EMFILE`). On a
    /// multishot accept, each connection also ends the stream, so that it is armed (and
    /// can fail) often.
    case descriptorLimit
    /// Both backends: a cancel request (as a deadline would make) is sent for an operation
    /// whose completion has already arrived: the result must stand.
    case completionAfterCancel
    /// Both backends: an operation is cancelled right after its submission, which nobody
    /// asked for: its `-ECANCELED` must be retried (a multishot stream armed again), never
    /// hang or leak.
    case cancelledEarly
    /// epoll: a non-blocking attempt reports `EAGAIN` without its system call; the edge it
    /// swallowed is replayed at the next readiness wait.
    case wouldBlock
    /// epoll: a non-blocking attempt reports `EINTR` without its system call.
    case interrupted
    /// io_uring: buffers given back are withheld from the provided-buffer ring until a
    /// receive ends with `ENOBUFS`.
    case noBuffers
    /// io_uring: a multishot stream is cancelled after one of its completions, so it ends
    /// without `IORING_CQE_F_MORE` and must be armed again.
    case multishotEnd
    /// io_uring: entering the kernel fails with `EINTR` or `EBUSY` without entering.
    case enterFailure
    /// io_uring: an SQ of 2 entries (the test configures it; counted when the SQ is full).
    case smallSubmissionQueue
    /// io_uring: a CQ of 8 entries (the test configures it; counted per overflow seen).
    case completionQueueOverflow

    var description: String { rawValue }
}

/// How a scheduler's fault injector is set up (`Scheduler.Configuration.faultInjection`).
struct FaultInjection: Sendable {
    /// Seeds the generator: the same seed makes the same decisions.
    var seed: UInt64
    /// Each fault's probability per chance to fire.
    var probabilities: [Fault: Double]
}

/// A SplitMix64 generator: small, fast, and good enough to decide faults.
struct FaultRandom: RandomNumberGenerator {
    private var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// A scheduler's fault injector: loop-confined; its counts are read once the loop has
/// stopped.
final class FaultInjector: @unchecked Sendable {
    private var generator: FaultRandom
    private let probabilities: [Fault: Double]
    /// How often each fault fired.
    private(set) var fires: [Fault: Int] = [:]
    /// Accept SQEs replaced by a NOP, by user_data: their completion reads `-EMFILE`.
    private var substituted: Set<UInt64> = []
    /// Operations cancelled right after their submission.
    private var cancelledEarly: Set<UInt64> = []
    /// Streams whose end was requested.
    private var endingStreams: Set<UInt64> = []
    /// Descriptors whose readiness edge an injected `EAGAIN` swallowed.
    private var owedEdges: [Int32] = []
    /// Receive buffers withheld from the ring.
    private var withheld: [UInt16] = []
    private var drought = false
    private var releasing = false

    init(_ configuration: FaultInjection) {
        generator = FaultRandom(seed: configuration.seed)
        probabilities = configuration.probabilities
    }

    /// The injector of the scheduler running on this thread.
    static var current: FaultInjector? { Scheduler.current?.faultInjector }

    /// Whether `fault` is on and fires now (counted).
    func fires(_ fault: Fault) -> Bool {
        guard let probability = probabilities[fault], chance(probability) else { return false }
        count(fault)
        return true
    }

    private func chance(_ probability: Double) -> Bool {
        Double(generator.next() >> 11) / Double(1 << 53) < probability
    }

    func count(_ fault: Fault, by amount: Int = 1) {
        guard probabilities[fault] != nil else { return }
        fires[fault, default: 0] += amount
    }

    // MARK: epoll: the non-blocking attempts

    func attempt(_ kind: AttemptKind, _ descriptor: Int32, _ length: inout Int) -> Int32? {
        if kind == .accept && fires(.descriptorLimit) { return -EMFILE }
        if fires(.interrupted) { return -EINTR }
        if fires(.wouldBlock) {
            owedEdges.append(descriptor)
            return -EAGAIN
        }
        if kind != .accept && length > 1 && fires(.shortTransfer) {
            length = 1 + Int(generator.next() % UInt64(length - 1))
        }
        return nil
    }

    /// The descriptors whose edge an injected `EAGAIN` swallowed, to be retried as if
    /// epoll had reported them (a real `EAGAIN` is followed by an edge when the state
    /// changes; an injected one must be too, or the engine would wait for nothing).
    func takeOwedEdges() -> [Int32]? {
        guard !owedEdges.isEmpty else { return nil }
        defer { owedEdges = [] }
        return owedEdges
    }

    /// epoll: an operation has just started to wait for readiness.
    func cancelsEarly(_ operation: any KernelOperation, userData: UInt64) -> Bool {
        guard operation is ReceiveOperation || operation is SendOperation || operation is AcceptOperation,
              probabilities[.cancelledEarly].map(chance) == true
        else { return false }
        cancelledEarly.insert(userData)
        return true
    }

    // MARK: io_uring: SQE preparation, entering the kernel

    func prepared(_ sqe: OpaquePointer, for operation: any KernelOperation, userData: UInt64, backend: any IOBackend) {
        if operation is ReceiveOperation || operation is SendOperation || operation is TrackedSendOperation {
            let length = cogen_sqe_len(sqe)
            if length > 1 && fires(.shortTransfer) {
                cogen_sqe_set_len(sqe, 1 + UInt32(generator.next() % UInt64(length - 1)))
            }
        }
        if operation is AcceptOperation || operation is MultishotAcceptOperation, fires(.descriptorLimit) {
            // Nothing is accepted: the kernel runs a NOP, whose completion reads EMFILE.
            cogen_prep_nop(sqe, userData)
            substituted.insert(userData)
            return
        }
        if operation is ReceiveOperation || operation is SendOperation || operation is AcceptOperation
            || operation is MultishotReceiveOperation || operation is MultishotAcceptOperation,
           probabilities[.cancelledEarly].map(chance) == true
        {
            cancelledEarly.insert(userData)
            backend.cancel(operation, userData: userData)
        }
    }

    func enterFailure() -> Int32? {
        guard fires(.enterFailure) else { return nil }
        return generator.next() & 1 == 0 ? -EINTR : -EBUSY
    }

    // MARK: Both: completion delivery

    /// A completion for `operation` is about to be delivered.
    func delivering(_ completion: inout Completion, to operation: IOOperation, scheduler: Scheduler) {
        let final = completion.flags & UInt32(COGEN_CQE_F_MORE) == 0
        if final && substituted.remove(completion.userData) != nil { completion.result = -EMFILE }
        if final && cancelledEarly.remove(completion.userData) != nil && completion.result == -ECANCELED {
            count(.cancelledEarly)
        }
        if final { endingStreams.remove(completion.userData) }
        if completion.result == -ENOBUFS {
            if drought || !withheld.isEmpty { count(.noBuffers) }
            if let pool = scheduler.bufferPool { release(pool) }
        }
        if !final && !endingStreams.contains(completion.userData) && operation.cancelReason == nil {
            let ends = operation is MultishotAcceptOperation && probabilities[.descriptorLimit] != nil
                ? true : fires(.multishotEnd)
            if ends {
                endingStreams.insert(completion.userData)
                scheduler.backend.cancel(operation, userData: completion.userData)
            }
        }
        if final && !operation.isStream && operation.cancelReason == nil && operation is SocketOperation
            && !(operation is CloseOperation) && completion.result != -ECANCELED && fires(.completionAfterCancel)
        {
            // As a deadline that passed just after the kernel posted the completion.
            operation.requestCancel(.timeout)
        }
    }

    // MARK: io_uring: provided buffers

    /// Whether a buffer given back stays out of the ring for now.
    func withholds(_ id: UInt16, from pool: BufferPool) -> Bool {
        guard !releasing, probabilities[.noBuffers] != nil else { return false }
        if !drought { drought = probabilities[.noBuffers].map(chance) == true }
        guard drought else { return false }
        withheld.append(id)
        // Never all of them: a socket starved by a real ENOBUFS waits for one to come back.
        if withheld.count >= pool.count - 2 { release(pool) }
        return true
    }

    private func release(_ pool: BufferPool) {
        drought = false
        releasing = true
        let ids = withheld
        withheld = []
        for id in ids { pool.giveBack(id) }
        releasing = false
    }
}
#endif
