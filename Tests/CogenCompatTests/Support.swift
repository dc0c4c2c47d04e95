import CogenCompat
import CogenUring
import Dispatch
import Foundation
import Synchronization
import Testing

final class Flag: Sendable {
    private let state = Atomic<Bool>(false)
    func set() { state.store(true, ordering: .sequentiallyConsistent) }
    var isSet: Bool { state.load(ordering: .sequentiallyConsistent) }
}

/// An engine a compat test runs on: a backend, with the kernel's newer paths on, or
/// switched off to run the 5.x paths on this kernel.
struct Engine: Sendable, CustomTestStringConvertible {
    let backend: Backend
    let modern: Bool

    func configure(_ configuration: inout CogenUring.Scheduler.Configuration) {
        if !modern {
            configuration.useMultishotAccept = false
            configuration.useProvidedBuffers = false
        }
    }

    var testDescription: String {
        backend == .epoll ? "epoll" : modern ? "io_uring" : "io_uring, 5.x paths"
    }
}

/// The engines every compat test runs on.
let allBackends: [Engine] = [
    Engine(backend: .ioUring, modern: true),
    Engine(backend: .ioUring, modern: false),
    Engine(backend: .epoll, modern: false),
]

/// cogen's test-suite runs each scenario under these scheduler default priorities.
let allPriorities: [Priority] = [priority.LAST, priority.CORO, priority.OP, priority.FIRST]

/// Every backend under every default priority.
let backendsAndPriorities: [(Engine, Priority)] = allBackends.flatMap { engine in
    allPriorities.map { (engine, $0) }
}

struct SchedulerTimedOut: Error, CustomStringConvertible {
    let bound: Duration
    var description: String { "watchdog: the scheduler was still running after \(bound)" }
}

/// Creates a CogenCompat scheduler on a thread of its own (never in Swift's cooperative
/// pool), lets `setup` add coroutines, runs it until idle, then shuts it down. A watchdog
/// stops it after `bound` and fails the test.
@discardableResult
func runCompat(
    _ engine: Engine,
    defaultPriority: Priority = priority.LAST,
    defaultTimeout: CogenCompat.Timeout = .none,
    bound: Duration = .seconds(30),
    sourceLocation: SourceLocation = #_sourceLocation,
    afterRun: @escaping @Sendable (CogenCompat.Scheduler, CogenCompat.Scheduler.RunReport) -> Void = { _, _ in },
    _ setup: @escaping @Sendable (CogenCompat.Scheduler) throws -> Void
) async throws -> CogenCompat.Scheduler.RunReport {
    // Through a pthread lock as well as the continuation: a resume that wins the race with
    // the await takes a runtime path ThreadSanitizer cannot see (see CogenUringTests'
    // `runSchedulerWithShutdown`).
    let handOff = PthreadLock<Result<(CogenCompat.Scheduler.RunReport, Bool), any Error>?>(nil)
    await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
        let thread = Thread {
            do {
                var configuration = CogenUring.Scheduler.Configuration()
                engine.configure(&configuration)
                let scheduler = try CogenCompat.Scheduler(
                    defaultPriority: defaultPriority, defaultTimeout: defaultTimeout,
                    backend: engine.backend, configuration: configuration)
                let timedOut = Flag()
                let core = scheduler.core
                let watchdog = DispatchWorkItem {
                    timedOut.set()
                    core.stop()
                }
                DispatchQueue.global().asyncAfter(
                    deadline: .now() + .milliseconds(Int(bound.components.seconds * 1000)),
                    execute: watchdog)
                try setup(scheduler)
                let report = scheduler.run()
                afterRun(scheduler, report)
                scheduler.shutdown()
                watchdog.cancel()
                handOff.withLock { $0 = .success((report, timedOut.isSet)) }
            } catch {
                handOff.withLock { $0 = .failure(error) }
            }
            done.resume()
        }
        thread.stackSize = 8 << 20
        thread.start()
    }
    let outcome = handOff.withLock { $0 } ?? .failure(SchedulerTimedOut(bound: bound))  // always set
    let (report, expired) = try outcome.get()
    if expired {
        Issue.record(SchedulerTimedOut(bound: bound), sourceLocation: sourceLocation)
    }
    return report
}

/// A log the coroutines of one test append to.
typealias Log = Shared<[String]>

/// nil when `a == b`; otherwise where they part. Large arrays compared with `==` inside
/// `#expect` make Swift Testing diff them on failure, which takes minutes at 100 kB.
func mismatch(_ a: [UInt8], _ b: [UInt8]) -> String? {
    if a == b { return nil }
    let common = zip(a, b).prefix { $0 == $1 }.count
    return "lengths \(a.count) and \(b.count), first difference at byte \(common)"
}
