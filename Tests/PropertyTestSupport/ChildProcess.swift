import Foundation

/// What a child process left: its exit status (128 + the signal that ended it) and its
/// standard output (with standard error when merged); `timedOut` when it was killed.
public struct ChildProcessOutcome: Sendable {
    public var status: Int32
    public var output: [UInt8]
    public var timedOut: Bool
}

public struct ChildProcessError: Error, CustomStringConvertible {
    public let description: String
}

/// Runs `executable` in a child process and collects its standard output until end of
/// file or `timeout` (then it is killed). Shared by the test targets that spawn helpers:
/// `posix_spawn`, not Foundation's `Process`, which on Linux with Swift 6.3 over-reads
/// `struct dirent` while it lists `/proc/self/fd` and crashed the suites now and then
/// (swift-corelibs-foundation PR 5472).
/// - Parameters:
///   - executable: Its path.
///   - arguments: Its arguments (after argv[0]).
///   - environment: Variables to set (a nil value removes one) over this process's.
///   - standardErrorPath: A file for standard error; nil merges it into the output.
///   - standardInputFromNull: Whether standard input is `/dev/null`.
///   - timeout: When to kill it.
public func runChildProcess(
    _ executable: String, arguments: [String], environment: [String: String?] = [:],
    standardErrorPath: String? = nil, standardInputFromNull: Bool = false, timeout: Duration
) throws(ChildProcessError) -> ChildProcessOutcome {
    var fds: [Int32] = [0, 0]
    // A socket pair: close-on-exec from the start (no pipe2 here), so a child spawned by a
    // parallel test cannot inherit the write end and hold this one's end of file back.
    guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0 else {
        throw ChildProcessError(description: "socketpair: \(String(cString: strerror(errno)))")
    }
    defer { close(fds[0]) }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    // dup2 clears close-on-exec on the copies the child keeps.
    posix_spawn_file_actions_adddup2(&actions, fds[1], 1)
    if let standardErrorPath {
        posix_spawn_file_actions_addopen(&actions, 2, standardErrorPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
    } else {
        posix_spawn_file_actions_adddup2(&actions, fds[1], 2)
    }
    if standardInputFromNull { posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0) }
    var variables = ProcessInfo.processInfo.environment
    for (name, value) in environment { variables[name] = value }
    let argv: [UnsafeMutablePointer<CChar>?] = ([executable] + arguments).map { strdup($0) } + [nil]
    let envp: [UnsafeMutablePointer<CChar>?] = variables.map { strdup("\($0.key)=\($0.value)") } + [nil]
    defer { for pointer in argv + envp { free(pointer) } }
    var pid: pid_t = 0
    let spawned = posix_spawn(&pid, executable, &actions, nil, argv, envp)
    close(fds[1])
    guard spawned == 0 else {
        throw ChildProcessError(description: "posix_spawn \(executable): \(String(cString: strerror(spawned)))")
    }

    // Read until end of file (the child exited and closed its copies) or the deadline.
    var output: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 65536)
    let deadline = ContinuousClock.now + timeout
    var timedOut = false
    while true {
        let left = deadline - ContinuousClock.now
        if left <= .zero {
            timedOut = true
            break
        }
        var poller = pollfd(fd: fds[0], events: Int16(POLLIN), revents: 0)
        let ready = poll(&poller, 1, Int32(min(left.components.seconds * 1000 + 1, 1000)))
        if ready <= 0 { continue }  // EINTR or a second without output: check the deadline
        let count = read(fds[0], &buffer, buffer.count)
        if count < 0 && errno == EINTR { continue }
        if count <= 0 { break }
        output += buffer[..<count]
    }
    if timedOut { kill(pid, SIGKILL) }
    var waitStatus: Int32 = 0
    while waitpid(pid, &waitStatus, 0) < 0 && errno == EINTR {}
    let exited = waitStatus & 0x7f == 0
    let status = exited ? (waitStatus >> 8) & 0xff : 128 + (waitStatus & 0x7f)
    return ChildProcessOutcome(status: status, output: output, timedOut: timedOut)
}
