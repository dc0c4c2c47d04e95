import CURing
import Glibc

/// `IORING_OP_POLL_ADD`: waits for readiness of a descriptor.
final class PollOperation: IOOperation {
    let descriptor: Int32
    let events: UInt32
    @exclusivity(unchecked) var parked: Parked<UInt32>?

    init(scheduler: Scheduler, descriptor: Int32, events: UInt32) {
        self.descriptor = descriptor
        self.events = events
        super.init(scheduler: scheduler, label: "poll")
    }

    override func prepare(_ sqe: OpaquePointer, userData: UInt64) {
        cogen_prep_poll_add(sqe, descriptor, events, userData)
    }

    override func complete(result: Int32, flags: UInt32) {
        finish(parked, result: result) { UInt32(bitPattern: $0) }
    }

    override var readinessDescriptor: Int32 { descriptor }

    override var interest: Readiness { events & UInt32(POLLOUT) != 0 ? .writable : .readable }

    override func attempt() -> Int32 {
        var entry = pollfd(fd: descriptor, events: Int16(truncatingIfNeeded: events), revents: 0)
        let status = Glibc.poll(&entry, 1, 0)
        if status < 0 { return -Glibc.errno }
        return status == 0 ? -EAGAIN : Int32(UInt16(bitPattern: entry.revents))
    }
}

extension Scheduler {
    /// Waits until a descriptor is ready for the given `poll(2)` events.
    ///
    /// - Parameters:
    ///   - descriptor: An open file descriptor; it must stay open until this returns.
    ///   - events: `POLLIN`, `POLLOUT`… as in `poll(2)`.
    ///   - deadline: When to give up; the poll is then cancelled in the kernel.
    ///   - placement: Where the coroutine goes when the completion arrives.
    /// - Returns: The events that are ready (`revents`).
    /// - Throws: ``TimeoutError``, `CancellationError`, ``IOError``.
    ///
    /// Uses `IORING_OP_POLL_ADD` (Linux 5.1), cancelled with `IORING_OP_ASYNC_CANCEL` (5.5).
    public func poll(
        _ descriptor: Int32, events: UInt32, deadline: Deadline? = nil,
        placement: Placement = .back
    ) async throws -> UInt32 {
        try await perform(
            PollOperation(scheduler: self, descriptor: descriptor, events: events),
            deadline: deadline, placement: placement
        ) { $0.parked = $1 }
    }
}
