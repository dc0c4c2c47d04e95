import CURing
import Glibc

/// The readiness engine: each operation's non-blocking system call is tried at once, and
/// on `EAGAIN` again each time epoll reports its descriptor ready. A descriptor is
/// registered once, edge-triggered for both directions, and stays registered, so a busy
/// connection costs no `epoll_ctl` per operation.
///
/// It runs the very operation objects io_uring runs (`attempt()`, `interest`), and hands
/// the scheduler completions in the io_uring convention, so placement, errors, timeouts
/// and cancellation are the same on both engines.
final class EpollBackend: IOBackend {
    let kind = Backend.epoll
    private let epoll: Int32
    private let eventDescriptor: Int32
    /// An operation waiting for its descriptor.
    private struct Waiting {
        var userData: UInt64
        var operation: any KernelOperation
    }
    private struct Registration {
        var readers: [Waiting] = []
        var writers: [Waiting] = []
        /// Events registered with epoll; nil when the descriptor is not registered.
        var registered: UInt32?
        /// Whose registration it is (`readinessOwner`: a socket's serial, 0 for a
        /// descriptor that is not ours).
        var owner: UInt64 = 0
        /// The owner's last receive returned fewer bytes than it asked for (its receive
        /// queue was empty then), and epoll has reported no readable, hang-up or error
        /// event for the descriptor since: new bytes will raise an edge, so the next
        /// receive waits for it without trying `recv(2)` first (see `isKnownDrained`).
        var drained = false
        /// epoll reported a read hang-up, hang-up or error: a read that stops short may
        /// have stopped at the peer's FIN (queued before the read, its edge reported
        /// already), so no read marks the descriptor drained any more (nginx's
        /// `pending_eof`).
        var hungUp = false
    }
    /// By descriptor number (descriptors are small integers): no hashing per operation.
    @exclusivity(unchecked) private var registrations: [Registration] = []
    /// Operations waiting, all descriptors together.
    @exclusivity(unchecked) private var waitingCount = 0
    /// Completions not handed to the scheduler yet.
    @exclusivity(unchecked) private var ready: [Completion] = []
    @exclusivity(unchecked) private var readyHead = 0
    private let eventCapacity = 256
    private let eventData: UnsafeMutablePointer<UInt64>
    private let eventFlags: UnsafeMutablePointer<UInt32>
    private static let wakeTag = UInt64.max

    init() throws(RingSetupError) {
        let epoll = cogen_epoll_create()
        guard epoll >= 0 else { throw RingSetupError(errno: Glibc.errno, operation: "epoll_create1") }
        let descriptor = cogen_eventfd()
        guard descriptor >= 0 else {
            let error = Glibc.errno
            Glibc.close(epoll)
            throw RingSetupError(errno: error, operation: "eventfd")
        }
        let status = cogen_epoll_ctl(epoll, 1, descriptor, UInt32(COGEN_EPOLLIN), Self.wakeTag)
        guard status == 0 else {
            Glibc.close(epoll)
            Glibc.close(descriptor)
            throw RingSetupError(errno: -status, operation: "epoll_ctl")
        }
        self.epoll = epoll
        eventDescriptor = descriptor
        eventData = .allocate(capacity: eventCapacity)
        eventFlags = .allocate(capacity: eventCapacity)
    }

    @inline(__always)
    private func ensureSlot(_ descriptor: Int32) {
        let index = Int(descriptor)
        if index >= registrations.count {
            registrations.append(contentsOf: repeatElement(Registration(), count: index + 1 - registrations.count))
        }
    }

    var setupDescription: String { "epoll (edge-triggered, registered once per descriptor)" }

    func activate() {}

    func makeBufferPool(count: Int, size: Int, maxPerConnection: Int) -> BufferPool? { nil }

    func submit(_ operation: any KernelOperation, userData: UInt64) {
        if let close = operation as? CloseOperation, Int(close.descriptor) < registrations.count,
           close.descriptor >= 0
        {
            // The descriptor goes away with its registration; nothing waits on it (a
            // socket cancels its operations before it closes).
            registrations[Int(close.descriptor)] = Registration()
        }
        let result = operation.knownNotReady ? -EAGAIN : operation.attempt()
        let descriptor = operation.readinessDescriptor
        guard result == -EAGAIN, descriptor >= 0 else {
            ready.append(Completion(userData: userData, result: result, flags: 0))
            return
        }
        let waiting = Waiting(userData: userData, operation: operation)
        ensureSlot(descriptor)
        adopt(descriptor, for: operation.readinessOwner)
        if operation.interest == .writable {
            registrations[Int(descriptor)].writers.append(waiting)
        } else {
            registrations[Int(descriptor)].readers.append(waiting)
        }
        waitingCount += 1
        updateInterest(descriptor)
        #if DEBUG
        if FaultInjector.current?.cancelsEarly(operation, userData: userData) == true { cancel(operation, userData: userData) }
        #endif
    }

    func cancel(_ operation: any KernelOperation, userData: UInt64) {
        // Still waiting: it never ran, so it ends cancelled. Otherwise it already
        // completed and its result stands.
        let index = Int(operation.readinessDescriptor)
        guard index >= 0, index < registrations.count else { return }
        let before = registrations[index].readers.count + registrations[index].writers.count
        registrations[index].readers.removeAll { $0.userData == userData }
        registrations[index].writers.removeAll { $0.userData == userData }
        guard registrations[index].readers.count + registrations[index].writers.count < before else { return }
        waitingCount -= 1
        ready.append(Completion(userData: userData, result: -ECANCELED, flags: 0))
    }

    /// A registration belongs to the socket that made it. A socket dropped without
    /// `close()` closes its descriptor in `deinit`, on any thread, without telling the
    /// loop; the kernel then drops the descriptor from the epoll set, and the number goes
    /// to the next socket. A registration made for another owner (or for a descriptor that
    /// is not ours, whose lifetime we cannot see) is therefore not trusted once nothing
    /// waits on it: the descriptor is registered again (`EPOLL_CTL_ADD`, or `MOD` when it
    /// turns out to be still there).
    @inline(__always)
    private func adopt(_ descriptor: Int32, for owner: UInt64) {
        let index = Int(descriptor)
        guard registrations[index].owner != owner || owner == 0 else { return }
        if registrations[index].readers.isEmpty && registrations[index].writers.isEmpty {
            registrations[index].registered = nil
            registrations[index].owner = owner
            registrations[index].drained = false
            registrations[index].hungUp = false
        }
    }

    /// Registers a descriptor the first time something waits on it, for good, and
    /// edge-triggered for both directions: no `epoll_ctl` as waiters come and go. Edges
    /// are enough because every operation tries its system call before it waits, and a
    /// descriptor registered while already ready reports that at once.
    private func updateInterest(_ descriptor: Int32) {
        let index = Int(descriptor)
        guard index < registrations.count, registrations[index].registered == nil,
              !registrations[index].readers.isEmpty || !registrations[index].writers.isEmpty
        else { return }
        let events = UInt32(COGEN_EPOLLIN | COGEN_EPOLLOUT | COGEN_EPOLLRDHUP) | Self.edgeTriggered
        let data = UInt64(UInt32(bitPattern: descriptor))
        var status = cogen_epoll_ctl(epoll, 1, descriptor, events, data)
        if status == -EEXIST {  // closed and reused behind our back: take it over
            status = cogen_epoll_ctl(epoll, 3, descriptor, events, data)
        }
        if status == 0 {
            registrations[index].registered = events
            registrations[index].drained = false
        } else {
            // Not pollable (or gone): try each waiting operation once more and hand out
            // what it says, rather than wait for an event that will not come.
            let registration = registrations[index]
            registrations[index] = Registration()
            for waiting in registration.readers + registration.writers {
                waitingCount -= 1
                let result = waiting.operation.attempt()
                ready.append(Completion(userData: waiting.userData, result: result == -EAGAIN ? status : result, flags: 0))
            }
        }
    }

    /// EPOLLET.
    private static let edgeTriggered: UInt32 = 1 << 31

    func poll(into completions: UnsafeMutableBufferPointer<Completion>) -> Int {
        // The loop polls after every pass while coroutines are queued; an `epoll_pwait2`
        // each time cost twice the C server's system calls. Every other pass is enough:
        // the readiness waits one short pass longer, and completions already known go
        // out every time.
        if waitingCount > 0 {
            if skippedPoll {
                skippedPoll = false
                gather(timeout: 0)
            } else {
                skippedPoll = true
            }
        }
        return handOut(into: completions)
    }

    /// Whether the last non-blocking poll left epoll alone.
    private var skippedPoll = false

    func wait(timeout: UInt64?, into completions: UnsafeMutableBufferPointer<Completion>) -> Int {
        if readyHead < ready.count { return poll(into: completions) }
        _blockingWaitForEvents(timeout: timeout)
        return handOut(into: completions)
    }

    /// The one place the loop thread blocks on this engine. Never inlined, so profiles
    /// can tell idle time apart.
    @inline(never)
    private func _blockingWaitForEvents(timeout: UInt64?) {
        gather(timeout: timeout.map { Int64(clamping: $0) } ?? -1)
    }

    private func gather(timeout: Int64) {
        var timeout = timeout
        #if DEBUG
        if let owed = FaultInjector.current?.takeOwedEdges() {  // edges injected EAGAINs swallowed
            for descriptor in owed {
                mayHaveBytes(descriptor)
                retry(descriptor, writers: false)
                retry(descriptor, writers: true)
            }
            // Real edges too, without blocking: a socket known drained waits only for
            // those, and injected EAGAINs owing edges every pass must not starve it.
            timeout = 0
        }
        #endif
        let count = cogen_epoll_wait(epoll, eventData, eventFlags, Int32(eventCapacity), timeout)
        guard count > 0 else { return }  // 0: timeout; -EINTR: the loop re-checks
        for i in 0..<Int(count) {
            if eventData[i] == Self.wakeTag {
                var value: UInt64 = 0
                _ = Glibc.read(eventDescriptor, &value, 8)
                continue
            }
            let descriptor = Int32(truncatingIfNeeded: eventData[i])
            let events = eventFlags[i]
            let failed = events & UInt32(COGEN_EPOLLERR | COGEN_EPOLLHUP) != 0
            if failed || events & UInt32(COGEN_EPOLLIN | COGEN_EPOLLRDHUP) != 0 {
                // Whether or not a receive waits now: one that comes later must try.
                mayHaveBytes(descriptor, hungUp: failed || events & UInt32(COGEN_EPOLLRDHUP) != 0)
                retry(descriptor, writers: false)
            }
            if failed || events & UInt32(COGEN_EPOLLOUT) != 0 { retry(descriptor, writers: true) }
        }
    }

    /// An edge that may have brought bytes (or an end of stream, or an error): the next
    /// receive on the descriptor tries its system call.
    @inline(__always)
    private func mayHaveBytes(_ descriptor: Int32, hungUp: Bool = false) {
        let index = Int(descriptor)
        guard index >= 0 && index < registrations.count else { return }
        registrations[index].drained = false
        if hungUp { registrations[index].hungUp = true }
    }

    // MARK: Drained receive queues (as nginx's `ngx_unix_recv`)
    //
    // A receive on an edge-triggered socket that returned fewer bytes than it asked for
    // emptied the socket's receive queue: bytes that arrive later (or the end of stream,
    // or a reset) raise a new edge. So the receive after it need not try `recv(2)` (and
    // get `EAGAIN`, one system call per request in a request/response loop): it waits for
    // the edge. The mark is set only by the owner's own short read, at the system call
    // (not when its coroutine resumes: an event may be gathered in between), and cleared
    // by every readable, hang-up or error event epoll reports for the descriptor, whether
    // or not anything waits on it, and by every (re)registration and change of owner. An
    // event reported for bytes the short read already took only costs one `EAGAIN`. Once
    // epoll has reported a read hang-up (or hang-up, or error) a short read proves nothing
    // (it stops at the FIN, whose edge came already): no mark from then on, as nginx's
    // `pending_eof`.

    /// Whether `owner`'s socket on `descriptor` is known to have nothing to receive (see
    /// above): its receive waits for readiness without trying the call.
    @inline(__always)
    func isKnownDrained(_ descriptor: Int32, owner: UInt64) -> Bool {
        let index = Int(descriptor)
        guard index >= 0 && index < registrations.count else { return false }
        return registrations[index].drained && registrations[index].owner == owner
    }

    /// `owner`'s receive on `descriptor` just returned fewer bytes than the kernel was
    /// asked for (or a real `EAGAIN`): its receive queue is empty. Marked only on a
    /// registration of that owner's that epoll reports on (an unregistered or another
    /// owner's descriptor is tried as before).
    @inline(__always)
    func noteDrained(_ descriptor: Int32, owner: UInt64) {
        let index = Int(descriptor)
        guard index >= 0 && index < registrations.count, registrations[index].owner == owner,
              registrations[index].registered != nil, !registrations[index].hungUp
        else { return }
        registrations[index].drained = true
    }

    /// Tries the operations waiting on `descriptor`, in order, until one must wait again.
    private func retry(_ descriptor: Int32, writers: Bool) {
        let index = Int(descriptor)
        guard index < registrations.count else { return }
        let count = writers ? registrations[index].writers.count : registrations[index].readers.count
        var done = 0
        while done < count {
            let waiting = writers ? registrations[index].writers[done] : registrations[index].readers[done]
            let result = waiting.operation.attempt()
            if result == -EAGAIN { break }
            ready.append(Completion(userData: waiting.userData, result: result, flags: 0))
            done += 1
        }
        guard done > 0 else { return }
        waitingCount -= done
        if writers {
            registrations[index].writers.removeFirst(done)
        } else {
            registrations[index].readers.removeFirst(done)
        }
    }

    private func handOut(into completions: UnsafeMutableBufferPointer<Completion>) -> Int {
        let count = min(completions.count, ready.count - readyHead)
        for i in 0..<count { completions[i] = ready[readyHead + i] }
        readyHead += count
        if readyHead == ready.count {
            ready.removeAll(keepingCapacity: true)
            readyHead = 0
        }
        return count
    }

    func wake() {
        var one: UInt64 = 1
        _ = Glibc.write(eventDescriptor, &one, 8)
    }

    func close() {
        Glibc.close(epoll)
        Glibc.close(eventDescriptor)
        eventData.deallocate()
        eventFlags.deallocate()
    }
}

extension Scheduler {
    /// The epoll engine, for the drained-queue marks (`EpollBackend.isKnownDrained`);
    /// nil on io_uring.
    @inline(__always)
    var readiness: EpollBackend? {
        // invariant: `attemptsInline` is set exactly when the backend is the epoll engine,
        // and `EpollBackend` is the only one (no check on the hot path).
        attemptsInline ? unsafeDowncast(backend, to: EpollBackend.self) : nil
    }
}
