/// Deadlines of parked coroutines and in-flight operations: a binary min-heap ordered by
/// (deadline, insertion sequence), so equal deadlines fire in the order they were set.
///
/// Each waiter records its own heap index, so a deadline that is no longer needed (the
/// operation completed first) is removed in O(log n) instead of lingering until it expires.
/// One heap drives one kernel wait timeout: there is never a kernel timer per sleep.
struct TimerHeap {
    struct Entry {
        var deadline: UInt64
        var sequence: UInt64
        // The waiter is kept alive by the parked list or the in-flight table for as long as
        // it is in the heap; `remove` is called before either lets it go.
        unowned(unsafe) var waiter: ParkedCoroutine
    }

    private var entries: [Entry] = []
    private var nextSequence: UInt64 = 0

    var count: Int { entries.count }
    var isEmpty: Bool { entries.isEmpty }
    var earliestDeadline: UInt64? { entries.first?.deadline }

    mutating func insert(_ waiter: ParkedCoroutine, deadline: UInt64) {
        precondition(waiter.heapIndex < 0, "waiter already has a deadline")
        nextSequence &+= 1
        entries.append(Entry(deadline: deadline, sequence: nextSequence, waiter: waiter))
        waiter.heapIndex = entries.count - 1
        siftUp(entries.count - 1)
    }

    mutating func remove(_ waiter: ParkedCoroutine) {
        let index = waiter.heapIndex
        guard index >= 0 else { return }
        waiter.heapIndex = -1
        let last = entries.count - 1
        if index != last {
            entries[index] = entries[last]
            entries[index].waiter.heapIndex = index
            entries.removeLast()
            if !siftUp(index) { siftDown(index) }
        } else {
            entries.removeLast()
        }
    }

    /// Removes and returns the earliest waiter whose deadline is at or before `now`.
    mutating func popExpired(now: UInt64) -> ParkedCoroutine? {
        guard let first = entries.first, first.deadline <= now else { return nil }
        let waiter = first.waiter
        remove(waiter)
        return waiter
    }

    @inline(__always)
    private func less(_ a: Int, _ b: Int) -> Bool {
        let x = entries[a], y = entries[b]
        return x.deadline < y.deadline || (x.deadline == y.deadline && x.sequence < y.sequence)
    }

    @discardableResult
    private mutating func siftUp(_ start: Int) -> Bool {
        var i = start
        while i > 0 {
            let parent = (i - 1) / 2
            guard less(i, parent) else { break }
            entries.swapAt(i, parent)
            entries[i].waiter.heapIndex = i
            entries[parent].waiter.heapIndex = parent
            i = parent
        }
        return i != start
    }

    private mutating func siftDown(_ start: Int) {
        var i = start
        let n = entries.count
        while true {
            let left = 2 * i + 1
            guard left < n else { break }
            var child = left
            if left + 1 < n && less(left + 1, left) { child = left + 1 }
            guard less(child, i) else { break }
            entries.swapAt(i, child)
            entries[i].waiter.heapIndex = i
            entries[child].waiter.heapIndex = child
            i = child
        }
    }
}
