/// The coroutines of a scheduler, by task: which coroutine, if any, a running task is.
///
/// A park must know whether the current task is a coroutine (whose own waiter it reuses
/// and whose cancellation needs no handler) or some other task. The loop knows the task it
/// runs (a task is its own job); this table maps it to the coroutine. Open addressing with
/// linear probing and backward-shift deletion over pointer keys: a lookup is a multiply, a
/// shift and usually one probe, with no reference counting and no hashing of its own.
struct TaskTable: ~Copyable {
    // Keys and values interleaved: a lookup in a large table costs one cache miss, not two.
    private struct Slot {
        var key: UInt
        var value: Unmanaged<AnyCoroutine>?
    }
    private var slots: UnsafeMutablePointer<Slot>
    private var mask: Int
    private var shift: Int
    private(set) var count = 0

    init(capacity: Int = 64) {
        let size = max(capacity, 8).nextPowerOfTwo
        slots = .allocate(capacity: size)
        slots.initialize(repeating: Slot(key: 0, value: nil), count: size)
        mask = size - 1
        shift = UInt.bitWidth - size.trailingZeroBitCount
    }

    // Freed with its owner, also when the owner's initializer throws after making it.
    deinit {
        slots.deallocate()
    }

    @inline(__always)
    private func home(_ key: UInt) -> Int {
        Int(truncatingIfNeeded: (key &* 0x9E37_79B9_7F4A_7C15) >> UInt(shift))
    }

    /// The coroutine whose task is `task`.
    @inline(__always)
    func lookup(_ task: UnsafeRawPointer) -> AnyCoroutine? {
        reference(task)?.takeUnretainedValue()
    }

    /// The coroutine whose task is `task`, without reference counting: valid while its
    /// task runs.
    @inline(__always)
    func reference(_ task: UnsafeRawPointer) -> Unmanaged<AnyCoroutine>? {
        let key = UInt(bitPattern: task)
        var i = home(key)
        while true {
            let slot = slots[i]
            if slot.key == key { return slot.value }
            if slot.key == 0 { return nil }
            i = (i + 1) & mask
        }
    }

    /// Registers a coroutine's task. The coroutine stays alive meanwhile (its task holds it).
    mutating func insert(_ task: UnsafeRawPointer, _ coroutine: AnyCoroutine) {
        if (count + 1) * 2 > mask + 1 { grow() }
        let key = UInt(bitPattern: task)
        var i = home(key)
        while slots[i].key != 0 && slots[i].key != key { i = (i + 1) & mask }
        if slots[i].key == 0 { count += 1 }
        slots[i] = Slot(key: key, value: Unmanaged.passUnretained(coroutine))
    }

    mutating func remove(_ task: UnsafeRawPointer) {
        let key = UInt(bitPattern: task)
        var i = home(key)
        while slots[i].key != key {
            if slots[i].key == 0 { return }
            i = (i + 1) & mask
        }
        count -= 1
        // Backward-shift deletion: pull later entries of the probe run into the hole.
        var hole = i
        var j = (i + 1) & mask
        while slots[j].key != 0 {
            let wanted = home(slots[j].key)
            // Move j into the hole unless its home lies cyclically in (hole, j].
            let between = hole <= j ? (wanted > hole && wanted <= j) : (wanted > hole || wanted <= j)
            if !between {
                slots[hole] = slots[j]
                hole = j
            }
            j = (j + 1) & mask
        }
        slots[hole] = Slot(key: 0, value: nil)
    }

    private mutating func grow() {
        let old = slots, oldSize = mask + 1
        let size = oldSize * 2
        slots = .allocate(capacity: size)
        slots.initialize(repeating: Slot(key: 0, value: nil), count: size)
        mask = size - 1
        shift = UInt.bitWidth - size.trailingZeroBitCount
        count = 0
        for i in 0..<oldSize where old[i].key != 0 {
            var j = home(old[i].key)
            while slots[j].key != 0 { j = (j + 1) & mask }
            slots[j] = old[i]
            count += 1
        }
        old.deallocate()
    }
}

extension Int {
    fileprivate var nextPowerOfTwo: Int {
        self <= 1 ? 1 : 1 << (Int.bitWidth - (self - 1).leadingZeroBitCount)
    }
}
