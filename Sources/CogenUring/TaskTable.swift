/// The coroutines of a scheduler, by task: which coroutine, if any, a running task is.
///
/// A park must know whether the current task is a coroutine (whose own waiter it reuses
/// and whose cancellation needs no handler) or some other task. The loop knows the task it
/// runs (a task is its own job); this table maps it to the coroutine. Open addressing with
/// linear probing and backward-shift deletion over pointer keys: a lookup is a multiply, a
/// shift and usually one probe, with no reference counting and no hashing of its own.
struct TaskTable {
    private var keys: UnsafeMutablePointer<UInt>
    private var values: UnsafeMutablePointer<Unmanaged<AnyCoroutine>?>
    private var mask: Int
    private var shift: Int
    private(set) var count = 0

    init(capacity: Int = 64) {
        let size = max(capacity, 8).nextPowerOfTwo
        keys = .allocate(capacity: size)
        keys.initialize(repeating: 0, count: size)
        values = .allocate(capacity: size)
        values.initialize(repeating: nil, count: size)
        mask = size - 1
        shift = UInt.bitWidth - size.trailingZeroBitCount
    }

    /// Frees the storage; the table is unusable afterwards.
    mutating func deallocate() {
        keys.deallocate()
        values.deallocate()
    }

    @inline(__always)
    private func home(_ key: UInt) -> Int {
        Int(truncatingIfNeeded: (key &* 0x9E37_79B9_7F4A_7C15) >> UInt(shift))
    }

    /// The coroutine whose task is `task`.
    @inline(__always)
    func lookup(_ task: UnsafeRawPointer) -> AnyCoroutine? {
        let key = UInt(bitPattern: task)
        var i = home(key)
        while true {
            let k = keys[i]
            if k == key { return values[i]?.takeUnretainedValue() }
            if k == 0 { return nil }
            i = (i + 1) & mask
        }
    }

    /// Registers a coroutine's task. The coroutine stays alive meanwhile (its task holds it).
    mutating func insert(_ task: UnsafeRawPointer, _ coroutine: AnyCoroutine) {
        if (count + 1) * 2 > mask + 1 { grow() }
        let key = UInt(bitPattern: task)
        var i = home(key)
        while keys[i] != 0 && keys[i] != key { i = (i + 1) & mask }
        if keys[i] == 0 { count += 1 }
        keys[i] = key
        values[i] = Unmanaged.passUnretained(coroutine)
    }

    mutating func remove(_ task: UnsafeRawPointer) {
        let key = UInt(bitPattern: task)
        var i = home(key)
        while keys[i] != key {
            if keys[i] == 0 { return }
            i = (i + 1) & mask
        }
        count -= 1
        // Backward-shift deletion: pull later entries of the probe run into the hole.
        var hole = i
        var j = (i + 1) & mask
        while keys[j] != 0 {
            let wanted = home(keys[j])
            // Move j into the hole unless its home lies cyclically in (hole, j].
            let between = hole <= j ? (wanted > hole && wanted <= j) : (wanted > hole || wanted <= j)
            if !between {
                keys[hole] = keys[j]
                values[hole] = values[j]
                hole = j
            }
            j = (j + 1) & mask
        }
        keys[hole] = 0
        values[hole] = nil
    }

    private mutating func grow() {
        let oldKeys = keys, oldValues = values, oldSize = mask + 1
        let size = oldSize * 2
        keys = .allocate(capacity: size)
        keys.initialize(repeating: 0, count: size)
        values = .allocate(capacity: size)
        values.initialize(repeating: nil, count: size)
        mask = size - 1
        shift = UInt.bitWidth - size.trailingZeroBitCount
        count = 0
        for i in 0..<oldSize where oldKeys[i] != 0 {
            let key = oldKeys[i]
            var j = home(key)
            while keys[j] != 0 { j = (j + 1) & mask }
            keys[j] = key
            values[j] = oldValues[i]
            count += 1
        }
        oldKeys.deallocate()
        oldValues.deallocate()
    }
}

extension Int {
    fileprivate var nextPowerOfTwo: Int {
        self <= 1 ? 1 : 1 << (Int.bitWidth - (self - 1).leadingZeroBitCount)
    }
}
