import CogenUring
import Glibc

/// A fresh scheduler for one repetition; the ring is set up before the clock starts.
func makeScheduler() -> Scheduler {
    do {
        return try Scheduler()
    } catch {
        writeStandardError("cogen-bench: cannot create a scheduler: \(error)\n")
        exit(1)
    }
}

/// Spawns with `body`, runs the scheduler to idle, shuts it down; wall nanoseconds of
/// spawn plus run.
func timedRun(_ body: (Scheduler) -> Void) -> UInt64 {
    let scheduler = makeScheduler()
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
func measureParkResume(switches: Int) -> Double {
    let box = PingPong()
    let rounds = switches / 2
    let elapsed = timedRun { scheduler in
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

func measureNop(total: Int, coroutines: Int) -> Double {
    let box = Box(0)
    let each = total / coroutines
    let elapsed = timedRun { scheduler in
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

/// Thread CPU nanoseconds per coroutine for `count` coroutines that each sleep 1...50 ms
/// (`sleeping`), or that return at once (not `sleeping`).
func measureTimers(count: Int, sleeping: Bool) -> Double {
    let scheduler = makeScheduler()
    let box = Box(0)
    var random = LCG(seed: 0x5eed)
    let start = threadCPUNanoseconds()
    if sleeping {
        for _ in 0..<count {
            let milliseconds = random.next(in: 1...50)
            scheduler.spawn {
                try await scheduler.sleep(for: .milliseconds(milliseconds))
                box.state &+= 1
            }
        }
    } else {
        for _ in 0..<count {
            scheduler.spawn { box.state &+= 1 }
        }
    }
    let report = scheduler.run()
    let elapsed = threadCPUNanoseconds() - start
    precondition(report.liveCoroutines == 0 && box.state == count, "timers: \(report), \(box.state) done")
    scheduler.shutdown()
    return Double(elapsed) / Double(count)
}
