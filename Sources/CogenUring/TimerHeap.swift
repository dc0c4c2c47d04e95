/// Deadlines of parked coroutines and in-flight operations: a binary min-heap ordered by
/// (deadline, insertion sequence), so equal deadlines fire in the order they were set.
/// One heap drives one kernel wait timeout: there is never a kernel timer per sleep.
///
/// Heap entries are plain values (deadline, sequence, slot); the waiters sit in a slot
/// table beside the heap. Sifting therefore touches only the heap's own array, never the
/// waiters (scattered in memory, and reference counted), which is what keeps 100k timers
/// cheap. Removal is lazy: the slot is released at once and its entry, now stale, is
/// dropped when it reaches the top; when stale entries outnumber live ones the heap is
/// rebuilt, so a server whose waits mostly end before their deadline keeps the heap at the
/// size of its live timers.
struct TimerHeap {
    private struct Entry {
        var deadline: UInt64
        var sequence: UInt64
        var slot: UInt32
    }

    /// A waiter with a deadline, and the sequence of its live entry (0: a free slot).
    /// Unmanaged: waiters live as long as their scheduler (see `ParkedCoroutine`).
    private struct Slot {
        var waiter: Unmanaged<ParkedCoroutine>?
        var sequence: UInt64
    }

    private var entries: [Entry] = []
    private var slots: [Slot] = []
    private var freeSlots: [UInt32] = []
    private var nextSequence: UInt64 = 0
    private var stale = 0

    /// Live deadlines.
    var count: Int { entries.count - stale }
    var isEmpty: Bool { entries.count == stale }

    /// The earliest live deadline.
    var earliestDeadline: UInt64? {
        mutating get {
            dropStaleTop()
            return entries.first?.deadline
        }
    }

    mutating func insert(_ waiter: ParkedCoroutine, deadline: UInt64) {
        // invariant: a waiter parks at most once at a time, so it holds at most one deadline.
        precondition(waiter.timerSequence == 0, "waiter already has a deadline")
        nextSequence &+= 1
        let slot: UInt32
        let record = Slot(waiter: Unmanaged.passUnretained(waiter), sequence: nextSequence)
        if let free = freeSlots.popLast() {
            slot = free
            slots[Int(slot)] = record
        } else {
            slot = UInt32(slots.count)
            slots.append(record)
        }
        waiter.timerSequence = nextSequence
        waiter.timerSlot = slot
        entries.append(Entry(deadline: deadline, sequence: nextSequence, slot: slot))
        siftUp(entries.count - 1)
    }

    mutating func remove(_ waiter: ParkedCoroutine) {
        guard waiter.timerSequence != 0 else { return }
        release(slot: waiter.timerSlot)
        waiter.timerSequence = 0
        stale += 1
        if stale > 64 && stale * 2 > entries.count { rebuild() }
    }

    /// Removes and returns the earliest waiter whose deadline is at or before `now`.
    mutating func popExpired(now: UInt64) -> ParkedCoroutine? {
        dropStaleTop()
        guard let first = entries.first, first.deadline <= now else { return nil }
        popTop()
        // invariant: a live (non-stale) entry's slot holds its waiter (`dropStaleTop` ran).
        let waiter = slots[Int(first.slot)].waiter!.takeUnretainedValue()
        release(slot: first.slot)
        waiter.timerSequence = 0
        return waiter
    }

    private mutating func release(slot: UInt32) {
        slots[Int(slot)] = Slot(waiter: nil, sequence: 0)
        freeSlots.append(slot)
    }

    @inline(__always)
    private func isLive(_ entry: Entry) -> Bool {
        slots[Int(entry.slot)].sequence == entry.sequence
    }

    private mutating func dropStaleTop() {
        while let first = entries.first, !isLive(first) {
            popTop()
            stale -= 1
        }
    }

    private mutating func popTop() {
        let last = entries.count - 1
        if last > 0 { entries.swapAt(0, last) }
        entries.removeLast()
        if !entries.isEmpty { siftDown(0) }
    }

    private mutating func rebuild() {
        let slots = self.slots
        entries.removeAll { slots[Int($0.slot)].sequence != $0.sequence }
        stale = 0
        var i = entries.count / 2
        while i > 0 {
            i -= 1
            siftDown(i)
        }
    }

    @inline(__always)
    private static func less(_ x: Entry, _ y: Entry) -> Bool {
        x.deadline < y.deadline || (x.deadline == y.deadline && x.sequence < y.sequence)
    }

    private mutating func siftUp(_ start: Int) {
        entries.withUnsafeMutableBufferPointer { e in
            var i = start
            let moving = e[i]
            while i > 0 {
                let parent = (i - 1) / 2
                guard Self.less(moving, e[parent]) else { break }
                e[i] = e[parent]
                i = parent
            }
            e[i] = moving
        }
    }

    private mutating func siftDown(_ start: Int) {
        entries.withUnsafeMutableBufferPointer { e in
            let n = e.count
            var i = start
            let moving = e[i]
            while true {
                let left = 2 * i + 1
                guard left < n else { break }
                var child = left
                if left + 1 < n && Self.less(e[left + 1], e[left]) { child = left + 1 }
                guard Self.less(e[child], moving) else { break }
                e[i] = e[child]
                i = child
            }
            e[i] = moving
        }
    }
}
