import CogenCompat
import CogenUring
import Foundation
import Testing

/// The coroutine queue of cogen-semantics.md §9 (decisions 9 and 23): run orders, cogen's
/// own queue scenarios, timeouts, `task_done`/`join`.
@Suite("cogen queue")
struct QueueTests {
    /// The log entries after `marker`: the spec's tables give the order after the operation.
    private func after(_ marker: String, in log: Log) -> [String] {
        Array(log.value.drop { $0 != marker }.dropFirst())
    }

    // MARK: Run orders (§9 "Verified orders", §5.9)

    /// Queue empty, getter G parked; putter P puts; O queued. Returns the log after P's
    /// put is yielded.
    private func runPutToParkedGetter(
        _ engine: Engine, defaultPriority: Priority,
        getPrio: Priority = priority.DEFAULT, putPrio: Priority = priority.DEFAULT
    ) async throws -> [String] {
        let log = Log([])
        try await runCompat(engine, defaultPriority: defaultPriority) { sched in
            let q = Queue<Int>()
            sched.add {
                let item = try await yield(q.get(prio: getPrio))
                log.value.append("G-got-\(item)")
                return nil
            }
            sched.add {
                await queueOther(sched, log, then: "P")
                try await yield(q.put(1, prio: putPrio))
                log.value.append("P-after")
                return nil
            }
        }
        return after("P", in: log)
    }

    /// §9's verified orders for a put meeting a parked getter (priorities as the
    /// scheduler's default).
    @Test("put to a parked getter: placement by priority", arguments: backendsAndPriorities)
    func putToParkedGetter(engine: Engine, prio: Priority) async throws {
        let expected: [String] = switch prio {
        case priority.LAST: ["P-after", "O1", "G-got-1", "O2"]
        case priority.CORO: ["G-got-1", "P-after", "O1", "O2"]
        case priority.OP: ["G-got-1", "O1", "P-after", "O2"]
        default: ["G-got-1", "P-after", "O1", "O2"]
        }
        #expect(try await runPutToParkedGetter(engine, defaultPriority: prio) == expected)
    }

    /// A `LAST` put: the putter continues at once; the getter goes to the front when its
    /// own get's priority is not `LAST`, to the back otherwise.
    @Test("LAST put: the getter's own priority places it", arguments: backendsAndPriorities)
    func lastPutUsesGetterPriority(engine: Engine, getPrio: Priority) async throws {
        let expected = getPrio == priority.LAST
            ? ["P-after", "O1", "G-got-1", "O2"]
            : ["P-after", "G-got-1", "O1", "O2"]
        let log = try await runPutToParkedGetter(
            engine, defaultPriority: priority.FIRST, getPrio: getPrio, putPrio: priority.LAST)
        #expect(log == expected)
    }

    /// Queue of size 1 full, putter P parked; getter G gets; O queued.
    @Test("get frees a parked putter: placement by the putter's priority", arguments: backendsAndPriorities)
    func getFreesParkedPutter(engine: Engine, prio: Priority) async throws {
        let log = Log([])
        try await runCompat(engine, defaultPriority: prio) { sched in
            let q = Queue(maxsize: 1)
            sched.add {
                try await yield(q.put(1))
                try await yield(q.put(2))
                log.value.append("P-after")
                return nil
            }
            sched.add {
                await queueOther(sched, log, then: "G")
                let item = try await yield(q.get())
                log.value.append("G-got-\(item)")
                return nil
            }
        }
        let expected: [String] = switch prio {
        case priority.LAST: ["G-got-1", "O1", "P-after", "O2"]
        case priority.CORO: ["P-after", "O1", "G-got-1", "O2"]
        case priority.OP: ["G-got-1", "P-after", "O1", "O2"]
        default: ["P-after", "G-got-1", "O1", "O2"]
        }
        #expect(after("G", in: log) == expected, "log: \(log.value)")
    }

    /// The `task_done` that reaches zero wakes the joiners: front in reverse with the `OP`
    /// bit, back in order without; the caller continues at once.
    @Test("task_done wakes joiners by priority", arguments: backendsAndPriorities)
    func taskDoneWakesJoiners(engine: Engine, prio: Priority) async throws {
        let log = Log([])
        try await runCompat(engine, defaultPriority: prio) { sched in
            let q = Queue()
            sched.add {
                try await yield(q.put("x"))
                // J1 and J2 join meanwhile.
                await queueOther(sched, log, then: "D")
                _ = try await yield(q.get())
                try await yield(q.taskDone())
                log.value.append("D-after")
                return nil
            }
            for j in ["J1", "J2"] {
                sched.add {
                    try await yield(q.join())
                    log.value.append(j)
                    return nil
                }
            }
        }
        let expected = prio.favoursOperation
            ? ["D-after", "J2", "J1", "O1", "O2"]
            : ["D-after", "O1", "J1", "J2", "O2"]
        #expect(after("D", in: log) == expected, "log: \(log.value)")
    }

    // MARK: cogen's test_queue.py

    /// `test_queue`: 20 puts fill the queue, `put_nowait` raises `Full`, the 21st put waits
    /// for the consumer; the consumer's timed get ends it with `OperationTimeout`.
    @Test("producer fills, put_nowait is Full, consumer drains (test_queue)", arguments: backendsAndPriorities)
    func producerConsumer(engine: Engine, prio: Priority) async throws {
        let size = 20
        let log = Log([])
        let sawFull = Log([])
        try await runCompat(engine, defaultPriority: prio) { sched in
            let q = queue.Queue(maxsize: size)
            sched.add {
                for i in 0..<size { try await yield(q.put(i)) }
                do {
                    try await yield(q.putNowait("x"))
                } catch is queue.Full {
                    sawFull.value.append("Full")
                }
                sawFull.value.append("qsize \(q.qsize()) full \(q.full())")
                try await yield(q.put(size))
                log.value.append("-1")
                return nil
            }
            sched.add {
                try await yield(Sleep(0.3))
                while true {
                    do {
                        let item = try await yield(q.get(timeout: 0.1))
                        log.value.append("\(item)")
                    } catch is OperationTimeout {
                        log.value.append("-2")
                        break
                    }
                }
                return nil
            }
        }
        #expect(sawFull.value == ["Full", "qsize 20 full true"])
        let items = (0...size).map { "\($0)" }
        let expected = prio.favoursCoroutine ? ["-1"] + items + ["-2"] : items + ["-1", "-2"]
        #expect(log.value == expected)
    }

    /// `test_queue_timo`: the consumer's second timed get expires; the unhandled
    /// `OperationTimeout` kills it and reaches the error hook; the later put stays queued.
    @Test("an unhandled OperationTimeout goes to the error hook (test_queue_timo)", arguments: allBackends)
    func unhandledTimeout(engine: Engine) async throws {
        let log = Log([])
        let reports = Log([])
        let q = Queue(maxsize: 50)
        try await runCompat(engine) { sched in
            sched.errorHandler = { exception in
                if let timeout = exception.error as? OperationTimeout, timeout.operation is queue.QGet {
                    reports.value.append("OperationTimeout in \(exception.coroutine.name)")
                }
            }
            sched.add {
                try await yield(q.put(1))
                try await yield(Sleep(0.3))
                try await yield(q.put(2))
                return nil
            }
            sched.add("get") {
                log.value.append("\(try await yield(q.get(timeout: 0.05)))")
                log.value.append("\(try await yield(q.get(timeout: 0.05)))")
                log.value.append("\(try await yield(q.get()))")
                return nil
            }
        }
        #expect(log.value == ["1"])
        #expect(reports.value == ["OperationTimeout in get"])
        #expect(q.qsize() == 1)
    }

    /// `test_join`: three workers, two bosses putting three items each and joining; for
    /// queue sizes 1 to 5 every item is processed before any boss's join returns.
    @Test("workers, bosses and join (test_join)", arguments: backendsAndPriorities)
    func workersAndJoin(engine: Engine, prio: Priority) async throws {
        for size in 1...5 {
            let log = Log([])
            let levels = Shared((boss: 0, worker: 0))
            try await runCompat(engine, defaultPriority: prio) { sched in
                let q = Queue(maxsize: size)
                for _ in 1...3 {
                    sched.add {
                        while true {
                            do {
                                _ = try await yield(q.get(timeout: 0.3))
                            } catch is OperationTimeout {
                                break
                            }
                            levels.value.worker -= 1
                            log.value.append("1")
                            try await yield(Sleep(0.01))
                            try await yield(q.taskDone())
                        }
                        log.value.append("2")
                        return nil
                    }
                }
                for _ in 1...2 {
                    sched.add {
                        for item in 1...3 {
                            levels.value.boss += 1
                            try await yield(q.put(item))
                        }
                        log.value.append("1")
                        try await yield(q.join())
                        log.value.append("2")
                        return nil
                    }
                }
            }
            #expect(log.value == Array(repeating: "1", count: 8) + Array(repeating: "2", count: 5), "size \(size)")
            #expect(-levels.value.worker == levels.value.boss, "size \(size)")
        }
    }

    // MARK: Non-blocking, timeouts, task_done

    /// `get_nowait` on an empty queue and `get(block: false)` raise `Empty`;
    /// `put(block: false)` on a full queue raises `Full`; nothing is counted.
    @Test("non-blocking get and put raise Empty and Full", arguments: allBackends)
    func nonBlocking(engine: Engine) async throws {
        let log = Log([])
        let q = Queue(maxsize: 1)
        try await runCompat(engine) { sched in
            sched.add {
                do { _ = try await yield(q.getNowait()) } catch is Empty { log.value.append("Empty") }
                do { _ = try await yield(q.get(block: false)) } catch is Empty { log.value.append("Empty") }
                try await yield(q.putNowait("a"))
                do { try await yield(q.put("b", block: false)) } catch is Full { log.value.append("Full") }
                log.value.append("\(try await yield(q.getNowait()))")
                return nil
            }
        }
        #expect(log.value == ["Empty", "Empty", "Full", "a"])
        #expect(q.unfinishedTasks == 1)
        #expect(q.empty() && !q.full() && q.qsize() == 0)
    }

    /// A timed get that expires raises `OperationTimeout` carrying the `QGet` and leaves
    /// the wait list: a later put goes into the queue. With `race`, the put comes after the
    /// deadline passed but before the getter runs again: the put skips it, and the item
    /// is not lost.
    @Test("timed get: OperationTimeout with the operation", arguments: allBackends, [false, true])
    func timedGet(engine: Engine, race: Bool) async throws {
        let log = Log([])
        let q = Queue<String>()
        try await runCompat(engine) { sched in
            sched.add {
                let get = q.get(timeout: 0.05)
                do {
                    _ = try await yield(get)
                } catch let timeout as OperationTimeout {
                    log.value.append(timeout.operation === get ? "G-timeout(QGet)" : "other op")
                }
                return nil
            }
            sched.add {
                try await waitPastDeadlines(sched, race: race)
                try await yield(q.put("later"))
                log.value.append("put")
                return nil
            }
        }
        #expect(log.value == (race ? ["put", "G-timeout(QGet)"] : ["G-timeout(QGet)", "put"]))
        #expect(q.qsize() == 1)
    }

    /// A timed blocking put that expires raises `OperationTimeout` carrying the `QPut`,
    /// leaves the wait list (its item never enters the queue) and is not counted as an
    /// unfinished task (decision 23; cogen counts it: 2). With `race`, the get comes after
    /// the deadline passed but before the putter runs again: the get skips it.
    @Test("timed put: OperationTimeout, not an unfinished task (decision 23)", arguments: allBackends, [false, true])
    func timedPut(engine: Engine, race: Bool) async throws {
        let log = Log([])
        let q = Queue(maxsize: 1)
        try await runCompat(engine) { sched in
            sched.add {
                try await yield(q.put(1))
                let put = q.put(2, timeout: 0.05)
                do {
                    try await yield(put)
                } catch let timeout as OperationTimeout {
                    log.value.append(timeout.operation === put ? "P-timeout(QPut)" : "other op")
                }
                log.value.append("unfinished \(q.unfinishedTasks)")
                return nil
            }
            sched.add {
                try await waitPastDeadlines(sched, race: race)
                log.value.append("got \(try await yield(q.get()))")
                log.value.append("qsize \(q.qsize())")
                return nil
            }
        }
        let putter = ["P-timeout(QPut)", "unfinished 1"]
        let getter = ["got 1", "qsize 0"]
        #expect(log.value == (race ? getter + putter : putter + getter))
    }

    /// After a timed-out put, `task_done` for the one real item releases a joiner: the
    /// expired put does not keep `join` waiting forever.
    @Test("join is not held by a timed-out put (decision 23)", arguments: allBackends)
    func joinAfterTimedOutPut(engine: Engine) async throws {
        let log = Log([])
        let report = try await runCompat(engine) { sched in
            let q = Queue(maxsize: 1)
            sched.add {
                try await yield(q.put(1))
                do { try await yield(q.put(2, timeout: 0.05)) } catch is OperationTimeout {}
                try await yield(q.join())
                log.value.append("joined")
                return nil
            }
            sched.add {
                try await yield(Sleep(0.3))
                _ = try await yield(q.get())
                try await yield(q.taskDone())
                return nil
            }
        }
        #expect(log.value == ["joined"])
        #expect(report.parkedCoroutines == 0)
    }

    /// `task_done` is evaluated at call time; one call too many throws `ValueError`
    /// synchronously and leaves the count unchanged.
    @Test("task_done called too many times", arguments: allBackends)
    func taskDoneTooManyTimes(engine: Engine) async throws {
        let log = Log([])
        let q = Queue()
        try await runCompat(engine) { sched in
            sched.add {
                try await yield(q.put("a"))
                try await yield(q.put("b"))
                _ = try q.taskDone()
                log.value.append("unfinished \(q.unfinishedTasks)")
                try await yield(q.taskDone())
                do {
                    _ = try q.taskDone()
                } catch {
                    log.value.append("\(error)")
                }
                log.value.append("unfinished \(q.unfinishedTasks)")
                return nil
            }
        }
        #expect(log.value == [
            "unfinished 1", "ValueError: task_done() called too many times", "unfinished 0",
        ])
    }

    /// `join` with no unfinished task is a bare yield: nothing parks. Joiners are woken
    /// once per `QDone`, and a second round works the same way.
    @Test("join rounds: nothing parks, each joiner wakes once per round", arguments: backendsAndPriorities)
    func joinRounds(engine: Engine, prio: Priority) async throws {
        let log = Log([])
        let report = try await runCompat(engine, defaultPriority: prio) { sched in
            let q = Queue<Int>()
            sched.add {
                try await yield(q.join())
                log.value.append("J0")
                for round in 1...2 {
                    try await yield(q.put(round))
                    try await yield(q.join())
                    log.value.append("J\(round)")
                }
                return nil
            }
            sched.add {
                for _ in 1...2 {
                    let item = try await yield(q.get())
                    log.value.append("W\(item)")
                    try await yield(q.taskDone())
                }
                return nil
            }
        }
        #expect(log.value.filter { $0.hasPrefix("J") } == ["J0", "J1", "J2"])
        #expect(log.value.filter { $0.hasPrefix("W") } == ["W1", "W2"])
        #expect(report.parkedCoroutines == 0)
    }
}

/// Lets 300 ms pass, well beyond the 50 ms deadlines of the tests. Without `race`, by
/// sleeping: the coroutines whose deadline passed run first. With `race`, by yielding to
/// the front: the loop still looks at deadlines on every pass, and the coroutines they wake
/// queue behind this one, which keeps running first.
private func waitPastDeadlines(_ sched: CogenCompat.Scheduler, race: Bool) async throws {
    guard race else {
        try await yield(Sleep(0.3))
        return
    }
    let start = ContinuousClock.now
    while ContinuousClock.now - start < .milliseconds(300) { await sched.core.yield(placement: .front) }
}

/// Queues cogen's "O" coroutine (``addOther(_:_:name:count:)``, two steps) so that it has
/// started but not logged O1 yet, then logs `marker`: the spec's run-order tables give the
/// order after the operation that follows.
private func queueOther(_ sched: CogenCompat.Scheduler, _ log: Log, then marker: String) async {
    await yield()
    addOther(sched, log, count: 2)
    // O's first turn only starts it (two-phase start): O1 comes after the operation.
    await yield()
    log.value.append(marker)
}
