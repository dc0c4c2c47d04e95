import CogenCompat
import CogenUring
import Foundation
import Testing

/// cogen's own test scenarios (tests/test_sched.py, test_timer.py) and the spec's worked
/// examples, ported.
@Suite("cogen scenarios")
struct CogenScenarioTests {
    /// test_sched.py::test_signal: LAST and OP give 1…6; CORO and FIRST 1,2,4,3,6,5 (the
    /// signaler runs on, parks its second signal, delivered when the signalee waits).
    @Test("test_signal", arguments: backendsAndPriorities)
    func signalScenario(engine: Engine, prio: Priority) async throws {
        let log = Shared<[Int]>([])
        let report = try await runCompat(engine, defaultPriority: prio) { sched in
            sched.add {
                log.value.append(1)
                _ = try await yield(WaitForSignal("test_sig"))
                log.value.append(3)
                _ = try await yield(WaitForSignal("x"))
                log.value.append(5)
                return nil
            }
            sched.add {
                log.value.append(2)
                _ = try await yield(Signal("test_sig"))
                log.value.append(4)
                _ = try await yield(Signal("x", recipients: 1))
                log.value.append(6)
                return nil
            }
        }
        let expected = prio.favoursCoroutine ? [1, 2, 4, 3, 6, 5] : [1, 2, 3, 4, 5, 6]
        #expect(log.value == expected)
        #expect(report.parkedCoroutines == 0)
    }

    /// test_sched.py::test_add_coro, with decisions.md item 3: every Swift coroutine has the
    /// two-phase start, so without the CORO bit the new coroutine's body runs after the
    /// adder's next line: [1, 3, 2] under OP and LAST, [1, 2, 3] with the CORO bit.
    @Test("test_add_coro", arguments: backendsAndPriorities)
    func addCoroScenario(engine: Engine, prio: Priority) async throws {
        let log = Shared<[Int]>([])
        try await runCompat(engine, defaultPriority: prio) { sched in
            sched.add {
                log.value.append(1)
                let value = prio.favoursCoroutine ? 3 : 2
                _ = try await yield(AddCoro { log.value.append(value); return nil })
                log.value.append(prio.favoursCoroutine ? 2 : 3)
                return nil
            }
        }
        #expect(log.value == (prio.favoursCoroutine ? [1, 2, 3] : [1, 3, 2]))
    }

    struct SomeError: Error, Equatable { let message: String }

    func child(_ value: Int) async throws -> Int { value }
    func level3() async throws -> Int {
        await yield()
        return 5
    }
    func level2() async throws -> Int { try await Call { try await level3() } }
    func failing3() async throws -> Int {
        await yield()
        throw SomeError(message: "some_message")
    }
    func failing2() async throws -> Int { try await Call { try await failing3() } }

    /// test_sched.py::test_call, with both the fast Call and OldCall.
    @Test("test_call", arguments: backendsAndPriorities)
    func callScenario(engine: Engine, prio: Priority) async throws {
        let results = Shared<[String]>([])
        try await runCompat(engine, defaultPriority: prio) { sched in
            sched.add {
                // A callee that returns at once, one that returns nothing.
                results.value.append("\(try await Call { 2 })")
                let nothing: Int? = try await Call { nil }
                results.value.append("\(nothing as Any)")
                let oldNothing: Int? = try await yield(OldCall { nil })
                results.value.append("\(oldNothing as Any)")
                // An error after a yield is caught by the caller.
                do {
                    _ = try await Call { try await failing3() }
                } catch let error as SomeError {
                    results.value.append(error.message)
                }
                do {
                    _ = try await yield(OldCall { try await failing3() })
                } catch let error as SomeError {
                    results.value.append("old-" + error.message)
                }
                // Three levels, returning and failing.
                results.value.append("\(try await Call { try await level2() })")
                results.value.append("\(try await yield(OldCall { try await level2() }))")
                do {
                    _ = try await Call { try await failing2() }
                } catch let error as SomeError {
                    results.value.append("nested-" + error.message)
                }
                // An argument.
                results.value.append("\(try await Call { try await child(6) })")
                return nil
            }
        }
        #expect(results.value == [
            "2", "nil", "nil", "some_message", "old-some_message", "5", "5", "nested-some_message", "6",
        ])
    }

    /// cogen-semantics §5.3: sleeps started together wake in deadline order, whatever form
    /// the time takes (past date, date, Duration, seconds, timestamp).
    @Test("Sleep forms wake in deadline order", arguments: allBackends)
    func sleepForms(engine: Engine) async throws {
        let log = Log([])
        try await runCompat(engine) { sched in
            let now = Date()
            let sleeps: [(String, @Sendable () -> Sleep)] = [
                ("0.3s", { Sleep(0.3) }),
                ("timestamp+0.4", { Sleep(timestamp: now.timeIntervalSince1970 + 0.4) }),
                ("past", { Sleep(now.addingTimeInterval(-1)) }),
                ("date+0.1", { Sleep(now.addingTimeInterval(0.1)) }),
                ("duration 0.2", { Sleep(.milliseconds(200)) }),
            ]
            for (name, make) in sleeps {
                sched.add {
                    try await yield(make())
                    log.value.append(name)
                    return nil
                }
            }
        }
        #expect(log.value == ["past", "date+0.1", "duration 0.2", "0.3s", "timestamp+0.4"])
    }

    /// §5.4 and §6.8: a wait that times out raises OperationTimeout carrying the operation;
    /// the scheduler's default timeout applies to operations without their own.
    @Test("WaitForSignal timeout carries the operation", arguments: allBackends)
    func waitTimeout(engine: Engine) async throws {
        let log = Log([])
        let waiting = Shared(false)
        try await runCompat(engine, defaultTimeout: 0.05) { sched in
            sched.add {
                do {
                    _ = try await yield(WaitForSignal("nope", timeout: 0.05))
                } catch let timeout as OperationTimeout {
                    let name = (timeout.operation as? WaitForSignal)?.name
                    log.value.append("own timeout: \(name.map { "\($0)" } ?? "?")")
                }
                do {
                    _ = try await yield(WaitForSignal("default"))
                } catch is OperationTimeout {
                    log.value.append("default timeout")
                }
                // -1: no timeout, not even the default; a signal ends it.
                waiting.value = true
                let value = try await yield(WaitForSignal("never", timeout: -1))
                log.value.append("got \(value as? Int ?? 0)")
                return nil
            }
            sched.add {
                // Waits for the waiter to wait on "never" (on a loaded machine its two
                // timeouts may fire well after their 50 ms, so no fixed sleep is enough),
                // then four default timeouts longer: a default timeout would fire first.
                while !waiting.value { try await yield(Sleep(0.02)) }
                try await yield(Sleep(0.2))
                let woken = try await yield(Signal("never", value: 7))
                log.value.append("woke \(woken)")
                return nil
            }
        }
        #expect(log.value == ["own timeout: nope", "default timeout", "got 7", "woke 1"])
    }

    /// §3.8: coroutine-local storage.
    @Test("local values are per coroutine", arguments: allBackends)
    func locals(engine: Engine) async throws {
        let log = Log([])
        let local = Local<Int>()
        try await runCompat(engine) { sched in
            for v in [1, 2] {
                sched.add {
                    local.value = v
                    await yield()
                    await yield()
                    log.value.append("\(v):\(local.value ?? -1)")
                    return nil
                }
            }
        }
        #expect(log.value == ["1:1", "2:2"])
    }

    /// §4.5: iterRun drives the scheduler one pass at a time from a host loop.
    @Test("iterRun embeds the loop", arguments: allBackends)
    func iterRun(engine: Engine) async throws {
        let log = Log([])
        try await runCompat(engine) { sched in
            sched.add {
                for i in 0..<3 {
                    log.value.append("c\(i)")
                    await yield()
                }
                try await yield(Sleep(0.01))
                log.value.append("slept")
                return nil
            }
            var passes = 0
            for _ in sched.iterRun() {
                passes += 1
                log.value.append("host")
                if passes > 50_000_000 { break }
            }
            log.value.append("done")
        }
        #expect(log.value.first == "c0")
        #expect(log.value.filter { $0 != "host" } == ["c0", "c1", "c2", "slept", "done"])
        #expect(log.value.contains("host"))
    }
}
