import CogenUring
import Glibc

/// The child side of the memory benchmark (`--memory-child K`): spawn K coroutines that
/// park forever, run until idle, and print one line
/// `rss_before=B rss_after=A parked=P` on standard output; then shut the scheduler down.
func memoryChild(count: Int) -> Int32 {
    let scheduler = makeScheduler()
    // Everything the measurement itself needs is allocated before the first reading.
    let before = residentBytes()
    let t0 = wallNanoseconds()
    for _ in 0..<count {
        scheduler.spawn {
            do {
                try await scheduler.park { (_: Parked<Void>) in }
            } catch {
                // SchedulerShutdownError from shutdown(): expected.
            }
        }
    }
    let t1 = wallNanoseconds()
    let report = scheduler.run()
    let t2 = wallNanoseconds()
    let after = residentBytes()
    let line = "rss_before=\(before) rss_after=\(after) parked=\(report.parkedCoroutines)\n"
    var text = line
    text.withUTF8 { buffer in _ = write(1, buffer.baseAddress, buffer.count) }
    let t3 = wallNanoseconds()
    let shutdownReport = scheduler.shutdown()
    let t4 = wallNanoseconds()
    writeStandardError("memory child \(count): spawn \((t1 - t0) / 1_000_000) ms, run \((t2 - t1) / 1_000_000) ms, shutdown \((t4 - t3) / 1_000_000) ms\n")
    return shutdownReport.liveCoroutines == 0 ? 0 : 2
}

/// The floor of the memory benchmark (`--memory-child K --floor`): K bare tasks on the
/// floor executor, each suspended in `withUnsafeContinuation`. What a parked Swift task
/// costs before any scheduler bookkeeping; same output line as ``memoryChild(count:)``.
func memoryFloorChild(count: Int) -> Int32 {
    let executor = FloorExecutor()
    let box = Box<[UnsafeContinuation<Void, Never>]>([])
    box.state.reserveCapacity(count)  // before the first reading: not a per-task cost
    let before = residentBytes()
    for _ in 0..<count {
        Task(executorPreference: executor) {
            await withUnsafeContinuation { box.state.append($0) }
        }
    }
    executor.run()
    let after = residentBytes()
    var text = "rss_before=\(before) rss_after=\(after) parked=\(box.state.count)\n"
    text.withUTF8 { buffer in _ = write(1, buffer.baseAddress, buffer.count) }
    for continuation in box.state { continuation.resume() }
    box.state = []
    executor.run()
    return 0
}

enum MemoryMeasurementError: Error, CustomStringConvertible {
    case spawn(Int32)
    case child(status: Int32, output: String)
    case parse(String)

    var description: String {
        switch self {
        case .spawn(let error): "posix_spawn failed: errno \(error)"
        case .child(let status, let output): "child exited with status \(status): \(output)"
        case .parse(let output): "cannot parse the child's output: \(output)"
        }
    }
}

/// Runs this executable again with `--memory-child count` and returns bytes per parked
/// coroutine, (RSS after - RSS before) / count.
func measureMemoryInChild(count: Int, floor: Bool = false) throws(MemoryMeasurementError) -> Double {
    var pipeEnds: [Int32] = [0, 0]
    guard pipe(&pipeEnds) == 0 else { throw .spawn(errno) }
    let (readEnd, writeEnd) = (pipeEnds[0], pipeEnds[1])

    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_adddup2(&actions, writeEnd, 1)
    posix_spawn_file_actions_addclose(&actions, readEnd)

    let arguments = ["cogen-bench", "--memory-child", "\(count)"] + (floor ? ["--floor"] : [])
    var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
    defer { for p in argv { free(p) } }
    var pid: pid_t = 0
    let status = posix_spawn(&pid, "/proc/self/exe", &actions, nil, &argv, environ)
    close(writeEnd)
    guard status == 0 else {
        close(readEnd)
        throw .spawn(status)
    }

    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = chunk.withUnsafeMutableBytes { read(readEnd, $0.baseAddress, $0.count) }
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { break }
        bytes.append(contentsOf: chunk[0..<n])
    }
    close(readEnd)
    var waitStatus: Int32 = 0
    while waitpid(pid, &waitStatus, 0) < 0 && errno == EINTR {}
    let output = String(decoding: bytes, as: UTF8.self)
    // WIFEXITED && WEXITSTATUS == 0
    guard waitStatus & 0x7f == 0, (waitStatus >> 8) & 0xff == 0 else {
        throw .child(status: waitStatus, output: output)
    }

    var fields: [String: Int] = [:]
    for pair in output.split(whereSeparator: { $0 == " " || $0 == "\n" }) {
        let parts = pair.split(separator: "=")
        if parts.count == 2, let value = Int(parts[1]) { fields[String(parts[0])] = value }
    }
    guard let before = fields["rss_before"], let after = fields["rss_after"],
        let parked = fields["parked"], before > 0, after > 0
    else { throw .parse(output) }
    guard parked == count else { throw .parse("expected \(count) parked: \(output)") }
    return Double(after - before) / Double(count)
}
