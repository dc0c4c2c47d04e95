import CogenHTTP
import CogenUring
import Foundation
import HTTPTypes
import Testing

/// Issue 13, "Slowloris": with 1,000 connections trickling one byte per 100 ms, a
/// one-connection client's p99 stays at most 2 × its unloaded p99, and the trickling
/// connections are cut by the head deadline.
///
/// `.serialized`: the suite raises `RLIMIT_NOFILE` (process-wide), and its two engines must
/// not load the machine at the same time (each pair of measurements needs the CPUs the
/// other would take).
@Suite(.serialized)
struct SlowlorisTests {
    /// The figures.
    static let tricklers = 1000
    static let interval = Duration.milliseconds(100)
    /// The head deadline the server runs with (the issue: "tests use about 1 s").
    static let headDeadline = Duration.seconds(1)
    /// Latency samples per phase (at least; the loaded phase also lasts at least
    /// `loadedPhaseMinimum`, two cycles of the head deadline).
    static let samples = 3000
    static let loadedPhaseMinimum: UInt64 = 2_000_000_000
    /// p99 values below this are treated as this: the clock, the scheduler and loopback
    /// give no meaningful resolution under it on a shared 2-CPU VM.
    static let p99Floor: UInt64 = 1_000_000

    /// A request head that never ends within the deadline: at 10 bytes a second it would
    /// take 20 s. A valid prefix, so only the deadline can end it.
    static let trickledHead = Array(("GET /" + String(repeating: "a", count: 200)).utf8)

    struct Pair: Sendable {
        var unloadedP99: UInt64
        var loadedP99: UInt64
        var unloadedP50: UInt64
        var loadedP50: UInt64
        var loadedSamples: Int
        var figures: SlowlorisLoad.Figures
        var openReached: Int

        /// The ratio, with the floor: loaded p99 ≤ 2 × max(unloaded p99, floor).
        var withinRatio: Bool { loadedP99 <= 2 * max(unloadedP99, SlowlorisTests.p99Floor) }

        var summary: String {
            "unloaded p50 \(milliseconds(unloadedP50)) p99 \(milliseconds(unloadedP99)); "
                + "loaded (\(openReached) trickling, \(loadedSamples) samples) p50 \(milliseconds(loadedP50)) "
                + "p99 \(milliseconds(loadedP99)); bound 2 × max(p99, 1 ms) = "
                + "\(milliseconds(2 * max(unloadedP99, SlowlorisTests.p99Floor)))"
        }
    }

    /// One unloaded phase, then the same probe connection under the trickling load. Runs on
    /// a thread of its own (blocking sockets).
    static func measurePair(port: UInt16, tricklers: Int) throws -> Pair {
        let probe = try LatencyProbe(port: port)
        _ = try probe.sample(300)  // warm-up: first-touch allocations, the Date cache
        let unloaded = try probe.sample(samples)

        let load = SlowlorisLoad(port: port, connections: tricklers, interval: interval, head: trickledHead)
        load.start()
        // Steady state: every trickler connected, and half of the first wave cut by the
        // deadline (from then on about `tricklers` connections end and are replaced per
        // deadline period, and the rest keep trickling).
        let reached = waitUntil(timeout: .seconds(30)) { load.openConnections >= tricklers }
        let openReached = load.openConnections
        _ = waitUntil(timeout: .seconds(30)) { load.figures.cut >= tricklers / 2 }

        var loaded: [UInt64] = []
        let loadedStart = monotonicNanoseconds()
        var failure: (any Error)?
        do {
            while loaded.count < samples || monotonicNanoseconds() - loadedStart < loadedPhaseMinimum {
                loaded += try probe.sample(250)
                if loaded.count > 20 * samples { break }  // bounded whatever the clock does
            }
        } catch { failure = error }
        let figures = load.stop()
        if let failure { throw failure }
        if !reached {
            throw ClientError(description: "only \(openReached) of \(tricklers) trickling connections opened: \(figures)")
        }
        return Pair(
            unloadedP99: percentile(unloaded, 0.99), loadedP99: percentile(loaded, 0.99),
            unloadedP50: percentile(unloaded, 0.5), loadedP50: percentile(loaded, 0.5),
            loadedSamples: loaded.count, figures: figures, openReached: openReached)
    }

    @Test(arguments: allBackends)
    func trickleLeavesLatencyWithinTwiceUnloadedAndIsCutByHeadDeadline(engine: Engine) async throws {
        // Each trickler costs two descriptors in this process (client and server end), and
        // a replaced one briefly more (the server's lingering close).
        let limit = raiseDescriptorLimit()
        var tricklers = Self.tricklers
        if limit < 3 * tricklers + 256 {
            tricklers = max(0, (limit - 256) / 3)
            print("slowloris [\(engine.testDescription)]: RLIMIT_NOFILE \(limit): \(tricklers) trickling connections, not \(Self.tricklers)")
        }
        // Below a few hundred the load is too light to say anything about the server.
        try #require(tricklers >= 300, "RLIMIT_NOFILE \(limit) leaves only \(tricklers) trickling connections")

        try await withHTTPServer(
            engine, bound: .seconds(120),
            configure: { $0.timeouts.requestHead = Self.headDeadline },
            handler: { exchange in
                try await exchange.respond(HTTPResponse(status: .ok), body: Array("ok".utf8))
            }
        ) { server in
            let port = server.address.port
            let tricklers = tricklers
            var pairs: [Pair] = []
            // The issue names the 2× ratio, so this test asserts on timing. A loaded shared
            // 2-CPU VM is noisy: both phases are measured in the same run, on the same
            // connection; p99 under 1 ms counts as 1 ms; a failed pair is measured once more.
            for attempt in 1...2 {
                let pair = try await offThePool { Result { try Self.measurePair(port: port, tricklers: tricklers) } }.get()
                pairs.append(pair)
                print("slowloris [\(engine.testDescription)] attempt \(attempt): \(pair.summary)")
                print("slowloris [\(engine.testDescription)] attempt \(attempt) load: \(pair.figures)")
                if pair.withinRatio { break }
            }
            let statistics = server.statistics
            print("slowloris [\(engine.testDescription)] server: \(statistics)")

            let last = pairs[pairs.count - 1]
            #expect(last.withinRatio, "loaded p99 beyond 2 × unloaded p99 twice: \(pairs.map(\.summary))")

            for pair in pairs {
                let figures = pair.figures
                // The load lasted at least half a deadline period plus two periods: every
                // trickler was cut at least once.
                #expect(figures.cut >= tricklers, "too few cut: \(figures)")
                // Cut by the head deadline: a 408 then a close, or a close. Nothing else.
                #expect(figures.otherStatuses.isEmpty, "\(figures)")
                #expect(figures.cutWith408 > 0, "\(figures)")
                // Not before the deadline (the first byte starts it; a little timer slack)…
                let earliest = figures.lifetimes.min() ?? 0
                #expect(earliest >= 900_000_000, "a trickler was cut after \(milliseconds(earliest)): \(figures)")
                // …and none outlived it by much: a total deadline, not one reset by each byte.
                #expect(figures.oldestLiveAge < 5_000_000_000, "\(figures)")
                #expect(figures.connectErrors == 0, "\(figures)")
            }
            let seen408 = pairs.reduce(0) { $0 + $1.figures.cutWith408 }
            #expect(statistics.headTimeouts >= seen408, "head timeouts \(statistics.headTimeouts), 408s seen \(seen408)")
        }
    }
}
