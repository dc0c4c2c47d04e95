/// What the run queue holds.
enum RunItem {
    /// A job the Swift runtime enqueued on the scheduler.
    case job(UnownedJob)
    /// A coroutine that yielded: resuming the continuation enqueues its job at the front,
    /// so a yield costs one trip through the queue, not two as `Task.yield()` does.
    case resume(UnsafeContinuation<Void, Never>)
}

/// The run queue: a growable ring buffer of jobs, pushed at either end, popped at the front.
///
/// Items are bare pointers (a job, or the continuation of a coroutine that yielded), so the
/// buffer holds no references and needs no ARC.
struct JobQueue: ~Copyable {
    private var buffer: UnsafeMutablePointer<RunItem>
    private var capacity: Int
    private var head = 0
    private(set) var count = 0

    init(capacity: Int = 1024) {
        self.capacity = capacity
        buffer = .allocate(capacity: capacity)
    }

    deinit { buffer.deallocate() }

    var isEmpty: Bool { count == 0 }

    @inline(__always)
    mutating func pushBack(_ job: RunItem) {
        if count == capacity { grow() }
        (buffer + ((head &+ count) & (capacity &- 1))).initialize(to: job)
        count &+= 1
    }

    @inline(__always)
    mutating func pushFront(_ job: RunItem) {
        if count == capacity { grow() }
        head = (head &- 1) & (capacity &- 1)
        (buffer + head).initialize(to: job)
        count &+= 1
    }

    @inline(__always)
    mutating func popFront() -> RunItem? {
        guard count > 0 else { return nil }
        let job = (buffer + head).move()
        head = (head &+ 1) & (capacity &- 1)
        count &-= 1
        return job
    }

    private mutating func grow() {
        let newCapacity = capacity * 2
        let newBuffer = UnsafeMutablePointer<RunItem>.allocate(capacity: newCapacity)
        for i in 0..<count {
            (newBuffer + i).initialize(to: (buffer + ((head + i) & (capacity - 1))).move())
        }
        buffer.deallocate()
        buffer = newBuffer
        capacity = newCapacity
        head = 0
    }
}
