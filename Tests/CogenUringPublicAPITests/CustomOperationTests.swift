// Imports only the public API: this is what a user writing their own operation sees.
import CogenUring
import Dispatch
import Foundation
import Testing

/// A user-defined operation built only on the public park/resume API: a one-shot event
/// that coroutines wait on (with an optional deadline) until somebody sets it.
final class Event<Value: Sendable>: @unchecked Sendable {
    // @unchecked: confined to the scheduler's thread, like every parked handle.
    private var value: Value?
    private var waiters: [Parked<Value>] = []

    func wait(on scheduler: Scheduler, deadline: Deadline? = nil) async throws -> Value {
        if let value { return value }
        return try await scheduler.park(deadline: deadline) { waiters.append($0) }
    }

    func set(_ value: Value, on scheduler: Scheduler, placement: Placement) {
        self.value = value
        for waiter in waiters { scheduler.resume(waiter, returning: value, placement: placement) }
        waiters = []
    }
}

final class Log: @unchecked Sendable {
    var lines: [String] = []
}

@Suite(.enabled(if: KernelFeatures.current.isAvailable || ProcessInfo.processInfo.environment["CI"] == "true"))
struct CustomOperationTests {
    @Test func customOperationParksAndResumesWithPlacement() async throws {
        let log = Log()
        // The scheduler gets a thread of its own, never one of Swift's cooperative pool.
        let report: Scheduler.RunReport = try await withCheckedThrowingContinuation { done in
            Thread {
                do {
                    let scheduler = try Scheduler()
                    Self.scenario(scheduler, log)
                    let watchdog = DispatchWorkItem { scheduler.stop() }
                    DispatchQueue.global().asyncAfter(deadline: .now() + 20, execute: watchdog)
                    let report = scheduler.run()
                    watchdog.cancel()
                    scheduler.shutdown()
                    done.resume(returning: report)
                } catch {
                    done.resume(throwing: error)
                }
            }.start()
        }
        #expect(report.reason == .idle)
        #expect(log.lines == ["timeout", "already set:42", "w2:42", "w1:42", "queued"])
    }

    static func scenario(_ scheduler: Scheduler, _ log: Log) {
        let event = Event<Int>()
        for i in 1...2 {
            scheduler.spawn {
                let v = try await event.wait(on: scheduler)
                log.lines.append("w\(i):\(v)")
            }
        }
        scheduler.spawn {
            do {
                _ = try await event.wait(on: scheduler, deadline: .after(.milliseconds(5)))
                log.lines.append("late: no timeout")
            } catch is TimeoutError {
                log.lines.append("timeout")
            }
            scheduler.spawn { log.lines.append("queued") }
            event.set(42, on: scheduler, placement: .front)
            let v = try await event.wait(on: scheduler)
            log.lines.append("already set:\(v)")
        }
    }
}
