@testable import CogenUring
import Foundation
import Synchronization
import Testing

@Suite(.enabled(if: ioUringUsable, "io_uring is refused by this kernel (on CI these tests run and fail instead)"))
struct TimerTests {
    @Test(arguments: allBackends)
    func timersFireInDeadlineOrder(_ backend: Engine) async throws {
        let log = Log([])
        try await runScheduler(backend) { scheduler in
            // Deadlines fixed here, from one instant, so that the order does not depend on
            // how fast the coroutines' first steps run (under ThreadSanitizer on a loaded
            // machine they took longer than 30 ms; `.after` and `.at` clamp a passed
            // deadline to the moment of the call).
            let start = monotonicNanoseconds()
            for (name, ms) in [("c", 30), ("a", 10), ("b", 20), ("a2", 10), ("zero", 0)] {
                let deadline = Deadline(nanoseconds: start + UInt64(ms) * 1_000_000)
                scheduler.spawn {
                    try await scheduler.sleep(until: deadline)
                    log.value.append(name)
                }
            }
        }
        // Equal deadlines fire in the order they were set.
        #expect(log.value == ["zero", "a", "a2", "b", "c"])
    }

    @Test(arguments: allBackends)
    func hundredThousandConcurrentSleepers(_ backend: Engine) async throws {
        let woken = Box<[UInt64]>([])
        let report = try await runScheduler(backend, bound: .seconds(60)) { scheduler in
            var seed: UInt64 = 42
            woken.value.reserveCapacity(100_000)
            for _ in 0..<100_000 {
                seed = seed &* 6364136223846793005 &+ 1442695040888963407
                let ms = Int(seed >> 33) % 200 + 1
                scheduler.spawn {
                    let deadline = Deadline.after(.milliseconds(ms))
                    try await scheduler.sleep(until: deadline)
                    woken.value.append(UInt64(ms))
                    _ = deadline
                }
            }
        }
        #expect(report.reason == .idle)
        #expect(woken.value.count == 100_000)
    }

    @Test(arguments: allBackends, [Duration.zero, .microseconds(500)])
    func sleepsNeverWakeEarly(_ backend: Engine, slack: Duration) async throws {
        let early = Box(0)
        try await runScheduler(backend, configure: { $0.timerSlack = slack }) { scheduler in
            for i in 0..<50 {
                scheduler.spawn {
                    let length = Duration.microseconds(200 * (i % 10 + 1))
                    let started = ContinuousClock.now
                    try await scheduler.sleep(for: length)
                    if ContinuousClock.now - started < length { early.value += 1 }
                }
            }
        }
        #expect(early.value == 0)
    }

    /// A waiter's timer entry outlives its park and is reused by its next park with a later
    /// deadline (lazy timers): deadlines are still exact, an earlier deadline still fires
    /// on time, and parks whose waits ended leave nothing that keeps the loop from idling.
    @Test(arguments: allBackends)
    func parksReuseTheirTimerEntryAndDeadlinesStayExact(_ backend: Engine) async throws {
        let outcome = Box<[String]>([])
        let elapsed = Box<Duration>(.zero)
        let started = ContinuousClock.now
        let report = try await runScheduler(backend) { scheduler in
            scheduler.spawn {
                // 2,000 parks with a far deadline, each resumed before it (as a connection's
                // idle wait is, request after request).
                for i in 0..<2_000 {
                    let value: Int = try await scheduler.park(deadline: .after(.seconds(30))) { parked in
                        scheduler.resume(parked, returning: i)
                    }
                    if value != i { outcome.value.append("wrong value \(value)") }
                }
                // A park nobody resumes: `expired` once its whole deadline has passed.
                func expiry(after duration: Duration, expired: String) async throws -> String {
                    let before = ContinuousClock.now
                    do {
                        let _: Int = try await scheduler.park(deadline: .after(duration)) { _ in }
                        return "not expired"
                    } catch is TimeoutError {
                        let waited = ContinuousClock.now - before
                        return waited >= duration ? expired : "early \(waited)"
                    }
                }
                // Then an earlier deadline than the kept entry's: it fires on time.
                outcome.value.append(try await expiry(after: .milliseconds(20), expired: "expired"))
                // A later deadline on a kept entry (due in 20 ms) expires too: the entry is
                // filed again when it comes due, and the wait never ends early.
                let _: Int = try await scheduler.park(deadline: .after(.milliseconds(20))) { parked in
                    scheduler.resume(parked, returning: 0)
                }
                outcome.value.append(try await expiry(after: .milliseconds(60), expired: "refiled"))
            }
        }
        elapsed.value = ContinuousClock.now - started
        #expect(outcome.value == ["expired", "refiled"])
        // Idle once the coroutine ended: the far deadlines' entries do not hold the loop
        // (a bound, not a speed: the entries are due in 30 s).
        #expect(report.reason == .idle)
        #expect(elapsed.value < .seconds(20))
    }

    @Test(arguments: allBackends)
    func sleepingOnlyWaitsInTheKernel(_ backend: Engine) async throws {
        // With only a timer pending the loop blocks until the deadline: a handful of
        // passes, not a busy wait.
        let passes = Box(0)
        try await runScheduler(backend, afterRun: { scheduler, _ in passes.value = scheduler.counters.passes }) { scheduler in
            scheduler.spawn { try await scheduler.sleep(for: .milliseconds(50)) }
        }
        #expect(passes.value < 10)
    }
}

@Suite(.enabled(if: ioUringUsable, "io_uring is refused by this kernel (on CI these tests run and fail instead)"))
struct SignalTests {
    @Test(arguments: allBackends)
    func signalWithNoWaitersWakesNobody(_ backend: Engine) async throws {
        let counts = Box<[Int]>([])
        try await runScheduler(backend) { scheduler in
            scheduler.spawn {
                counts.value.append(scheduler.signal("nobody", value: 1))
                counts.value.append(Signal<Int>().signal(1))
            }
        }
        #expect(counts.value == [0, 0])
    }

    @Test(arguments: allBackends)
    func signalWithOneAndManyWaiters(_ backend: Engine) async throws {
        let log = Log([])
        try await runScheduler(backend) { scheduler in
            scheduler.spawn {
                let v = try await scheduler.wait(forSignal: "one")
                log.value.append("one:\(v)")
            }
            for i in 0..<5 {
                scheduler.spawn {
                    let v = try await scheduler.wait(forSignal: "many")
                    log.value.append("many\(i):\(v)")
                }
            }
            scheduler.spawn {
                log.value.append("woke \(scheduler.signal("one", value: "x"))")
                log.value.append("woke \(scheduler.signal("many", value: 2, recipients: 2))")
                log.value.append("woke \(scheduler.signal("many", value: 3))")
                log.value.append("woke \(scheduler.signal("many", value: 4))")
            }
        }
        #expect(log.value == [
            "woke 1", "woke 2", "woke 3", "woke 0",
            "one:x", "many0:2", "many1:2", "many2:3", "many3:3", "many4:3",
        ])
    }

    @Test(arguments: allBackends)
    func waitForSignalTimesOut(_ backend: Engine) async throws {
        let log = Log([])
        try await runScheduler(backend) { scheduler in
            scheduler.spawn {
                do {
                    _ = try await scheduler.wait(forSignal: "never", deadline: .after(.milliseconds(10)))
                } catch let error as TimeoutError {
                    log.value.append("timeout: \(error.operation)")
                }
                // The timed-out waiter is gone: a later signal wakes nobody.
                log.value.append("woke \(scheduler.signal("never", value: 1))")
            }
        }
        #expect(log.value == ["timeout: wait for signal", "woke 0"])
    }

    @Test(arguments: allBackends)
    func abandonedWaitsLeaveNothingBehind(_ backend: Engine) async throws {
        let leftover = Box(-1)
        try await runScheduler(backend, afterRun: { s, _ in leftover.value = s.namedSignals.count }) { scheduler in
            let signal = Signal<Int>()
            let done = Box(0)
            for i in 0..<200 {
                scheduler.spawn {
                    _ = try? await scheduler.wait(forSignal: "unique-\(i)", deadline: .after(.milliseconds(1)))
                    _ = try? await signal.wait(deadline: .after(.milliseconds(1)))
                    done.value += 1
                }
            }
            scheduler.spawn {
                while done.value < 200 { try await scheduler.sleep(for: .milliseconds(1)) }
                #expect(!signal.hasWaiters)
            }
        }
        #expect(leftover.value == 0)
    }

    @Test(arguments: allBackends)
    func runReportsParkedCoroutines(_ backend: Engine) async throws {
        let errors = Box(0)
        let (report, final) = try await runSchedulerWithShutdown(backend) { scheduler in
            for _ in 0..<3 {
                scheduler.spawn {
                    do { _ = try await scheduler.wait(forSignal: "forever") } catch is SchedulerShutdownError {
                        errors.value += 1
                    }
                }
            }
        }
        #expect(report == .init(reason: .idle, parkedCoroutines: 3, liveCoroutines: 3))
        #expect(errors.value == 3)
        #expect(final.parkedCoroutines == 0 && final.liveCoroutines == 0)
    }
}

@Suite(.enabled(if: ioUringUsable, "io_uring is refused by this kernel (on CI these tests run and fail instead)"))
struct JoinTests {
    @Test(arguments: allBackends)
    func joinBeforeAndAfterTheTargetFinishes(_ backend: Engine) async throws {
        let log = Log([])
        try await runScheduler(backend) { scheduler in
            let target = scheduler.spawn("target") { () -> Int in
                try await scheduler.sleep(for: .milliseconds(5))
                return 7
            }
            scheduler.spawn {
                log.value.append("before:\(try await target.join())")
                #expect(target.state == .completed)
                log.value.append("after:\(try await target.join())")
                log.value.append("result:\(target.result ?? -1)")
            }
        }
        #expect(log.value == ["before:7", "after:7", "result:7"])
    }

    @Test(arguments: allBackends)
    func joinWithDeadline(_ backend: Engine) async throws {
        let log = Log([])
        try await runScheduler(backend) { scheduler in
            let slow = scheduler.spawn { () -> Int in
                try await scheduler.sleep(for: .milliseconds(50))
                return 1
            }
            let fast = scheduler.spawn { () -> Int in 2 }
            scheduler.spawn {
                do {
                    _ = try await slow.join(deadline: .after(.milliseconds(5)))
                    log.value.append("no timeout")
                } catch is TimeoutError {
                    log.value.append("timeout; slow is \(slow.state)")
                }
                log.value.append("fast:\(try await fast.join(deadline: .after(.seconds(5))))")
                log.value.append("slow:\(try await slow.join(deadline: .after(.seconds(5))))")
            }
        }
        #expect(log.value == ["timeout; slow is running", "fast:2", "slow:1"])
    }

    @Test(arguments: allBackends)
    func joinOnAFailedCoroutineRethrows(_ backend: Engine) async throws {
        struct Boom: Error {}
        let log = Log([])
        try await runScheduler(backend, configure: { _ in }) { scheduler in
            scheduler.errorHandler = { _, _ in }
            let failing = scheduler.spawn { () -> Int in throw Boom() }
            scheduler.spawn {
                do { _ = try await failing.join() } catch is Boom { log.value.append("boom") }
                #expect(failing.state == .failed)
                #expect(failing.error is Boom)
                do { _ = try await failing.join() } catch is Boom { log.value.append("boom again") }
            }
        }
        #expect(log.value == ["boom", "boom again"])
    }
}

@Suite(.enabled(if: ioUringUsable, "io_uring is refused by this kernel (on CI these tests run and fail instead)"))
struct ErrorTests {
    struct Failure: Error, Equatable { let code: Int }

    @inline(never)
    static func failingCallee(_ code: Int) async throws -> Int { throw Failure(code: code) }

    @Test(arguments: allBackends)
    func errorsPropagateThroughDirectCallsAndSpawnAndJoin(_ backend: Engine) async throws {
        let log = Log([])
        let reported = Box<[String]>([])
        try await runScheduler(backend) { scheduler in
            scheduler.errorHandler = { info, error in reported.value.append("\(info): \(error)") }
            scheduler.spawn("caller") {
                do { _ = try await Self.failingCallee(1) } catch let f as Failure { log.value.append("direct \(f.code)") }
                do {
                    _ = try await scheduler.spawnAndJoin { () -> Int in
                        await scheduler.yield()
                        throw Failure(code: 2)
                    }
                } catch let f as Failure { log.value.append("spawned \(f.code)") }
                let v = try await scheduler.spawnAndJoin { 40 + 2 }
                log.value.append("value \(v)")
            }
        }
        #expect(log.value == ["direct 1", "spawned 2", "value 42"])
        // Errors handled by the caller never reach the handler.
        #expect(reported.value.isEmpty)
    }

    @Test(arguments: allBackends)
    func topLevelErrorGoesToTheHandlerAndOthersKeepRunning(_ backend: Engine) async throws {
        let log = Log([])
        let reported = Box<[String]>([])
        try await runScheduler(backend) { scheduler in
            scheduler.errorHandler = { info, error in reported.value.append("\(info.name ?? "?"): \(error)") }
            scheduler.spawn("bad") {
                await scheduler.yield()
                throw Failure(code: 9)
            }
            scheduler.spawn("good") {
                for i in 0..<3 {
                    log.value.append("good \(i)")
                    await scheduler.yield()
                }
            }
        }
        #expect(log.value == ["good 0", "good 1", "good 2"])
        #expect(reported.value == ["bad: Failure(code: 9)"])
    }
}

@Suite(.enabled(if: ioUringUsable, "io_uring is refused by this kernel (on CI these tests run and fail instead)"))
struct ThreadTests {
    @Test(arguments: allBackends)
    func spawnsAndStopFromOtherThreads(_ backend: Engine) async throws {
        var configuration = Scheduler.Configuration()
        backend.configure(&configuration)
        let scheduler = try Scheduler(configuration: configuration)
        let count = Box(0)
        let done = Signal<Int>()
        try scheduler.start()
        let threads = (0..<4).map { _ in
            Thread {
                for _ in 0..<250 {
                    scheduler.spawn { count.value += 1 }
                }
            }
        }
        threads.forEach { $0.start() }
        // Wait (off the cooperative pool) until every spawn has run.
        let allRan = Flag()
        let waiter = Thread {
            let limit = ContinuousClock.now + .seconds(20)
            while ContinuousClock.now < limit {
                let seen = PthreadLock(0)  // seen by ThreadSanitizer, unlike `Mutex`
                let ready = Flag()
                scheduler.execute {
                    seen.withLock { $0 = count.value }
                    ready.set()
                }
                while !ready.isSet { usleep(1000) }
                if seen.withLock({ $0 }) == 1000 { allRan.set(); break }
                usleep(5000)
            }
            scheduler.stop()
        }
        waiter.start()
        let report = await offThePool { scheduler.join() }
        _ = done
        #expect(allRan.isSet)
        #expect(report?.reason == .stopped)
        #expect(scheduler.counters.inboxItems >= 1000)
        scheduler.shutdown()
    }

    @Test(arguments: allBackends)
    func cancelResumeAndShutdownFromOtherThreads(_ backend: Engine) async throws {
        var configuration = Scheduler.Configuration()
        backend.configure(&configuration)
        let scheduler = try Scheduler(configuration: configuration)
        scheduler.errorHandler = { _, _ in }  // set before the loop runs
        try scheduler.start()
        // A watchdog: stopping shuts the scheduler down, which ends every wait below.
        let watchdog = DispatchWorkItem { scheduler.stop() }
        DispatchQueue.global().asyncAfter(deadline: .now() + 30, execute: watchdog)
        let handle = Box<Parked<Int>?>(nil)  // loop-confined
        let parked = Flag()
        // Spawned from this thread (not the loop's): through the inbox.
        let cancelled = scheduler.spawn { () -> Int in
            _ = try await scheduler.wait(forSignal: "never")
            return 0
        }
        let resumed = scheduler.spawn { () -> Int in
            try await scheduler.park { (parked_: Parked<Int>) in
                handle.value = parked_
                parked.set()
            }
        }
        let sleeper = scheduler.spawn { () -> Int in
            try await scheduler.sleep(for: .seconds(60))
            return 0
        }
        // A plain thread cancels one coroutine and resumes the other (on the loop, with
        // `execute`, the way to touch loop-confined state from elsewhere).
        Thread {
            cancelled.cancel()
            let limit = ContinuousClock.now + .seconds(20)
            while !parked.isSet && ContinuousClock.now < limit { usleep(1000) }
            scheduler.execute {
                if let parked = handle.value { scheduler.resume(parked, returning: 7) }
            }
        }.start()
        await #expect(throws: CancellationError.self) { try await cancelled.value }
        #expect(try await resumed.value == 7)
        // Shut down from this thread: the sleeper is resumed with the shutdown error. Its
        // state is read after the loop thread was joined.
        let report = await offThePool { scheduler.shutdown() }
        watchdog.cancel()
        #expect(sleeper.error is SchedulerShutdownError)
        #expect(report.liveCoroutines == 0)
    }

    @Test(arguments: allBackends)
    func valueOfACoroutineFromAnotherThread(_ backend: Engine) async throws {
        var configuration = Scheduler.Configuration()
        backend.configure(&configuration)
        let scheduler = try Scheduler(configuration: configuration)
        scheduler.errorHandler = { _, _ in }  // set before the loop runs
        try scheduler.start()
        defer { scheduler.shutdown() }
        let coroutine = scheduler.spawn { () -> Int in
            try await scheduler.sleep(for: .milliseconds(5))
            return 99
        }
        // Awaited from a task of the cooperative pool: joined on the scheduler's thread.
        let value = try await coroutine.value
        #expect(value == 99)
        struct Boom: Error {}
        let failing = scheduler.spawn { () -> Int in throw Boom() }
        await #expect(throws: Boom.self) { try await failing.value }
    }

    @Test(arguments: allBackends)
    func runStaysAliveForACoroutineAwaitingAnOutsideTask(_ backend: Engine) async throws {
        let log = Log([])
        let report = try await runScheduler(backend) { scheduler in
            scheduler.spawn {
                let outside = Task.detached { () -> Int in
                    try await Task.sleep(for: .milliseconds(50))
                    return 42
                }
                let v = try await outside.value
                #expect(scheduler.isOnLoop)
                log.value.append("got \(v)")
            }
        }
        #expect(log.value == ["got 42"])
        #expect(report.reason == .idle)
    }

    @Test(arguments: allBackends)
    func childTasksRunOnTheSchedulerThread(_ backend: Engine) async throws {
        let log = Log([])
        try await runScheduler(backend) { scheduler in
            scheduler.spawn {
                async let child: Bool = {
                    try await scheduler.sleep(for: .milliseconds(1))
                    return scheduler.isOnLoop
                }()
                let grouped = await withTaskGroup(of: Bool.self) { group in
                    for _ in 0..<3 { group.addTask { scheduler.isOnLoop } }
                    return await group.reduce(true) { $0 && $1 }
                }
                log.value.append("async let \(try await child), group \(grouped), self \(scheduler.isOnLoop)")
            }
        }
        #expect(log.value == ["async let true, group true, self true"])
    }

    @Test(arguments: allBackends)
    func yieldingCoroutineDoesNotStarveTimersOrIO(_ backend: Engine) async throws {
        let log = Log([])
        let pipe = makePipe()
        defer { close(pipe.read); close(pipe.write) }
        try await runScheduler(backend) { scheduler in
            let timerFired = Box(false)
            let ioDone = Box(false)
            scheduler.spawn {
                try await scheduler.sleep(for: .milliseconds(10))
                timerFired.value = true
            }
            scheduler.spawn {
                _ = try await scheduler.poll(pipe.read, events: UInt32(POLLIN))
                ioDone.value = true
            }
            scheduler.spawn {
                while !(timerFired.value && ioDone.value) { await scheduler.yield() }
                log.value.append("both")
            }
            Thread {
                usleep(20_000)
                var byte: UInt8 = 1
                _ = write(pipe.write, &byte, 1)
            }.start()
        }
        #expect(log.value == ["both"])
    }
}

@Suite(.enabled(if: ioUringUsable, "io_uring is refused by this kernel (on CI these tests run and fail instead)"))
struct LifecycleTests {
    @Test(arguments: allBackends)
    func shutdownResumesEveryParkedCoroutine(_ backend: Engine) async throws {
        let outcomes = Box<[String]>([])
        let pipe = makePipe()
        defer { close(pipe.read); close(pipe.write) }
        let (report, final) = try await runSchedulerWithShutdown(backend) { scheduler in
            @Sendable func record(_ kind: String, _ body: @escaping @Sendable () async throws -> Void) {
                scheduler.spawn {
                    do { try await body(); outcomes.value.append("\(kind): returned") } catch is SchedulerShutdownError {
                        outcomes.value.append("\(kind): shutdown")
                    }
                }
            }
            scheduler.errorHandler = { _, _ in }
            let forever = scheduler.spawn { () -> Int in try await scheduler.park { (_: Parked<Int>) in } }
            record("signal") { _ = try await scheduler.wait(forSignal: "x") }
            record("join") { _ = try await forever.join() }
            record("poll") { _ = try await scheduler.poll(pipe.read, events: UInt32(POLLIN)) }
            record("sleep") { try await scheduler.sleep(for: .seconds(3600)) }
            record("park") { let _: Void = try await scheduler.park { _ in } }
            scheduler.spawn {
                await scheduler.yield()
                scheduler.stop()
            }
        }
        #expect(report.reason == .stopped)
        #expect(Set(outcomes.value) == [
            "signal: shutdown", "join: shutdown", "poll: shutdown", "sleep: shutdown", "park: shutdown",
        ])
        #expect(final.parkedCoroutines == 0)
        #expect(final.liveCoroutines == 0)
    }

    @Test(arguments: allBackends)
    func cancellingACoroutineResumesItsWait(_ backend: Engine) async throws {
        let log = Log([])
        let pipe = makePipe()
        defer { close(pipe.read); close(pipe.write) }
        let cancellations = Box(0)
        try await runScheduler(backend, afterRun: { s, _ in cancellations.value = s.counters.cancellations }) { scheduler in
            let polling = scheduler.spawn {
                do { _ = try await scheduler.poll(pipe.read, events: UInt32(POLLIN)) } catch is CancellationError {
                    log.value.append("poll cancelled")
                }
            }
            let waiting = scheduler.spawn {
                do { _ = try await scheduler.wait(forSignal: "s") } catch is CancellationError {
                    log.value.append("wait cancelled")
                }
            }
            let sleeping = scheduler.spawn {
                do { try await scheduler.sleep(for: .seconds(60)) } catch is CancellationError {
                    log.value.append("sleep cancelled")
                }
            }
            scheduler.spawn {
                await scheduler.yield()
                polling.cancel()
                waiting.cancel()
                sleeping.cancel()
            }
        }
        #expect(Set(log.value) == ["poll cancelled", "wait cancelled", "sleep cancelled"])
        #expect(cancellations.value == 1)
    }

    @Test(arguments: allBackends)
    func cancelFromAnotherThreadBeforeTheCoroutineParks(_ backend: Engine) async throws {
        let log = Log([])
        try await runScheduler(backend) { scheduler in
            let target = scheduler.spawn {
                do { _ = try await scheduler.wait(forSignal: "never") } catch is CancellationError {
                    log.value.append("cancelled")
                }
            }
            target.cancel()  // from this (non-loop) thread, before the coroutine ever ran
        }
        #expect(log.value == ["cancelled"])
    }
}

@Suite(.enabled(if: ioUringUsable, "io_uring is refused by this kernel (on CI these tests run and fail instead)"))
struct RingTests {
    @Test func kernelFeaturesAreProbed() {
        let features = KernelFeatures.current
        #expect(features.isAvailable)
        #expect(features.supportsOpcode(0))  // IORING_OP_NOP
        #expect(!features.description.isEmpty)
    }

    @Test func setupErrorsSayWhatHappened() throws {
        #expect(RingSetupError(errno: EPERM, operation: "io_uring_setup").description
            .contains("refused, e.g. by a seccomp profile or kernel.io_uring_disabled"))
        #expect(RingSetupError(errno: ENOMEM, operation: "io_uring_setup").description.contains("RLIMIT_MEMLOCK"))
        #expect(RingSetupError(errno: ENOSYS, operation: "io_uring_setup").description.contains("kernel too old"))
        var configuration = Scheduler.Configuration()
        configuration.backend = .ioUring  // `.automatic` would fall back to epoll instead
        configuration.ringEntries = 1 << 20  // above IORING_MAX_ENTRIES
        #expect {
            _ = try Scheduler(configuration: configuration)
        } throws: { error in
            (error as? RingSetupError)?.errno == EINVAL
        }
    }

    @Test func ringUsesTheModernFlagsWhenPresent() throws {
        let scheduler = try Scheduler()
        defer { scheduler.shutdown() }
        let features = KernelFeatures.current
        if features.deferTaskrun {
            #expect(scheduler.setupDescription.contains("SINGLE_ISSUER|DEFER_TASKRUN"))
        }
        var configuration = Scheduler.Configuration()
        configuration.useSingleIssuer = false
        let plain = try Scheduler(configuration: configuration)
        defer { plain.shutdown() }
        #expect(!plain.setupDescription.contains("SINGLE_ISSUER"))
    }

    @Test(arguments: [true, false])
    func survivesCompletionQueueOverflow(_ modern: Bool) async throws {
        let done = Box(0)
        let overflows = Box(0)
        try await runScheduler(allBackends[0], configure: {
            $0.ringEntries = 4
            $0.completionEntries = 8
            $0.useSingleIssuer = modern
        }, afterRun: { s, _ in overflows.value = s.counters.completionQueueOverflows }) { scheduler in
            for _ in 0..<2000 {
                scheduler.spawn {
                    try await scheduler.nop()
                    done.value += 1
                }
            }
        }
        #expect(done.value == 2000)
        #expect(overflows.value > 0)
    }

    @Test(arguments: [true, false])
    func staleCompletionDoesNotResumeTheSlotsNewOwner(_ modern: Bool) async throws {
        let log = Log([])
        let stale = Box(0)
        let pipe = makePipe()
        defer { close(pipe.read); close(pipe.write) }
        try await runScheduler(allBackends[0], configure: { $0.useSingleIssuer = modern },
                               afterRun: { s, _ in stale.value = s.counters.staleCompletions }) { scheduler in
            scheduler.spawn {
                // First operation of this scheduler: slot 0, generation 1.
                do {
                    _ = try await scheduler.poll(pipe.read, events: UInt32(POLLIN), deadline: .after(.milliseconds(5)))
                } catch is TimeoutError {
                    log.value.append("first timed out")
                }
                let oldUserData = UserData.make(index: 0, generation: 1)
                let second = scheduler.spawn {
                    // Reuses slot 0 with generation 2.
                    let events = try await scheduler.poll(pipe.read, events: UInt32(POLLIN))
                    log.value.append("second ready \(events & UInt32(POLLIN) != 0)")
                }
                await scheduler.yield()
                #expect(scheduler.inFlight.lookup(UserData.make(index: 0, generation: 2)) != nil)
                // A late completion carrying the first operation's user_data.
                scheduler.backend.submit(NopOperation(scheduler: scheduler), userData: oldUserData)
                try await scheduler.nop()
                try await scheduler.nop()
                log.value.append("second still parked \(second.state == .running)")
                var byte: UInt8 = 1
                _ = write(pipe.write, &byte, 1)
            }
        }
        #expect(log.value == ["first timed out", "second still parked true", "second ready true"])
        #expect(stale.value == 1)
    }
}

