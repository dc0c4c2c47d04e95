// CogenCompat rows (issue 5): cogen's Python API rebuilt on the core, measured like the
// core rows: a fresh compat scheduler per repetition, run on this (the main) thread, its
// ring set up before the clock starts.
import CogenCompat
import CogenUring
import Glibc

func compatBenchmarks() -> [Benchmark] { [
    Benchmark(name: "compat Call", unit: "ns/call") { measureCompatCall(calls: scaled(10_000_000, $0)) },
    Benchmark(name: "compat OldCall", unit: "ns/call") { measureCompatOldCall(calls: scaled(200_000, $0)) },
    Benchmark(name: "compat yield(op), trivial op", unit: "ns/op") { measureCompatTrivialOperation(count: scaled(2_000_000, $0)) },
    Benchmark(name: "compat bare yield", unit: "ns/yield") { measureCompatBareYield(total: scaled(600_000, $0), coroutines: 1) },
    Benchmark(name: "compat bare yield (2 coroutines)", unit: "ns/yield") { measureCompatBareYield(total: scaled(600_000, $0), coroutines: 2) },
    Benchmark(name: "compat Signal → 1 waiter", unit: "ns/signal") { measureCompatSignal(rounds: scaled(200_000, $0), waiters: 1) },
    Benchmark(name: "compat Signal → 1000 waiters", unit: "ns/signal", decimals: 0) { measureCompatSignal(rounds: scaled(400, $0), waiters: 1000) },
] }

func compatDerivedRows() -> [Derived] { [
    Derived(name: "compat OldCall / Call", unit: "ratio", target: 20, atLeast: true,
            inputs: ("compat OldCall", "compat Call"), combine: { $0 / $1 }),
    Derived(name: "compat yield(op) / Call", unit: "ratio", decimals: 2,
            inputs: ("compat yield(op), trivial op", "compat Call"), combine: { $0 / $1 }),
    Derived(name: "compat Signal → 1000 waiters, per waiter", unit: "ns/waiter",
            inputs: ("compat Signal → 1000 waiters", "compat Signal → 1000 waiters"),
            combine: { a, _ in a / 1000 }, note: "per-rep ns per signal / 1000"),
] }

/// A fresh compat scheduler (default priority LAST, no default timeout, io_uring) for one
/// repetition.
func makeCompatScheduler() -> CogenCompat.Scheduler {
    do {
        return try CogenCompat.Scheduler(backend: .ioUring)
    } catch {
        writeStandardError("cogen-bench: cannot create a compat scheduler: \(error)\n")
        exit(1)
    }
}

/// Adds with `body`, runs the scheduler to idle, shuts it down; wall nanoseconds of add
/// plus run.
func timedCompatRun(_ body: (CogenCompat.Scheduler) -> Void) -> UInt64 {
    let scheduler = makeCompatScheduler()
    let start = wallNanoseconds()
    body(scheduler)
    let report = scheduler.run()
    let elapsed = wallNanoseconds() - start
    precondition(report.liveCoroutines == 0, "coroutines left behind: \(report)")
    scheduler.shutdown()
    return elapsed
}

// MARK: Call and OldCall

/// `try await Call { f(x) }` from a lone coroutine (empty run queue: no yield before the
/// callee); `f` is the non-inlined `callee` of the `direct call` row.
func measureCompatCall(calls: Int) -> Double {
    let box = Box(0)
    let elapsed = timedCompatRun { scheduler in
        scheduler.add {
            var x = 0
            for _ in 0..<calls { x = try await Call { try await callee(x) } }
            box.state = x
            return nil
        }
    }
    precondition(box.state == calls)
    return Double(elapsed) / Double(calls)
}

/// `try await yield(OldCall { 1 })` from a lone coroutine: an operation object, a new
/// coroutine (task) for the callee, the caller parked until the callee ends.
func measureCompatOldCall(calls: Int) -> Double {
    let box = Box(0)
    let elapsed = timedCompatRun { scheduler in
        scheduler.add {
            var sum = 0
            for _ in 0..<calls { sum &+= try await yield(OldCall { 1 }) }
            box.state = sum
            return nil
        }
    }
    precondition(box.state == calls)
    return Double(elapsed) / Double(calls)
}

// MARK: yield(op)

/// An operation that returns at once: what `yield(op)` itself costs (allocating the
/// operation included).
final class TrivialOperation: CogenCompat.Operation<Int>, @unchecked Sendable {
    let value: Int
    init(_ value: Int) {
        self.value = value
        super.init()
    }
    override func process(_ scheduler: CogenCompat.Scheduler, _ coroutine: CoroutineInstance) async throws -> Int {
        value &+ 1
    }
}

func measureCompatTrivialOperation(count: Int) -> Double {
    let box = Box(0)
    let elapsed = timedCompatRun { scheduler in
        scheduler.add {
            var x = 0
            for _ in 0..<count { x = try await yield(TrivialOperation(x)) }
            box.state = x
            return nil
        }
    }
    precondition(box.state == count)
    return Double(elapsed) / Double(count)
}

// MARK: Bare yield

func measureCompatBareYield(total: Int, coroutines: Int) -> Double {
    let box = Box(0)
    let each = total / coroutines
    let elapsed = timedCompatRun { scheduler in
        for _ in 0..<coroutines {
            scheduler.add {
                for _ in 0..<each { await yield() }
                box.state &+= each
                return nil
            }
        }
    }
    precondition(box.state == each * coroutines)
    return Double(elapsed) / Double(each * coroutines)
}

// MARK: Signal

final class SignalRun: @unchecked Sendable {
    var done = false
    var woken = 0
    var elapsed: UInt64 = 0
}

/// `waiters` coroutines wait for a signal in a loop; one signaler signals `rounds` times.
/// Wall nanoseconds per signal, timed inside the signaler from the moment all the waiters
/// first wait (adding and starting them is not counted) to the end of the last round:
/// the signal's delivery, the waiters' resumes, and each waiter's next
/// `yield(WaitForSignal)`. Under the default priority LAST the woken waiters and then the
/// signaler go to the back, so every waiter waits again before the next signal (checked:
/// each signal must wake them all).
func measureCompatSignal(rounds: Int, waiters: Int) -> Double {
    let run = SignalRun()
    let name = 1
    _ = timedCompatRun { scheduler in
        for _ in 0..<waiters {
            scheduler.add {
                while true {
                    _ = try await yield(WaitForSignal(name))
                    if run.done { break }
                }
                return nil
            }
        }
        scheduler.add {
            // Delivered once every waiter waits: the untimed set-up round.
            let first = try await yield(Signal(name, recipients: waiters))
            precondition(first == waiters)
            let start = wallNanoseconds()
            var woken = 0
            for _ in 0..<rounds { woken &+= try await yield(Signal(name)) }
            run.elapsed = wallNanoseconds() - start
            run.woken = woken
            run.done = true
            _ = try await yield(Signal(name))
            return nil
        }
    }
    precondition(run.woken == rounds * waiters, "signal: \(run.woken) woken, expected \(rounds * waiters)")
    return Double(run.elapsed) / Double(rounds)
}
