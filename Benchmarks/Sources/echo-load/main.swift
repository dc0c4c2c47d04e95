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
// are counted and make the exit status 2. Latency is per message, from the write that carried it to the read
// that completed its echo.
//
// The load runs on T threads (default 1), each with its own epoll (level-triggered,
// non-blocking sockets) over a share of the connections. A completed echo immediately
// sends the next message, and all the messages a read completes go out in one write.
// The warm-up runs the same load unrecorded; then the measured window counts the
// messages whose echo completed inside it. The threads' CPU is reported so that a reader
// can see the load generator did not set the pace.
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
    @Option(name: .customLong("server-pid"), help: "The server's PID, to report its CPU time per message.")
    var serverPID: Int32?
    @Flag(help: "Print one JSON object instead of text.")
    var json = false

    func validate() throws {
        guard (1...65535).contains(port) else { throw ValidationError("--port must be in 1...65535") }
        guard connections >= 1 else { throw ValidationError("--connections must be at least 1") }
        guard (8...(1 << 20)).contains(size) else { throw ValidationError("--size must be in 8...1048576") }
        guard inflight >= 1 else { throw ValidationError("--inflight must be at least 1") }
        guard duration > 0, warmup >= 0 else { throw ValidationError("--duration must be > 0, --warmup >= 0") }
        guard idle >= 0 else { throw ValidationError("--idle must be >= 0") }
        guard (1...connections).contains(threads) else {
            throw ValidationError("--threads must be in 1...connections")
        }
    }

    func run() throws {
        raiseDescriptorLimit()
        let plan = Plan(size: size, inflight: inflight)

        // Idle connections first: they are held through the whole run.
        var idleSockets: [Int32] = []
        var connectErrors = 0
        for _ in 0..<idle {
            switch connectLoopback(port: port) {
            case .success(let fd): idleSockets.append(fd)
            case .failure(let error):
                connectErrors += 1
                warn("idle connection: \(error)")
            }
        }
        var active: [Connection] = []
        for index in 0..<connections {
            switch connectLoopback(port: port) {
            case .success(let fd): active.append(Connection(fd: fd, index: index, plan: plan))
            case .failure(let error):
                connectErrors += 1
                warn("connection: \(error)")
            }
        }
        guard !active.isEmpty else {
            warn("no connection to 127.0.0.1:\(port) could be made")
            throw ExitCode.failure
        }

        let start = monotonicNanoseconds()
        let measureStart = start + UInt64(warmup * 1e9)
        let measureEnd = measureStart + UInt64(duration * 1e9)
        let threadCount = min(threads, active.count)
        let workers = (0..<threadCount).map { t in
            LoadThread(
                connections: active.enumerated().filter { $0.offset % threadCount == t }.map(\.element),
                plan: plan, measureStart: measureStart, measureEnd: measureEnd)
        }
        let handles = workers.map { worker in startThread { worker.run() } }

        // CPU snapshots at the window's edges, from this otherwise sleeping thread.
        sleep(untilMonotonic: measureStart)
        let server0 = serverPID.flatMap { processCPUNanoseconds(pid: $0) }
        let self0 = cpuNanoseconds(CLOCK_PROCESS_CPUTIME_ID)
        let machine0 = machineCPUNanoseconds()
        let wall0 = monotonicNanoseconds()
        sleep(untilMonotonic: measureEnd)
        let server1 = serverPID.flatMap { processCPUNanoseconds(pid: $0) }
        let self1 = cpuNanoseconds(CLOCK_PROCESS_CPUTIME_ID)
        let machine1 = machineCPUNanoseconds()
        let wall1 = monotonicNanoseconds()
        for handle in handles { pthread_join(handle, nil) }
        for fd in idleSockets { close(fd) }
        for connection in active where connection.alive { close(connection.fd) }

        var histogram = LoadThread.makeHistogram()
        var messages = 0, byteErrors = 0, bytesVerified = 0, failures = 0
        var busiest = 0.0
        for worker in workers {
            histogram.add(worker.histogram)
            messages += worker.messages
            byteErrors += worker.byteErrors
            bytesVerified += worker.bytesVerified
            failures += worker.connectionFailures
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
        let result = LoadResult(
            port: port, connections: connections, idleConnections: idle, size: size, inflight: inflight,
            threads: workers.count, warmupSeconds: warmup, durationSeconds: wall / 1e9,
            connectionsEstablished: active.count, idleConnectionsEstablished: idleSockets.count,
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
        print("  loadgen CPU  \(f(r.loadgenCPUNanosPerMessage, 0)) ns/msg (\(f(r.loadgenCPUPercent))% of a CPU; "
            + "busiest thread \(f(r.loadgenBusiestThreadPercent))%)")
        print("  machine CPU  \(f(r.machineCPUPercent))% of a CPU; others \(r.otherCPUPercent.map { f($0) + "%" } ?? "?"), "
            + "steal \(f(r.stealPercent))%")
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
    func patternOffset(_ sequence: UInt64, salt: UInt64) -> Int {
        Int(truncatingIfNeeded: (sequence &* 0x9E37 &+ salt) & 255)
    }
}

/// A growable byte queue: output the socket has not taken yet.
struct ByteQueue {
    private(set) var base = UnsafeMutablePointer<UInt8>.allocate(capacity: 4096)
    private(set) var head = 0
    private(set) var count = 0
    private var capacity = 4096

    var isEmpty: Bool { count == 0 }
    var bytes: UnsafeMutablePointer<UInt8> { base + head }

    /// Room for `n` more bytes at the tail; returns where they go (the caller writes them).
    mutating func reserve(_ n: Int) -> UnsafeMutablePointer<UInt8> {
        if head + count + n > capacity {
            if head > 0 {
                memmove(base, base + head, count)  // the regions may overlap
                head = 0
            }
            if count + n > capacity {
                var newCapacity = capacity * 2
                while newCapacity < count + n { newCapacity *= 2 }
                let grown = UnsafeMutablePointer<UInt8>.allocate(capacity: newCapacity)
                grown.update(from: base, count: count)
                base.deallocate()
                base = grown
                capacity = newCapacity
            }
        }
        let tail = base + head + count
        count += n
        return tail
    }

    mutating func consume(_ n: Int) {
        head += n
        count -= n
        if count == 0 { head = 0 }
    }

    func deallocate() { base.deallocate() }
}

/// One loaded connection: confined to the load thread that owns it.
final class Connection {
    let fd: Int32
    /// Mixed into each message's pattern offset, so connections send different bytes.
    let salt: UInt64
    /// The connection's index in the header's top 24 bits: bytes echoed on the wrong
    /// connection never pass the check.
    let headerTag: UInt64
    let plan: Plan
    var sendSequence: UInt64 = 0
    var receiveSequence: UInt64 = 0
    /// Bytes of message `receiveSequence` already received and checked.
    var receiveOffset = 0
    /// Send time of each message in flight, by sequence number modulo `inflight` (at most
    /// `inflight` are ever in flight, so no two share a slot).
    let sendTimes: UnsafeMutablePointer<UInt64>
    var output = ByteQueue()
    var wantsWritable = false
    var alive = true
    /// Its index in its load thread's list: the epoll event's data.
    var slot = 0

    init(fd: Int32, index: Int, plan: Plan) {
        self.fd = fd
        self.plan = plan
        salt = UInt64(index) &* 131
        headerTag = UInt64(index) << 40
        sendTimes = .allocate(capacity: plan.inflight)
        sendTimes.initialize(repeating: 0, count: plan.inflight)
    }

    deinit {
        sendTimes.deallocate()
        output.deallocate()
    }

    /// Appends the next `count` messages to the output and stamps their send time.
    func queueMessages(_ count: Int, now: UInt64) {
        let size = plan.size
        for _ in 0..<count {
            let sequence = sendSequence
            let destination = output.reserve(size)
            UnsafeMutableRawPointer(destination).storeBytes(of: (sequence ^ headerTag).littleEndian, as: UInt64.self)
            (destination + 8).update(from: plan.pattern + plan.patternOffset(sequence, salt: salt), count: size - 8)
            sendTimes[Int(sequence % UInt64(plan.inflight))] = now
            sendSequence = sequence &+ 1
        }
    }

    /// Checks `count` received bytes against what message `receiveSequence` holds from
    /// `receiveOffset` on; returns how many differ.
    @inline(__always)
    func mismatches(_ data: UnsafePointer<UInt8>, count: Int) -> Int {
        var errors = 0
        var i = 0
        var offset = receiveOffset
        if offset < 8 {
            let header = (receiveSequence ^ headerTag).littleEndian
            withUnsafeBytes(of: header) { expected in
                while i < count && offset < 8 {
                    if data[i] != expected[offset] { errors += 1 }
                    i += 1
                    offset += 1
                }
            }
        }
        if i < count {
            let expected = plan.pattern + plan.patternOffset(receiveSequence, salt: salt) + (offset - 8)
            if memcmp(data + i, expected, count - i) != 0 {
                for j in 0..<(count - i) where data[i + j] != expected[j] { errors += 1 }
            }
        }
        return errors
    }
}

// MARK: Load threads

final class LoadThread: @unchecked Sendable {
    // @unchecked: the thread owns everything until pthread_join, after which the main
    // thread reads the results.
    private let connections: [Connection]
    private let plan: Plan
    private let measureStart: UInt64
    private let measureEnd: UInt64
    private static let readSize = 256 * 1024

    // Results.
    private(set) var histogram = LoadThread.makeHistogram()
    private(set) var messages = 0
    private(set) var byteErrors = 0
    private(set) var bytesVerified = 0
    private(set) var connectionFailures = 0
    /// This thread's CPU over wall time within the window, in percent.
    private(set) var cpuPercent = 0.0

    /// Nanoseconds, 3 significant digits, up to a minute.
    static func makeHistogram() -> Histogram<UInt64> {
        Histogram(lowestDiscernibleValue: 1, highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)
    }

    init(connections: [Connection], plan: Plan, measureStart: UInt64, measureEnd: UInt64) {
        self.connections = connections
        self.plan = plan
        self.measureStart = measureStart
        self.measureEnd = measureEnd
        for (slot, connection) in connections.enumerated() { connection.slot = slot }
    }

    func run() {
        let epoll = epoll_create1(Int32(EPOLL_CLOEXEC))
        precondition(epoll >= 0, "epoll_create1 failed")
        defer { close(epoll) }
        for connection in connections {
            var event = epoll_event(events: EPOLLIN.rawValue, data: epoll_data_t(u64: UInt64(connection.slot)))
            epoll_ctl(epoll, EPOLL_CTL_ADD, connection.fd, &event)
        }
        let now = monotonicNanoseconds()
        for connection in connections {
            connection.queueMessages(plan.inflight, now: now)
            flush(connection, epoll: epoll)
        }

        let maxEvents: Int32 = 512
        let events = UnsafeMutablePointer<epoll_event>.allocate(capacity: Int(maxEvents))
        let buffer = UnsafeMutablePointer<UInt8>.allocate(capacity: Self.readSize)
        defer {
            events.deallocate()
            buffer.deallocate()
        }
        var windowCPUStart: UInt64?
        var windowWallStart: UInt64 = 0
        while true {
            // A bounded wait, so that the window's edges are seen even without traffic.
            let ready = epoll_wait(epoll, events, maxEvents, 10)
            for k in 0..<Int(max(ready, 0)) {
                let event = events[k]
                let connection = connections[Int(event.data.u64)]
                guard connection.alive else { continue }
                if event.events & EPOLLOUT.rawValue != 0 { flush(connection, epoll: epoll) }
                if connection.alive && event.events & (EPOLLIN.rawValue | EPOLLERR.rawValue | EPOLLHUP.rawValue) != 0 {
                    readable(connection, buffer: buffer, epoll: epoll)
                }
            }
            let now = monotonicNanoseconds()
            if windowCPUStart == nil && now >= measureStart {
                windowCPUStart = cpuNanoseconds(CLOCK_THREAD_CPUTIME_ID)
                windowWallStart = now
            }
            if now >= measureEnd {
                if let windowCPUStart, now > windowWallStart {
                    let cpu = cpuNanoseconds(CLOCK_THREAD_CPUTIME_ID) - windowCPUStart
                    cpuPercent = Double(cpu) / Double(now - windowWallStart) * 100
                }
                return
            }
        }
    }

    private func readable(_ connection: Connection, buffer: UnsafeMutablePointer<UInt8>, epoll: Int32) {
        let now = monotonicNanoseconds()
        let recording = now >= measureStart && now < measureEnd
        let size = plan.size
        let slots = UInt64(plan.inflight)
        var completed = 0
        while true {
            let n = recv(connection.fd, buffer, Self.readSize, 0)
            if n < 0 && errno == EINTR { continue }
            if n < 0 && errno == EAGAIN { break }
            if n <= 0 {
                fail(connection)  // the server closed or reset the connection
                return
            }
            bytesVerified += n
            var position = 0
            while position < n {
                let take = min(size - connection.receiveOffset, n - position)
                byteErrors += connection.mismatches(buffer + position, count: take)
                position += take
                connection.receiveOffset += take
                if connection.receiveOffset == size {
                    if recording {
                        let sent = connection.sendTimes[Int(connection.receiveSequence % slots)]
                        histogram.record(now &- sent)
                        messages += 1
                    }
                    connection.receiveSequence &+= 1
                    connection.receiveOffset = 0
                    completed += 1
                }
            }
            // Level-triggered: a short read drained the socket; more is reported later.
            if n < Self.readSize { break }
        }
        if completed > 0 && now < measureEnd {
            connection.queueMessages(completed, now: monotonicNanoseconds())
            flush(connection, epoll: epoll)
        }
    }

    /// Writes queued output; asks for EPOLLOUT only while some remains.
    private func flush(_ connection: Connection, epoll: Int32) {
        while !connection.output.isEmpty {
            let n = send(connection.fd, connection.output.bytes, connection.output.count, Int32(MSG_NOSIGNAL))
            if n > 0 {
                connection.output.consume(n)
            } else if n < 0 && errno == EINTR {
                continue
            } else if n < 0 && errno == EAGAIN {
                break
            } else {
                fail(connection)
                return
            }
        }
        let wantsWritable = !connection.output.isEmpty
        if wantsWritable != connection.wantsWritable {
            connection.wantsWritable = wantsWritable
            var event = epoll_event(
                events: EPOLLIN.rawValue | (wantsWritable ? EPOLLOUT.rawValue : 0),
                data: epoll_data_t(u64: UInt64(connection.slot)))
            epoll_ctl(epoll, EPOLL_CTL_MOD, connection.fd, &event)
        }
    }

    private func fail(_ connection: Connection) {
        connection.alive = false
        connectionFailures += 1
        close(connection.fd)
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

/// A blocking connect to 127.0.0.1 (fast on loopback), then TCP_NODELAY and O_NONBLOCK.
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
