import CogenUring
import Glibc

/// A fresh scheduler for one repetition; the ring is set up before the clock starts.
func makeScheduler(_ backend: Backend = .ioUring) -> Scheduler {
    do {
        var configuration = Scheduler.Configuration()
        configuration.backend = backend
        return try Scheduler(configuration: configuration)
    } catch {
        writeStandardError("cogen-bench: cannot create a scheduler: \(error)\n")
        exit(1)
    }
}

/// Spawns with `body`, runs the scheduler to idle, shuts it down; wall nanoseconds of
/// spawn plus run.
func timedRun(_ backend: Backend = .ioUring, _ body: (Scheduler) -> Void) -> UInt64 {
    let scheduler = makeScheduler(backend)
    let start = wallNanoseconds()
    body(scheduler)
    let report = scheduler.run()
    let elapsed = wallNanoseconds() - start
    precondition(report.liveCoroutines == 0, "coroutines left behind: \(report)")
    scheduler.shutdown()
    return elapsed
}

// MARK: Switch

final class PingPong: @unchecked Sendable {
    var other: Parked<Void>?
    var switches = 0
}

/// Two coroutines park and resume each other through the public API.
func measureParkResume(switches: Int, backend: Backend = .ioUring) -> Double {
    let box = PingPong()
    let rounds = switches / 2
    let elapsed = timedRun(backend) { scheduler in
        for _ in 0..<2 {
            scheduler.spawn {
                for _ in 0..<rounds {
                    if let other = box.other {
                        box.other = nil
                        scheduler.resume(other, returning: (), placement: .back)
                    }
                    try await scheduler.park { (p: Parked<Void>) in box.other = p }
                    box.switches &+= 1
                }
                if let other = box.other {
                    box.other = nil
                    scheduler.resume(other, returning: (), placement: .back)
                }
            }
        }
    }
    precondition(box.switches == rounds * 2, "park/resume: \(box.switches) switches")
    return Double(elapsed) / Double(rounds * 2)
}

// MARK: Yield

func measureYield(total: Int, coroutines: Int) -> Double {
    let box = Box(0)
    let each = total / coroutines
    let elapsed = timedRun { scheduler in
        for _ in 0..<coroutines {
            scheduler.spawn {
                for _ in 0..<each { await scheduler.yield() }
                box.state &+= each
            }
        }
    }
    precondition(box.state == each * coroutines)
    return Double(elapsed) / Double(each * coroutines)
}

// MARK: Direct call

@inline(never)
func callee(_ x: Int) async throws -> Int { x &+ 1 }

func measureDirectCall(calls: Int) -> Double {
    let box = Box(0)
    let elapsed = timedRun { scheduler in
        scheduler.spawn {
            var x = 0
            for _ in 0..<calls { x = try await callee(x) }
            box.state = x
        }
    }
    precondition(box.state == calls)
    return Double(elapsed) / Double(calls)
}

// MARK: Spawn and join

func measureSpawnAndJoin(count: Int) -> Double {
    let box = Box(0)
    let elapsed = timedRun { scheduler in
        scheduler.spawn {
            var sum = 0
            for _ in 0..<count { sum &+= try await scheduler.spawnAndJoin { 1 } }
            box.state = sum
        }
    }
    precondition(box.state == count)
    return Double(elapsed) / Double(count)
}

func measureSpawnThenJoin(count: Int) -> Double {
    let box = Box(0)
    let elapsed = timedRun { scheduler in
        scheduler.spawn {
            var sum = 0
            for _ in 0..<count {
                let child = scheduler.spawn { 1 }
                sum &+= try await child.join()
            }
            box.state = sum
        }
    }
    precondition(box.state == count)
    return Double(elapsed) / Double(count)
}

// MARK: Nop

func measureNop(total: Int, coroutines: Int, backend: Backend = .ioUring) -> Double {
    let box = Box(0)
    let each = total / coroutines
    let elapsed = timedRun(backend) { scheduler in
        for _ in 0..<coroutines {
            scheduler.spawn {
                for _ in 0..<each { try await scheduler.nop() }
                box.state &+= each
            }
        }
    }
    precondition(box.state == each * coroutines)
    return Double(elapsed) / Double(each * coroutines)
}

// MARK: Timers

/// What each of the coroutines of `measureTimers` does.
enum TimerWorkload {
    /// Sleeps 1...50 ms: a timer scheduled in the heap and fired by the loop.
    case sleep
    /// Parks, and is resumed by a driver coroutine in the order the sleepers' deadlines
    /// would wake them: everything a sleeper costs except its timer (the baseline the
    /// timer's own cost is measured against), including the cache misses of resuming
    /// 100k tasks in an order unrelated to their place in memory.
    case parkResumedInDeadlineOrder
    /// Returns at once.
    case none
}

/// Thread CPU nanoseconds per coroutine for `count` coroutines spawned by one root
/// coroutine on the loop (the normal way), each doing `workload`.
func measureTimers(count: Int, workload: TimerWorkload) -> Double {
    let scheduler = makeScheduler()
    let box = Box(0)
    let handles = Box<[Parked<Void>]>([])
    // The baseline's wake-up order (the sleepers' deadline order), computed before the
    // clock starts so that sorting is not counted against the baseline.
    var draw = LCG(seed: 0x5eed)
    let deadlines = (0..<count).map { _ in draw.next(in: 1...50) }
    let wakeOrder = workload == .parkResumedInDeadlineOrder
        ? (0..<count).sorted { (deadlines[$0], $0) < (deadlines[$1], $1) } : []
    handles.state.reserveCapacity(count)
    let start = threadCPUNanoseconds()
    scheduler.spawn {
        var random = LCG(seed: 0x5eed)
        for _ in 0..<count {
            switch workload {
            case .sleep:
                let milliseconds = random.next(in: 1...50)
                scheduler.spawn {
                    try await scheduler.sleep(for: .milliseconds(milliseconds))
                    box.state &+= 1
                }
            case .parkResumedInDeadlineOrder:
                _ = random.next(in: 1...50)
                scheduler.spawn {
                    try await scheduler.park { (parked: Parked<Void>) in handles.state.append(parked) }
                    box.state &+= 1
                }
            case .none:
                scheduler.spawn { box.state &+= 1 }
            }
        }
        if workload == .parkResumedInDeadlineOrder {
            // Queued behind the first steps of all the parkers: they have all parked by then.
            scheduler.spawn {
                for index in wakeOrder { scheduler.resume(handles.state[index], returning: ()) }
            }
        }
    }
    let report = scheduler.run()
    let elapsed = threadCPUNanoseconds() - start
    precondition(report.liveCoroutines == 0 && box.state == count, "timers: \(report), \(box.state) done")
    scheduler.shutdown()
    return Double(elapsed) / Double(count)
}
