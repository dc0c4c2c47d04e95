import CogenUring
import Dispatch
import Foundation
import PropertyTestSupport
import Synchronization
import Testing

final class Flag: Sendable {
    private let state = Atomic<Bool>(false)
    func set() { state.store(true, ordering: .sequentiallyConsistent) }
    var isSet: Bool { state.load(ordering: .sequentiallyConsistent) }
}

/// An engine a test runs on: a backend, with the kernel's newer paths (multishot accept,
/// provided-buffer receive) on, or switched off to run the 5.x paths on this kernel.
struct Engine: Sendable, CustomTestStringConvertible {
    let backend: Backend
    let modern: Bool

    func configure(_ configuration: inout Scheduler.Configuration) {
        configuration.backend = backend
        if !modern {
            configuration.useMultishotAccept = false
            configuration.useProvidedBuffers = false
        }
    }

    var testDescription: String {
        backend == .epoll ? "epoll" : modern ? "\(backend)" : "\(backend), 5.x paths"
    }
}

/// The engines every scheduler and I/O test runs on (issue 4 adds epoll).
let allBackends: [Engine] = [
    Engine(backend: .ioUring, modern: true),
    Engine(backend: .ioUring, modern: false),
    Engine(backend: .epoll, modern: false),
]

/// io_uring tests run wherever the kernel allows it, and always on CI, where a refusal
/// must fail loudly instead of skipping.
let ioUringUsable = KernelFeatures.current.isAvailable
    || ProcessInfo.processInfo.environment["CI"] == "true"

/// Loop-confined mutable state shared by a test's coroutines.
final class Box<T>: @unchecked Sendable {
    // @unchecked: touched only on the scheduler's thread (or after it has stopped).
    var value: T
    init(_ value: T) { self.value = value }
}

/// A log of events appended by coroutines on one scheduler thread.
typealias Log = Box<[String]>

struct SchedulerTimedOut: Error, CustomStringConvertible {
    let bound: Duration
    var description: String { "watchdog: the scheduler was still running after \(bound)" }
}

/// Creates a scheduler on a thread of its own (never in Swift's cooperative pool), lets
/// `setup` spawn coroutines from that thread, runs it until idle, and shuts it down. A
/// watchdog stops it after `bound` and fails the test: `.timeLimit` cannot unblock a
/// thread waiting in the kernel.
@discardableResult
func runScheduler(
    _ backend: Engine,
    bound: Duration = .seconds(30),
    configure: @escaping @Sendable (inout Scheduler.Configuration) -> Void = { _ in },
    untilStopped: Bool = false,
    afterRun: @escaping @Sendable (Scheduler, Scheduler.RunReport) -> Void = { _, _ in },
    sourceLocation: SourceLocation = #_sourceLocation,
    _ setup: @escaping @Sendable (Scheduler) throws -> Void
) async throws -> Scheduler.RunReport {
    try await runSchedulerWithShutdown(
        backend, bound: bound, configure: configure, untilStopped: untilStopped, afterRun: afterRun,
        sourceLocation: sourceLocation, setup
    ).run
}

/// `runScheduler`, also giving the report of the final `shutdown()`.
func runSchedulerWithShutdown(
    _ backend: Engine,
    bound: Duration = .seconds(30),
    configure: @escaping @Sendable (inout Scheduler.Configuration) -> Void = { _ in },
    untilStopped: Bool = false,
    afterRun: @escaping @Sendable (Scheduler, Scheduler.RunReport) -> Void = { _, _ in },
    sourceLocation: SourceLocation = #_sourceLocation,
    _ setup: @escaping @Sendable (Scheduler) throws -> Void
) async throws -> (run: Scheduler.RunReport, shutdown: Scheduler.RunReport) {
    // The outcome goes through a pthread lock, not only through the continuation: when the
    // thread resumes before this task has suspended, the runtime takes a fast path that
    // ThreadSanitizer cannot see (`swift_continuation_await` finds it resumed, with an
    // uninstrumented acquire), and everything the scheduler's thread wrote would read as a
    // race here. The lock makes that hand-off visible.
    let handOff = PthreadLock<Result<(Scheduler.RunReport, Scheduler.RunReport, Bool), any Error>?>(nil)
    await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
        let thread = Thread {
            do {
                var configuration = Scheduler.Configuration()
                backend.configure(&configuration)
                configure(&configuration)
                let scheduler = try Scheduler(configuration: configuration)
                let timedOut = Flag()
                let watchdog = DispatchWorkItem {
                    timedOut.set()
                    scheduler.stop()
                }
                DispatchQueue.global().asyncAfter(
                    deadline: .now() + .milliseconds(Int(bound.components.seconds * 1000)),
                    execute: watchdog)
                try setup(scheduler)
                let report = scheduler.run(untilStopped: untilStopped)
                afterRun(scheduler, report)
                let final = scheduler.shutdown()
                watchdog.cancel()
                let expired = timedOut.isSet
                handOff.withLock { $0 = .success((report, final, expired)) }
            } catch {
                handOff.withLock { $0 = .failure(error) }
            }
            done.resume()
        }
        thread.stackSize = 8 << 20
        thread.start()
    }
    let outcome = handOff.withLock { $0 } ?? .failure(SchedulerTimedOut(bound: bound))  // always set
    let (report, final, expired) = try outcome.get()
    if expired {
        Issue.record(SchedulerTimedOut(bound: bound), sourceLocation: sourceLocation)
    }
    return (report, final)
}

/// Runs a blocking call (`join()`, `shutdown()`, a server's shutdown) on a thread of its
/// own and awaits its result: blocking one of the cooperative pool's two threads instead
/// starves every other test's tasks meanwhile (slow enough under ThreadSanitizer to trip
/// their watchdogs). The result goes through a pthread lock, which ThreadSanitizer sees.
func offThePool<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
    let result = PthreadLock<T?>(nil)
    await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
        Thread {
            let value = body()
            result.withLock { $0 = value }
            done.resume()
        }.start()
    }
    // Always set before the resume.
    return result.withLock { $0 }!
}

/// A non-blocking, close-on-exec pipe.
func makePipe() -> (read: Int32, write: Int32) {
    var fds: [Int32] = [0, 0]
    precondition(pipe(&fds) == 0, "pipe failed")
    for fd in fds {
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
    }
    return (fds[0], fds[1])
}

/// Runs a scenario of `cogen-test-helper` (built beside the test binary) in a child
/// process, for tests that touch process-wide state. Returns its exit status and output
/// (`runChildProcess`: `posix_spawn`, not Foundation's `Process`).
func runHelper(
    _ scenario: String, arguments: [String] = [], environment: [String: String] = [:],
    timeout: Duration = .seconds(60)
) throws -> (status: Int32, output: String) {
    let executable = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        .deletingLastPathComponent().appendingPathComponent("cogen-test-helper").path
    var variables: [String: String?] = ["COGEN_BACKEND": nil]
    for (name, value) in environment { variables[name] = value }
    let run = try runChildProcess(
        executable, arguments: [scenario] + arguments, environment: variables, timeout: timeout)
    if run.timedOut { return (-1, "timed out after \(timeout)") }
    return (run.status, String(decoding: run.output, as: UTF8.self))
}

/// nil when `a == b`; otherwise where they part. Large arrays compared with `==` inside
/// `#expect` make Swift Testing diff them on failure, which takes minutes at 100 kB.
func mismatch(_ a: [UInt8], _ b: [UInt8]) -> String? {
    if a == b { return nil }
    let common = zip(a, b).prefix { $0 == $1 }.count
    return "lengths \(a.count) and \(b.count), first difference at byte \(common)"
}

/// Small kernel buffers (`size` bytes asked for) on both ends: sends are partial as soon
/// as the peer lags. A listener with a small receive buffer (inherited by the accepted
/// socket, and set before the handshake, so the window stays small), a client with a small
/// send buffer.
func smallBufferedPair(_ scheduler: Scheduler, size: Int32 = 4096) async throws -> (client: Socket, server: Socket) {
    var size = size
    let length = socklen_t(MemoryLayout<Int32>.size)
    let listener = try Socket.listening(on: .loopback(), on: scheduler)
    setsockopt(listener.descriptor, SOL_SOCKET, SO_RCVBUF, &size, length)
    let client = try await Socket.connect(to: try listener.localAddress)
    setsockopt(client.descriptor, SOL_SOCKET, SO_SNDBUF, &size, length)
    let server = try await listener.accept()
    try await listener.close()
    return (client, server)
}
