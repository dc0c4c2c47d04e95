// What echo-load and echo-matrix share: the result echo-load prints with --json (and
// echo-matrix reads back), and a few clocks.
import CEchoLinux
import Glibc

/// One echo-load run, as `echo-load --json` prints it: one JSON object.
public struct LoadResult: Codable, Sendable {
    // The configuration.
    public var port: Int
    public var connections: Int
    public var idleConnections: Int
    public var size: Int
    public var inflight: Int
    public var threads: Int
    public var warmupSeconds: Double
    /// The measured window as it really was (wall time).
    public var durationSeconds: Double

    // Connections.
    public var connectionsEstablished: Int
    public var idleConnectionsEstablished: Int
    /// Connections that failed to connect or failed during the run (EOF, reset).
    public var connectionErrors: Int

    // Throughput and latency of the measured window. Latency is per message, from the
    // write that sent it to the read that completed its echo.
    public var messages: Int
    public var messagesPerSecond: Double
    public var p50Micros: Double
    public var p99Micros: Double
    public var p999Micros: Double
    public var maxMicros: Double
    public var meanMicros: Double

    // CPU over the measured window.
    /// Server utime+stime (/proc/PID/stat, clock-tick resolution) per message; nil
    /// without --server-pid.
    public var serverCPUNanosPerMessage: Double?
    /// Server CPU time over wall time, in percent of one CPU.
    public var serverCPUPercent: Double?
    /// The load generator's own CPU per message (all its threads).
    public var loadgenCPUNanosPerMessage: Double
    /// The load generator's CPU over wall time, in percent of one CPU (all threads).
    public var loadgenCPUPercent: Double
    /// The busiest load thread's CPU over wall time: near 100 means the load generator,
    /// not the server, set the pace.
    public var loadgenBusiestThreadPercent: Double
    /// CPU used on the whole machine (/proc/stat: everything but idle and iowait), in
    /// percent of one CPU (200 = both of two CPUs busy).
    public var machineCPUPercent: Double
    /// Machine CPU that neither the server nor the load generator used: other processes
    /// (a build, a test run) disturbing the measurement. Nil without --server-pid.
    public var otherCPUPercent: Double?
    /// Time the hypervisor ran something else while a CPU of ours wanted to run.
    public var stealPercent: Double

    // Correctness.
    /// Echoed bytes that differed from what was sent (the run exits 2 if any).
    public var byteErrors: Int
    public var bytesVerified: Int

    // Added later (absent from older results: nil).
    /// The load generator's system (kernel) CPU over wall time, in percent of one CPU.
    public var loadgenSystemCPUPercent: Double?
    /// Messages per send call and per recv call (that returned data) in the window: how
    /// well the load generator batched.
    public var loadgenMessagesPerSend: Double?
    public var loadgenMessagesPerReceive: Double?
    /// The server's VmRSS (/proc/PID/status) just before the idle connections were
    /// opened, and at the end of the measured window (idle connections still held).
    public var serverRSSBeforeIdleBytes: Int?
    public var serverRSSBytes: Int?
    /// The server's open descriptors (/proc/PID/fd) at the end of the measured window.
    public var serverOpenDescriptors: Int?

    public init(
        port: Int, connections: Int, idleConnections: Int, size: Int, inflight: Int, threads: Int,
        warmupSeconds: Double, durationSeconds: Double, connectionsEstablished: Int,
        idleConnectionsEstablished: Int, connectionErrors: Int, messages: Int, messagesPerSecond: Double,
        p50Micros: Double, p99Micros: Double, p999Micros: Double, maxMicros: Double, meanMicros: Double,
        serverCPUNanosPerMessage: Double?, serverCPUPercent: Double?, loadgenCPUNanosPerMessage: Double,
        loadgenCPUPercent: Double, loadgenBusiestThreadPercent: Double, machineCPUPercent: Double,
        otherCPUPercent: Double?, stealPercent: Double, byteErrors: Int, bytesVerified: Int
    ) {
        self.port = port
        self.connections = connections
        self.idleConnections = idleConnections
        self.size = size
        self.inflight = inflight
        self.threads = threads
        self.warmupSeconds = warmupSeconds
        self.durationSeconds = durationSeconds
        self.connectionsEstablished = connectionsEstablished
        self.idleConnectionsEstablished = idleConnectionsEstablished
        self.connectionErrors = connectionErrors
        self.messages = messages
        self.messagesPerSecond = messagesPerSecond
        self.p50Micros = p50Micros
        self.p99Micros = p99Micros
        self.p999Micros = p999Micros
        self.maxMicros = maxMicros
        self.meanMicros = meanMicros
        self.serverCPUNanosPerMessage = serverCPUNanosPerMessage
        self.serverCPUPercent = serverCPUPercent
        self.loadgenCPUNanosPerMessage = loadgenCPUNanosPerMessage
        self.loadgenCPUPercent = loadgenCPUPercent
        self.loadgenBusiestThreadPercent = loadgenBusiestThreadPercent
        self.machineCPUPercent = machineCPUPercent
        self.otherCPUPercent = otherCPUPercent
        self.stealPercent = stealPercent
        self.byteErrors = byteErrors
        self.bytesVerified = bytesVerified
    }
}

// MARK: Clocks

/// CLOCK_MONOTONIC in nanoseconds.
@inline(__always)
public func monotonicNanoseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
}

/// CPU time of a clock (CLOCK_PROCESS_CPUTIME_ID, CLOCK_THREAD_CPUTIME_ID) in nanoseconds.
public func cpuNanoseconds(_ clock: clockid_t) -> UInt64 {
    var ts = timespec()
    clock_gettime(clock, &ts)
    return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
}

/// Sleeps until a CLOCK_MONOTONIC time.
public func sleep(untilMonotonic nanoseconds: UInt64) {
    var ts = timespec(tv_sec: Int(nanoseconds / 1_000_000_000), tv_nsec: Int(nanoseconds % 1_000_000_000))
    while clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nil) == EINTR {}
}

/// utime+stime of a process (all its threads, live and exited) from /proc/PID/stat, in
/// nanoseconds; nil if the process is gone. Resolution: one clock tick (10 ms at USER_HZ
/// 100), so measure over seconds.
public func processCPUNanoseconds(pid: Int32) -> UInt64? {
    guard let file = fopen("/proc/\(pid)/stat", "r") else { return nil }
    defer { fclose(file) }
    var buffer = [CChar](repeating: 0, count: 4096)
    let count = fread(&buffer, 1, buffer.count - 1, file)
    guard count > 0 else { return nil }
    let text = String(decoding: buffer[..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    // Field 2, the command name, is in parentheses and may hold spaces: count from the
    // last ')'. After it: state (field 3) … utime (14), stime (15).
    guard let close = text.lastIndex(of: ")") else { return nil }
    let fields = text[text.index(after: close)...].split(separator: " ")
    guard fields.count > 12, let utime = UInt64(fields[11]), let stime = UInt64(fields[12]) else { return nil }
    let ticksPerSecond = UInt64(sysconf(Int32(_SC_CLK_TCK)))
    return (utime + stime) * 1_000_000_000 / ticksPerSecond
}

/// The machine's CPU time from /proc/stat's first line, in nanoseconds: busy (user, nice,
/// system, irq, softirq) and steal, summed over all CPUs.
public func machineCPUNanoseconds() -> (busy: UInt64, steal: UInt64) {
    guard let file = fopen("/proc/stat", "r") else { return (0, 0) }
    defer { fclose(file) }
    var buffer = [CChar](repeating: 0, count: 512)
    guard fgets(&buffer, Int32(buffer.count), file) != nil else { return (0, 0) }
    let line = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    // "cpu  user nice system idle iowait irq softirq steal guest guest_nice" (guest time
    // is already counted in user).
    let ticks = line.split(separator: " ").dropFirst().compactMap { UInt64($0) }
    guard ticks.count >= 8 else { return (0, 0) }
    let toNanoseconds = 1_000_000_000 / UInt64(sysconf(Int32(_SC_CLK_TCK)))
    let busy = ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6]
    return (busy * toNanoseconds, ticks[7] * toNanoseconds)
}

/// A process's resident set (VmRSS in /proc/PID/status) in bytes; nil if it is gone.
public func processRSSBytes(pid: Int32) -> Int? {
    guard let file = fopen("/proc/\(pid)/status", "r") else { return nil }
    defer { fclose(file) }
    var buffer = [CChar](repeating: 0, count: 512)
    while fgets(&buffer, Int32(buffer.count), file) != nil {
        let line = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        guard line.hasPrefix("VmRSS:") else { continue }
        // "VmRSS:\t   12345 kB"
        let kilobytes = line.dropFirst(6).split(whereSeparator: { $0 == " " || $0 == "\t" }).first.flatMap { Int($0) }
        return kilobytes.map { $0 * 1024 }
    }
    return nil
}

/// How many descriptors a process has open (entries of /proc/PID/fd); nil if unreadable.
public func processOpenDescriptors(pid: Int32) -> Int? {
    guard let directory = opendir("/proc/\(pid)/fd") else { return nil }
    defer { closedir(directory) }
    var count = 0
    while let entry = readdir(directory) {
        let isDot = withUnsafeBytes(of: entry.pointee.d_name) { name in
            name[0] == UInt8(ascii: ".") && (name[1] == 0 || (name[1] == UInt8(ascii: ".") && name[2] == 0))
        }
        if !isDot { count += 1 }
    }
    return count
}

/// Raises RLIMIT_NOFILE's soft limit to the hard limit.
public func raiseDescriptorLimit() {
    var limit = rlimit()
    let resource = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
    if getrlimit(resource, &limit) == 0 && limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max
        setrlimit(resource, &limit)
    }
}

/// The allocator settings every Swift echo server starts with (cogen-echo,
/// cogen-compat-echo, nio-echo; the C servers allocate nothing per message).
///
/// glibc hands freed memory back to the kernel eagerly: a thread's arena shrinks
/// (`madvise`) as soon as its free top exceeds 128 KiB, and blocks past the mmap threshold
/// are unmapped when freed. A server that receives and sends 64 KiB buffers then takes
/// page faults on every allocation: at 16 connections × 16 × 4 KiB that doubled the
/// server's CPU per message. Long-running servers keep that memory instead (as jemalloc or
/// mimalloc do by default): here through `mallopt`, which server authors can call the
/// same way, or the environment (`MALLOC_TRIM_THRESHOLD_`, `MALLOC_TOP_PAD_`,
/// `MALLOC_MMAP_THRESHOLD_`).
public func keepFreedMemory() {
    echo_keep_freed_memory()
}

/// SIGTERM and SIGINT, blocked from creation on: create it before any other thread exists
/// (threads inherit the mask), so the signals stay pending for ``wait()`` and no handler
/// runs anywhere. How every echo server here shuts down cleanly.
public struct TerminationSignals {
    private var signals = sigset_t()

    public init() {
        sigemptyset(&signals)
        sigaddset(&signals, SIGTERM)
        sigaddset(&signals, SIGINT)
        pthread_sigmask(SIG_BLOCK, &signals, nil)
    }

    /// Blocks the calling thread until SIGTERM or SIGINT arrives.
    public func wait() {
        var signals = self.signals
        var received: Int32 = 0
        sigwait(&signals, &received)
    }
}
