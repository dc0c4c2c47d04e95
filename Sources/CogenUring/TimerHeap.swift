/// Deadlines of parked coroutines and in-flight operations: a binary min-heap ordered by
/// (deadline, insertion sequence), so equal deadlines fire in the order they were set.
/// One heap drives one kernel wait timeout: there is never a kernel timer per sleep.
///
/// Heap entries are plain values (deadline, sequence, slot); the waiters sit in a slot
/// table beside the heap. Sifting therefore touches only the heap's own array, never the
/// waiters (scattered in memory, and reference counted), which is what keeps 100k timers
/// cheap.
///
/// **A waiter's entry outlives its park** (nginx's lazy timers, without the delay): a park
/// that ends before its deadline only disarms the entry, and the waiter's next park with a
/// deadline at or after the entry's reuses it, recording the later deadline in the waiter
/// (`timerDeadline`) with no heap operation at all. A connection's idle wait, set again
/// for every request, thus costs a heap insertion once per timeout period, not once per
/// request. When an entry comes due, a disarmed one is dropped, an armed one whose
/// waiter's deadline moved on is filed again at that deadline, and only a deadline truly
/// passed expires. A park with an earlier deadline than its entry's abandons the entry
/// (it goes stale: dropped when it reaches the top, and when stale entries outnumber live
/// ones the heap is rebuilt) and files a new one. What the loop sleeps to
/// (`earliestDeadline`) may be an entry's earlier deadline: an early wake-up, never a late
/// one. Idleness counts armed entries only.
struct TimerHeap {
    private struct Entry {
        var deadline: UInt64
        var sequence: UInt64
        var slot: UInt32
    }

    /// A waiter with an entry, and the sequence of that entry (0: a free slot).
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
    /// Parks waiting on a deadline now.
    private var armed = 0

    /// No park waits on a deadline.
    var isEmpty: Bool { armed == 0 }

    /// When the loop must wake at the latest: the earliest entry's deadline (at or before
    /// the earliest armed deadline). Nil when nothing is armed.
    var earliestDeadline: UInt64? {
        mutating get {
            guard armed > 0 else { return nil }
            dropStaleTop()
            return entries.first?.deadline
        }
    }

    /// Arms `waiter`'s deadline (it parks now).
    mutating func insert(_ waiter: ParkedCoroutine, deadline: UInt64) {
        // invariant: a waiter parks at most once at a time, so it arms one deadline at a time.
        precondition(!waiter.timerArmed, "waiter already has a deadline")
        waiter.timerArmed = true
        waiter.timerDeadline = deadline
        armed += 1
        if waiter.timerSequence != 0 {
            // Its entry from an earlier park: kept if it comes due no later than this one.
            if waiter.timerEntryDeadline <= deadline { return }
            release(slot: waiter.timerSlot)
            waiter.timerSequence = 0
            stale += 1
        }
        file(waiter, at: deadline, slot: nil)
    }

    /// Files an entry for `waiter` at `deadline`, in `slot` or a new one.
    private mutating func file(_ waiter: ParkedCoroutine, at deadline: UInt64, slot reused: UInt32?) {
        nextSequence &+= 1
        let slot: UInt32
        let record = Slot(waiter: Unmanaged.passUnretained(waiter), sequence: nextSequence)
        if let reused {
            slot = reused
            slots[Int(slot)] = record
        } else if let free = freeSlots.popLast() {
            slot = free
            slots[Int(slot)] = record
        } else {
            slot = UInt32(slots.count)
            slots.append(record)
        }
        waiter.timerSequence = nextSequence
        waiter.timerSlot = slot
        waiter.timerEntryDeadline = deadline
        entries.append(Entry(deadline: deadline, sequence: nextSequence, slot: slot))
        siftUp(entries.count - 1)
        if stale > 64 && stale * 2 > entries.count { rebuild() }
    }

    /// Disarms `waiter`'s deadline (its park ended otherwise); its entry stays for reuse.
    mutating func remove(_ waiter: ParkedCoroutine) {
        guard waiter.timerArmed else { return }
        waiter.timerArmed = false
        armed -= 1
    }

    /// Removes and returns the earliest waiter whose deadline is at or before `now`.
    mutating func popExpired(now: UInt64) -> ParkedCoroutine? {
        while true {
            dropStaleTop()
            guard let first = entries.first, first.deadline <= now else { return nil }
            popTop()
            // invariant: a live (non-stale) entry's slot holds its waiter (`dropStaleTop` ran).
            let waiter = slots[Int(first.slot)].waiter!.takeUnretainedValue()
            if !waiter.timerArmed {
                // Disarmed since: the entry goes.
                release(slot: first.slot)
                waiter.timerSequence = 0
                continue
            }
            if waiter.timerDeadline > now {
                // Parked again since, with a later deadline: filed again at it.
                file(waiter, at: waiter.timerDeadline, slot: first.slot)
                continue
            }
            release(slot: first.slot)
            waiter.timerSequence = 0
            waiter.timerArmed = false
            armed -= 1
            return waiter
        }
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
