import CogenCompat
import CogenUring
import Foundation
import Glibc
import Testing

/// One test per item of decisions.md that is not a run-order table (those are in
/// EventsRunOrderTests and CogenScenarioTests; socket and queue items in their suites).
@Suite("decisions.md")
struct DecisionsTests {
    /// Item 1: the constants and their bits.
    @Test("priority constants")
    func priorities() {
        #expect(priority.DEFAULT.rawValue == -1 && priority.LAST.rawValue == 0)
        #expect(priority.CORO.rawValue == 1 && priority.OP.rawValue == 2 && priority.FIRST.rawValue == 3)
        #expect(priority.CORO.favoursCoroutine && !priority.CORO.favoursOperation)
        #expect(priority.OP.favoursOperation && !priority.OP.favoursCoroutine)
        #expect(priority.FIRST.favoursCoroutine && priority.FIRST.favoursOperation)
        #expect(priority.NOPRIO == priority.LAST && priority.PRIO == priority.FIRST)
    }

    /// Item 2: several coroutines pushed to the front end up in reverse order; a bare yield
    /// goes to the back.
    @Test("front pushes reverse, bare yield goes back", arguments: allBackends)
    func frontPushes(engine: Engine) async throws {
        let log = Log([])
        try await runCompat(engine) { sched in
            for name in ["a", "b", "c"] {
                sched.add(first: false) {
                    log.value.append(name)
                    return nil
                }
            }
        }
        #expect(log.value == ["c", "b", "a"])
    }

    /// Item 6: an unhandled error in a top-level coroutine goes to the error hook, the
    /// scheduler runs the others; the handle keeps the error.
    @Test("unhandled errors reach the hook, the others keep running", arguments: allBackends)
    func errorHook(engine: Engine) async throws {
        struct Boom: Error {}
        let log = Log([])
        let failed = Shared<CoroutineInstance?>(nil)
        try await runCompat(engine) { sched in
            sched.errorHandler = { exception in
                log.value.append("hook: \(exception.coroutine.name) \(exception.error is Boom)")
            }
            failed.value = sched.add("bad") {
                await yield()
                throw Boom()
            }
            sched.add("good") {
                for i in 0..<3 {
                    log.value.append("good \(i)")
                    await yield()
                }
                return nil
            }
        }
        #expect(log.value == ["good 0", "hook: bad true", "good 1", "good 2"])
        #expect(failed.value?.state == .failed)
        #expect(failed.value?.exception?.error is Boom)
    }

    /// Item 6: the default hook's report (cogen's format) names the error, the coroutine
    /// and the operation it yielded last.
    @Test("the error report names the coroutine and the last operation", arguments: allBackends)
    func defaultReport(engine: Engine) async throws {
        struct Boom: Error, CustomStringConvertible { var description: String { "boom!" } }
        let report = Shared("")
        try await runCompat(engine) { sched in
            sched.errorHandler = { report.value = CogenCompat.Scheduler.errorReport($0) }
            sched.add("doomed") {
                try await yield(Sleep(0.001))
                throw Boom()
            }
        }
        let text = report.value
        #expect(text.contains("Exception happened during processing of coroutine."))
        #expect(text.contains("Boom: boom!"))
        #expect(text.contains("doomed"))
        #expect(text.contains("Last op: Sleep"))
        #expect(text.hasPrefix(String(repeating: "-", count: 40)))
    }

    /// Item 7: run() returns when only unbounded waits remain and reports them; shutdown()
    /// resumes them with a shutdown error.
    @Test("run() reports parked coroutines; shutdown() resumes them", arguments: allBackends)
    func runReturnsWithParked(engine: Engine) async throws {
        let log = Log([])
        let report = try await runCompat(engine, afterRun: { sched, report in
            log.value.append("run returned, \(report.parkedCoroutines) parked")
        }) { sched in
            for name in ["w1", "w2"] {
                sched.add {
                    do {
                        _ = try await yield(WaitForSignal("never"))
                    } catch is SchedulerShutdownError {
                        log.value.append("\(name) shut down")
                    }
                    return nil
                }
            }
            sched.add {
                try await yield(Sleep(nil))  // never wakes
                return nil
            }
        }
        #expect(report.parkedCoroutines == 3)
        #expect(log.value == ["run returned, 3 parked", "w1 shut down", "w2 shut down"])
    }

    /// Item 10: Signal returns the number woken (0 when nobody waits).
    @Test("Signal returns the number woken", arguments: allBackends)
    func signalCount(engine: Engine) async throws {
        let counts = Shared<[Int]>([])
        try await runCompat(engine) { sched in
            for _ in 0..<3 {
                sched.add {
                    _ = try await yield(WaitForSignal(42))
                    return nil
                }
            }
            sched.add {
                counts.value.append(try await yield(Signal("nobody")))
                counts.value.append(try await yield(Signal(42)))
                return nil
            }
        }
        #expect(counts.value == [0, 3])
    }

    /// Item 14: a relative timeout counts from the moment the operation is yielded, not
    /// constructed.
    @Test("timeouts count from the yield", arguments: allBackends)
    func timeoutFromYield(engine: Engine) async throws {
        let waited = Shared<Duration>(.zero)
        try await runCompat(engine) { sched in
            sched.add {
                let wait = WaitForSignal("late", timeout: 0.2)
                try await yield(Sleep(0.3))
                let start = ContinuousClock.now
                do {
                    _ = try await yield(wait)
                } catch is OperationTimeout {
                    waited.value = ContinuousClock.now - start
                }
                return nil
            }
        }
        #expect(waited.value >= .milliseconds(150))
    }

    /// Item 15: Join with a timeout works: it returns the target's result before the
    /// deadline, or times out (and the target still finishes).
    @Test("Join with a timeout", arguments: allBackends)
    func joinTimeout(engine: Engine) async throws {
        let log = Log([])
        try await runCompat(engine) { sched in
            let quick = sched.add {
                try await yield(Sleep(0.01))
                return "quick"
            }
            let slow = sched.add {
                try await yield(Sleep(0.3))
                log.value.append("slow done")
                return "slow"
            }
            sched.add {
                let r = try await yield(Join(quick, timeout: 5))
                log.value.append("joined \(r as? String ?? "nil")")
                do {
                    _ = try await yield(Join(slow, timeout: 0.05))
                } catch let timeout as OperationTimeout {
                    log.value.append("timed out on \((timeout.operation as? Join)?.target === slow)")
                }
                return nil
            }
        }
        #expect(log.value == ["joined quick", "timed out on true", "slow done"])
    }

    /// Item 16: joining a finished coroutine returns its result at once; a failed one gives
    /// nil with the error kept on the handle.
    @Test("Join on a finished coroutine", arguments: allBackends)
    func joinFinished(engine: Engine) async throws {
        struct Boom: Error {}
        let log = Log([])
        try await runCompat(engine) { sched in
            sched.errorHandler = { _ in }
            let done = sched.add { 7 }
            let failed = sched.add { () async throws -> (any Sendable)? in throw Boom() }
            sched.add {
                try await yield(Sleep(0.01))
                log.value.append("states \(done.state) \(failed.state)")
                log.value.append("done → \(try await yield(Join(done)) as? Int ?? -1)")
                log.value.append("failed → \(try await yield(Join(failed)) as Any), \(failed.exception?.error is Boom)")
                log.value.append("done is now \(done.state), failed is now \(failed.state)")
                return nil
            }
        }
        #expect(log.value == [
            "states completed failed", "done → 7", "failed → nil, true",
            "done is now finalized, failed is now finalized",
        ])
    }

    /// cogen-semantics.md §3.2 and §3.6: a coroutine that fails while joined is FINALIZED
    /// once its joiners are resumed (they get `nil`, the error stays on the handle); one
    /// nobody joins stays FAILED. Under LAST (cogen's run order): the last joiner continues at
    /// once, the other goes to the back, behind "alone".
    @Test("a failed coroutine is finalized by its joiners, failed without", arguments: allBackends)
    func failedAndJoined(engine: Engine) async throws {
        struct Boom: Error {}
        let log = Log([])
        let joined = Shared<CoroutineInstance?>(nil)
        let alone = Shared<CoroutineInstance?>(nil)
        try await runCompat(engine) { sched in
            sched.errorHandler = { exception in log.value.append("hook \(exception.coroutine.name)") }
            let target = sched.add("joined") { () async throws -> (any Sendable)? in
                await yield()
                throw Boom()
            }
            joined.value = target
            alone.value = sched.add("alone") { () async throws -> (any Sendable)? in
                await yield()
                throw Boom()
            }
            for name in ["J1", "J2"] {
                sched.add(name) {
                    let value = try await yield(Join(target))
                    log.value.append("\(name) → \(value as Any), \(target.state), \(target.exception?.error is Boom)")
                    return nil
                }
            }
        }
        #expect(log.value == [
            "hook joined", "J2 → nil, finalized, true", "hook alone", "J1 → nil, finalized, true",
        ])
        #expect(joined.value?.state == .finalized)
        #expect(joined.value?.exception?.error is Boom)
        #expect(alone.value?.state == .failed)
        #expect(alone.value?.exception?.error is Boom)
    }

    /// Item 17: a wait whose signal came in just before its deadline gets the value; the
    /// expired deadline neither kills the coroutine nor crashes the scheduler.
    @Test("completion beats a deadline that passes before the resume", arguments: allBackends)
    func completionDeadlineRace(engine: Engine) async throws {
        let log = Log([])
        try await runCompat(engine) { sched in
            sched.add {
                let value = try await yield(WaitForSignal("race", timeout: 0.1))
                log.value.append("waiter got \(value as? String ?? "nil")")
                return nil
            }
            sched.add {
                // The waiter, added first, is parked by now. CORO: the signaler goes on
                // first, and holds the thread well past the waiter's deadline before the
                // waiter is resumed.
                _ = try await yield(Signal("race", value: "v", prio: priority.CORO))
                usleep(250_000)
                log.value.append("signaler done")
                return nil
            }
        }
        #expect(log.value == ["signaler done", "waiter got v"])
    }

    /// Item 18: an operation that cannot be processed is thrown into its coroutine.
    @Test("no coroutine is lost", arguments: allBackends)
    func noLostCoroutine(engine: Engine) async throws {
        final class Nothing: CogenCompat.Operation<Int>, @unchecked Sendable {}
        let log = Log([])
        try await runCompat(engine) { sched in
            sched.add {
                do {
                    _ = try await yield(Nothing())
                } catch is UnsupportedOperation {
                    log.value.append("thrown in")
                }
                return nil
            }
        }
        #expect(log.value == ["thrown in"])
    }

    /// Item 19: a coroutine that keeps yielding while alone does not starve timers.
    @Test("a yielding loop does not starve timers", arguments: allBackends)
    func noTimerStarvation(engine: Engine) async throws {
        let flag = Shared(false)
        let spins = Shared(0)
        try await runCompat(engine, bound: .seconds(20)) { sched in
            sched.add {
                try await yield(Sleep(0.05))
                flag.value = true
                return nil
            }
            sched.add {
                while !flag.value {
                    spins.value += 1
                    await yield()
                }
                return nil
            }
        }
        #expect(flag.value)
        #expect(spins.value > 0)
    }

    /// Item 20: with only timers pending the loop sleeps in the kernel: a 300 ms sleep costs
    /// the loop thread little CPU.
    @Test("only timers pending: the loop sleeps", arguments: allBackends)
    func sleepsInKernel(engine: Engine) async throws {
        let cpu = Shared<Double>(0)
        try await runCompat(engine) { sched in
            let before = threadCPUSeconds()
            sched.add {
                try await yield(Sleep(0.3))
                cpu.value = threadCPUSeconds() - before
                return nil
            }
        }
        #expect(cpu.value < 0.1, "loop thread CPU during a 300 ms sleep: \(cpu.value) s")
    }
}

/// CPU time of the calling thread, in seconds (CLOCK_THREAD_CPUTIME_ID).
func threadCPUSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}
