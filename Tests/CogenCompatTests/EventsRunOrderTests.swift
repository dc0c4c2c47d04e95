import CogenCompat
import Testing

/// The run orders of cogen-semantics.md §4–§5, reproduced exactly.
@Suite("cogen run orders: events")
struct EventsRunOrderTests {
    /// §4.4: two coroutines printing and yielding in a loop interleave from the start.
    @Test("two-phase start interleaves foo and bar", arguments: allBackends)
    func twoPhaseStart(engine: Engine) async throws {
        let log = Log([])
        try await runCompat(engine) { sched in
            for (name, count) in [("foo", 5), ("bar", 10)] {
                sched.add {
                    for i in 0..<count {
                        log.value.append("\(name):\(i)")
                        await yield()
                    }
                    return nil
                }
            }
        }
        #expect(Array(log.value.prefix(6)) == ["foo:0", "bar:0", "foo:1", "bar:1", "foo:2", "bar:2"])
        #expect(log.value.count == 15)
    }

    /// §5.5: the verified signal orders (waiters W1, W2; signaler S; O queued).
    @Test("Signal placement by priority", arguments: backendsAndPriorities)
    func signalPlacement(engine: Engine, prio: Priority) async throws {
        let log = Log([])
        try await runCompat(engine, defaultPriority: prio) { sched in
            for w in ["W1", "W2"] {
                sched.add {
                    let v = try await yield(WaitForSignal("sig"))
                    log.value.append("\(w)-got-\(v as? String ?? "nil")")
                    return nil
                }
            }
            sched.add {
                // Let the waiters register first.
                await yield()
                await yield()
                sched.add {
                    for i in 1...3 {
                        log.value.append("O\(i)")
                        await yield()
                    }
                    return nil
                }
                await yield()
                log.value.append("S")
                let n = try await yield(Signal("sig", value: "v"))
                log.value.append("S-resumed-\(n)")
                return nil
            }
        }
        let after = Array(log.value.drop { $0 != "S" }.dropFirst())
        let expected: [String] = switch prio {
        case priority.LAST: ["O1", "W1-got-v", "W2-got-v", "S-resumed-2", "O2", "O3"]
        case priority.CORO: ["S-resumed-2", "O1", "W1-got-v", "W2-got-v", "O2", "O3"]
        case priority.OP: ["W2-got-v", "W1-got-v", "O1", "S-resumed-2", "O2", "O3"]
        default: ["S-resumed-2", "W2-got-v", "W1-got-v", "O1", "O2", "O3"]
        }
        #expect(after == expected, "log: \(log.value)")
    }

    /// §5.7: the fast Call: C, O1, K1, O2, K2, C-got, O3, O4 for every priority.
    @Test("Call runs the callee in the caller", arguments: backendsAndPriorities)
    func call(engine: Engine, prio: Priority) async throws {
        let log = Log([])
        try await runCompat(engine, defaultPriority: prio) { sched in
            sched.add {
                log.value.append("C")
                let r = try await Call {
                    log.value.append("K1")
                    await yield()
                    log.value.append("K2")
                    return "res"
                }
                log.value.append("C-got(\(r))")
                return nil
            }
            addOther(sched, log)
        }
        #expect(log.value == ["C", "O1", "K1", "O2", "K2", "C-got(res)", "O3", "O4"])
    }

    /// §15.2: OldCall queues the callee by priority.
    @Test("OldCall queues the callee", arguments: backendsAndPriorities)
    func oldCall(engine: Engine, prio: Priority) async throws {
        let log = Log([])
        try await runCompat(engine, defaultPriority: prio) { sched in
            sched.add {
                log.value.append("C")
                let r = try await yield(OldCall {
                    log.value.append("K1")
                    await yield()
                    log.value.append("K2")
                    return "res"
                })
                log.value.append("C-got(\(r))")
                return nil
            }
            addOther(sched, log)
        }
        let expected = prio == priority.LAST
            ? ["C", "O1", "K1", "O2", "K2", "C-got(res)", "O3", "O4"]
            : ["C", "O1", "O2", "K1", "O3", "K2", "C-got(res)", "O4"]
        #expect(log.value == expected)
    }

    /// §5.6: AddCoro placement (adder A; X and Y queued).
    @Test("AddCoro placement by priority", arguments: backendsAndPriorities)
    func addCoro(engine: Engine, prio: Priority) async throws {
        let log = Log([])
        try await runCompat(engine, defaultPriority: prio) { sched in
            sched.add {
                // Let X and Y start first, so that they are queued when A adds.
                await yield()
                log.value.append("adder")
                let new = try await yield(AddCoro {
                    log.value.append("new")
                    await yield()
                    log.value.append("new2")
                    return nil
                })
                log.value.append("adder-after(\(new.name))")
                return nil
            }
            for name in ["X", "Y"] {
                sched.add {
                    await yield()
                    log.value.append(name)
                    await yield()
                    log.value.append("\(name)2")
                    return nil
                }
            }
        }
        let expected: [String] = switch prio {
        case priority.LAST: ["adder", "X", "Y", "adder-after(coroutine)", "new", "X2", "Y2", "new2"]
        case priority.CORO: ["adder", "adder-after(coroutine)", "X", "Y", "new", "X2", "Y2", "new2"]
        case priority.OP: ["adder", "X", "Y", "adder-after(coroutine)", "X2", "Y2", "new", "new2"]
        default: ["adder", "adder-after(coroutine)", "X", "Y", "X2", "Y2", "new", "new2"]
        }
        #expect(log.value == expected)
    }

    /// §5.8: joiners J1, J2, J3 of T; O queued.
    @Test("Join wakes the last joiner first", arguments: backendsAndPriorities)
    func join(engine: Engine, prio: Priority) async throws {
        let log = Log([])
        try await runCompat(engine, defaultPriority: prio) { sched in
            let target = sched.add {
                log.value.append("T1")
                await yield()
                await yield()
                log.value.append("T2")
                return "tres"
            }
            for j in ["J1", "J2", "J3"] {
                sched.add {
                    let r = try await yield(Join(target))
                    log.value.append("\(j)(\(r as? String ?? "nil"))")
                    return nil
                }
            }
            addOther(sched, log)
        }
        let after = Array(log.value.drop { $0 != "T2" }.dropFirst())
        let expected = prio == priority.LAST
            ? ["J3(tres)", "O3", "J1(tres)", "J2(tres)", "O4"]
            : ["J3(tres)", "J2(tres)", "J1(tres)", "O3", "O4"]
        #expect(after == expected, "log: \(log.value)")
    }
}

/// cogen's "O" coroutine of the run-order tables: logs O1…O`count`, yielding in between.
func addOther(_ sched: CogenCompat.Scheduler, _ log: Log, name: String = "O", count: Int = 4) {
    sched.add {
        for i in 1...count {
            log.value.append("\(name)\(i)")
            await yield()
        }
        return nil
    }
}
