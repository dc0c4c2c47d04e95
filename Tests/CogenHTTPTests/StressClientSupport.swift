// Client machinery for the stress suites (slowloris, graceful shutdown, streaming): plain
// POSIX sockets driven from threads of their own (never the cooperative pool), kernel
// queue figures (`/proc/net/tcp`, `FIONREAD`, `SIOCOUTQ`) to account for every byte a
// server took from or gave to the kernel, and the process's resident memory.

import CURing
import CogenHTTP
import CogenUring
import Foundation
import PropertyTestSupport
import Testing

/// The suites that load the machine (slowloris, streaming): serialized together, so one
/// never measures while the other moves megabytes or trickles to a thousand connections.
/// (Each is `.serialized` within itself too.)
@Suite(.serialized)
enum StressTests {}

// MARK: - Time and figures

/// `CLOCK_MONOTONIC` in nanoseconds.
func monotonicNanoseconds() -> UInt64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
}

/// The nearest-rank percentile `fraction` (0...1) of `samples`; 0 when there are none.
func percentile(_ samples: [UInt64], _ fraction: Double) -> UInt64 {
    guard !samples.isEmpty else { return 0 }
    let sorted = samples.sorted()
    let rank = Int((fraction * Double(sorted.count)).rounded(.up)) - 1
    return sorted[min(max(rank, 0), sorted.count - 1)]
}

/// Nanoseconds as milliseconds with three decimals, for printed figures.
func milliseconds(_ nanoseconds: UInt64) -> String {
    String(format: "%.3f ms", Double(nanoseconds) / 1e6)
}

/// Sleeps the calling (non-pool) thread.
func threadSleep(milliseconds: Int) {
    var request = timespec(tv_sec: milliseconds / 1000, tv_nsec: (milliseconds % 1000) * 1_000_000)
    var remaining = timespec()
    while nanosleep(&request, &remaining) != 0 && errno == EINTR { request = remaining }
}

/// Polls `condition` every few milliseconds on the calling (non-pool) thread until it holds
/// or `timeout` passes; returns whether it held.
func waitUntil(timeout: Duration = .seconds(10), _ condition: () -> Bool) -> Bool {
    let end = monotonicNanoseconds() + UInt64(timeout.components.seconds) * 1_000_000_000
    while !condition() {
        if monotonicNanoseconds() > end { return false }
        threadSleep(milliseconds: 2)
    }
    return true
}

/// `waitUntil` for a task: polls every few milliseconds with `Task.sleep` (a cooperative
/// thread is not blocked meanwhile).
func eventually(timeout: Duration = .seconds(10), _ condition: () -> Bool) async -> Bool {
    let clock = ContinuousClock()
    let end = clock.now + timeout
    while !condition() {
        if clock.now > end { return false }
        try? await Task.sleep(for: .milliseconds(5))
    }
    return true
}

// MARK: - Process state

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (process-wide: callers run in a
/// `.serialized` suite); returns the soft limit now in force.
func raiseDescriptorLimit() -> Int {
    var limit = rlimit()
    guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 1024 }
    if limit.rlim_cur < limit.rlim_max {
        var raised = limit
        raised.rlim_cur = limit.rlim_max
        if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) == 0 { limit = raised }
    }
    return limit.rlim_cur > rlim_t(Int.max) ? Int.max : Int(limit.rlim_cur)
}

/// The whole text of a `/proc` file (read to its end: such files report a size of 0, and
/// one `read` returns a page at most).
func readProcFile(_ path: String) -> String? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65536)
    while true {
        let count = read(fd, &buffer, buffer.count)
        if count < 0 && errno == EINTR { continue }
        guard count > 0 else { break }
        bytes += buffer[..<count]
    }
    return String(decoding: bytes, as: UTF8.self)
}

/// The process's resident set size in bytes (`/proc/self/statm`), 0 if unreadable.
func residentBytes() -> Int {
    guard let text = readProcFile("/proc/self/statm") else { return 0 }
    let fields = text.split(separator: " ")
    guard fields.count > 1, let pages = Int(fields[1]) else { return 0 }
    return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
}

/// Scheduler figures of threads (`/proc/self/task/*/schedstat`): time on a CPU, and time
/// spent runnable but waiting for one (the run queue), in nanoseconds.
struct SchedulerTimes: Sendable {
    var running: UInt64 = 0
    var waiting: UInt64 = 0
    /// Times the threads were put on a CPU.
    var scheduled: UInt64 = 0

    /// Shares (%) of a stretch of wall time, and the mean wait for a CPU each time a thread
    /// became runnable (nanoseconds): a thread woken thousands of times a second waits a
    /// little each time even on an idle machine; a starved one waits long.
    struct Shares: Sendable, CustomStringConvertible {
        var running: Double
        var waiting: Double
        var meanWait: Double
        var description: String {
            String(format: "%.0f / %.0f %% (mean wait %.0f µs)", running, waiting, meanWait / 1000)
        }
    }

    /// The sums over this process's threads whose name starts with `prefix`.
    static func threads(namedWithPrefix prefix: String) -> SchedulerTimes {
        guard let tasks = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task") else {
            return SchedulerTimes()
        }
        var total = SchedulerTimes()
        for task in tasks {
            guard let name = readProcFile("/proc/self/task/\(task)/comm"), name.hasPrefix(prefix) else { continue }
            total.add(readProcFile("/proc/self/task/\(task)/schedstat"))
        }
        return total
    }

    /// The calling thread's.
    static var currentThread: SchedulerTimes {
        var times = SchedulerTimes()
        times.add(readProcFile("/proc/thread-self/schedstat"))
        return times
    }

    private mutating func add(_ schedstat: String?) {
        let fields = (schedstat ?? "").split(separator: " ")
        guard fields.count >= 3, let run = UInt64(fields[0]), let wait = UInt64(fields[1]),
            let count = UInt64(fields[2].filter { !$0.isWhitespace })
        else { return }
        running += run
        waiting += wait
        scheduled += count
    }

    /// What happened between `earlier` and `self`, as shares (%) of `wall` nanoseconds.
    func shares(since earlier: SchedulerTimes, over wall: UInt64) -> Shares {
        let wall = Double(max(wall, 1))
        let waited = Double(waiting &- earlier.waiting)
        return Shares(
            running: Double(running &- earlier.running) / wall * 100, waiting: waited / wall * 100,
            meanWait: waited / Double(max(scheduled &- earlier.scheduled, 1)))
    }
}

/// Bytes as MiB with one decimal, for printed figures.
func mebibytes(_ bytes: Int) -> String { String(format: "%.1f MiB", Double(bytes) / 1_048_576) }

// MARK: - Raw sockets

/// Connects a TCP socket to 127.0.0.1:`port` (blocking connect, then optionally
/// `O_NONBLOCK`). Buffer sizes are set before `connect`, which turns off the kernel's
/// autotuning for them: a small receive buffer makes a slow reader's window small, a small
/// send buffer makes a writer block early.
func connectLoopback(
    port: UInt16, sendBuffer: Int32? = nil, receiveBuffer: Int32? = nil, nonBlocking: Bool = false,
    timeoutSeconds: Int = 10
) throws -> Int32 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { throw ClientError(description: "socket: errno \(errno)") }
    var one: Int32 = 1
    setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    if var size = sendBuffer {
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, socklen_t(MemoryLayout<Int32>.size))
    }
    if var size = receiveBuffer {
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
    }
    var timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    let status = connectToLoopback(fd, port: port)
    guard status == 0 else {
        let error = errno
        Glibc.close(fd)
        throw ClientError(description: "connect: errno \(error)")
    }
    if nonBlocking {
        let flags = fcntl(fd, F_GETFL)
        _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK)
    }
    return fd
}

/// Closes `fd` with a reset (`SO_LINGER` 0): no `TIME_WAIT` left on the client's port,
/// so a test that opens thousands of connections does not run out of ephemeral ports.
func closeWithReset(_ fd: Int32) {
    var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
    Glibc.close(fd)
}

/// The local port of a socket.
func localPort(of fd: Int32) -> UInt16 {
    var address = sockaddr_in()
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
    }
    return UInt16(bigEndian: address.sin_port)
}

/// Bytes waiting in a socket's receive queue (`FIONREAD`, alias `SIOCINQ`).
func bytesInReceiveQueue(_ fd: Int32) -> Int {
    var count: Int32 = 0
    _ = ioctl(fd, UInt(FIONREAD), &count)
    return Int(count)
}

/// Bytes in a socket's send queue not yet acknowledged by the peer (`SIOCOUTQ`).
func bytesInSendQueue(_ fd: Int32) -> Int {
    var count: Int32 = 0
    _ = ioctl(fd, 0x5411 /* SIOCOUTQ = TIOCOUTQ */, &count)
    return Int(count)
}

/// A TCP socket's kernel queues as `/proc/net/tcp` shows them: `tx` = written and not yet
/// acknowledged (`write_seq - snd_una`), `rx` = received and not yet read
/// (`rcv_nxt - copied_seq`). This is how a test sees the queues of the server's side of a
/// loopback connection, whose descriptor it does not have.
struct KernelQueues: Equatable, CustomStringConvertible {
    var tx: Int
    var rx: Int
    var description: String { "tx \(tx) rx \(rx)" }

    /// The queues of the IPv4 socket bound to 127.0.0.1:`localPort` and connected to
    /// 127.0.0.1:`remotePort`; nil if there is none.
    static func of(localPort: UInt16, remotePort: UInt16) -> KernelQueues? {
        table()[key(localPort: localPort, remotePort: remotePort)]
    }

    static func key(localPort: UInt16, remotePort: UInt16) -> UInt32 { UInt32(localPort) << 16 | UInt32(remotePort) }

    /// Every established 127.0.0.1-to-127.0.0.1 IPv4 TCP socket's queues, by
    /// `key(localPort:remotePort:)`, through `NETLINK_SOCK_DIAG` (what `ss` uses), asking for
    /// established sockets only: this shared machine's namespace holds tens of thousands of
    /// `TIME_WAIT` entries (other test runs, benchmarks), which `/proc/net/tcp` formats and
    /// a parser would have to skip (megabytes a sample). `/proc/net/tcp` is the fallback.
    /// An established socket's `idiag_rqueue`/`idiag_wqueue` are the same figures
    /// `/proc/net/tcp` shows (`rcv_nxt - copied_seq`, `write_seq - snd_una`).
    static func table() -> [UInt32: KernelQueues] {
        diagnosticsTable() ?? procTable()
    }

    static func diagnosticsTable() -> [UInt32: KernelQueues]? {
        let fd = socket(
            16 /* AF_NETLINK */, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 4 /* NETLINK_SOCK_DIAG */)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        // struct nlmsghdr (16 bytes, host order) + struct inet_diag_req_v2 (56 bytes).
        var request = [UInt8](repeating: 0, count: 72)
        func store32(_ value: UInt32, at offset: Int) {
            for k in 0..<4 { request[offset + k] = UInt8(truncatingIfNeeded: value >> (8 * UInt32(k))) }
        }
        store32(72, at: 0)  // nlmsg_len
        request[4] = 20  // nlmsg_type: SOCK_DIAG_BY_FAMILY
        request[6] = 0x01  // nlmsg_flags: NLM_F_REQUEST
        request[7] = 0x03  // | NLM_F_DUMP (0x300)
        store32(1, at: 8)  // nlmsg_seq
        request[16] = UInt8(AF_INET)  // sdiag_family
        request[17] = UInt8(IPPROTO_TCP)  // sdiag_protocol
        store32(1 << 1, at: 20)  // idiag_states: TCP_ESTABLISHED (1) only
        // struct sockaddr_nl: the kernel (pid 0).
        var kernel = [UInt8](repeating: 0, count: 12)
        kernel[0] = 16
        let sent = request.withUnsafeBytes { message in
            kernel.withUnsafeBytes { address in
                sendto(
                    fd, message.baseAddress, message.count, 0,
                    address.baseAddress!.assumingMemoryBound(to: sockaddr.self), socklen_t(address.count))
            }
        }
        guard sent == request.count else { return nil }
        var result: [UInt32: KernelQueues] = [:]
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        func load32(_ offset: Int) -> Int {
            Int(buffer[offset]) | Int(buffer[offset + 1]) << 8 | Int(buffer[offset + 2]) << 16 | Int(buffer[offset + 3])
                << 24
        }
        for _ in 0..<10_000 {  // bounded: a dump of a few thousand sockets takes a few reads
            let count = recv(fd, &buffer, buffer.count, 0)
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { return nil }
            var offset = 0
            while offset + 16 <= count {
                let length = load32(offset)
                let type = Int(buffer[offset + 4]) | Int(buffer[offset + 5]) << 8
                guard length >= 16, offset + length <= count else { return nil }
                if type == 3 { return result }  // NLMSG_DONE
                if type == 2 { return nil }  // NLMSG_ERROR
                // struct inet_diag_msg after the header: family, state, timer, retrans, then
                // inet_diag_sockid (sport, dport big-endian; src, dst 16 bytes each; if;
                // cookie), expires, rqueue, wqueue, uid, inode.
                let message = offset + 16
                if length >= 16 + 72 && buffer[message] == UInt8(AF_INET)
                    && buffer[message + 8] == 127 && buffer[message + 24] == 127
                {
                    let localPort = UInt16(buffer[message + 4]) << 8 | UInt16(buffer[message + 5])
                    let remotePort = UInt16(buffer[message + 6]) << 8 | UInt16(buffer[message + 7])
                    result[key(localPort: localPort, remotePort: remotePort)] = KernelQueues(
                        tx: load32(message + 60), rx: load32(message + 56))
                }
                offset += (length + 3) & ~3
            }
        }
        return nil
    }

    /// `table()` from `/proc/net/tcp`, parsed as bytes.
    static func procTable() -> [UInt32: KernelQueues] {
        guard let text = readProcFile("/proc/net/tcp") else { return [:] }
        var result: [UInt32: KernelQueues] = [:]
        var utf8 = Array(text.utf8)
        utf8.append(10)
        // A line: "  sl: 0100007F:PPPP 0100007F:PPPP st TTTTTTTT:RRRRRRRR ..."
        func hex(_ bytes: ArraySlice<UInt8>) -> Int? {
            var value = 0
            for byte in bytes {
                let digit: Int
                switch byte {
                case 48...57: digit = Int(byte - 48)
                case 65...70: digit = Int(byte - 55)
                case 97...102: digit = Int(byte - 87)
                default: return nil
                }
                value = value << 4 | digit
            }
            return value
        }
        var lineStart = 0
        var first = true
        for index in utf8.indices where utf8[index] == 10 {
            defer { lineStart = index + 1 }
            if first {
                first = false
                continue
            }
            // Split the line on spaces.
            var fields: [Range<Int>] = []
            var fieldStart = -1
            for position in lineStart..<index {
                if utf8[position] == 32 {
                    if fieldStart >= 0 { fields.append(fieldStart..<position) }
                    fieldStart = -1
                } else if fieldStart < 0 {
                    fieldStart = position
                }
                if fields.count > 4 { break }
            }
            guard fields.count > 4, fields[1].count == 13, fields[2].count == 13, fields[4].count == 17 else {
                continue
            }
            let local = utf8[fields[1]]
            let remote = utf8[fields[2]]
            guard local.prefix(9).elementsEqual("0100007F:".utf8), remote.prefix(9).elementsEqual("0100007F:".utf8),
                let localPort = hex(local.suffix(4)), let remotePort = hex(remote.suffix(4)),
                let tx = hex(utf8[fields[4]].prefix(8)), let rx = hex(utf8[fields[4]].suffix(8))
            else { continue }
            result[key(localPort: UInt16(localPort), remotePort: UInt16(remotePort))] = KernelQueues(tx: tx, rx: rx)
        }
        return result
    }
}

// MARK: - A lean keep-alive client for latency samples

/// One connection sending sequential keep-alive GETs and timing each response: a reader
/// without `String` work per response, so the client adds as little as possible to what
/// is measured. Blocking; run it off the pool.
final class LatencyProbe {
    let fd: Int32
    private var buffer = [UInt8](repeating: 0, count: 65536)
    private var held = 0
    private let request: [UInt8]

    init(port: UInt16, path: String = "/") throws {
        fd = try connectLoopback(port: port)
        request = Array(get(path).utf8)
    }

    deinit { Glibc.close(fd) }

    /// Sends `count` requests one after the other; returns each round trip in nanoseconds.
    func sample(_ count: Int) throws -> [UInt64] {
        var samples: [UInt64] = []
        samples.reserveCapacity(count)
        for _ in 0..<count { samples.append(try roundTrip()) }
        return samples
    }

    /// One request and its response; the round trip in nanoseconds.
    func roundTrip() throws -> UInt64 {
        let start = monotonicNanoseconds()
        try sendRequest()
        try readOneResponse()
        return monotonicNanoseconds() - start
    }

    private func sendRequest() throws {
        let sent = request.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        guard sent == request.count else { throw ClientError(description: "probe send: \(sent), errno \(errno)") }
    }

    /// Reads one 200 response with a `Content-Length` body (what the probe's route sends).
    private func readOneResponse() throws {
        while true {
            if let used = completeResponseLength() {
                buffer.withUnsafeMutableBytes { raw in
                    let base = raw.baseAddress!  // a non-empty array
                    memmove(base, base + used, held - used)
                }
                held -= used
                return
            }
            guard held < buffer.count else { throw ClientError(description: "probe: response too long") }
            let count = buffer.withUnsafeMutableBytes { raw in
                Glibc.recv(fd, raw.baseAddress! + held, raw.count - held, 0)
            }
            if count <= 0 {
                throw ClientError(description: "probe recv: \(count), errno \(errno) (EAGAIN: timed out)")
            }
            held += count
        }
    }

    /// The length of the whole response at the front of the buffer, or nil if it is not all
    /// there yet. Checks the status is 200.
    private func completeResponseLength() -> Int? {
        guard held >= 16 else { return nil }
        var headEnd = -1
        var index = 3
        while index < held {
            if buffer[index] == 10 && buffer[index - 1] == 13 && buffer[index - 2] == 10 && buffer[index - 3] == 13 {
                headEnd = index + 1
                break
            }
            index += 1
        }
        guard headEnd > 0 else { return nil }
        // "HTTP/1.1 200"
        guard buffer[9] == UInt8(ascii: "2") && buffer[10] == UInt8(ascii: "0") && buffer[11] == UInt8(ascii: "0")
        else {
            return nil  // reported by the caller's timeout; statuses other than 200 do not occur on this route
        }
        let lengthName = Array("content-length:".utf8)
        var line = 0
        var length = 0
        while line < headEnd {
            // Find the line's end.
            var end = line
            while end < headEnd && buffer[end] != 10 { end += 1 }
            if end - line > lengthName.count {
                var matches = true
                for k in 0..<lengthName.count
                where lengthName[k] != (buffer[line + k] | 0x20) && lengthName[k] != buffer[line + k] {
                    matches = false
                    break
                }
                if matches {
                    var k = line + lengthName.count
                    while k < end {
                        let byte = buffer[k]
                        if byte >= 48 && byte <= 57 { length = length * 10 + Int(byte - 48) }
                        k += 1
                    }
                }
            }
            line = end + 1
        }
        return held >= headEnd + length ? headEnd + length : nil
    }
}

// MARK: - Slowloris: many connections trickling a request head

/// Keeps `connections` TCP connections open to a server, each sending one byte of an
/// endless request head every `interval`, from a thread of its own driven by epoll. The
/// first bytes of the first connections are spread evenly over `spread` (a steady state:
/// the server's deadlines then fall evenly too, instead of in one wave). A connection the
/// server ends (408 then close, or a plain close, or a reset) is recorded and replaced at
/// once by a new one, which starts trickling within one `interval`, so the load lasts as
/// long as the test wants it. Connections are closed with a reset (no `TIME_WAIT` left on
/// the client's ports).
///
/// Cheap on purpose (the machine has 2 CPUs, and the server and the measuring client need
/// them): the bytes due are taken from a queue in due order (all connections have the same
/// interval, so a FIFO is in due order), not found by scanning every connection; the thread
/// wakes at most once a millisecond for them (a byte is at most 1 ms late), and epoll
/// (through the C shim's `cogen_epoll_*`) reports only the connections the server wrote to
/// or closed. A `poll(2)` over 1,000 descriptors each millisecond, waking for every byte due,
/// took 50–70 % of a CPU in a debug build: CPU the server under test needs.
final class SlowlorisLoad: @unchecked Sendable {
    // @unchecked Sendable: the loop's state is touched only by its thread; what the test
    // reads goes through `shared`.

    /// What the load saw.
    struct Figures: Sendable, CustomStringConvertible {
        /// Connections opened (the first ones and the replacements).
        var opened = 0
        /// Ends with a 408 response before the close.
        var cutWith408 = 0
        /// Ends without any response (a close or reset).
        var cutSilently = 0
        /// Ends with a response other than 408 (status codes).
        var otherStatuses: [Int] = []
        /// Failed connects.
        var connectErrors = 0
        /// Bytes trickled.
        var bytesSent = 0
        /// From the first byte to the end, per ended connection (nanoseconds).
        var lifetimes: [UInt64] = []
        /// The oldest connection still open when the load stopped, from its first byte.
        var oldestLiveAge: UInt64 = 0
        /// Connections open when the load stopped.
        var liveAtStop = 0
        /// The longest a due byte waited past its time (the load's own lateness).
        var maxLateness: UInt64 = 0

        var cut: Int { cutWith408 + cutSilently + otherStatuses.count }

        var description: String {
            "opened \(opened), cut \(cut) (408 \(cutWith408), silent \(cutSilently), other \(otherStatuses.prefix(5))), "
                + "connect errors \(connectErrors), bytes trickled \(bytesSent), lifetime p50 "
                + "\(milliseconds(percentile(lifetimes, 0.5))) max \(milliseconds(lifetimes.max() ?? 0)), "
                + "live at stop \(liveAtStop) (oldest \(milliseconds(oldestLiveAge))), "
                + "max lateness \(milliseconds(maxLateness))"
        }
    }

    private struct Shared {
        var stop = false
        var open = 0
        var figures = Figures()
        var done = false
    }

    /// A byte due: which slot, for which of its connections, when.
    private struct Due {
        var slot: Int32
        var generation: UInt32
        var at: UInt64
    }

    let port: UInt16
    let count: Int
    let interval: UInt64
    let spread: UInt64
    let head: [UInt8]
    private let shared = PthreadLock(Shared())

    /// - Parameters:
    ///   - port: The server's port on 127.0.0.1.
    ///   - connections: How many to keep open.
    ///   - interval: Between two bytes of one connection.
    ///   - spread: Over which the first connections' first bytes are spread.
    ///   - head: The bytes trickled (cycled; long enough never to end within a deadline).
    init(port: UInt16, connections: Int, interval: Duration, spread: Duration, head: [UInt8]) {
        func nanoseconds(_ duration: Duration) -> UInt64 {
            UInt64(duration.components.seconds) * 1_000_000_000
                + UInt64(duration.components.attoseconds / 1_000_000_000)
        }
        self.port = port
        self.count = connections
        self.interval = nanoseconds(interval)
        self.spread = nanoseconds(spread)
        self.head = head
    }

    /// Starts the load's thread.
    func start() {
        let thread = Thread { [self] in run() }
        thread.stackSize = 8 << 20
        thread.start()
    }

    /// Connections open now.
    var openConnections: Int { shared.withLock { $0.open } }

    /// The figures so far.
    var figures: Figures { shared.withLock { $0.figures } }

    /// Stops the load, waits for its thread to close every connection, and returns the figures.
    func stop() -> Figures {
        shared.withLock { $0.stop = true }
        _ = waitUntil(timeout: .seconds(30)) { shared.withLock { $0.done } }
        return shared.withLock { $0.figures }
    }

    private func run() {
        _ = cogen_set_thread_name(pthread_self(), "loris")  // its name in /proc, to read its CPU time
        // Per slot: its descriptor (-1: none), registered with `epoll` with the slot as data.
        let epoll = cogen_epoll_create()
        defer { if epoll >= 0 { close(epoll) } }
        var fds = [Int32](repeating: -1, count: count)
        var readyData = [UInt64](repeating: 0, count: 256)
        var readyEvents = [UInt32](repeating: 0, count: 256)
        var sent = [Int](repeating: 0, count: count)
        var firstByteAt = [UInt64](repeating: 0, count: count)
        var generation = [UInt32](repeating: 0, count: count)
        // The first bytes each connection received (its status line's start), up to 12.
        var prefix = [[UInt8]](repeating: [], count: count)
        var queue: [Due] = []
        queue.reserveCapacity(2 * count)
        var queueHead = 0
        var lastDue: UInt64 = 0
        var figures = Figures()
        var open = 0
        var scratch = [UInt8](repeating: 0, count: 4096)

        func publish() {
            let snapshot = figures
            let openNow = open
            shared.withLock {
                $0.figures = snapshot
                $0.open = openNow
            }
        }

        func push(_ slot: Int, at: UInt64) {
            lastDue = max(lastDue, at)
            if queueHead > count && queueHead * 2 > queue.count {
                queue.removeFirst(queueHead)
                queueHead = 0
            }
            queue.append(Due(slot: Int32(slot), generation: generation[slot], at: lastDue))
        }

        func openSlot(_ slot: Int, firstByte: UInt64) {
            generation[slot] &+= 1
            sent[slot] = 0
            firstByteAt[slot] = 0
            prefix[slot].removeAll(keepingCapacity: true)
            guard let fd = try? connectLoopback(port: port, nonBlocking: true, timeoutSeconds: 2) else {
                figures.connectErrors += 1
                fds[slot] = -1
                push(slot, at: firstByte + interval)  // try again then
                return
            }
            fds[slot] = fd
            _ = cogen_epoll_ctl(
                epoll, 1, fd, UInt32(COGEN_EPOLLIN | COGEN_EPOLLRDHUP), UInt64(slot))
            figures.opened += 1
            open += 1
            push(slot, at: firstByte)
        }

        /// Reads what the server sent; true when the connection ended (end of stream or reset).
        func drain(_ slot: Int) -> Bool {
            let fd = fds[slot]
            while true {
                let n = recv(fd, &scratch, scratch.count, 0)
                if n > 0 {
                    if prefix[slot].count < 12 { prefix[slot] += scratch[..<min(n, 12 - prefix[slot].count)] }
                    continue
                }
                if n == 0 { return true }
                if errno == EINTR { continue }
                return errno != EAGAIN
            }
        }

        func end(_ slot: Int, now: UInt64) {
            closeWithReset(fds[slot])
            fds[slot] = -1
            open -= 1
            if firstByteAt[slot] > 0 { figures.lifetimes.append(now - firstByteAt[slot]) }
            // "HTTP/1.1 408": the status code at bytes 9..<12; 0 when nothing came, -1 when
            // what came is not a status line.
            let status =
                prefix[slot].isEmpty
                ? 0 : prefix[slot].count == 12 ? Int(String(decoding: prefix[slot][9..<12], as: UTF8.self)) ?? -1 : -1
            switch status {
            case 0: figures.cutSilently += 1
            case 408: figures.cutWith408 += 1
            default: figures.otherStatuses.append(status)
            }
        }

        // The first connections; their first bytes spread over `spread`.
        let start = monotonicNanoseconds()
        for slot in 0..<count {
            openSlot(slot, firstByte: start + spread * UInt64(slot) / UInt64(count))
            if slot % 100 == 99 { publish() }
        }
        publish()

        var lastPublish = monotonicNanoseconds()
        while !shared.withLock({ $0.stop }) {
            var now = monotonicNanoseconds()
            // The bytes due, in due order.
            while queueHead < queue.count && queue[queueHead].at <= now {
                let due = queue[queueHead]
                queueHead += 1
                let slot = Int(due.slot)
                guard due.generation == generation[slot] else { continue }  // a connection since replaced
                if fds[slot] < 0 {
                    openSlot(slot, firstByte: now)  // a connect that failed before
                    continue
                }
                figures.maxLateness = max(figures.maxLateness, now - due.at)
                var byte = head[sent[slot] % head.count]
                let result = send(fds[slot], &byte, 1, Int32(MSG_NOSIGNAL))
                if result == 1 {
                    if sent[slot] == 0 { firstByteAt[slot] = now }
                    sent[slot] += 1
                    figures.bytesSent += 1
                    push(slot, at: due.at + interval)
                } else if errno == EAGAIN || errno == EINTR {
                    push(slot, at: due.at + interval)
                } else {
                    _ = drain(slot)  // a 408 may be waiting before the reset
                    end(slot, now: now)
                    openSlot(slot, firstByte: now)
                }
            }
            // Wait for the server, until the next byte is due but at least 1 ms (the bytes
            // due meanwhile go out together) and at most 5 ms.
            var timeout: Int64 = 5_000_000
            if queueHead < queue.count {
                let next = queue[queueHead].at
                timeout = next <= now ? 0 : Int64(min(max(next - now, 1_000_000), 5_000_000))
            }
            let ready = cogen_epoll_wait(epoll, &readyData, &readyEvents, Int32(readyData.count), timeout)
            now = monotonicNanoseconds()
            for index in 0..<max(0, Int(ready)) {
                let slot = Int(readyData[index])
                if slot < count && fds[slot] >= 0 && drain(slot) {
                    end(slot, now: now)
                    openSlot(slot, firstByte: now)
                }
            }
            if now - lastPublish > 50_000_000 {
                publish()
                lastPublish = now
            }
        }
        let stopAt = monotonicNanoseconds()
        for slot in 0..<count where fds[slot] >= 0 {
            if firstByteAt[slot] > 0 {
                figures.oldestLiveAge = max(figures.oldestLiveAge, stopAt - firstByteAt[slot])
            }
            figures.liveAtStop += 1
            closeWithReset(fds[slot])
        }
        open = 0
        publish()
        shared.withLock { $0.done = true }
    }
}
