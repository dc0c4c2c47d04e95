import CURing
import Glibc
import Synchronization

/// A coroutine scheduler: one thread, one run queue, one I/O engine (an io_uring ring).
///
/// Coroutines are Swift tasks whose executor is the scheduler (it is a `TaskExecutor`), so
/// everything they run, including `async let` children and task groups, runs on the
/// scheduler's thread. A coroutine suspends by parking (waiting for a signal, a join, a
/// deadline, or a kernel operation's completion) and is resumed through one hook that
/// places it at the ``Placement/front`` or the ``Placement/back`` of the run queue.
///
/// Run it on the calling thread with ``run(untilStopped:)`` or on a thread of its own with
/// ``start()``. ``spawn(_:placement:_:)``, ``stop()`` and ``execute(_:)`` are safe from any
/// thread; everything else belongs to the scheduler's thread. Teardown is explicit: call
/// ``shutdown()``, which resumes every parked coroutine with ``SchedulerShutdownError``,
/// lets them finish, and closes the ring.
public final class Scheduler: TaskExecutor, @unchecked Sendable {
    // @unchecked Sendable: everything mutable below is confined to the loop thread (checked
    // by `assertOnLoop()`, one thread-local read), except the inbox (a PthreadLock) and the atomics.

    /// How a scheduler is set up.
    public struct Configuration: Sendable {
        /// The I/O engine.
        public var backend: Backend = .automatic
        /// Submission queue entries (`io_uring_setup` entries).
        public var ringEntries: UInt32 = 256
        /// Completion queue entries; default four times `ringEntries` and at least 4096
        /// (multishot streams post many completions per submission), never less than
        /// twice `ringEntries`.
        public var completionEntries: UInt32? = nil
        /// Most completions handled per loop pass, so a completion storm cannot starve the
        /// run queue.
        public var completionBatch: Int = 256
        /// Use `IORING_SETUP_SINGLE_ISSUER` when the kernel has it (6.0).
        public var useSingleIssuer = true
        /// Use `IORING_SETUP_DEFER_TASKRUN` when the kernel has it (6.1).
        public var useDeferTaskrun = true
        /// Use `IORING_SETUP_COOP_TASKRUN` when `DEFER_TASKRUN` is not used (5.19).
        public var useCoopTaskrun = true
        /// Accept with one multishot `IORING_OP_ACCEPT` per listener (5.19) when the kernel
        /// has it; `false` uses one accept SQE per connection (the 5.5 path).
        public var useMultishotAccept = true
        /// Receive with one multishot `IORING_OP_RECV` per connection into a shared ring
        /// of provided buffers (6.0) when the kernel has it; `false` uses one receive SQE
        /// per call into the socket's own buffer (the 5.x path).
        public var useProvidedBuffers = true
        /// Buffers in the shared receive ring (a power of two).
        public var receiveBufferCount = 1024
        /// Bytes per buffer of the shared receive ring (16 KiB: pipelined 4 KiB messages
        /// fill fewer buffers, and pause less often, than with 4 KiB buffers).
        public var receiveBufferSize = 16384
        /// The most ring buffers one connection holds: beyond them its chunks are copied to
        /// its own memory and the buffers go back to the ring.
        public var maxBuffersPerConnection = 16
        /// The most bytes a socket reads ahead of its coroutine: bytes taken from the kernel
        /// that no receive has asked for yet (held in ring buffers, copied out of them, or
        /// left over from exact and line reads). Default 64 KiB. Beyond it the data waits
        /// in the kernel's socket buffer and TCP flow control slows the peer down.
        ///
        /// On io_uring a multishot `IORING_OP_RECV` is armed with the room left under this
        /// limit as its byte limit (Linux 6.17; before, single receives from the ring), and
        /// armed again only once the coroutine has brought what is held to half of it. On
        /// epoll (and the 5.x paths) receives go straight to the caller; exact and line
        /// reads ask the kernel for at most what they need plus this limit.
        public var readAheadLimit = 65536
        /// Touch every page of the shared receive ring when it is made, so that its memory is
        /// resident from the start (a server measuring its growth; 16 MiB by default).
        public var prefaultReceiveBuffers = false
        /// A name for the thread ``start()`` creates and for error reports.
        public var name = "cogen"
        /// How late a deadline may fire so that deadlines close together share one
        /// wake-up of the loop (Linux's timer slack, for the loop's one kernel wait). No
        /// deadline ever fires early. Zero: wake for each deadline exactly.
        public var timerSlack: Duration = .microseconds(500)
        /// How long the loop keeps polling for completions once it has run out of work,
        /// before it sleeps in the kernel. Zero (the default): it sleeps at once.
        ///
        /// A loop that sleeps is woken for every event: on a VM that wake-up (an
        /// inter-processor interrupt, a context switch, cold caches) costs tens of
        /// microseconds of latency and CPU, most of a request at one connection. Spinning
        /// trades CPU for that latency, as glommio's `spin_before_park` does: a loop that is
        /// busy never spins (it always has work), and an idle one burns up to this much CPU
        /// per idle period before it sleeps. Never past the next timer, the inbox or a stop.
        /// On io_uring a spin is a read of the ring's shared flags and completion queue
        /// (`IORING_SQ_TASKRUN` says when completions wait for an `io_uring_enter`); on
        /// epoll every poll is an `epoll_wait` with a zero timeout, a system call.
        public var spinBeforeWait: Duration = .zero
        #if DEBUG
        /// Test builds only: faults to inject (see `FaultInjection.swift`).
        var faultInjection: FaultInjection? = nil
        #endif

        /// The defaults: io_uring, 256 SQ entries, every probed feature on.
        public init() {}
    }

    /// Why ``run(untilStopped:)`` returned, and what was left behind.
    public struct RunReport: Sendable, Equatable, CustomStringConvertible {
        /// Why the loop returned.
        public enum Reason: Sendable, Equatable {
            /// Nothing could make progress any more.
            case idle
            /// ``stop()`` was called.
            case stopped
        }
        /// Why the loop returned.
        public var reason: Reason
        /// Coroutines (and other tasks) still parked: on a signal, a join, a park without
        /// deadline. They stay parked; ``shutdown()`` resumes them.
        public var parkedCoroutines: Int
        /// Coroutines spawned and not finished.
        public var liveCoroutines: Int

        public var description: String {
            "\(reason == .idle ? "idle" : "stopped"), \(parkedCoroutines) parked, \(liveCoroutines) live"
        }
    }

    public let configuration: Configuration
    let backend: any IOBackend

    // MARK: Loop-confined state
    // Loop-confined and never accessed reentrantly: exempt from dynamic exclusivity
    // checks, which would otherwise cost a thread-local lookup per access on the hot path.
    @exclusivity(unchecked) var runQueue = JobQueue()
    /// The placement the next enqueue from the loop thread gets; set just before a
    /// continuation is resumed (the runtime enqueues synchronously inside `resume`).
    @usableFromInline @exclusivity(unchecked) var nextPlacement: Placement = .back
    @exclusivity(unchecked) var timers = TimerHeap()
    @exclusivity(unchecked) var inFlight = InFlightTable()
    @exclusivity(unchecked) var parkedCount = 0
    /// Multishot streams in flight, and coroutines parked on a socket waiting for what a
    /// stream delivers: an armed stream keeps `run()` alive only while someone waits.
    @exclusivity(unchecked) var streams = 0
    @exclusivity(unchecked) var streamWaiters = 0
    @usableFromInline @exclusivity(unchecked) var liveCoroutines = 0
    @exclusivity(unchecked) var shuttingDown = false
    /// A readiness backend (epoll): socket operations try their system call before they
    /// park (see `attemptInline`).
    let attemptsInline: Bool
    /// Operations the running job may still complete inline, at `.front`, before it must
    /// go through the run queue like any completion: a coroutine whose socket is always
    /// ready cannot keep the thread.
    @exclusivity(unchecked) var inlineBudget = 0
    static let inlineBudgetPerTurn = 16
    /// Live coroutines by their task, for parks to recognise them.
    @exclusivity(unchecked) var coroutinesByTask = TaskTable()
    /// Waiters not in use; they live as long as the scheduler (see `ParkedCoroutine`).
    @exclusivity(unchecked) var waiterPool: [ParkedCoroutine] = []
    /// Every waiter this scheduler made: what `shutdown()` looks through for parked ones
    /// (cheaper than keeping a list of the parked on every park and resume).
    @exclusivity(unchecked) var allWaiters: [ParkedCoroutine] = []
    /// The job being run, which for a task's job is the task itself (identity only): lets a
    /// park find its coroutine in `coroutinesByTask`.
    @exclusivity(unchecked) var runningTask: UnsafeRawPointer?
    var namedSignals: [AnyHashable: SignalList] = [:]
    private var activated = false
    private var ownerThread: pthread_t?
    private let completionBuffer: UnsafeMutableBufferPointer<Completion>
    private let timerSlack: UInt64
    /// `spinBeforeWait` in nanoseconds.
    private let spinNanoseconds: UInt64
    /// Multishot accept: asked for and offered by the kernel.
    let multishotAccept: Bool
    /// The shared receive buffers (multishot receive), made when the loop first runs.
    var bufferPool: BufferPool?
    /// `Configuration.readAheadLimit`, at least 1.
    let readAheadLimit: Int
    /// The kernel refused a multishot receive's byte limit (before 6.17): sockets receive
    /// from the ring one buffer per SQE instead.
    @exclusivity(unchecked) var receiveLimitRefused = false
    /// Where the readiness engine's fast path receives (`Socket.receiveIntoBuffer`): the
    /// bytes are copied out before anything else runs, so one buffer serves every socket.
    @exclusivity(unchecked) private var receiveScratch = UnsafeMutableRawPointer.allocate(byteCount: 1, alignment: 16)
    @exclusivity(unchecked) private var receiveScratchCapacity = 1
    /// The largest fast-path receive (a larger one takes what fits, as any receive may).
    static let receiveScratchLimit = 256 << 10

    // MARK: Cross-thread state
    private enum InboxItem {
        case job(UnownedJob)
        case action(@Sendable () -> Void)
    }
    /// A pthread mutex, not `Synchronization.Mutex`, which ThreadSanitizer cannot see (see
    /// `PthreadLock`): everything a job or action hands to the loop goes through it.
    private let inbox = PthreadLock<[InboxItem]>([])
    private let inboxPending = Atomic<Bool>(false)
    private let sleeping = Atomic<Bool>(false)
    private let stopRequested = Atomic<Bool>(false)
    private let inLoop = Atomic<Bool>(false)
    private let shutdownReport = PthreadLock<RunReport?>(nil)
    private let closed = Atomic<Bool>(false)
    let statistics = StatisticsCounters()
    #if DEBUG
    let faultInjector: FaultInjector?
    #endif
    let coroutineIDs = Atomic<UInt64>(0)
    private let thread = PthreadLock<LoopThread?>(nil)

    /// Called with every error that escapes a top-level coroutine (one started with
    /// ``spawn(_:placement:_:)``); the other coroutines keep running. The default writes
    /// one line to standard error naming the coroutine and the error. Set it before
    /// running the scheduler.
    nonisolated(unsafe) public var errorHandler: @Sendable (CoroutineInfo, any Error) -> Void = {
        info, error in
        let line = "cogen: coroutine \(info) failed: \(error)\n"
        _ = line.withCString { Glibc.write(2, $0, strlen($0)) }
    }

    /// Creates a scheduler and its ring. The ring is bound to the thread that first runs
    /// the scheduler.
    ///
    /// - Parameter configuration: Backend, ring size and feature switches.
    /// - Throws: ``RingSetupError`` when the kernel refuses the ring: `EPERM` (a seccomp
    ///   profile or `kernel.io_uring_disabled`), `ENOMEM` (locked-memory limit), `ENOSYS`
    ///   (kernel too old).
    ///
    /// Uses `io_uring_setup` (Linux 5.1) with `IORING_SETUP_SINGLE_ISSUER` (6.0) and
    /// `IORING_SETUP_DEFER_TASKRUN` (6.1) when present, `IORING_SETUP_COOP_TASKRUN` (5.19)
    /// otherwise, and a CQ at least twice the SQ.
    public init(configuration: Configuration = Configuration()) throws(RingSetupError) {
        try BufferPool.validate(
            count: configuration.receiveBufferCount, size: configuration.receiveBufferSize,
            maxPerConnection: configuration.maxBuffersPerConnection)
        var configuration = configuration
        #if DEBUG
        faultInjector = configuration.faultInjection.map(FaultInjector.init)
        #endif
        inFlight.counters = statistics
        switch configuration.backend {
        case .ioUring:
            backend = try IOUringBackend(configuration: configuration, counters: statistics)
        case .epoll:
            backend = try EpollBackend()
        case .automatic:
            backend = try BackendSelection.make(configuration: configuration, counters: statistics)
        }
        configuration.backend = backend.kind
        attemptsInline = backend.kind == .epoll
        self.configuration = configuration
        completionBuffer = .allocate(capacity: max(configuration.completionBatch, 1))
        timerSlack = configuration.timerSlack.clampedNanoseconds
        spinNanoseconds = configuration.spinBeforeWait.clampedNanoseconds
        readAheadLimit = min(max(configuration.readAheadLimit, 1), 1 << 30)
        multishotAccept = configuration.useMultishotAccept && backend.kind == .ioUring
            && KernelFeatures.current.multishotAccept
    }

    deinit {
        // Not a teardown (coroutines are never resumed from here; `shutdown()` is): only
        // the kernel resources of a scheduler dropped without one. Nothing can be in
        // flight: every task and operation keeps its scheduler alive.
        if !closed.load(ordering: .acquiring) {
            bufferPool?.unregister()
            backend.close()
        }
        completionBuffer.deallocate()
        receiveScratch.deallocate()
    }

    /// The fast path's receive buffer, at least `length` bytes (see `receiveScratch`).
    @inline(__always)
    func receiveScratch(_ length: Int) -> UnsafeMutableRawPointer {
        if receiveScratchCapacity < length {
            receiveScratch.deallocate()
            receiveScratch = UnsafeMutableRawPointer.allocate(byteCount: length, alignment: 16)
            receiveScratchCapacity = length
        }
        return receiveScratch
    }

    /// The scheduler running on the calling thread, if any.
    public static var current: Scheduler? {
        guard let raw = cogen_current_scheduler() else { return nil }
        return Unmanaged<Scheduler>.fromOpaque(raw).takeUnretainedValue()
    }

    /// Whether a thread is running the scheduler now (inside ``run(untilStopped:)`` or
    /// ``runOnce(blocking:)``); readable from any thread.
    public var isRunning: Bool { inLoop.load(ordering: .acquiring) }

    /// Whether the calling thread is this scheduler's loop thread, running it now.
    public var isOnLoop: Bool {
        cogen_current_scheduler() == Unmanaged.passUnretained(self).toOpaque()
    }

    /// Stops the program with a clear message when called off the loop thread: the
    /// documentation confines the scheduler's objects to its thread. One thread-local read,
    /// in release builds too.
    @inlinable
    func assertOnLoop(_ function: StaticString = #function) {
        if !isOnLoop { Self.offLoop(function) }
    }

    @usableFromInline @inline(never)
    static func offLoop(_ function: StaticString) -> Never {
        // invariant: the scheduler's objects are used only on its thread (documented misuse otherwise).
        fatalError("\(function) must be called on the scheduler's thread (a scheduler's coroutines, sockets and signals belong to the thread that runs it)")
    }

    /// The probed kernel features.
    public var kernelFeatures: KernelFeatures { KernelFeatures.current }

    /// What the ring was set up with (flags, queue sizes).
    public var setupDescription: String { backend.setupDescription }

    /// The I/O engine in use.
    public var backendKind: Backend { backend.kind }

    /// A snapshot of the counters; readable from any thread.
    public var counters: SchedulerStatistics {
        SchedulerStatistics(
            operationsSubmitted: statistics.submitted.value,
            operationsCompleted: statistics.completed.value,
            cancellations: statistics.cancellations.value,
            timeouts: statistics.timeouts.value,
            completionQueueOverflows: statistics.overflows.value,
            staleCompletions: statistics.stale.value,
            operationsInFlight: statistics.inFlight.value,
            passes: statistics.passes.value,
            jobsRun: statistics.jobs.value,
            inboxItems: statistics.inbox.value,
            inlineCompletions: statistics.inline.value, spins: statistics.spins.value,
            spinsExpired: statistics.spinsExpired.value)
    }

    // MARK: Executor

    /// Enqueues a job: on the loop thread at the placement of the resume that caused it,
    /// from any other thread through the locked inbox, waking the loop.
    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        if isOnLoop {
            if nextPlacement == .front {
                runQueue.pushFront(.job(job))
            } else {
                runQueue.pushBack(.job(job))
            }
            nextPlacement = .back
        } else {
            postItem(.job(job))
        }
    }

    private func postItem(_ item: InboxItem) {
        inbox.withLock { $0.append(item) }
        inboxPending.store(true, ordering: .sequentiallyConsistent)
        if sleeping.exchange(false, ordering: .sequentiallyConsistent) && !closed.load(ordering: .acquiring) {
            backend.wake()
        }
    }

    /// Runs a closure on the scheduler's thread at the start of its next loop pass, before
    /// the queued jobs: the way for other threads to resume parked coroutines or touch
    /// loop-confined state. Closures run in the order they were posted.
    /// - Parameter body: What to run; it must not block.
    public func execute(_ body: @escaping @Sendable () -> Void) {
        postItem(.action(body))
    }

    @usableFromInline
    func post(_ body: @escaping @Sendable () -> Void) { postItem(.action(body)) }

    private func drainInbox() {
        inboxPending.store(false, ordering: .sequentiallyConsistent)
        let items = inbox.withLock { items -> [InboxItem] in
            var taken: [InboxItem] = []
            swap(&taken, &items)
            return taken
        }
        statistics.inbox.increment(by: items.count)
        for item in items {
            switch item {
            case .job(let job): runQueue.pushBack(.job(job))
            case .action(let body): body()
            }
        }
    }

    // MARK: Running

    /// Runs the loop on the calling thread.
    ///
    /// - Parameter untilStopped: `false` (the default) returns as soon as nothing can make
    ///   progress: nothing runnable, no operation in flight, no pending deadline, and no
    ///   coroutine waiting on a task or thread outside the scheduler. `true` keeps running
    ///   (blocked in the kernel when idle) until ``stop()``.
    /// - Returns: Why it returned and how many coroutines were left parked.
    ///
    /// The first thread that runs a scheduler owns its ring (`IORING_SETUP_SINGLE_ISSUER`
    /// binds it, through `IORING_REGISTER_ENABLE_RINGS`); running it on another thread
    /// later, on a thread already running a scheduler (from inside a coroutine), or after
    /// ``shutdown()`` is a programming error that stops the program with a message saying
    /// which.
    @discardableResult
    public func run(untilStopped: Bool = false) -> RunReport {
        enterLoop()
        defer { leaveLoop() }
        return loop(untilStopped: untilStopped, shutdown: false)
    }

    private func enterLoop() {
        // The three documented misuses of run/runOnce/shutdown, each found with one check.
        if closed.load(ordering: .acquiring) {
            // invariant: a scheduler is not run after shutdown() (documented).
            fatalError("Scheduler.run: the scheduler was shut down and cannot run again")
        }
        if cogen_current_scheduler() != nil {
            // invariant: one scheduler per thread; run() is not called from inside a running scheduler (documented).
            fatalError("Scheduler.run: a scheduler is already running on this thread (one per thread; not from inside a coroutine)")
        }
        let me = pthread_self()
        if let ownerThread {
            if pthread_equal(ownerThread, me) == 0 {
                // invariant: a scheduler runs only on the thread that first ran it (documented).
                fatalError("Scheduler.run: a scheduler runs on the thread that first ran it (its ring is bound to that thread)")
            }
        } else {
            ownerThread = me
        }
        cogen_set_current_scheduler(Unmanaged.passUnretained(self).toOpaque())
        inLoop.store(true, ordering: .releasing)
        if !activated {
            backend.activate()
            activated = true
            let kernel = KernelFeatures.current
            if configuration.useProvidedBuffers && kernel.bufferRings && kernel.multishotReceive {
                bufferPool = backend.makeBufferPool(
                    count: configuration.receiveBufferCount, size: configuration.receiveBufferSize,
                    maxPerConnection: configuration.maxBuffersPerConnection)
                if configuration.prefaultReceiveBuffers { bufferPool?.prefault() }
            }
        }
    }

    private func leaveLoop() {
        inLoop.store(false, ordering: .releasing)
        cogen_set_current_scheduler(nil)
    }

    /// Runs one pass of the loop on the calling thread, for hosts that drive the
    /// scheduler from their own loop (cogen's `iter_run`).
    ///
    /// - Parameter blocking: `false` (the default) never waits in the kernel: the pass runs
    ///   what is runnable, fires due timers and reaps the completions already there.
    ///   `true` lets the pass wait, when nothing is runnable, until a completion or the
    ///   nearest deadline.
    /// - Returns: `nil` while there is more to do; the report once nothing can make progress
    ///   any more (or ``stop()`` was called).
    ///
    /// Same thread rule as ``run(untilStopped:)``: the first thread that runs the scheduler
    /// owns it.
    @discardableResult
    public func runOnce(blocking: Bool = false) -> RunReport? {
        enterLoop()
        defer { leaveLoop() }
        return pass(untilStopped: false, shutdown: false, blocking: blocking)
    }

    private func loop(untilStopped: Bool, shutdown: Bool) -> RunReport {
        while true {
            if let report = pass(untilStopped: untilStopped, shutdown: shutdown, blocking: true) {
                return report
            }
        }
    }

    /// One pass: inbox, timers, the jobs queued when it began, then completions.
    /// - Returns: A report when the loop must return.
    @inline(__always)
    private func pass(untilStopped: Bool, shutdown: Bool, blocking: Bool) -> RunReport? {
        let executor = asUnownedTaskExecutor()
        let completions = completionBuffer
        do {
            statistics.passes.increment()
            if inboxPending.load(ordering: .relaxed) { drainInbox() }
            if !timers.isEmpty { fireTimers() }

            // Only the jobs queued when the pass began: what they queue waits for the next
            // pass, so a storm of jobs cannot starve I/O and timers.
            var budget = runQueue.count
            while budget > 0, let item = runQueue.popFront() {
                switch item {
                case .job(let job):
                    budget -= 1
                    statistics.jobs.increment()
                    runningTask = unsafeBitCast(job, to: UnsafeRawPointer.self)
                    inlineBudget = Self.inlineBudgetPerTurn
                    job.runSynchronously(on: executor)
                    runningTask = nil
                    nextPlacement = .back
                case .resume(let continuation):
                    // Its job lands at the front and runs next, within this budget.
                    nextPlacement = .front
                    continuation.resume()
                    nextPlacement = .back
                }
            }

            if !shutdown && stopRequested.load(ordering: .relaxed) {
                stopRequested.store(false, ordering: .relaxed)
                return report(.stopped)
            }

            let count: Int
            if !runQueue.isEmpty || inboxPending.load(ordering: .relaxed) {
                count = backend.poll(into: completions)
            } else if !untilStopped && isIdle(shutdown: shutdown) {
                return report(.idle)
            } else {
                var timeout: UInt64? = nil
                if let earliest = timers.earliestDeadline {
                    let now = monotonicNanoseconds()
                    // Sleep past the earliest deadline by the slack, so that the timers
                    // due within it fire in one wake-up (never early: a wake-up costs
                    // ~15 µs of CPU on a VM, more than the timers it serves).
                    timeout = earliest > now ? earliest - now + timerSlack : 0
                }
                if timeout == 0 || !blocking {
                    count = backend.poll(into: completions)
                } else if spinNanoseconds > 0, case let spun = spin(upTo: &timeout, into: completions), spun > 0 {
                    count = spun
                } else {
                    sleeping.store(true, ordering: .sequentiallyConsistent)
                    if inboxPending.load(ordering: .sequentiallyConsistent)
                        || stopRequested.load(ordering: .sequentiallyConsistent)
                    {
                        sleeping.store(false, ordering: .relaxed)
                        count = backend.poll(into: completions)
                    } else {
                        count = backend.wait(timeout: timeout, into: completions)
                        sleeping.store(false, ordering: .relaxed)
                    }
                }
            }
            for i in 0..<count { dispatch(completions[i]) }
        }
        return nil
    }

    /// Polls for completions for up to `spinNanoseconds` (not past `timeout`) before the
    /// loop sleeps; stops early for the inbox or a stop request (the sleeping path then
    /// sees them). The count of completions reaped, 0 if none came; then `timeout` is what
    /// is left of it, so that the sleep after the spin still wakes for the next timer.
    @inline(never)
    private func spin(upTo timeout: inout UInt64?, into completions: UnsafeMutableBufferPointer<Completion>) -> Int {
        statistics.spins.increment()
        let start = monotonicNanoseconds()
        let end = start &+ min(spinNanoseconds, timeout ?? .max)
        var now = start
        repeat {
            let count = backend.poll(into: completions)
            if count > 0 { return count }
            if inboxPending.load(ordering: .relaxed) || stopRequested.load(ordering: .relaxed) { break }
            for _ in 0..<8 { cogen_cpu_relax() }
            now = monotonicNanoseconds()
        } while now < end
        if now >= end { statistics.spinsExpired.increment() }
        if let left = timeout { timeout = left > now &- start ? left - (now &- start) : 0 }
        return 0
    }

    private func isIdle(shutdown: Bool) -> Bool {
        guard inFlight.count == streams, streamWaiters == 0 || shutdown, timers.isEmpty,
              !inboxPending.load(ordering: .sequentiallyConsistent)
        else { return false }
        if shutdown && inFlight.count > 0 { return false }
        // A live coroutine that is not parked here is suspended on something outside the
        // scheduler (a task, a thread, `Task.sleep`) that will enqueue it through the inbox.
        return shutdown || liveCoroutines <= parkedCount
    }

    private func report(_ reason: RunReport.Reason) -> RunReport {
        RunReport(reason: reason, parkedCoroutines: parkedCount, liveCoroutines: liveCoroutines)
    }

    private func fireTimers() {
        let now = monotonicNanoseconds()
        while let waiter = timers.popExpired(now: now) {
            waiter.expire()
        }
    }

    @inline(__always)
    private func dispatch(_ completion: Completion) {
        guard let operation = inFlight.lookup(completion.userData) else {
            // Our own cancel requests carry `UserData.ignored`; anything else that matches
            // no live slot is stale and must not reach whoever holds the slot now.
            if completion.userData != UserData.ignored { statistics.stale.increment() }
            return
        }
        #if DEBUG
        var completion = completion
        faultInjector?.delivering(&completion, to: operation.takeUnretainedValue(), scheduler: self)
        #endif
        // A multishot operation posts CQEs with IORING_CQE_F_MORE and stays in flight;
        // only its final CQE (without the flag) releases the slot, and the table's
        // reference once the completion has been delivered.
        if completion.flags & UInt32(COGEN_CQE_F_MORE) == 0 {
            let reference = inFlight.remove(completion.userData)
            statistics.completed.increment()
            reference._withUnsafeGuaranteedRef {
                if $0.isStream { streams -= 1 }
                if completion.result == -ECANCELED && resubmitsAfterSpuriousCancel($0) { return }
                $0.complete(result: completion.result, flags: completion.flags)
            }
            reference.release()
        } else {
            operation._withUnsafeGuaranteedRef { $0.complete(result: completion.result, flags: completion.flags) }
        }
    }

    /// Asks the loop to return from ``run(untilStopped:)`` after its current pass. Safe
    /// from any thread; a coroutine may call it too.
    public func stop() {
        stopRequested.store(true, ordering: .sequentiallyConsistent)
        if !isOnLoop && sleeping.exchange(false, ordering: .sequentiallyConsistent)
            && !closed.load(ordering: .acquiring)
        {
            backend.wake()
        }
    }

    // MARK: Own thread

    /// Starts the loop on a thread of its own, running until ``stop()`` or ``shutdown()``.
    ///
    /// The ring lives exactly as long as that thread (a `SINGLE_ISSUER` ring cannot change
    /// threads, and requests still tied to an exited thread fail): when the loop stops, the
    /// thread shuts the scheduler down before it exits, resuming every coroutine still
    /// parked with ``SchedulerShutdownError``. ``join()`` waits for that.
    ///
    /// Call it once, on a scheduler that was never run; a second start stops the program.
    /// - Throws: ``IOError`` (`EAGAIN`: the thread limit) when `pthread_create` fails; the
    ///   scheduler then stays unstarted.
    public func start() throws(IOError) {
        try thread.withLock { (thread: inout LoopThread?) throws(IOError) in
            if thread != nil || ownerThread != nil {
                // invariant: start() is called once, on a scheduler never run (documented).
                fatalError("Scheduler.start: the scheduler was already started or run")
            }
            thread = try LoopThread(name: configuration.name) { [self] in
                let report = run(untilStopped: true)
                performShutdown()
                return report
            }
        }
    }

    /// Waits until the thread ``start()`` created has stopped and shut the scheduler down.
    /// - Returns: The loop's report at the moment it stopped (coroutines then parked were
    ///   resumed by the shutdown), or `nil` if the scheduler was not started or was
    ///   already joined.
    @discardableResult
    public func join() -> RunReport? {
        let started = thread.withLock { thread -> LoopThread? in
            let t = thread
            thread = nil
            return t
        }
        return started?.join()
    }

    /// Tears the scheduler down: every parked coroutine is resumed with
    /// ``SchedulerShutdownError`` (operations in flight are cancelled in the kernel and
    /// resume after their final completion), the coroutines are left to finish, and the
    /// ring is closed. Coroutines that try to park meanwhile get the same error.
    ///
    /// For a scheduler run with ``run(untilStopped:)``, call it on that thread after `run`
    /// returned. For one started with ``start()``, call it from any thread: it stops the
    /// loop and waits for the thread to finish the shutdown. The scheduler cannot be run
    /// again afterwards; a second call does nothing.
    /// - Returns: What was left once the shutdown's own run went idle: coroutines still
    ///   alive are waiting on something outside the scheduler.
    @discardableResult
    public func shutdown() -> RunReport {
        let started = thread.withLock { $0 != nil }
        if started {
            stop()
            join()
            return shutdownReport.withLock { $0 } ?? RunReport(reason: .idle, parkedCoroutines: 0, liveCoroutines: 0)
        }
        if closed.load(ordering: .acquiring) {
            return shutdownReport.withLock { $0 } ?? RunReport(reason: .idle, parkedCoroutines: 0, liveCoroutines: 0)
        }
        enterLoop()
        defer { leaveLoop() }
        return performShutdown()
    }

    @discardableResult
    private func performShutdown() -> RunReport {
        let entered = !isOnLoop
        if entered { enterLoop() }
        shuttingDown = true
        for waiter in allWaiters where waiter.isParked { waiter.abortForShutdown() }
        // Operations no coroutine waits on (multishot streams owned by sockets) too.
        inFlight.forEach { $0.requestCancel(.shutdown) }
        let report = loop(untilStopped: false, shutdown: true)
        closed.store(true, ordering: .releasing)
        bufferPool?.unregister()
        backend.close()
        if entered { leaveLoop() }
        shutdownReport.withLock { $0 = report }
        return report
    }

    // MARK: Core operations

    /// Whether no job waits in the run queue (the one running now is not in it). Read it
    /// on the scheduler's thread; layers that reproduce a run order (CogenCompat's
    /// two-phase start) decide with it whether a yield would let anyone else run.
    public var isRunQueueEmpty: Bool {
        assertOnLoop()
        return runQueue.isEmpty
    }

    /// The coroutine whose own task is running now: `nil` outside coroutines (a plain
    /// task, a ``spawnAndJoin(placement:resumePlacement:_:)`` child) and off the loop.
    public var runningCoroutine: AnyCoroutine? {
        isOnLoop ? currentCoroutine() : nil
    }

    /// Lets every coroutine queued now run before this one continues: one trip through the
    /// run queue (not `Task.yield()`, which takes two).
    /// - Parameter placement: `.back` (the default) goes behind everything queued; `.front`
    ///   lets the loop look at completions and timers first.
    ///
    /// No kernel operation is involved.
    @inline(__always)
    public func yield(placement: Placement = .back) async {
        await yield(placement: placement, afterQueuing: {})
    }

    /// ``yield(placement:)``, running `afterQueuing` once this coroutine is in the run
    /// queue and before it suspends: what `afterQueuing` resumes at the front runs before
    /// it, what it resumes at the back runs after it. Layers that reproduce a run order
    /// (CogenCompat's signals and queues) requeue the current coroutine and wake others in
    /// one exact order with it.
    /// - Parameters:
    ///   - placement: Where this coroutine goes.
    ///   - afterQueuing: Runs on the loop, synchronously, before the suspension.
    ///
    /// No kernel operation is involved.
    @inline(__always)
    public func yield(placement: Placement = .back, afterQueuing: () -> Void) async {
        assertOnLoop()
        await withUnsafeContinuation { (continuation: UnsafeContinuation<Void, Never>) in
            if placement == .front {
                runQueue.pushFront(.resume(continuation))
            } else {
                runQueue.pushBack(.resume(continuation))
            }
            afterQueuing()
        }
    }

    /// Suspends the current coroutine for a duration.
    /// - Parameters:
    ///   - duration: How long; zero or less resumes on the next pass.
    ///   - placement: Where the coroutine goes when the time has passed.
    /// - Throws: `CancellationError`, ``SchedulerShutdownError``.
    ///
    /// An entry in the scheduler's timer heap; the loop waits in the kernel with a timeout
    /// (`io_uring_enter` with `IORING_ENTER_EXT_ARG`, 5.11; an internal timeout before).
    public func sleep(for duration: Duration, placement: Placement = .back) async throws {
        try await sleep(until: .after(duration), placement: placement)
    }

    /// Suspends the current coroutine until a deadline.
    /// - Parameters:
    ///   - deadline: When to wake.
    ///   - placement: Where the coroutine goes when the deadline has passed.
    /// - Throws: `CancellationError`, ``SchedulerShutdownError``.
    ///
    /// No kernel operation per sleep: see ``sleep(for:placement:)``.
    public func sleep(until deadline: Deadline, placement: Placement = .back) async throws {
        let settings = ParkSettings(label: "sleep", deadline: deadline, placementOnExpiry: placement, expiry: .returnVoid)
        try await suspend(settings) { (_: Parked<Void>) in }
    }
}

/// Who a coroutine is, for error reports.
public struct CoroutineInfo: Sendable, CustomStringConvertible {
    /// Unique within its scheduler.
    public let id: UInt64
    /// The name given to ``Scheduler/spawn(_:placement:_:)``, if any.
    public let name: String?
    public var description: String { name.map { "'\($0)' (#\(id))" } ?? "#\(id)" }
}

/// A pthread running a closure, joinable for its result.
final class LoopThread: @unchecked Sendable {
    // @unchecked: `result` is written by the thread before it exits and read after
    // pthread_join, which orders the two.
    private var handle = pthread_t()
    private var result: Scheduler.RunReport?
    private let body: () -> Scheduler.RunReport

    init(name: String, body: @escaping () -> Scheduler.RunReport) throws(IOError) {
        self.body = body
        let unmanaged = Unmanaged.passRetained(self)
        let status = pthread_create(&handle, nil, { raw in
            // invariant: pthread_create passes the non-nil argument given below.
            let thread = Unmanaged<LoopThread>.fromOpaque(raw!).takeRetainedValue()
            thread.result = thread.body()
            return nil
        }, unmanaged.toOpaque())
        guard status == 0 else {
            unmanaged.release()
            throw IOError(errno: status, operation: "pthread_create (start the scheduler's thread)")
        }
        _ = cogen_set_thread_name(handle, String(name.prefix(15)))
    }

    func join() -> Scheduler.RunReport? {
        pthread_join(handle, nil)
        return result
    }
}
