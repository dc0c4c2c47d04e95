// echo-load: a load generator for echo servers on 127.0.0.1.
//
//   echo-load [--port N] [--connections C] [--size B] [--inflight K] [--duration S]
//             [--warmup S] [--idle N] [--threads T] [--server-pid P] [--json]
//
// C connections each keep K messages of B bytes in flight (K = 1: ping-pong). A message
// is an 8-byte little-endian header (the connection's sequence number, the connection's
// index in the top bits) followed by a slice of a fixed random pattern whose start depends
// on the connection and the sequence number, so every echoed byte is checked against what
// that message must hold: lost, repeated, reordered or crossed bytes all show. Mismatches
// are counted and make the exit status 2.
//
// Batching. Whenever a connection has room (K minus the messages in flight), all the
// messages that fit are built contiguously (in a per-thread scratch buffer, hot in the
// cache; a connection keeps only what a short write left) and go out in ONE send; reads
// take 64 KiB or more and parse every echoed message that arrived. So a connection
// makes at most one send and one recv per batch, whatever K is: the load
// generator's system calls per message fall as K grows, as a pipelining client's would.
// (The server sees what it would see from any pipelining client: up to K messages in one
// segment.) Latency is per message: each is stamped when its batch is written, and it is
// complete when its last byte has been read and checked.
//
// The load runs on T threads (default 1), each with its own epoll (edge-triggered,
// non-blocking sockets: a socket is read until a short read drains it, so no readiness
// is polled twice) over a share of the connections. Connection state lives in plain
// unsafe memory owned by its thread (no classes, no arrays, no allocation per message).
// The warm-up runs the same load unrecorded; then the measured window counts the
// messages whose echo completed inside it. The load generator's own CPU (user and system,
// per message and as utilisation, and its busiest thread) is reported next to the
// server's, so that a reader can see whether the load generator set the pace.
//
// --idle N opens N connections first and holds them, silent, for the whole run; the
// active connections open after them, so their first echo (in the warm-up) means the
// server has accepted every idle one. With --server-pid, the server's RSS and open
// descriptors are sampled before the idle connections open and at the end of the
// measured window (idle connections still held).
import ArgumentParser
import CEchoLinux
import EchoBenchSupport
import Foundation  // JSONEncoder
import Glibc
import Histogram

struct EchoLoad: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "echo-load", abstract: "Drives an echo server on 127.0.0.1 and checks every echoed byte.")

    @Option(help: "The server's port on 127.0.0.1.")
    var port: Int = 7000
    @Option(help: "Connections carrying load.")
    var connections: Int = 16
    @Option(help: "Message size in bytes (at least 8: the sequence number).")
    var size: Int = 64
    @Option(help: "Messages in flight per connection (1: ping-pong).")
    var inflight: Int = 1
    @Option(help: "Measured seconds.")
    var duration: Double = 5
    @Option(help: "Unrecorded seconds before the measurement.")
    var warmup: Double = 1
    @Option(help: "Extra connections opened first and held idle for the whole run.")
    var idle: Int = 0
    @Option(help: "Load threads, each with its own epoll over a share of the connections.")
    var threads: Int = 1
    @Option(name: .customLong("server-pid"), help: "The server's PID, to report its CPU time per message (and its RSS).")
    var serverPID: Int32?
    @Flag(help: "Print one JSON object instead of text.")
    var json = false

    func validate() throws {
        guard (1...65535).contains(port) else { throw ValidationError("--port must be in 1...65535") }
        guard connections >= 1 else { throw ValidationError("--connections must be at least 1") }
        guard (8...(1 << 20)).contains(size) else { throw ValidationError("--size must be in 8...1048576") }
        guard (1...4096).contains(inflight) else { throw ValidationError("--inflight must be in 1...4096") }
        guard inflight * size <= 64 << 20 else { throw ValidationError("--inflight × --size must be ≤ 64 MiB") }
        guard duration > 0, warmup >= 0 else { throw ValidationError("--duration must be > 0, --warmup >= 0") }
        guard idle >= 0 else { throw ValidationError("--idle must be >= 0") }
        guard (1...connections).contains(threads) else {
            throw ValidationError("--threads must be in 1...connections")
        }
    }

    func run() throws {
        raiseDescriptorLimit()
        let plan = Plan(size: size, inflight: inflight)
        let rssBeforeIdle = serverPID.flatMap { processRSSBytes(pid: $0) }

        // Idle connections first: they are held through the whole run.
        var idleSockets: [Int32] = []
        idleSockets.reserveCapacity(idle)
        var connectErrors = 0
        for _ in 0..<idle {
            switch connectLoopback(port: port) {
            case .success(let fd): idleSockets.append(fd)
            case .failure(let error):
                connectErrors += 1
                if connectErrors <= 10 { warn("idle connection: \(error)") }
            }
        }
        var activeFDs: [Int32] = []
        for _ in 0..<connections {
            switch connectLoopback(port: port) {
            case .success(let fd): activeFDs.append(fd)
            case .failure(let error):
                connectErrors += 1
                warn("connection: \(error)")
            }
        }
        guard !activeFDs.isEmpty else {
            warn("no connection to 127.0.0.1:\(port) could be made")
            throw ExitCode.failure
        }

        let start = monotonicNanoseconds()
        let measureStart = start + UInt64(warmup * 1e9)
        let measureEnd = measureStart + UInt64(duration * 1e9)
        let threadCount = min(threads, activeFDs.count)
        let workers = (0..<threadCount).map { t in
            // Connection i keeps its index (the header tag) whichever thread owns it.
            let mine = activeFDs.indices.filter { $0 % threadCount == t }
            return LoadThread(
                fds: mine.map { activeFDs[$0] }, indices: mine, plan: plan,
                measureStart: measureStart, measureEnd: measureEnd)
        }
        let handles = workers.map { worker in startThread { worker.run() } }

        // CPU snapshots at the window's edges, from this otherwise sleeping thread.
        sleep(untilMonotonic: measureStart)
        let server0 = serverPID.flatMap { processCPUNanoseconds(pid: $0) }
        let self0 = cpuNanoseconds(CLOCK_PROCESS_CPUTIME_ID)
        let usage0 = processUsage()
        let machine0 = machineCPUNanoseconds()
        let wall0 = monotonicNanoseconds()
        sleep(untilMonotonic: measureEnd)
        let server1 = serverPID.flatMap { processCPUNanoseconds(pid: $0) }
        let self1 = cpuNanoseconds(CLOCK_PROCESS_CPUTIME_ID)
        let usage1 = processUsage()
        let machine1 = machineCPUNanoseconds()
        let wall1 = monotonicNanoseconds()
        // Idle connections still held: the server's memory with them.
        let rssWithIdle = serverPID.flatMap { processRSSBytes(pid: $0) }
        let serverFDs = serverPID.flatMap { processOpenDescriptors(pid: $0) }
        for handle in handles { pthread_join(handle, nil) }
        for fd in idleSockets { close(fd) }
        for worker in workers { worker.closeAll() }

        var histogram = LoadThread.makeHistogram()
        var messages = 0, byteErrors = 0, bytesVerified = 0, failures = 0, sends = 0, receives = 0
        var busiest = 0.0
        for worker in workers {
            histogram.add(worker.histogram)
            messages += worker.messages
            byteErrors += worker.byteErrors
            bytesVerified += worker.bytesVerified
            failures += worker.connectionFailures
            sends += worker.windowSends
            receives += worker.windowReceives
            busiest = max(busiest, worker.cpuPercent)
        }
        let wall = Double(wall1 - wall0)
        let perMessage = { (nanoseconds: UInt64) in messages > 0 ? Double(nanoseconds) / Double(messages) : 0 }
        let micros = { (nanoseconds: UInt64) in Double(nanoseconds) / 1000 }
        let loadgenPercent = Double(self1 - self0) / wall * 100
        let machinePercent = Double(machine1.busy &- machine0.busy) / wall * 100
        var serverPerMessage: Double?, serverPercent: Double?, otherPercent: Double?
        if let server0, let server1 {
            serverPerMessage = perMessage(server1 - server0)
            serverPercent = Double(server1 - server0) / wall * 100
            // Tick-resolution counters on both sides: a few percent of noise either way.
            otherPercent = max(0, machinePercent - serverPercent! - loadgenPercent)
        }
        var result = LoadResult(
            port: port, connections: connections, idleConnections: idle, size: size, inflight: inflight,
            threads: workers.count, warmupSeconds: warmup, durationSeconds: wall / 1e9,
            connectionsEstablished: activeFDs.count, idleConnectionsEstablished: idleSockets.count,
            connectionErrors: connectErrors + failures, messages: messages,
            messagesPerSecond: Double(messages) / duration,
            p50Micros: micros(histogram.valueAtPercentile(50)),
            p99Micros: micros(histogram.valueAtPercentile(99)),
            p999Micros: micros(histogram.valueAtPercentile(99.9)),
            maxMicros: micros(histogram.max), meanMicros: histogram.mean / 1000,
            serverCPUNanosPerMessage: serverPerMessage, serverCPUPercent: serverPercent,
            loadgenCPUNanosPerMessage: perMessage(self1 - self0),
            loadgenCPUPercent: loadgenPercent, loadgenBusiestThreadPercent: busiest,
            machineCPUPercent: machinePercent, otherCPUPercent: otherPercent,
            stealPercent: Double(machine1.steal &- machine0.steal) / wall * 100,
            byteErrors: byteErrors, bytesVerified: bytesVerified)
        result.loadgenSystemCPUPercent = Double(usage1.system &- usage0.system) / wall * 100
        result.loadgenMessagesPerSend = sends > 0 ? Double(messages) / Double(sends) : nil
        result.loadgenMessagesPerReceive = receives > 0 ? Double(messages) / Double(receives) : nil
        result.serverRSSBeforeIdleBytes = rssBeforeIdle
        result.serverRSSBytes = rssWithIdle
        result.serverOpenDescriptors = serverFDs

        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            print(String(decoding: try encoder.encode(result), as: UTF8.self))
        } else {
            printText(result)
        }
        fflush(nil)  // all streams: `stdout` is a global var Swift 6 refuses
        if byteErrors > 0 { throw ExitCode(2) }
    }

    private func printText(_ r: LoadResult) {
        func f(_ value: Double, _ digits: Int = 1) -> String { String(format: "%.\(digits)f", value) }
        print("echo-load: 127.0.0.1:\(r.port), \(r.connections) connections × \(r.inflight) in flight × \(r.size) B, "
            + "\(f(r.durationSeconds)) s after \(f(r.warmupSeconds)) s warm-up, \(r.threads) load thread(s)")
        print("  connections  \(r.connectionsEstablished) established, \(r.idleConnectionsEstablished) idle, "
            + "\(r.connectionErrors) errors")
        print("  throughput   \(f(r.messagesPerSecond, 0)) msg/s (\(r.messages) messages)")
        print("  latency      p50 \(f(r.p50Micros)) µs, p99 \(f(r.p99Micros)) µs, p999 \(f(r.p999Micros)) µs, "
            + "max \(f(r.maxMicros)) µs, mean \(f(r.meanMicros)) µs")
        if let ns = r.serverCPUNanosPerMessage, let percent = r.serverCPUPercent {
            print("  server CPU   \(f(ns, 0)) ns/msg (\(f(percent))% of a CPU)")
        }
        let system = r.loadgenSystemCPUPercent.map { ", \(f($0))% in the kernel" } ?? ""
        print("  loadgen CPU  \(f(r.loadgenCPUNanosPerMessage, 0)) ns/msg (\(f(r.loadgenCPUPercent))% of a CPU\(system); "
            + "busiest thread \(f(r.loadgenBusiestThreadPercent))%)")
        if let perSend = r.loadgenMessagesPerSend, let perReceive = r.loadgenMessagesPerReceive {
            print("  batching     \(f(perSend, 2)) messages per send, \(f(perReceive, 2)) per recv")
        }
        print("  machine CPU  \(f(r.machineCPUPercent))% of a CPU; others \(r.otherCPUPercent.map { f($0) + "%" } ?? "?"), "
            + "steal \(f(r.stealPercent))%")
        if let rss = r.serverRSSBytes {
            let before = r.serverRSSBeforeIdleBytes.map { "\($0 / 1024) KiB before the idle connections, " } ?? ""
            print("  server RSS   \(before)\(rss / 1024) KiB at the window's end"
                + (r.serverOpenDescriptors.map { ", \($0) descriptors open" } ?? ""))
        }
        print("  byte errors  \(r.byteErrors) (\(r.bytesVerified) bytes checked)")
    }
}

// MARK: Messages

/// What every connection shares: the message shape and the pattern messages are cut from.
final class Plan: @unchecked Sendable {
    // @unchecked: immutable after init. The pattern lives as long as the process.
    let size: Int
    let inflight: Int
    /// Random bytes; a message's body is `size - 8` of them from an offset below 256.
    let pattern: UnsafeMutablePointer<UInt8>

    init(size: Int, inflight: Int) {
        self.size = size
        self.inflight = inflight
        pattern = .allocate(capacity: 256 + size)
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        for i in 0..<(256 + size) {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            pattern[i] = UInt8(truncatingIfNeeded: state >> 56)
        }
    }

    /// Where message `sequence` of a connection starts in the pattern.
    @inline(__always)
    static func patternOffset(_ sequence: UInt64, salt: UInt64) -> Int {
        Int(truncatingIfNeeded: (sequence &* 0x9E37 &+ salt) & 255)
    }
}

/// One loaded connection, a plain value in its load thread's table (reached through an
/// unsafe pointer: no reference counting, no exclusivity checks, no copy on write).
struct ConnectionState {
    var fd: Int32
    var alive = true
    /// EPOLLOUT is in the interest set (some output is waiting for room in the socket).
    var wantsWritable = false
    /// Mixed into each message's pattern offset, so connections send different bytes.
    var salt: UInt64
    /// The connection's index in the header's top 24 bits: bytes echoed on the wrong
    /// connection never pass the check.
    var headerTag: UInt64
    /// Sequence number of the next message to build; of the next message to complete.
    var sendSequence: UInt64 = 0
    var receiveSequence: UInt64 = 0
    /// Bytes of message `receiveSequence` already received and checked.
    var receiveOffset = 0
    /// Send time of each message in flight, in a ring of `inflight` slots (at most that
    /// many are ever in flight); the slot of `sendSequence` and of `receiveSequence`.
    var sendTimes: UnsafeMutablePointer<UInt64>
    var sendSlot = 0
    var receiveSlot = 0
    /// Output not yet taken by the socket: `outputCount` bytes from `outputHead`,
    /// allocated at the first short write (most connections never have one). Its
    /// capacity, `inflight × size`, always suffices: unsent messages are in flight.
    var output: UnsafeMutableRawPointer? = nil
    var outputHead = 0
    var outputCount = 0
}

// MARK: Load threads

final class LoadThread: @unchecked Sendable {
    // @unchecked: the thread owns everything until pthread_join, after which the main
    // thread reads the results.
    private let connections: UnsafeMutablePointer<ConnectionState>
    private let count: Int
    private let plan: Plan
    private let measureStart: UInt64
    private let measureEnd: UInt64
    /// The read buffer: at least 64 KiB, and room for two full batches (up to 1 MiB), so
    /// that one recv usually drains a connection and is short (no second recv to learn
    /// that it was drained).
    let readSize: Int

    // Results.
    private(set) var histogram = LoadThread.makeHistogram()
    private(set) var messages = 0
    private(set) var byteErrors = 0
    private(set) var bytesVerified = 0
    private(set) var connectionFailures = 0
    /// send and recv calls inside the window (recv calls that returned data).
    private(set) var windowSends = 0
    private(set) var windowReceives = 0
    /// This thread's CPU over wall time within the window, in percent.
    private(set) var cpuPercent = 0.0

    /// Nanoseconds, 3 significant digits, up to a minute.
    static func makeHistogram() -> Histogram<UInt64> {
        Histogram(lowestDiscernibleValue: 1, highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)
    }

    init(fds: [Int32], indices: [Int], plan: Plan, measureStart: UInt64, measureEnd: UInt64) {
        self.plan = plan
        self.measureStart = measureStart
        self.measureEnd = measureEnd
        count = fds.count
        readSize = max(64 * 1024, min(1 << 20, 2 * plan.inflight * plan.size))
        connections = .allocate(capacity: fds.count)
        for (slot, fd) in fds.enumerated() {
            let index = UInt64(indices[slot])
            let sendTimes = UnsafeMutablePointer<UInt64>.allocate(capacity: plan.inflight)
            sendTimes.initialize(repeating: 0, count: plan.inflight)
            (connections + slot).initialize(to: ConnectionState(
                fd: fd, salt: index &* 131, headerTag: index << 40, sendTimes: sendTimes))
        }
    }

    /// Closes the connections still open (after the thread has ended).
    func closeAll() {
        for slot in 0..<count where connections[slot].alive {
            close(connections[slot].fd)
            connections[slot].alive = false
        }
    }

    deinit {
        for slot in 0..<count {
            connections[slot].sendTimes.deallocate()
            connections[slot].output?.deallocate()
        }
        connections.deinitialize(count: count)
        connections.deallocate()
    }

    func run() {
        let epoll = epoll_create1(Int32(EPOLL_CLOEXEC))
        precondition(epoll >= 0, "epoll_create1 failed")
        defer { close(epoll) }
        let maxEvents: Int32 = 256
        let events = UnsafeMutablePointer<epoll_event>.allocate(capacity: Int(maxEvents))
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: readSize, alignment: 64)
        let scratch = UnsafeMutableRawPointer.allocate(byteCount: plan.inflight * plan.size, alignment: 64)
        defer {
            events.deallocate()
            buffer.deallocate()
            scratch.deallocate()
        }

        // Everything the loop touches per message is local: the compiler keeps it in
        // registers or on the stack, with no access checks.
        var loop = Loop(
            connections: connections, plan: plan, buffer: buffer, readSize: readSize, scratch: scratch,
            epoll: epoll, measureStart: measureStart, measureEnd: measureEnd, histogram: Self.makeHistogram())
        for slot in 0..<count {
            var event = epoll_event(
                events: EPOLLIN.rawValue | EPOLLET.rawValue, data: epoll_data_t(u64: UInt64(slot)))
            epoll_ctl(epoll, EPOLL_CTL_ADD, connections[slot].fd, &event)
        }
        for slot in 0..<count { loop.refill(slot, now: monotonicNanoseconds()) }

        var windowCPUStart: UInt64?
        var windowWallStart: UInt64 = 0
        while true {
            // A bounded wait, so that the window's edges are seen even without traffic.
            let ready = epoll_wait(epoll, events, maxEvents, 10)
            // Each connection's next batch goes out as soon as its read completes (not
            // after the whole epoll batch): the server starts on it while this thread
            // reads the next connection. (Deferring the sends to the end of the batch
            // was tried: it leaves the server idle in between and costs more per message.)
            for k in 0..<Int(max(ready, 0)) {
                let flags = events[k].events
                let slot = Int(truncatingIfNeeded: events[k].data.u64)
                guard connections[slot].alive else { continue }
                if flags & EPOLLOUT.rawValue != 0 { loop.flush(slot) }
                if connections[slot].alive
                    && flags & (EPOLLIN.rawValue | EPOLLERR.rawValue | EPOLLHUP.rawValue) != 0
                {
                    loop.readable(slot)
                }
            }
            let now = monotonicNanoseconds()
            loop.counting = now >= measureStart && now < measureEnd
            if windowCPUStart == nil && now >= measureStart {
                windowCPUStart = cpuNanoseconds(CLOCK_THREAD_CPUTIME_ID)
                windowWallStart = now
            }
            if now >= measureEnd {
                if let windowCPUStart, now > windowWallStart {
                    let cpu = cpuNanoseconds(CLOCK_THREAD_CPUTIME_ID) - windowCPUStart
                    cpuPercent = Double(cpu) / Double(now - windowWallStart) * 100
                }
                break
            }
        }
        histogram = loop.histogram
        messages = loop.messages
        byteErrors = loop.byteErrors
        bytesVerified = loop.bytesVerified
        connectionFailures = loop.failures
        windowSends = loop.windowSends
        windowReceives = loop.windowReceives
    }
}

/// The per-thread event loop's work: a value type kept in a local variable of the thread.
struct Loop {
    let connections: UnsafeMutablePointer<ConnectionState>
    let pattern: UnsafeMutablePointer<UInt8>
    let size: Int
    let inflight: Int
    let buffer: UnsafeMutableRawPointer
    let readSize: Int
    /// Where batches are built: `inflight × size` bytes.
    let scratch: UnsafeMutableRawPointer
    let epoll: Int32
    let measureStart: UInt64
    let measureEnd: UInt64

    var histogram: Histogram<UInt64>
    var messages = 0
    var byteErrors = 0
    var bytesVerified = 0
    var failures = 0
    var windowSends = 0
    var windowReceives = 0
    /// Inside the measured window (as of the last clock reading): count calls.
    var counting = false

    init(connections: UnsafeMutablePointer<ConnectionState>, plan: Plan, buffer: UnsafeMutableRawPointer,
         readSize: Int, scratch: UnsafeMutableRawPointer, epoll: Int32, measureStart: UInt64,
         measureEnd: UInt64, histogram: Histogram<UInt64>)
    {
        self.connections = connections
        pattern = plan.pattern
        size = plan.size
        inflight = plan.inflight
        self.buffer = buffer
        self.readSize = readSize
        self.scratch = scratch
        self.epoll = epoll
        self.measureStart = measureStart
        self.measureEnd = measureEnd
        self.histogram = histogram
    }

    /// Builds every message the connection has room for, stamps them `now`, and sends
    /// them all in one call. They are built in the thread's scratch buffer (hot in the
    /// cache, whatever the number of connections) and only what the socket does not take
    /// is copied to the connection's own buffer; behind output already waiting, they are
    /// appended to that buffer instead.
    mutating func refill(_ slot: Int, now: UInt64) {
        let c = connections + slot
        let room = inflight - Int(truncatingIfNeeded: c.pointee.sendSequence &- c.pointee.receiveSequence)
        guard room > 0 else { return }
        let bytes = room * size
        if c.pointee.outputCount > 0 {
            let output = c.pointee.output!
            if c.pointee.outputHead > 0 {
                memmove(output, output + c.pointee.outputHead, c.pointee.outputCount)
                c.pointee.outputHead = 0
            }
            build(c, room, into: output + c.pointee.outputCount, now: now)
            c.pointee.outputCount += bytes
            flush(slot)
            return
        }
        build(c, room, into: scratch, now: now)
        var sent = 0
        while sent < bytes {
            let n = send(c.pointee.fd, scratch + sent, bytes - sent, Int32(MSG_NOSIGNAL))
            if n > 0 {
                if counting { windowSends += 1 }
                sent += n
                if sent < bytes { break }  // a short write: the socket is full
            } else if n < 0 && errno == EINTR {
                continue
            } else if n < 0 && errno == EAGAIN {
                break
            } else {
                fail(slot)
                return
            }
        }
        if sent < bytes {
            if c.pointee.output == nil {
                c.pointee.output = .allocate(byteCount: inflight * size, alignment: 16)
            }
            c.pointee.output!.copyMemory(from: scratch + sent, byteCount: bytes - sent)
            c.pointee.outputHead = 0
            c.pointee.outputCount = bytes - sent
            setWritableInterest(slot, true)
        }
    }

    /// Writes `room` messages from the connection's next sequence number on at
    /// `destination`, contiguously, and stamps their send time.
    @inline(__always)
    private func build(_ c: UnsafeMutablePointer<ConnectionState>, _ room: Int, into start: UnsafeMutableRawPointer,
                       now: UInt64)
    {
        var destination = start
        var sequence = c.pointee.sendSequence
        var timeSlot = c.pointee.sendSlot
        let tag = c.pointee.headerTag, salt = c.pointee.salt
        let body = size - 8
        for _ in 0..<room {
            destination.storeBytes(of: (sequence ^ tag).littleEndian, as: UInt64.self)
            (destination + 8).copyMemory(from: pattern + Plan.patternOffset(sequence, salt: salt), byteCount: body)
            c.pointee.sendTimes[timeSlot] = now
            timeSlot += 1
            if timeSlot == inflight { timeSlot = 0 }
            sequence &+= 1
            destination += size
        }
        c.pointee.sendSequence = sequence
        c.pointee.sendSlot = timeSlot
    }

    /// Writes the connection's waiting output (after EPOLLOUT); keeps EPOLLOUT in the
    /// interest set only while some remains.
    mutating func flush(_ slot: Int) {
        let c = connections + slot
        while c.pointee.outputCount > 0 {
            let n = send(c.pointee.fd, c.pointee.output! + c.pointee.outputHead, c.pointee.outputCount,
                         Int32(MSG_NOSIGNAL))
            if n > 0 {
                if counting { windowSends += 1 }
                let short = n < c.pointee.outputCount
                c.pointee.outputHead += n
                c.pointee.outputCount -= n
                if c.pointee.outputCount == 0 { c.pointee.outputHead = 0 }
                if short { break }  // the socket is full: its next EPOLLOUT edge brings us back
            } else if n < 0 && errno == EINTR {
                continue
            } else if n < 0 && errno == EAGAIN {
                break
            } else {
                fail(slot)
                return
            }
        }
        setWritableInterest(slot, c.pointee.outputCount > 0)
    }

    /// EPOLLOUT in the connection's interest set or not (edge-triggered like EPOLLIN:
    /// modifying the set re-checks readiness, so no edge is lost).
    private func setWritableInterest(_ slot: Int, _ wantsWritable: Bool) {
        let c = connections + slot
        guard wantsWritable != c.pointee.wantsWritable else { return }
        c.pointee.wantsWritable = wantsWritable
        var event = epoll_event(
            events: EPOLLIN.rawValue | EPOLLET.rawValue | (wantsWritable ? EPOLLOUT.rawValue : 0),
            data: epoll_data_t(u64: UInt64(slot)))
        epoll_ctl(epoll, EPOLL_CTL_MOD, c.pointee.fd, &event)
    }

    /// Reads until the socket is drained (edge-triggered: a read shorter than the buffer
    /// emptied it; later data brings a new event), checking every byte and completing
    /// every message that arrived; then refills the connection with one batch.
    mutating func readable(_ slot: Int) {
        var completed = 0
        var now: UInt64 = 0
        while true {
            let n = recv(connections[slot].fd, buffer, readSize, 0)
            if n < 0 && errno == EINTR { continue }
            if n < 0 && errno == EAGAIN { break }
            if n <= 0 {
                fail(slot)  // the server closed or reset the connection
                return
            }
            now = monotonicNanoseconds()
            completed += parse(slot, count: n, now: now)
            if n < readSize { break }
        }
        if completed > 0 && now < measureEnd {
            refill(slot, now: monotonicNanoseconds())
        }
    }

    /// Checks `count` bytes just read into the buffer (completing at `now`) against what
    /// the connection's messages must hold; returns how many messages they completed.
    @inline(__always)
    private mutating func parse(_ slot: Int, count n: Int, now: UInt64) -> Int {
        let c = connections + slot
        let recording = now >= measureStart && now < measureEnd
        counting = recording
        bytesVerified &+= n
        var completed = 0
        // Messages that complete in this read and were sent in the same batch have the
        // same latency: one histogram entry per run of equal send times.
        var runStamp: UInt64 = 0
        var runCount: UInt64 = 0
        var position = 0
        var sequence = c.pointee.receiveSequence
        var offset = c.pointee.receiveOffset
        var timeSlot = c.pointee.receiveSlot
        let tag = c.pointee.headerTag, salt = c.pointee.salt
        let bytes = UnsafeRawPointer(buffer)
        while position < n {
            let take = min(size - offset, n - position)
            if offset == 0 && take == size {
                // A whole message: the header as one word, the body with one memcmp.
                let header = bytes.loadUnaligned(fromByteOffset: position, as: UInt64.self)
                if header != (sequence ^ tag).littleEndian {
                    byteErrors += headerMismatches(bytes + position, count: 8, from: 0, sequence ^ tag)
                }
                let expected = pattern + Plan.patternOffset(sequence, salt: salt)
                if memcmp(bytes + position + 8, expected, size - 8) != 0 {
                    byteErrors += bodyMismatches(bytes + position + 8, expected, count: size - 8)
                }
            } else {
                byteErrors += partialMismatches(
                    bytes + position, count: take, offset: offset, sequence: sequence, tag: tag, salt: salt)
            }
            position += take
            offset += take
            if offset == size {
                if recording {
                    let stamp = c.pointee.sendTimes[timeSlot]
                    if stamp != runStamp {
                        if runCount > 0 { _ = histogram.record(now &- runStamp, count: runCount) }
                        runStamp = stamp
                        runCount = 0
                    }
                    runCount += 1
                }
                timeSlot += 1
                if timeSlot == inflight { timeSlot = 0 }
                sequence &+= 1
                offset = 0
                completed += 1
            }
        }
        if runCount > 0 { _ = histogram.record(now &- runStamp, count: runCount) }
        c.pointee.receiveSequence = sequence
        c.pointee.receiveOffset = offset
        c.pointee.receiveSlot = timeSlot
        if recording {
            messages += completed
            windowReceives += 1
        }
        return completed
    }

    /// Mismatching bytes among `count` received bytes of a message, from byte `offset`.
    private func partialMismatches(
        _ data: UnsafeRawPointer, count: Int, offset: Int, sequence: UInt64, tag: UInt64, salt: UInt64
    ) -> Int {
        var errors = 0
        var i = 0
        if offset < 8 {
            let inHeader = min(8 - offset, count)
            errors += headerMismatches(data, count: inHeader, from: offset, sequence ^ tag)
            i = inHeader
        }
        if i < count {
            let expected = pattern + Plan.patternOffset(sequence, salt: salt) + (offset + i - 8)
            if memcmp(data + i, expected, count - i) != 0 {
                errors += bodyMismatches(data + i, expected, count: count - i)
            }
        }
        return errors
    }

    /// Mismatches among `count` header bytes starting at header byte `from`.
    private func headerMismatches(_ data: UnsafeRawPointer, count: Int, from: Int, _ word: UInt64) -> Int {
        // The header went out little-endian: its byte k is bits 8k..8k+7 of the word.
        var errors = 0
        for i in 0..<count {
            let byte = UInt8(truncatingIfNeeded: word >> (8 * UInt64(from + i)))
            if data.load(fromByteOffset: i, as: UInt8.self) != byte { errors += 1 }
        }
        return errors
    }

    private func bodyMismatches(_ data: UnsafeRawPointer, _ expected: UnsafePointer<UInt8>, count: Int) -> Int {
        var errors = 0
        for j in 0..<count where data.load(fromByteOffset: j, as: UInt8.self) != expected[j] { errors += 1 }
        return errors
    }

    mutating func fail(_ slot: Int) {
        connections[slot].alive = false
        failures += 1
        close(connections[slot].fd)
    }
}

// MARK: Plumbing

enum ConnectError: Error, CustomStringConvertible {
    case system(String, Int32)
    var description: String {
        switch self {
        case .system(let call, let errno): "\(call): \(String(cString: strerror(errno)))"
        }
    }
}

/// A blocking connect to 127.0.0.1 (fast on loopback: it returns once the handshake is
/// done), then TCP_NODELAY and O_NONBLOCK.
func connectLoopback(port: Int) -> Result<Int32, ConnectError> {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { return .failure(.system("socket", errno)) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = UInt16(port).bigEndian
    address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
    let status = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
        }
    }
    guard status == 0 else {
        let error = errno
        close(fd)
        return .failure(.system("connect to 127.0.0.1:\(port)", error))
    }
    var one: Int32 = 1
    setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
    return .success(fd)
}

/// The process's user and system CPU time (getrusage), in nanoseconds.
func processUsage() -> (user: UInt64, system: UInt64) {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    func ns(_ t: timeval) -> UInt64 { UInt64(t.tv_sec) &* 1_000_000_000 &+ UInt64(t.tv_usec) &* 1000 }
    return (ns(usage.ru_utime), ns(usage.ru_stime))
}

/// Starts a plain pthread (the load must not share Swift's cooperative pool).
func startThread(_ body: @escaping () -> Void) -> pthread_t {
    final class Body {
        let run: () -> Void
        init(_ run: @escaping () -> Void) { self.run = run }
    }
    var handle = pthread_t()
    let status = pthread_create(&handle, nil, { raw in
        Unmanaged<Body>.fromOpaque(raw!).takeRetainedValue().run()
        return nil
    }, Unmanaged.passRetained(Body(body)).toOpaque())
    precondition(status == 0, "pthread_create failed: \(status)")
    return handle
}

func warn(_ message: String) {
    let line = "echo-load: \(message)\n"
    _ = line.withCString { write(2, $0, strlen($0)) }
}

EchoLoad.main()
