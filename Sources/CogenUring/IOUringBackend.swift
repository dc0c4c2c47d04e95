import CURing
import Glibc

/// The io_uring engine: one ring per scheduler, used only by the scheduler's thread.
final class IOUringBackend: IOBackend {
    let kind = Backend.ioUring
    private let ring: OpaquePointer
    private let eventDescriptor: Int32
    let setup: RingSetup
    /// The ring was created disabled and must be enabled by the thread that will own it.
    @exclusivity(unchecked) private var needsEnable: Bool
    /// Either TASKRUN flag is set: the kernel tells us in the SQ flags when entering is
    /// needed to get completions posted.
    private let watchesTaskrunFlag: Bool
    /// Completions pulled out of the CQ while making room to submit, handed out first.
    @exclusivity(unchecked) private var spilled: [Completion] = []
    /// Where the wake-up read lands. Owned here until the ring is closed: the kernel may
    /// write into it as long as the read is armed. Allocated (like the reap arrays) once
    /// nothing in `init` can throw any more, so a refused setup leaks nothing.
    private let wakeBuffer: UnsafeMutablePointer<UInt64>
    @exclusivity(unchecked) private var wakeArmed = false
    private let counters: StatisticsCounters
    // Scratch arrays the C reaper copies CQEs into.
    private let reapCapacity = 256
    private let reapUserData: UnsafeMutablePointer<UInt64>
    private let reapResults: UnsafeMutablePointer<Int32>
    private let reapFlags: UnsafeMutablePointer<UInt32>
    // The kernel-shared words the per-pass check reads without a call into liburing.
    private let sqFlags: UnsafePointer<UInt32>
    private let cqHead: UnsafePointer<UInt32>
    private let cqTail: UnsafePointer<UInt32>
    /// SQEs prepared and not yet handed to the kernel.
    @exclusivity(unchecked) private var unsubmitted = 0

    init(configuration: Scheduler.Configuration, counters: StatisticsCounters) throws(RingSetupError) {
        let kernel = KernelFeatures.current
        guard kernel.isAvailable else {
            throw RingSetupError(errno: kernel.setupErrno, operation: "io_uring_setup")
        }
        let entries = max(configuration.ringEntries, 2)
        // CQ at least twice the SQ: a full SQ of operations that each complete, plus the
        // completions of the batch before, must fit without relying on overflow.
        let cqEntries = max(configuration.completionEntries ?? max(entries * 4, 4096), entries * 2)
        var flags: UInt32 = 0
        let single = configuration.useSingleIssuer && kernel.singleIssuer && kernel.ringDisabled
        let deferred = single && configuration.useDeferTaskrun && kernel.deferTaskrun
        var coop = false
        var taskrunFlag = false
        if single {
            // Created here, possibly on another thread than the loop's: start disabled and
            // let the loop thread enable it, which binds the ring to that thread.
            flags |= UInt32(COGEN_SETUP_SINGLE_ISSUER) | UInt32(COGEN_SETUP_R_DISABLED)
        }
        if deferred {
            flags |= UInt32(COGEN_SETUP_DEFER_TASKRUN)
            if kernel.taskrunFlag { flags |= UInt32(COGEN_SETUP_TASKRUN_FLAG); taskrunFlag = true }
        } else if configuration.useCoopTaskrun && kernel.coopTaskrun {
            flags |= UInt32(COGEN_SETUP_COOP_TASKRUN)
            coop = true
            if kernel.taskrunFlag { flags |= UInt32(COGEN_SETUP_TASKRUN_FLAG); taskrunFlag = true }
        }
        var ring: OpaquePointer?
        var features: UInt32 = 0
        let status = cogen_ring_create(entries, cqEntries, flags, &ring, &features)
        guard status == 0, let ring else {
            throw RingSetupError(errno: -status, operation: "io_uring_setup")
        }
        let descriptor = cogen_eventfd()
        guard descriptor >= 0 else {
            let error = Glibc.errno
            cogen_ring_destroy(ring)
            throw RingSetupError(errno: error, operation: "eventfd")
        }
        self.ring = ring
        self.counters = counters
        self.eventDescriptor = descriptor
        self.needsEnable = single
        self.watchesTaskrunFlag = taskrunFlag
        self.setup = RingSetup(
            submissionEntries: cogen_ring_sq_entries(ring),
            completionEntries: cogen_ring_cq_entries(ring),
            singleIssuer: single, deferTaskrun: deferred, coopTaskrun: coop, taskrunFlag: taskrunFlag)
        sqFlags = cogen_ring_sq_flags_pointer(ring)
        cqHead = cogen_ring_cq_head_pointer(ring)
        cqTail = cogen_ring_cq_tail_pointer(ring)
        wakeBuffer = .allocate(capacity: 1)
        reapUserData = .allocate(capacity: reapCapacity)
        reapResults = .allocate(capacity: reapCapacity)
        reapFlags = .allocate(capacity: reapCapacity)
    }

    var setupDescription: String { "io_uring (\(setup))" }

    func makeBufferPool(count: Int, size: Int, maxPerConnection: Int) -> BufferPool? {
        BufferPool(ring: ring, count: count, size: size, maxPerConnection: maxPerConnection)
    }

    func activate() {
        if needsEnable {
            let status = cogen_ring_enable(ring)
            // Enabling our own R_DISABLED ring, once, fails only on our bug (EBADFD, EINVAL).
            if status != 0 { Self.ringFailed("io_uring_enable_rings", status) }
            needsEnable = false
        }
        if !wakeArmed { armWake() }
    }

    private func armWake() {
        let sqe = nextSQE()
        cogen_prep_read(sqe, eventDescriptor, wakeBuffer, 8, 0, UserData.wake)
        wakeArmed = true
    }

    /// A free SQE; a full SQ is flushed to the kernel first, never reported as an error.
    @inline(__always)
    private func nextSQE() -> OpaquePointer {
        unsubmitted += 1
        if let sqe = cogen_ring_get_sqe(ring) { return sqe }
        #if DEBUG
        FaultInjector.current?.count(.smallSubmissionQueue)
        #endif
        flush()
        while true {
            if let sqe = cogen_ring_get_sqe(ring) { return sqe }
            // The kernel took nothing (EBUSY with a full CQ on old kernels): make room.
            spill()
            flush()
        }
    }

    func submit(_ operation: any KernelOperation, userData: UInt64) {
        let sqe = nextSQE()
        operation.prepare(sqe, userData: userData)
        #if DEBUG
        FaultInjector.current?.prepared(sqe, for: operation, userData: userData, backend: self)
        #endif
    }

    func cancel(_ operation: any KernelOperation, userData: UInt64) {
        cogen_prep_cancel(nextSQE(), userData, 0, UserData.ignored)
    }

    /// Hands prepared SQEs to the kernel. EINTR is retried here and nowhere else; EBUSY
    /// and EAGAIN mean the CQ must be drained first, so completions are spilled aside.
    private func flush() {
        defer { unsubmitted = Int(cogen_ring_sq_ready(ring)) }
        while cogen_ring_sq_ready(ring) > 0 {
            let status = enterKernel { cogen_ring_submit(ring) }
            if status >= 0 { return }
            switch -status {
            case EINTR: continue
            case EBUSY, EAGAIN:
                if spill() == 0 { return }
            case ENOMEM:
                // The kernel could not allocate requests now: the SQEs stay queued and go
                // with the next poll or wait.
                return
            default:
                Self.ringFailed("io_uring_submit", status)
            }
        }
    }

    /// Moves every completion in the CQ into `spilled`; returns how many.
    @discardableResult
    private func spill() -> Int {
        var total = 0
        while true {
            let n = Int(cogen_ring_reap(ring, reapUserData, reapResults, reapFlags, UInt32(reapCapacity)))
            if n == 0 { break }
            for i in 0..<n {
                if reapUserData[i] == UserData.wake { wakeArmed = false; continue }
                spilled.append(Completion(userData: reapUserData[i], result: reapResults[i], flags: reapFlags[i]))
            }
            total += n
        }
        if total == 0 { _ = cogen_ring_submit_and_get_events(ring) }
        return total
    }

    func poll(into completions: UnsafeMutableBufferPointer<Completion>) -> Int {
        let flags = cogen_load_relaxed(sqFlags)
        // The common case on a busy loop: nothing to submit, nothing posted, no task work.
        if unsubmitted == 0 && flags & UInt32(COGEN_SQ_TASKRUN | COGEN_SQ_CQ_OVERFLOW) == 0
            && spilled.isEmpty && cogen_load_acquire(cqTail) == cogen_load_relaxed(cqHead)
        {
            return 0
        }
        if flags & UInt32(COGEN_SQ_CQ_OVERFLOW) != 0 { counters.overflows.increment() }
        // With DEFER_TASKRUN (or COOP_TASKRUN) completions are posted only when this thread
        // enters the kernel; the TASKRUN flag says when that is worth a system call.
        if (watchesTaskrunFlag && flags & UInt32(COGEN_SQ_TASKRUN) != 0)
            || flags & UInt32(COGEN_SQ_CQ_OVERFLOW) != 0
        {
            enter { cogen_ring_submit_and_get_events(ring) }
            unsubmitted = Int(cogen_ring_sq_ready(ring))
        } else if unsubmitted > 0 {
            flush()
        }
        return collect(into: completions)
    }

    func wait(timeout: UInt64?, into completions: UnsafeMutableBufferPointer<Completion>) -> Int {
        if !spilled.isEmpty || cogen_ring_cq_ready(ring) > 0 {
            return poll(into: completions)
        }
        if !wakeArmed { armWake() }
        _blockingWaitForCompletions(timeout: timeout)
        unsubmitted = Int(cogen_ring_sq_ready(ring))
        let flags = cogen_ring_sq_flags(ring)
        if flags & UInt32(COGEN_SQ_CQ_OVERFLOW) != 0 {
            counters.overflows.increment()
            enter { cogen_ring_submit_and_get_events(ring) }
        }
        return collect(into: completions)
    }

    /// The one place the loop thread blocks: in the kernel, until a completion, a wake-up
    /// or the nearest deadline. Never inlined, so profiles can tell idle time apart.
    @inline(never)
    private func _blockingWaitForCompletions(timeout: UInt64?) {
        let nanoseconds = timeout.map { Int64(clamping: $0) } ?? -1
        while true {
            let status = enterKernel { cogen_ring_submit_and_wait(ring, nanoseconds) }
            if status >= 0 || status == -ETIME { return }
            switch -status {
            case EINTR: return  // a signal: the loop re-checks its deadlines
            case EBUSY, EAGAIN:
                spill()
                return
            case ENOMEM: return  // nothing submitted; the loop tries again on its next pass
            default:
                Self.ringFailed("io_uring_enter", status)
            }
        }
    }

    @inline(__always)
    private func enter(_ call: () -> Int32) {
        while true {
            let status = enterKernel(call)
            if status >= 0 { return }
            switch -status {
            case EINTR: continue
            case EBUSY, EAGAIN:
                if spill() == 0 { return }
            case ENOMEM: return  // retried on the next poll
            default: Self.ringFailed("io_uring_enter", status)
            }
        }
    }

    /// `io_uring_enter` failed with an errno that only our own bug can cause: `EBADF`,
    /// `EBADFD`, `EFAULT`, `EINVAL`, `ENXIO`, `EOPNOTSUPP`, `EEXIST` (a `SINGLE_ISSUER`
    /// ring entered from another thread, which `Scheduler.run` already refuses). The
    /// transient ones (`EINTR`, `EAGAIN`, `EBUSY`, `ENOMEM`) are handled by the callers.
    @inline(never)
    private static func ringFailed(_ call: StaticString, _ status: Int32) -> Never {
        // invariant: the ring is ours, alive and entered from its own thread with valid arguments.
        fatalError("\(call) failed: \(String(cString: strerror(-status))) (errno \(-status)); this is a bug in CogenUring")
    }

    private func collect(into completions: UnsafeMutableBufferPointer<Completion>) -> Int {
        var n = 0
        if !spilled.isEmpty {
            let take = min(spilled.count, completions.count)
            for i in 0..<take { completions[i] = spilled[i] }
            spilled.removeFirst(take)
            n = take
        }
        while n < completions.count {
            let want = min(completions.count - n, reapCapacity)
            let got = Int(cogen_ring_reap(ring, reapUserData, reapResults, reapFlags, UInt32(want)))
            if got == 0 { break }
            for i in 0..<got {
                if reapUserData[i] == UserData.wake {
                    wakeArmed = false
                    continue
                }
                completions[n] = Completion(userData: reapUserData[i], result: reapResults[i], flags: reapFlags[i])
                n += 1
            }
        }
        if !wakeArmed { armWake() }
        return n
    }

    func wake() {
        var one: UInt64 = 1
        // EAGAIN means the counter is already non-zero: a wake-up is pending anyway.
        _ = Glibc.write(eventDescriptor, &one, 8)
    }

    func close() {
        cogen_ring_destroy(ring)
        Glibc.close(eventDescriptor)
        wakeBuffer.deallocate()
        reapUserData.deallocate()
        reapResults.deallocate()
        reapFlags.deallocate()
    }
}
