// Processes for the benchmark drivers (echo-matrix, http-matrix): servers started with their
// stdout on a pipe, pinned to a CPU, stopped with SIGTERM; programs run to completion.
import CEchoLinux
import Glibc

// MARK: Processes

public enum ProcessError: Error, CustomStringConvertible {
    case spawn(String, Int32)
    case noListeningLine(String)
    public var description: String {
        switch self {
        case .spawn(let path, let errno): "cannot start \(path): \(String(cString: strerror(errno)))"
        case .noListeningLine(let output): "no 'listening on' line within 10 s; it printed: \(output)"
        }
    }
}

/// A server started with its stdout on a pipe.
public final class ServerProcess {
    public let pid: pid_t
    public let port: Int
    private let stdoutFD: Int32

    private init(pid: pid_t, port: Int, stdoutFD: Int32) {
        self.pid = pid
        self.port = port
        self.stdoutFD = stdoutFD
    }

    /// Starts the server and waits (10 s at most) for its "listening on 127.0.0.1:PORT".
    public static func start(path: String, arguments: [String], cpu: Int32) throws -> ServerProcess {
        let (pid, fd) = try spawn(path: path, arguments: arguments, cpu: cpu)
        var text = ""
        let deadline = monotonicNanoseconds() + 10_000_000_000
        while monotonicNanoseconds() < deadline {
            if let line = text.split(separator: "\n").first(where: { $0.hasPrefix("listening on ") }),
               let port = line.split(separator: ":").last.flatMap({ Int($0) })
            {
                return ServerProcess(pid: pid, port: port, stdoutFD: fd)
            }
            guard let chunk = readChunk(fd, timeoutMilliseconds: 100) else { break }  // EOF
            text += chunk
        }
        kill(pid, SIGKILL)
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        close(fd)
        throw ProcessError.noListeningLine(text)
    }

    /// Starts a server that prints no "listening on" line (nginx) on a port chosen by the
    /// caller, and waits (10 s at most) until a TCP connection to 127.0.0.1:`port` succeeds.
    public static func start(path: String, arguments: [String], cpu: Int32, port: Int) throws -> ServerProcess {
        let (pid, fd) = try spawn(path: path, arguments: arguments, cpu: cpu)
        let deadline = monotonicNanoseconds() + 10_000_000_000
        var text = ""
        while monotonicNanoseconds() < deadline {
            if canConnect(port: port) { return ServerProcess(pid: pid, port: port, stdoutFD: fd) }
            var status: Int32 = 0
            if waitpid(pid, &status, WNOHANG) == pid { break }
            if let chunk = readChunk(fd, timeoutMilliseconds: 20) { text += chunk }
        }
        kill(pid, SIGKILL)
        var status: Int32 = 0
        waitpid(pid, &status, 0)
        close(fd)
        throw ProcessError.noListeningLine(text)
    }

    /// Set once the process has been reaped.
    private var exitStatus: Int32?

    public var isRunning: Bool {
        guard exitStatus == nil else { return false }
        var status: Int32 = 0
        if waitpid(pid, &status, WNOHANG) == pid { exitStatus = decodeStatus(status) }
        return exitStatus == nil
    }

    /// SIGTERM, then up to 10 s for it to exit (SIGKILL after). Returns the exit status
    /// (-1 if it did not exit by itself or died of a signal) and what it printed since.
    public func stop() -> (Int32, String) {
        if isRunning { kill(pid, SIGTERM) }
        var output = ""
        let deadline = monotonicNanoseconds() + 10_000_000_000
        while monotonicNanoseconds() < deadline, let chunk = readChunk(stdoutFD, timeoutMilliseconds: 100) {
            output += chunk
        }
        close(stdoutFD)
        // Its stdout reaches end of file a moment before the exiting process can be
        // reaped: poll for the exit until the deadline.
        while isRunning {
            guard monotonicNanoseconds() < deadline else {
                kill(pid, SIGKILL)
                var status: Int32 = 0
                waitpid(pid, &status, 0)
                return (-1, output)
            }
            usleep(10_000)
        }
        return (exitStatus ?? -1, output)
    }
}

/// Runs a program to its end; returns its exit status and its stdout.
public func runToCompletion(path: String, arguments: [String], cpu: Int32) -> (Int32, String) {
    guard let (pid, fd) = try? spawn(path: path, arguments: arguments, cpu: cpu) else { return (-1, "") }
    var output = ""
    while let chunk = readChunk(fd, timeoutMilliseconds: -1) { output += chunk }
    close(fd)
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    return (decodeStatus(status), output)
}

/// Runs a program to its end; returns its exit status, its stdout and the CPU time
/// (user + system, from wait4's rusage) it used, in nanoseconds.
public func runMeasuringCPU(path: String, arguments: [String], cpu: Int32) -> (status: Int32, output: String, cpuNanoseconds: UInt64) {
    guard let (pid, fd) = try? spawn(path: path, arguments: arguments, cpu: cpu) else { return (-1, "", 0) }
    var output = ""
    while let chunk = readChunk(fd, timeoutMilliseconds: -1) { output += chunk }
    close(fd)
    var status: Int32 = 0
    var usage = rusage()
    while wait4(pid, &status, 0, &usage) < 0 && errno == EINTR {}
    func nanoseconds(_ time: timeval) -> UInt64 { UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_usec) * 1000 }
    return (decodeStatus(status), output, nanoseconds(usage.ru_utime) + nanoseconds(usage.ru_stime))
}

/// Whether a TCP connection to 127.0.0.1:`port` succeeds now (it is closed at once).
public func canConnect(port: Int) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = UInt16(port).bigEndian
    address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
    return withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
        }
    }
}

/// A TCP port on 127.0.0.1 that is free now (bound to port 0, then released), for servers
/// that cannot be told to pick one and print it.
public func freePort() -> Int? {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let ok = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0
        }
    }
    return ok ? Int(UInt16(bigEndian: address.sin_port)) : nil
}

/// The exit status of a waitpid status, or -1 if the process died of a signal
/// (WIFEXITED and WEXITSTATUS do not import).
public func decodeStatus(_ status: Int32) -> Int32 {
    (status & 0x7F) == 0 ? (status >> 8) & 0xFF : -1
}

/// posix_spawn with stdout on a pipe (stderr inherited), pinned to `cpu` (< 0: any): the
/// child inherits the affinity this thread has at the moment of the spawn.
public func spawn(path: String, arguments: [String], cpu: Int32) throws -> (pid_t, Int32) {
    var pipeFDs: [Int32] = [0, 0]
    guard pipe(&pipeFDs) == 0 else { throw ProcessError.spawn(path, errno) }
    // Both ends close-on-exec (no other child inherits them); the dup2 below clears it
    // on the child's copy that becomes its stdout. Single-threaded: no spawn in between.
    for fd in pipeFDs { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_adddup2(&actions, pipeFDs[1], 1)  // dup2 clears CLOEXEC

    let argv = ([path] + arguments).map { strdup($0) } + [nil]
    defer { for pointer in argv { free(pointer) } }
    echo_pin_thread(cpu)
    var pid: pid_t = 0
    let status = posix_spawn(&pid, path, &actions, nil, argv, environ)
    echo_pin_thread(-1)
    close(pipeFDs[1])
    guard status == 0 else {
        close(pipeFDs[0])
        throw ProcessError.spawn(path, status)
    }
    return (pid, pipeFDs[0])
}

/// Reads what is there within the timeout: "" on timeout, nil at end of file.
public func readChunk(_ fd: Int32, timeoutMilliseconds: Int32) -> String? {
    var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
    let ready = poll(&poller, 1, timeoutMilliseconds)
    if ready == 0 { return "" }
    if ready < 0 { return errno == EINTR ? "" : nil }
    var buffer = [UInt8](repeating: 0, count: 65536)
    let n = read(fd, &buffer, buffer.count)
    if n < 0 && errno == EINTR { return "" }
    guard n > 0 else { return nil }
    return String(decoding: buffer[..<n], as: UTF8.self)
}

/// The directory of this executable: the build directory, where its siblings are.
public func executableDirectory() -> String {
    var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
    let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
    guard n > 0 else { return "." }
    let path = String(decoding: buffer[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    return String(path[..<(path.lastIndex(of: "/") ?? path.endIndex)])
}

public func kernelRelease() -> String {
    var names = utsname()
    guard uname(&names) == 0 else { return "unknown" }
    return withUnsafeBytes(of: &names.release) { raw in
        "Linux " + String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
    }
}

