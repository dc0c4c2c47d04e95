@testable import CogenUring
import Foundation
import Synchronization
import Testing

/// `Scheduler.Configuration.spinBeforeWait`: the loop polls before it sleeps, and the spin
/// never holds back what would have woken the sleep (a timer, the inbox, a stop, I/O).
/// The bounds below are correctness bounds (a spin that ignored them would take the whole
/// spin, seconds), not speed measurements.
@Suite(.enabled(if: ioUringUsable, "io_uring is refused by this kernel (on CI these tests run and fail instead)"))
struct SpinBeforeWaitTests {
    @Test(arguments: allBackends)
    func socketsAndTimersWorkWhileSpinning(_ backend: Engine) async throws {
        let echoed = Box<[UInt8]>([])
        let elapsed = Box<Duration>(.zero)
        let spins = Box(0)
        try await runScheduler(backend, configure: { $0.spinBeforeWait = .seconds(5) }, afterRun: { scheduler, _ in
            spins.value = scheduler.counters.spins
        }) { scheduler in
            scheduler.spawn {
                let started = ContinuousClock.now
                // Ten 2 ms sleeps: each spin stops at the timer, not after 5 s.
                for _ in 0..<10 { try await scheduler.sleep(for: .milliseconds(2)) }
                let listener = try Socket.listening(on: .loopback(), on: scheduler)
                let address = try listener.localAddress
                let peer = scheduler.spawn {
                    let connection = try await listener.accept()
                    let bytes = try await connection.receive(maxLength: 100)
                    try await connection.sendAll(bytes)
                    try await connection.close()
                }
                let client = try await Socket.connect(to: address)
                try await client.sendAll(Array("spin".utf8))
                echoed.value = try await client.receive(maxLength: 100)
                try await peer.join()
                try await client.close()
                try await listener.close()
                elapsed.value = ContinuousClock.now - started
            }
        }
        #expect(echoed.value == Array("spin".utf8))
        #expect(elapsed.value < .seconds(4))
        #expect(spins.value > 0)
    }

    /// A spin that ends at a timer's deadline (the spin is longer) must not be followed by
    /// a sleep of the whole timeout again: the timer fires once, on time, not twice late.
    @Test(arguments: allBackends)
    func theSleepAfterASpinKeepsTheTimersDeadline(_ backend: Engine) async throws {
        let slept = Box<Duration>(.zero)
        try await runScheduler(backend, configure: { $0.spinBeforeWait = .seconds(10) }) { scheduler in
            scheduler.spawn {
                let started = ContinuousClock.now
                try await scheduler.sleep(for: .seconds(2))
                slept.value = ContinuousClock.now - started
            }
        }
        // Spun for the 2 s, then slept them again, it would take 4 s.
        #expect(slept.value >= .seconds(2) && slept.value < .milliseconds(3500), "\(slept.value)")
    }

    @Test(arguments: allBackends)
    func workFromAnotherThreadEndsTheSpin(_ backend: Engine) async throws {
        let ranAfter = PthreadLock<Duration?>(nil)
        let posted = PthreadLock<ContinuousClock.Instant?>(nil)
        let report = try await runScheduler(
            backend, configure: { $0.spinBeforeWait = .seconds(10) }, untilStopped: true
        ) { scheduler in
            // From another thread, once the loop has run out of work and spins: a job,
            // then a stop. Each must be seen long before the 10 s spin would end.
            Thread.detachNewThread {
                Thread.sleep(forTimeInterval: 0.05)
                posted.withLock { $0 = .now }
                scheduler.execute {
                    let start = posted.withLock { $0 } ?? .now
                    ranAfter.withLock { $0 = ContinuousClock.now - start }
                    scheduler.stop()
                }
            }
        }
        #expect(report.reason == .stopped)
        let delay = ranAfter.withLock { $0 }
        #expect(delay.map { $0 < .seconds(5) } == true)
    }
}
