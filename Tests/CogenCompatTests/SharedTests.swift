import CogenCompat
import Testing

@Suite("Shared")
struct SharedTests {
    /// One box serves schedulers that run one after the other, on different threads, and
    /// is readable between and after their runs.
    @Test("a box outlives a scheduler and serves the next one", arguments: allBackends)
    func sequentialSchedulers(engine: Engine) async throws {
        let log = Log([])
        for round in 0..<3 {
            try await runCompat(engine) { sched in
                log.value.append("setup \(round)")
                sched.add {
                    log.value.append("coroutine \(round)")
                    await yield()
                    log.withValue { $0.append("after yield \(round)") }
                    return nil
                }
            }
            log.value.append("read \(round)")
        }
        #expect(log.value == (0..<3).flatMap {
            ["setup \($0)", "coroutine \($0)", "after yield \($0)", "read \($0)"]
        })
    }
}
