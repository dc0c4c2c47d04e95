@testable import CogenUring
import Foundation
import Testing

@Suite(.enabled(if: ioUringUsable, "io_uring is refused by this kernel (on CI these tests run and fail instead)"))
struct OperationTests {
    @Test(arguments: allBackends)
    func deadlineCancelsInTheKernelAndResumesAfterTheFinalCompletion(_ backend: Engine) async throws {
        let log = Log([])
        let pipe = makePipe()
        defer { close(pipe.read); close(pipe.write) }
        let counters = Box<SchedulerStatistics?>(nil)
        try await runScheduler(backend, afterRun: { s, _ in counters.value = s.counters }) { scheduler in
            scheduler.spawn {
                let started = ContinuousClock.now
                do {
                    _ = try await scheduler.poll(pipe.read, events: UInt32(POLLIN), deadline: .after(.milliseconds(20)))
                } catch let error as TimeoutError {
                    log.value.append("\(error)")
                }
                #expect(ContinuousClock.now - started >= .milliseconds(20))
                // Resumed only after the final CQE: the slot is already free.
                #expect(scheduler.inFlight.count == 0)
            }
        }
        #expect(log.value == ["poll timed out"])
        #expect(counters.value?.timeouts == 1)
        #expect(counters.value?.cancellations == 1)
        #expect(counters.value?.operationsCompleted == 1)
    }

    @Test(arguments: allBackends)
    func operationThatCompletedDespiteItsCancelReportsItsResult(_ backend: Engine) async throws {
        let log = Log([])
        let pipe = makePipe()
        defer { close(pipe.read); close(pipe.write) }
        var byte: UInt8 = 1
        _ = write(pipe.write, &byte, 1)  // already readable: the poll completes at submission
        try await runScheduler(backend) { scheduler in
            scheduler.spawn {
                do {
                    let events = try await scheduler.poll(pipe.read, events: UInt32(POLLIN), deadline: .after(.seconds(10)))
                    log.value.append("result \(events & UInt32(POLLIN) != 0)")
                } catch {
                    log.value.append("error \(error)")
                }
            }
            scheduler.spawn {
                // Runs in the same pass, after the poll's SQE was prepared and before it
                // reached the kernel: its deadline "passes" now, and a cancel follows it.
                let operation = scheduler.inFlight.lookup(UserData.make(index: 0, generation: 1))
                #expect(operation != nil)
                operation?.takeUnretainedValue().requestCancel(.timeout)
            }
        }
        #expect(log.value == ["result true"])
    }

    @Test(arguments: allBackends, [Placement.front, .back])
    func deadlineExpiryResumesAtItsPlacement(_ backend: Engine, placement: Placement) async throws {
        let log = Log([])
        try await runScheduler(backend) { scheduler in
            scheduler.spawn {
                do {
                    _ = try await scheduler.wait(
                        forSignal: "never", deadline: .after(.zero), placementOnExpiry: placement)
                } catch is TimeoutError {
                    log.value.append("expired")
                }
            }
            scheduler.spawn { scheduler.spawn { log.value.append("q") } }
        }
        #expect(log.value == (placement == .front ? ["expired", "q"] : ["q", "expired"]))
    }

    @Test(arguments: allBackends)
    func completionStormDoesNotStarveJobs(_ backend: Engine) async throws {
        let progress = Box<[Int]>([])
        let completed = Box(0)
        try await runScheduler(backend, configure: { $0.completionBatch = 8 }) { scheduler in
            for _ in 0..<64 {
                scheduler.spawn {
                    for _ in 0..<20 {
                        try await scheduler.nop()
                        completed.value += 1
                    }
                }
            }
            scheduler.spawn {
                while completed.value < 64 * 20 {
                    progress.value.append(completed.value)
                    await scheduler.yield()
                }
            }
        }
        // Between two turns of the yielding coroutine, at most one batch of completions
        // (8) resumed coroutines (plus what the first pass queued before the observer).
        let steps = zip(progress.value.dropFirst(), progress.value).map { $0 - $1 }
        #expect(steps.dropFirst().allSatisfy { $0 <= 8 })
        #expect(progress.value.count > 64 * 20 / 8 - 2)
    }

    @Test(arguments: allBackends)
    func nopsFromManyCoroutines(_ backend: Engine) async throws {
        let count = Box(0)
        let counters = Box<SchedulerStatistics?>(nil)
        try await runScheduler(backend, afterRun: { s, _ in counters.value = s.counters }) { scheduler in
            for _ in 0..<64 {
                scheduler.spawn {
                    for _ in 0..<100 {
                        try await scheduler.nop()
                        count.value += 1
                    }
                }
            }
        }
        #expect(count.value == 6400)
        #expect(counters.value?.operationsSubmitted == 6400)
        #expect(counters.value?.operationsCompleted == 6400)
        #expect(counters.value?.staleCompletions == 0)
    }
}
