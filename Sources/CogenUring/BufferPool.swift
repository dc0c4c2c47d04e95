import CURing
import Glibc

/// Receive buffers shared by all the connections of a scheduler.
///
/// On io_uring the pool is a provided-buffer ring (`IORING_REGISTER_PBUF_RING`, 5.19):
/// the kernel picks a free buffer for each chunk a multishot receive gets and says which
/// in the CQE; the socket holding the chunk gives the buffer back once its bytes have been
/// copied out. Idle connections hold no buffer, so memory does not grow with them; no
/// connection holds more than `maxPerConnection` buffers, so one slow reader cannot
/// starve the others. A receive that finds the ring empty (`ENOBUFS`) ends; its socket
/// waits here and is armed again as soon as a buffer comes back: no data is lost (it
/// stays in the kernel's socket buffer meanwhile).
final class BufferPool {
    // Loop-confined and never accessed reentrantly: no dynamic exclusivity checks.
    let count: Int
    let size: Int
    let maxPerConnection: Int
    /// Buffer group id of the ring.
    let group: UInt16 = 0
    private let memory: UnsafeMutableRawPointer
    @exclusivity(unchecked) private var ring: OpaquePointer?
    private let ringOwner: OpaquePointer
    /// Buffers the kernel can currently pick.
    @exclusivity(unchecked) private(set) var available: Int
    /// Sockets whose receive ended with `ENOBUFS`, to be armed again.
    @exclusivity(unchecked) private var starved: [Socket] = []

    /// Registers a ring of `count` buffers of `size` bytes with `ring`; nil if the kernel
    /// refuses.
    init?(ring: OpaquePointer, count: Int, size: Int, maxPerConnection: Int) {
        // invariant: `Scheduler.init` validated the configuration (`validate(count:size:maxPerConnection:)`).
        precondition(count > 0 && count & (count - 1) == 0 && count <= 32768, "buffer count: a power of two up to 32768")
        // posix_memalign, not `allocate`: a configured size the memory cannot hold means no
        // pool (the 5.x receive path), not a crash.
        var raw: UnsafeMutableRawPointer?
        guard posix_memalign(&raw, 4096, count * size) == 0, let memory = raw else { return nil }
        var bufferRing: OpaquePointer?
        guard cogen_buf_ring_create(ring, UInt32(count), 0, &bufferRing) == 0, let bufferRing else {
            free(memory)
            return nil
        }
        self.ring = bufferRing
        ringOwner = ring
        self.count = count
        self.size = size
        self.maxPerConnection = maxPerConnection
        self.memory = memory
        for bid in 0..<count {
            cogen_buf_ring_add(bufferRing, memory + bid * size, UInt32(size), UInt16(bid), UInt32(count), UInt32(bid))
        }
        cogen_buf_ring_advance(bufferRing, UInt32(count))
        available = count
    }

    /// Checks the receive-ring settings of a scheduler's configuration, so that a value out
    /// of range is a thrown error at `Scheduler.init`, never a trap when the loop first runs.
    static func validate(count: Int, size: Int, maxPerConnection: Int) throws(RingSetupError) {
        func invalid(_ message: String) -> RingSetupError {
            RingSetupError(errno: EINVAL, operation: "configure the scheduler", message: message)
        }
        guard count > 0 && count & (count - 1) == 0 && count <= 32768 else {
            throw invalid("receiveBufferCount must be a power of two from 1 to 32768, got \(count)")
        }
        guard size > 0 && size <= Int(UInt32.max), !count.multipliedReportingOverflow(by: size).overflow else {
            throw invalid("receiveBufferSize must be from 1 to \(UInt32.max) bytes (and fit count × size in memory), got \(size)")
        }
        guard maxPerConnection > 0 else {
            throw invalid("maxBuffersPerConnection must be at least 1, got \(maxPerConnection)")
        }
    }

    deinit {
        unregister()
        free(memory)
    }

    /// Hands the ring back to the kernel's care: call before the ring itself is closed.
    func unregister() {
        if let ring {
            cogen_buf_ring_destroy(ringOwner, ring, UInt32(count), group)
            self.ring = nil
        }
    }

    /// Touches every page of the buffers, so that they are resident from now on.
    func prefault() {
        memset(memory, 0, count * size)
    }

    /// The bytes of buffer `id`.
    @inline(__always)
    func bytes(_ id: UInt16, count: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: memory + Int(id) * size, count: count)
    }

    /// The kernel filled buffer `id`.
    @inline(__always)
    func taken() { available -= 1 }

    /// Gives buffer `id` back to the kernel, and arms the sockets that were starved.
    func giveBack(_ id: UInt16) {
        guard let ring else { return }
        #if DEBUG
        if FaultInjector.current?.withholds(id, from: self) == true { return }
        #endif
        cogen_buf_ring_add(ring, memory + Int(id) * size, UInt32(size), id, UInt32(count), 0)
        cogen_buf_ring_advance(ring, 1)
        available += 1
        if !starved.isEmpty {
            let waiting = starved
            starved = []
            for socket in waiting { socket.buffersReturned() }
        }
    }

    /// `socket`'s receive ended for lack of buffers.
    func starving(_ socket: Socket) { starved.append(socket) }

    /// A closing socket no longer waits for buffers.
    func forget(_ socket: Socket) { starved.removeAll { $0 === socket } }
}
