import CogenUring
import Testing

/// Deterministic run orders: every kind of resume goes through one placement hook, the
/// scheduler always takes from the front, and several front placements in one batch run
/// last-first.
@Suite(.enabled(if: ioUringUsable, "io_uring is refused by this kernel (on CI these tests run and fail instead)"))
struct RunOrderTests {
    @Test(arguments: allBackends)
    func spawnPlacesNewCoroutinesAtFrontOrBack(_ backend: Engine) async throws {
        let log = Log([])
        try await runScheduler(backend) { scheduler in
            scheduler.spawn("root") {
                scheduler.spawn(placement: .back) { log.value.append("b1") }
                scheduler.spawn(placement: .front) { log.value.append("f1") }
                scheduler.spawn(placement: .back) { log.value.append("b2") }
                scheduler.spawn(placement: .front) { log.value.append("f2") }
                log.value.append("root")
            }
        }
        #expect(log.value == ["root", "f2", "f1", "b1", "b2"])
    }

    @Test(arguments: allBackends)
    func yieldToBackInterleaves(_ backend: Engine) async throws {
        let log = Log([])
        try await runScheduler(backend) { scheduler in
            for name in ["a", "b", "c"] {
                scheduler.spawn {
                    for i in 0..<3 {
                        log.value.append("\(name)\(i)")
                        await scheduler.yield()
                    }
                }
            }
        }
        #expect(log.value == ["a0", "b0", "c0", "a1", "b1", "c1", "a2", "b2", "c2"])
    }

    @Test(arguments: allBackends)
    func yieldToFrontContinuesBeforeTheQueue(_ backend: Engine) async throws {
        let log = Log([])
        try await runScheduler(backend) { scheduler in
            scheduler.spawn {
                log.value.append("a0")
                await scheduler.yield(placement: .front)
                log.value.append("a1")
            }
            scheduler.spawn { log.value.append("b0") }
        }
        #expect(log.value == ["a0", "a1", "b0"])
    }

    @Test(arguments: allBackends)
    func resumeHonoursPlacement(_ backend: Engine) async throws {
        let log = Log([])
        try await runScheduler(backend) { scheduler in
            let parked = Box<[Parked<String>]>([])
            for i in 1...3 {
                scheduler.spawn {
                    let value: String = try await scheduler.park { parked.value.append($0) }
                    log.value.append("w\(i):\(value)")
                }
            }
            scheduler.spawn {
                scheduler.spawn { log.value.append("queued") }
                // Queue now: [queued]. w1 back, w2 front, w3 front → w3, w2, queued, w1.
                #expect(scheduler.resume(parked.value[0], returning: "x", placement: .back))
                #expect(scheduler.resume(parked.value[1], returning: "y", placement: .front))
                #expect(scheduler.resume(parked.value[2], returning: "z", placement: .front))
                // A second resume of the same handle does nothing.
                #expect(!scheduler.resume(parked.value[0], returning: "again", placement: .front))
                log.value.append("resumer")
            }
        }
        #expect(log.value == ["resumer", "w3:z", "w2:y", "queued", "w1:x"])
    }

    @Test(arguments: allBackends, [Placement.front, .back])
    func signalWakesInOrderOrReversed(_ backend: Engine, placement: Placement) async throws {
        let log = Log([])
        try await runScheduler(backend) { scheduler in
            let signal = Signal<Int>()
            for i in 1...3 {
                scheduler.spawn {
                    let v = try await signal.wait()
                    log.value.append("w\(i):\(v)")
                }
            }
            scheduler.spawn {
                scheduler.spawn { log.value.append("queued") }
                let woken = signal.signal(7, placement: placement)
                log.value.append("signaller:\(woken)")
            }
        }
        if placement == .front {
            #expect(log.value == ["signaller:3", "w3:7", "w2:7", "w1:7", "queued"])
        } else {
            #expect(log.value == ["signaller:3", "queued", "w1:7", "w2:7", "w3:7"])
        }
    }

    @Test(arguments: allBackends, [Placement.front, .back])
    func timerWakeHonoursPlacementAgainstQueuedWork(_ backend: Engine, placement: Placement) async throws {
        let log = Log([])
        try await runScheduler(backend) { scheduler in
            scheduler.spawn {
                try await scheduler.sleep(until: .after(.zero), placement: placement)
                log.value.append("sleeper")
            }
            scheduler.spawn {
                // Same pass as the timer check: the sleeper wakes while "q" is queued.
                scheduler.spawn { log.value.append("q") }
            }
        }
        if placement == .front {
            #expect(log.value == ["sleeper", "q"])
        } else {
            #expect(log.value == ["q", "sleeper"])
        }
    }

    @Test(arguments: allBackends, [Placement.front, .back])
    func joinWakesJoinerAtPlacement(_ backend: Engine, placement: Placement) async throws {
        let log = Log([])
        try await runScheduler(backend) { scheduler in
            let target = scheduler.spawn { () -> Int in
                await scheduler.yield()
                scheduler.spawn { log.value.append("queued") }
                return 5
            }
            scheduler.spawn {
                let v = try await target.join(placement: placement)
                log.value.append("joiner:\(v)")
            }
        }
        if placement == .front {
            #expect(log.value == ["joiner:5", "queued"])
        } else {
            #expect(log.value == ["queued", "joiner:5"])
        }
    }

    @Test(arguments: allBackends, [Placement.front, .back])
    func completionResumesAtPlacement(_ backend: Engine, placement: Placement) async throws {
        let log = Log([])
        try await runScheduler(backend) { scheduler in
            scheduler.spawn {
                try await scheduler.nop(placement: placement)
                log.value.append("io")
            }
            scheduler.spawn {
                // Keeps "q" queued when the completion is dispatched.
                for i in 0..<3 {
                    log.value.append("q\(i)")
                    await scheduler.yield()
                }
            }
        }
        // The completion arrives after the first pass (q0 ran); at the front it runs
        // before q1, at the back after it.
        if placement == .front {
            #expect(log.value == ["q0", "io", "q1", "q2"])
        } else {
            #expect(log.value == ["q0", "q1", "io", "q2"])
        }
    }
}

@Suite(.enabled(if: ioUringUsable, "io_uring is refused by this kernel (on CI these tests run and fail instead)"))
struct SpawnAndJoinTests {
    @Test(arguments: allBackends, [Placement.front, .back])
    func childAndCallerFollowTheirPlacements(_ backend: Engine, resume: Placement) async throws {
        let log = Log([])
        try await runScheduler(backend) { scheduler in
            scheduler.spawn {
                scheduler.spawn { log.value.append("queued") }
                let v = try await scheduler.spawnAndJoin(placement: .front, resumePlacement: resume) { () -> Int in
                    log.value.append("child")
                    scheduler.spawn { log.value.append("queued by child") }
                    return 3
                }
                log.value.append("caller got \(v)")
            }
        }
        // The child goes first (front); the caller comes back ahead of the queue or after it.
        if resume == .front {
            #expect(log.value == ["child", "caller got 3", "queued", "queued by child"])
        } else {
            #expect(log.value == ["child", "queued", "queued by child", "caller got 3"])
        }
    }

    @Test(arguments: allBackends)
    func cancellingTheCallerCancelsTheChild(_ backend: Engine) async throws {
        let log = Log([])
        try await runScheduler(backend) { scheduler in
            let caller = scheduler.spawn {
                do {
                    _ = try await scheduler.spawnAndJoin { () -> Int in
                        do {
                            try await scheduler.sleep(for: .seconds(60))
                        } catch is CancellationError {
                            log.value.append("child cancelled")
                            throw CancellationError()
                        }
                        return 1
                    }
                } catch is CancellationError {
                    log.value.append("caller saw the child end")
                }
            }
            scheduler.spawn {
                await scheduler.yield()
                await scheduler.yield()
                caller.cancel()
            }
        }
        #expect(log.value == ["child cancelled", "caller saw the child end"])
    }
}
