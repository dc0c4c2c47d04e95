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
        precondition(count > 0 && count & (count - 1) == 0 && count <= 32768, "buffer count: a power of two up to 32768")
        var bufferRing: OpaquePointer?
        guard cogen_buf_ring_create(ring, UInt32(count), 0, &bufferRing) == 0, let bufferRing else { return nil }
        self.ring = bufferRing
        ringOwner = ring
        self.count = count
        self.size = size
        self.maxPerConnection = maxPerConnection
        memory = UnsafeMutableRawPointer.allocate(byteCount: count * size, alignment: 4096)
        for bid in 0..<count {
            cogen_buf_ring_add(bufferRing, memory + bid * size, UInt32(size), UInt16(bid), UInt32(count), UInt32(bid))
        }
        cogen_buf_ring_advance(bufferRing, UInt32(count))
        available = count
    }

    deinit {
        unregister()
        memory.deallocate()
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
