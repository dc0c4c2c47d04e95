@testable import CogenUring
import Foundation
import PropertyTestSupport
import Testing

// Property-based tests of the core socket's buffered readers, `receive(exactly:)` and
// `receiveLine(limit:)` (issue 11, part 7). Each seeded case writes a random stream from a
// peer coroutine, cut at every CR and LF, at each read's limit −1, 0 and +1, and at random
// places, with pauses and empty segments, then ends it (EOF mid-line or right after a
// newline); the reader makes random calls (both readers in every case) and each result is
// compared with `CoreModel`, a plain-array statement of the documented behaviour. In some
// cases the peer waits at a gate until one read, made with a 2 ms timeout, has timed out
// for want of the bytes behind the gate: nothing it received may be lost. Then the rest is
// drained with plain receives: nothing lost or repeated. Many cases run at once on one
// scheduler (`workers` connections at a time), so thousands take seconds.
// 2,500 cases per engine, 4 engines: 10,000 cases per reader (1,000 more per engine of
// random bytes). Failures print the case seed: `COGEN_PROPERTY_REPLAY=<seed>` runs that case
// alone; `COGEN_PROPERTY_SEED` picks other cases, `COGEN_PROPERTY_CASES` how many.

/// One call of a core reader.
enum CoreRead: Sendable, CustomStringConvertible {
    case exactly(Int)
    case line(limit: Int)

    var description: String {
        switch self {
        case .exactly(let count): "receive(exactly: \(count))"
        case .line(let limit): "receiveLine(limit: \(limit == .max ? "Int.max" : "\(limit)"))"
        }
    }
}

/// What a call gave: its bytes or its error.
enum CoreOutcome: Sendable, Equatable, CustomStringConvertible {
    case bytes([UInt8])
    case endOfStream(available: Int, wanted: Int)
    case lineTooLong(limit: Int)
    /// `TimeoutError` with at most this many bytes received (they stay readable).
    case timeout(bytes: Int)
    case other(String)

    /// Whether `actual` is what this expected outcome allows.
    func allows(_ actual: CoreOutcome) -> Bool {
        if case .timeout(let most) = self, case .timeout(let bytes) = actual { return bytes <= most }
        return self == actual
    }

    var description: String {
        switch self {
        case .bytes(let bytes): show(bytes)
        case .endOfStream(let available, let wanted): "EndOfStreamError(bytesAvailable: \(available), bytesWanted: \(wanted))"
        case .lineTooLong(let limit): "LineTooLongError(limit: \(limit))"
        case .timeout(let bytes): "TimeoutError(bytesTransferred: \(bytes))"
        case .other(let error): "unexpected error: \(error)"
        }
    }
}

/// The documented behaviour (the doc comments of `receive(exactly:)` and
/// `receiveLine(limit:)`) over the whole stream as a plain array and the position reached:
/// the stream ends (EOF) after its last byte.
struct CoreModel {
    let stream: [UInt8]
    var position = 0

    var rest: Int { stream.count - position }

    mutating func apply(_ read: CoreRead) -> CoreOutcome {
        switch read {
        case .exactly(let count):
            // `count` bytes; the peer closing first is an error and the bytes stay readable.
            if count > rest { return .endOfStream(available: rest, wanted: count) }
            return take(count)
        case .line(let limit):
            // The line through its newline if one is among the first `limit` bytes; no
            // newline within `limit` bytes: an error, the bytes stay; at EOF the rest
            // (empty when nothing is left).
            for offset in 0..<min(limit, rest) where stream[position + offset] == newline {
                return take(offset + 1)
            }
            if rest >= limit { return .lineTooLong(limit: limit) }
            return take(rest)
        }
    }

    /// How many bytes from the position a read must see before its result is known (one
    /// more than are left when it needs the end of the stream).
    func needed(_ read: CoreRead) -> Int {
        switch read {
        case .exactly(let count):
            return count <= rest ? count : rest + 1
        case .line(let limit):
            if let newline = stream[position...].prefix(limit).firstIndex(of: newline) { return newline - position + 1 }
            return rest >= limit ? limit : rest + 1
        }
    }

    private mutating func take(_ count: Int) -> CoreOutcome {
        defer { position += count }
        return .bytes(Array(stream[position..<(position + count)]))
    }
}

/// One case: the stream, how the peer writes it, the reads and what they must give.
struct CoreCase: CustomStringConvertible {
    let seed: UInt64
    let plan: WritePlan
    let reads: [CoreRead]
    let expected: [CoreOutcome]
    /// The read made with a timeout while the peer waits at the plan's gate, if any.
    let timed: Int?
    let timeout: SocketTimeout
    let rest: [UInt8]
    let overTCP: Bool
    let readerIsClient: Bool
    let drainSize: Int

    init(seed: UInt64, randomBytes: Bool) {
        self.seed = seed
        var random = SplitMix64(seed: seed)
        let (stream, end) = makeStream(&random, randomBytes: randomBytes)
        // Both readers in every case, in a random order.
        var kinds = (0..<random.int(in: 2...8)).map { _ in random.percent(50) }
        kinds[0] = true
        kinds[1] = false
        for index in kinds.indices.reversed() { kinds.swapAt(index, random.below(index + 1)) }
        var model = CoreModel(stream: stream)
        var reads: [CoreRead] = []
        var expected: [CoreOutcome] = []
        var cuts: [Int] = []
        // Sometimes one read waits for bytes the peer holds back until the read times out.
        let timedIndex = random.percent(15) ? random.below(kinds.count) : nil
        var timed: Int?
        var gate: Int?
        var reach = 0
        for (index, exactly) in kinds.enumerated() {
            let size = Self.size(model, exactly: exactly, randomBytes: randomBytes, &random)
            let read: CoreRead = exactly ? .exactly(size) : .line(limit: size)
            if size < .max { cuts += [model.position + size - 1, model.position + size, model.position + size + 1] }
            reads.append(read)
            if index == timedIndex,
               let at = gatePosition(
                   from: model.position, needing: model.needed(read), reach: reach, count: stream.count, &random)
            {
                timed = index
                gate = at
                expected.append(.timeout(bytes: at - model.position))
            } else {
                reach = max(reach, model.position + model.needed(read))
                expected.append(model.apply(read))
            }
        }
        self.reads = reads
        self.expected = expected
        self.timed = timed
        timeout = random.percent(50) ? .strong(.milliseconds(2)) : .weak(.milliseconds(2))
        rest = Array(stream[model.position...])
        plan = WritePlan(stream: stream, end: end, cuts: cuts, gate: gate, &random)
        overTCP = random.percent(15)
        readerIsClient = random.percent(50)
        drainSize = random.pick([(3, 1), (3, 7), (4, 65536)])
    }

    /// A size or limit worth trying from where the model stands: tiny ones, the distance to
    /// the next newline and to EOF (each −1, 0, +1), the receive sizes (4096, 65536), any.
    static func size(_ model: CoreModel, exactly: Bool, randomBytes: Bool, _ random: inout SplitMix64) -> Int {
        let rest = model.rest
        let toNewline = model.stream[model.position...].firstIndex(of: newline).map { $0 - model.position + 1 } ?? rest + 1
        let near = random.int(in: -1...1)
        let size = random.pick([
            (randomBytes ? 30 : 10, random.int(in: 1...2)),
            (10, random.int(in: 1...12)),
            (exactly ? 10 : 30, toNewline + near),
            (exactly ? 25 : 10, rest + near),
            (15, random.int(in: 1...300)),
            (3, 4096 + near),
            (1, 65536 + near),
            (exactly ? 3 : 0, 0),
            (exactly ? 0 : 3, Int.max),
        ])
        return max(size, exactly ? 0 : 1)
    }

    var description: String {
        "\(plan); reads: \(reads.enumerated().map { $0 == timed ? "\($1) with timeout \(timeout)" : $1.description }.joined(separator: ", "))"
            + (overTCP ? " over TCP (reader is the \(readerIsClient ? "client" : "server"))" : " over a Unix socket pair")
    }
}

/// The engines of `allBackends`, and io_uring with a tiny provided-buffer ring shared by
/// all the connections: chunk boundaries every 64 bytes, buffers running out (`ENOBUFS`),
/// chunks spilled by lagging readers.
struct ReaderEngine: Sendable, CustomTestStringConvertible {
    let engine: Engine
    let tinyRing: Bool

    var testDescription: String { tinyRing ? "\(engine.testDescription), tiny buffer ring" : engine.testDescription }

    func configure(_ configuration: inout Scheduler.Configuration) {
        guard tinyRing else { return }
        configuration.receiveBufferCount = 16
        configuration.receiveBufferSize = 64
        configuration.maxBuffersPerConnection = 3
    }

    static let all: [ReaderEngine] = allBackends.map { ReaderEngine(engine: $0, tinyRing: false) }
        + [ReaderEngine(engine: Engine(backend: .ioUring, modern: true), tinyRing: true)]
}

// Serialized: one engine at a time (each keeps a CPU busy), so a parallel run of the
// whole suite leaves room for the other tests' watchdogs.
@Suite(
    "Reader properties", .serialized,
    .enabled(if: ioUringUsable, "io_uring is refused by this kernel (on CI these tests run and fail instead)"))
struct ReaderPropertyTests {
    static let workers = 8

    /// Every call of `receive(exactly:)` and `receiveLine(limit:)` gives what the model
    /// says, whatever the cuts and pauses; the rest is drained intact.
    @Test(arguments: ReaderEngine.all)
    func readersMatchTheModel(_ engine: ReaderEngine) async throws {
        try await run(engine, name: "readers", defaultCases: 2_500, randomBytes: false)
    }

    /// Random bytes (every value, or a tiny alphabet dense in CR and LF) with tiny limits
    /// (1, 2): no crash, and still the model's results.
    @Test(arguments: ReaderEngine.all)
    func randomBytesNeverCrash(_ engine: ReaderEngine) async throws {
        try await run(engine, name: "random bytes", defaultCases: 1_000, randomBytes: true)
    }

    private func run(_ engine: ReaderEngine, name: String, defaultCases: Int, randomBytes: Bool) async throws {
        let settings = PropertySettings(defaultCases: defaultCases)
        let seeds = settings.caseSeeds(salt: "core \(name) \(engine.testDescription)")
        let tally = Box(ReaderTally())
        let next = Box(0)
        let running = Box<[Int: UInt64]>([:])
        let started = ContinuousClock.now
        try await runScheduler(engine.engine, bound: .seconds(300), configure: engine.configure) { scheduler in
            for worker in 0..<Self.workers {
                let listener = try Socket.listening(on: .loopback(), on: scheduler)
                let address = try listener.localAddress
                scheduler.spawn("worker \(worker)") {
                    defer { _ = listener }
                    while next.value < seeds.count && tally.value.failures.count < 5 {
                        let seed = seeds[next.value]
                        next.value += 1
                        running.value[worker] = seed
                        let run = CoreCase(seed: seed, randomBytes: randomBytes)
                        if settings.replay != nil { print("\(engine.testDescription), replaying \(hex(seed)): \(run)") }
                        let failure: String?
                        do {
                            failure = try await Self.check(run, scheduler, listener, address, tally)
                        } catch {
                            failure = "the case threw \(error)"
                        }
                        if let failure {
                            tally.value.failures.append(
                                "\(engine.testDescription), \(settings), case seed \(hex(seed)) "
                                + "(COGEN_PROPERTY_REPLAY=\(hex(seed))): \(failure)\n  case: \(run)")
                        }
                        running.value[worker] = nil
                    }
                    try await listener.close()
                }
            }
        }
        let elapsed = ContinuousClock.now - started
        print("ReaderPropertyTests \(name) [\(engine.testDescription)] \(settings): \(tally.value) in \(elapsed)")
        for failure in tally.value.failures { Issue.record(Comment(rawValue: failure)) }
        for seed in running.value.values.sorted() {
            Issue.record("\(engine.testDescription): case seed \(hex(seed)) (COGEN_PROPERTY_REPLAY=\(hex(seed))) never ended")
        }
        #expect(tally.value.cases == seeds.count)
    }

    /// Runs one case; the first disagreement with the model, if any.
    private static func check(
        _ run: CoreCase, _ scheduler: Scheduler, _ listener: Socket, _ address: SocketAddress, _ tally: Box<ReaderTally>
    ) async throws -> String? {
        let reader: Socket, writer: Socket
        if run.overTCP {
            let connecting = scheduler.spawn { try await Socket.connect(to: address) }
            let accepted = try await listener.accept()
            let client = try await connecting.join()
            (reader, writer) = run.readerIsClient ? (client, accepted) : (accepted, client)
        } else {
            var fds: [Int32] = [0, 0]
            guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0 else {
                return "socketpair: errno \(errno)"
            }
            reader = Socket(descriptor: fds[0], family: .unix, scheduler: scheduler)
            writer = Socket(descriptor: fds[1], family: .unix, scheduler: scheduler)
        }
        let gate = Gate()
        let peer = scheduler.spawn("peer") { try await play(run.plan, through: writer, on: scheduler, gate: gate) }
        defer { tally.value.cases += 1 }
        tally.value.ends[run.plan.end.rawValue, default: 0] += 1
        var failure: String?
        for (index, read) in run.reads.enumerated() {
            let outcome: CoreOutcome
            let timeout = index == run.timed ? run.timeout : nil
            do {
                switch read {
                case .exactly(let count): outcome = .bytes(try await reader.receive(exactly: count, timeout: timeout))
                case .line(let limit): outcome = .bytes(try await reader.receiveLine(limit: limit, timeout: timeout))
                }
            } catch let error as EndOfStreamError {
                outcome = .endOfStream(available: error.bytesAvailable, wanted: error.bytesWanted)
            } catch let error as LineTooLongError {
                outcome = .lineTooLong(limit: error.limit)
            } catch let error as TimeoutError {
                outcome = .timeout(bytes: error.bytesTransferred)
            } catch {
                outcome = .other("\(error)")
            }
            if index == run.timed { gate.open() }
            let kind = if case .exactly = read { "receive(exactly:)" } else { "receiveLine(limit:)" }
            tally.value.calls[kind, default: 0] += 1
            tally.value.outcomes["\(kind) \(Self.kind(outcome))", default: 0] += 1
            if !run.expected[index].allows(outcome) {
                failure = "read \(index), \(read): got \(outcome), the model says \(run.expected[index])"
                break
            }
        }
        if failure == nil {
            // The rest, with plain receives: exactly the model's rest, then end of stream.
            var rest: [UInt8] = []
            while failure == nil {
                let bytes = try await reader.receive(maxLength: run.drainSize)
                if bytes.isEmpty { break }
                if bytes.count > run.drainSize { failure = "a receive of at most \(run.drainSize) gave \(bytes.count)" }
                rest += bytes
            }
            if let difference = mismatch(rest, run.rest) {
                failure = "the rest drained after the reads differs from the model's: \(difference): "
                    + "got \(show(rest)), the model says \(show(run.rest))"
            }
        }
        gate.open()
        try await reader.close()  // also ends the peer's sends if a failure left it blocked
        do {
            try await peer.join()
        } catch {
            failure = failure ?? "the peer failed: \(error)"
        }
        try await writer.close()
        return failure
    }

    private static func kind(_ outcome: CoreOutcome) -> String {
        switch outcome {
        case .bytes: "bytes"
        case .endOfStream: "EndOfStreamError"
        case .lineTooLong: "LineTooLongError"
        case .timeout: "TimeoutError"
        case .other: "other error"
        }
    }
}
