/// The floor: the least a Swift task executor can do. A run queue of bare jobs in a
/// growable ring buffer, `enqueue` pushes at the back, `run()` pops from the front and runs
/// each job until the queue is empty. No I/O, no timers, no bookkeeping: what the
/// scheduler's switch is compared with.
final class FloorExecutor: TaskExecutor, @unchecked Sendable {
    // @unchecked Sendable: used from one thread only, the one that calls `run()`.
    private var buffer: UnsafeMutablePointer<UnownedJob>
    private var capacity = 64
    private var head = 0
    private var count = 0

    init() { buffer = .allocate(capacity: capacity) }
    deinit { buffer.deallocate() }

    func enqueue(_ job: consuming ExecutorJob) {
        if count == capacity { grow() }
        (buffer + ((head &+ count) & (capacity &- 1))).initialize(to: UnownedJob(job))
        count &+= 1
    }

    /// Runs jobs until none is left.
    func run() {
        let executor = asUnownedTaskExecutor()
        while count > 0 {
            let job = (buffer + head).move()
            head = (head &+ 1) & (capacity &- 1)
            count &-= 1
            job.runSynchronously(on: executor)
        }
    }

    private func grow() {
        let newCapacity = capacity * 2
        let newBuffer = UnsafeMutablePointer<UnownedJob>.allocate(capacity: newCapacity)
        for i in 0..<count {
            (newBuffer + i).initialize(to: (buffer + ((head &+ i) & (capacity &- 1))).move())
        }
        buffer.deallocate()
        buffer = newBuffer
        capacity = newCapacity
        head = 0
    }
}

/// What the two floor tasks share: the continuation of the one that is suspended.
final class FloorPingPong: @unchecked Sendable {
    var waiting: UnsafeContinuation<Void, Never>?
    var switches = 0
}

/// One side of the floor ping-pong: resume the other side, suspend, `rounds` times.
func floorPlayer(_ box: FloorPingPong, rounds: Int) async {
    for _ in 0..<rounds {
        if let other = box.waiting {
            box.waiting = nil
            other.resume()
        }
        await withUnsafeContinuation { (continuation: UnsafeContinuation<Void, Never>) in
            box.waiting = continuation
        }
        box.switches &+= 1
    }
    if let other = box.waiting {
        box.waiting = nil
        other.resume()
    }
}

/// `switches` suspend-and-resume pairs through the floor executor; nanoseconds per switch.
func measureFloorPingPong(switches: Int) -> Double {
    let executor = FloorExecutor()
    let box = FloorPingPong()
    let rounds = switches / 2
    let start = wallNanoseconds()
    Task(executorPreference: executor) { await floorPlayer(box, rounds: rounds) }
    Task(executorPreference: executor) { await floorPlayer(box, rounds: rounds) }
    executor.run()
    let elapsed = wallNanoseconds() - start
    precondition(box.switches == rounds * 2, "floor ping-pong: \(box.switches) switches")
    return Double(elapsed) / Double(rounds * 2)
}

/// The floor of spawn-and-join: a bare task created on the floor executor and awaited
/// (`Task.value`) by another task there: the runtime's own cost of "new task + join",
/// without handles, placement, or error routing. Nanoseconds per spawn-and-join.
func measureFloorSpawnAndJoin(count: Int) -> Double {
    let executor = FloorExecutor()
    let box = FloorPingPong()
    let start = wallNanoseconds()
    Task(executorPreference: executor) {
        var sum = 0
        for _ in 0..<count {
            sum &+= await Task(executorPreference: executor) { 1 }.value
        }
        box.switches = sum
    }
    executor.run()
    let elapsed = wallNanoseconds() - start
    precondition(box.switches == count, "floor spawn-and-join: \(box.switches)")
    return Double(elapsed) / Double(count)
}
