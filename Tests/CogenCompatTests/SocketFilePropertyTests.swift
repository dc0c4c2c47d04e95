import CogenCompat
@testable import CogenUring
import Foundation
import PropertyTestSupport
import Testing

// Property-based tests of the buffered file object, `makefile()` (issue 11, part 7): its
// reads `read(n)`, `read()`, `readline(size)` (the line reader: `RecvLine` on the core's
// `receiveLine`) and `readlines(sizehint)`. Each seeded case writes a random stream from a
// peer coroutine, cut at every CR and LF, at each read's size −1, 0 and +1, and at random
// places, with pauses and empty segments, then ends it (EOF mid-line or right after a
// newline); the reader makes random calls on a file of a random `bufsize` and each result is
// compared with `FileModel`, a plain-array statement of cogen-semantics.md §7.4 with
// decision 22 (nothing is lost at end of stream or at a timeout). Every case calls every
// reader; `read()` comes last (it reads to the end), sometimes after `readlines()`. In some
// cases the peer waits at a gate until one read, made with a 2 ms timeout, has timed out (a
// `read()` that times out leaves its bytes in the file's own buffer, for the next reads).
// 3,400 cases per engine, 3 engines: 10,200 cases per reader. Failures print the case
// seed: `COGEN_PROPERTY_REPLAY=<seed>` runs that case alone; `COGEN_PROPERTY_SEED` picks
// other cases, `COGEN_PROPERTY_CASES` how many per engine.

/// One call on the file.
enum FileRead: Sendable, CustomStringConvertible {
    /// `read(size)`; -1: `read()`, to the end of the stream.
    case read(Int)
    /// `readline(size)`; -1: no limit.
    case readline(Int)
    /// `readlines(sizehint)`; 0: to the end of the stream.
    case readlines(Int)

    var description: String {
        switch self {
        case .read(let size): size < 0 ? "read()" : "read(\(size))"
        case .readline(let size): size < 0 ? "readline()" : "readline(\(size))"
        case .readlines(let hint): hint == 0 ? "readlines()" : "readlines(\(hint))"
        }
    }

    /// The size of `readline(size)`, if it has one.
    var size: Int? {
        if case .readline(let size) = self, size >= 0 { size } else { nil }
    }

    /// The reader it exercises, for the tally.
    var reader: String {
        switch self {
        case .read(let size): size < 0 ? "read()" : "read(n)"
        case .readline: "readline(size)"
        case .readlines: "readlines"
        }
    }
}

/// What a call gave.
enum FileOutcome: Sendable, Equatable, CustomStringConvertible {
    case bytes([UInt8])
    case lines([[UInt8]])
    /// `ConnectionClosed` for the end of the stream (errno 0).
    case closed
    /// `OperationTimeout` with at most this many bytes received (they stay readable).
    case timeout(bytes: Int)
    case other(String)

    /// Whether `actual` is what this expected outcome allows.
    func allows(_ actual: FileOutcome) -> Bool {
        if case .timeout(let most) = self, case .timeout(let bytes) = actual { return bytes <= most }
        return self == actual
    }

    var description: String {
        switch self {
        case .bytes(let bytes): show(bytes)
        case .lines(let lines): "\(lines.count) lines [\(lines.prefix(8).map { show($0, limit: 30) }.joined(separator: ", "))\(lines.count > 8 ? ", …" : "")]"
        case .closed: "ConnectionClosed (end of stream)"
        case .timeout(let bytes): "OperationTimeout(bytesTransferred: \(bytes))"
        case .other(let error): "unexpected error: \(error)"
        }
    }

    var kind: String {
        switch self {
        case .bytes(let bytes): bytes.isEmpty ? "empty" : "bytes"
        case .lines(let lines): lines.isEmpty ? "no lines" : "lines"
        case .closed: "ConnectionClosed"
        case .timeout: "OperationTimeout"
        case .other: "other error"
        }
    }
}

/// §7.4 with decision 22, over the whole stream as a plain array and the position reached;
/// the stream ends (EOF) after its last byte.
struct FileModel {
    let stream: [UInt8]
    var position = 0

    var rest: Int { stream.count - position }

    mutating func apply(_ read: FileRead) -> FileOutcome {
        switch read {
        case .read(0), .readline(0):
            return .bytes([])
        case .read(let size):
            // `size` bytes, fewer at the end of the stream; `read()`: all up to the end.
            // Only a read that gets no byte at all is ConnectionClosed.
            let count = size < 0 ? rest : min(size, rest)
            return count == 0 ? .closed : take(count)
        case .readline(let size):
            return line(limit: size < 0 ? .max : size)
        case .readlines(let hint):
            // Whole lines until the end of the stream or until `hint` bytes were read.
            var lines: [[UInt8]] = []
            var total = 0
            while hint <= 0 || total < hint {
                guard case .bytes(let line) = self.line(limit: .max) else { break }
                lines.append(line)
                total += line.count
            }
            return .lines(lines)
        }
    }

    /// How many bytes from the position a read must see before its result is known (one
    /// more than are left when it needs the end of the stream).
    func needed(_ read: FileRead) -> Int {
        var after = self
        let outcome = after.apply(read)
        let taken = after.position - position
        switch (read, outcome) {
        case (_, .closed): return rest + 1
        case (.read(let size), _): return size < 0 || size > rest ? rest + 1 : size
        case (.readline, _): return taken > 0 && stream[after.position - 1] == newline || taken == (read.size ?? .max) ? taken : rest + 1
        case (.readlines(let hint), _):
            // It reads on until `hint` bytes or the end of the stream; a last line without
            // its newline needed the end of the stream too.
            let ended = hint <= 0 || taken < hint || (taken > 0 && stream[after.position - 1] != newline)
            return ended ? rest + 1 : taken
        }
    }

    /// Through the first newline among the next `limit` bytes; without one, exactly `limit`
    /// bytes; at the end of the stream the partial line; no byte left: ConnectionClosed.
    private mutating func line(limit: Int) -> FileOutcome {
        for offset in 0..<min(limit, rest) where stream[position + offset] == newline {
            return take(offset + 1)
        }
        if rest == 0 { return .closed }
        return take(min(limit, rest))
    }

    private mutating func take(_ count: Int) -> FileOutcome {
        defer { position += count }
        return .bytes(Array(stream[position..<(position + count)]))
    }
}

/// One case: the stream, how the peer writes it, the file's `bufsize`, the calls and what
/// they must give.
struct FileCase: CustomStringConvertible {
    let seed: UInt64
    let plan: WritePlan
    let bufsize: Int
    let reads: [FileRead]
    let expected: [FileOutcome]
    /// The read made with a 2 ms timeout while the peer waits at the plan's gate, if any.
    let timed: Int?
    let weakTimeout: Bool
    let overTCP: Bool

    init(seed: UInt64, randomBytes: Bool = false) {
        self.seed = seed
        var random = SplitMix64(seed: seed)
        let (stream, end) = makeStream(&random, randomBytes: randomBytes, lines: 2...24)
        // read(n), readline(size) and readlines(sizehint) in a random order (readlines
        // with a hint: it stops early), then sometimes readlines(), then read().
        var kinds = [0, 1, 2] + (0..<random.int(in: 0...5)).map { _ in random.pick([(40, 0), (50, 1), (10, 2)]) }
        for index in kinds.indices.reversed() { kinds.swapAt(index, random.below(index + 1)) }
        var model = FileModel(stream: stream)
        var reads: [FileRead] = []
        var expected: [FileOutcome] = []
        var cuts: [Int] = []
        // Sometimes one read waits for bytes the peer holds back until the read times out;
        // often `read()`, whose bytes then wait in the file's own buffer.
        let timedIndex = random.percent(20) ? random.below(kinds.count + 1) : nil
        if timedIndex == kinds.count || (timedIndex != nil && random.percent(40)) { kinds.insert(3, at: timedIndex!) }
        var timed: Int?
        var gate: Int?
        var reach = 0
        for (index, kind) in kinds.enumerated() {
            let size = Self.size(model, tiny: randomBytes, &random)
            let read: FileRead = switch kind {
            case 0: .read(size)
            case 1: random.percent(25) ? .readline(-1) : .readline(size)
            case 3: .read(-1)
            default: .readlines(random.pick([(3, random.int(in: 1...3)), (5, size), (2, random.int(in: 1...(model.rest / 2 + 1)))]))
            }
            if case .readline(-1) = read {} else {
                cuts += [model.position + size - 1, model.position + size, model.position + size + 1]
            }
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
        for read in (random.percent(30) ? [FileRead.readlines(0)] : []) + [.read(-1)] {
            reads.append(read)
            expected.append(model.apply(read))
        }
        self.reads = reads
        self.expected = expected
        self.timed = timed
        weakTimeout = random.percent(50)
        plan = WritePlan(stream: stream, end: end, cuts: cuts, gate: gate, &random)
        // 0: one byte per receive (only for short streams); 1: 8192; else the chunk size.
        bufsize = random.pick([(40, -1), (stream.count < 3000 ? 10 : 0, 0), (10, 1), (30, random.int(in: 2...64)), (10, 4096)])
        overTCP = random.percent(15)
    }

    /// A size worth trying from where the model stands: tiny ones, the distance to the next
    /// newline and to EOF (each −1, 0, +1), 8192 (the default chunk), any.
    static func size(_ model: FileModel, tiny: Bool, _ random: inout SplitMix64) -> Int {
        let rest = model.rest
        let toNewline = model.stream[model.position...].firstIndex(of: newline).map { $0 - model.position + 1 } ?? rest + 1
        let near = random.int(in: -1...1)
        return max(0, random.pick([
            (tiny ? 40 : 15, random.int(in: 1...3)),
            (10, random.int(in: 1...12)),
            (30, toNewline + near),
            (6, rest + near),
            (20, random.int(in: 1...(rest / 3 + 2))),
            (2, 8192 + near),
            (2, 0),
        ]))
    }

    var description: String {
        "\(plan); makefile(bufsize: \(bufsize)); reads: "
            + reads.enumerated().map { $0 == timed ? "\($1) with a 2 ms \(weakTimeout ? "weak" : "strong") timeout" : $1.description }
                .joined(separator: ", ")
            + (overTCP ? " over TCP" : " over a Unix socket pair")
    }
}

// Serialized: one engine at a time (each keeps a CPU busy), so a parallel run of the
// whole suite leaves room for the other tests' watchdogs.
@Suite("makefile() properties", .serialized)
struct SocketFilePropertyTests {
    static let workers = 8

    /// Every call on the file gives what the model says, whatever the cuts and pauses.
    @Test(arguments: allBackends)
    func fileReadsMatchTheModel(engine: Engine) async throws {
        try await run(engine, name: "file reads", defaultCases: 3_400, randomBytes: false)
    }

    /// Random bytes (every value, or a tiny alphabet dense in CR and LF) with tiny sizes
    /// (1, 2, 3): no crash, and still the model's results.
    @Test(arguments: allBackends)
    func randomBytesNeverCrash(engine: Engine) async throws {
        try await run(engine, name: "random bytes", defaultCases: 1_000, randomBytes: true)
    }

    private func run(_ engine: Engine, name: String, defaultCases: Int, randomBytes: Bool) async throws {
        let settings = PropertySettings(defaultCases: defaultCases)
        let seeds = settings.caseSeeds(salt: "compat \(name) \(engine.testDescription)")
        let tally = Shared(ReaderTally())
        let next = Shared(0)
        let running = Shared<[Int: UInt64]>([:])
        let started = ContinuousClock.now
        try await runCompat(engine, bound: .seconds(300)) { sched in
            for worker in 0..<Self.workers {
                let listener = try CogenUring.Socket.listening(on: .loopback(), on: sched.core)
                let address = try listener.localAddress
                sched.add("worker \(worker)") {
                    while next.value < seeds.count && tally.value.failures.count < 5 {
                        let seed = seeds[next.value]
                        next.value += 1
                        running.value[worker] = seed
                        let run = FileCase(seed: seed, randomBytes: randomBytes)
                        if settings.replay != nil { print("\(engine.testDescription), replaying \(hex(seed)): \(run)") }
                        let failure: String?
                        do {
                            failure = try await Self.check(run, sched.core, listener, address, tally)
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
                    return nil
                }
            }
        }
        let elapsed = ContinuousClock.now - started
        print("SocketFilePropertyTests \(name) [\(engine.testDescription)] \(settings): \(tally.value) in \(elapsed)")
        for failure in tally.value.failures { Issue.record(Comment(rawValue: failure)) }
        for seed in running.value.values.sorted() {
            Issue.record("\(engine.testDescription): case seed \(hex(seed)) (COGEN_PROPERTY_REPLAY=\(hex(seed))) never ended")
        }
        #expect(tally.value.cases == seeds.count)
    }

    /// Runs one case; the first disagreement with the model, if any.
    private static func check(
        _ run: FileCase, _ scheduler: CogenUring.Scheduler, _ listener: CogenUring.Socket, _ address: SocketAddress,
        _ tally: Shared<ReaderTally>
    ) async throws -> String? {
        let reader: CogenUring.Socket, writer: CogenUring.Socket
        if run.overTCP {
            let connecting = scheduler.spawn { try await CogenUring.Socket.connect(to: address) }
            reader = try await listener.accept()
            writer = try await connecting.join()
        } else {
            var fds: [Int32] = [0, 0]
            guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0 else {
                return "socketpair: errno \(errno)"
            }
            reader = CogenUring.Socket(descriptor: fds[0], family: .unix, scheduler: scheduler)
            writer = CogenUring.Socket(descriptor: fds[1], family: .unix, scheduler: scheduler)
        }
        let gate = Gate()
        let peer = scheduler.spawn("peer") { try await play(run.plan, through: writer, on: scheduler, gate: gate) }
        defer { tally.value.cases += 1 }
        tally.value.ends[run.plan.end.rawValue, default: 0] += 1
        let sock = sockets.Socket(wrapping: reader)
        let file = sock.makefile(bufsize: run.bufsize)
        var failure: String?
        for (index, read) in run.reads.enumerated() {
            let outcome: FileOutcome
            let timed = index == run.timed
            let weak = timed ? run.weakTimeout : true
            if timed { sock.settimeout(.after(.milliseconds(2))) }
            do {
                switch read {
                case .read(let size): outcome = .bytes(try await file.read(size, weakTimeout: weak))
                case .readline(let size): outcome = .bytes(try await file.readline(size, weakTimeout: weak))
                case .readlines(let hint): outcome = .lines(try await file.readlines(hint, weakTimeout: weak))
                }
            } catch let closed as ConnectionClosed where closed.errno == 0 {
                outcome = .closed
            } catch let timeout as OperationTimeout {
                outcome = .timeout(bytes: timeout.bytesTransferred)
            } catch {
                outcome = .other("\(error)")
            }
            if timed {
                sock.settimeout(nil)
                gate.open()
            }
            tally.value.calls[read.reader, default: 0] += 1
            tally.value.outcomes["\(read.reader) \(outcome.kind)", default: 0] += 1
            if !run.expected[index].allows(outcome) {
                failure = "read \(index), \(read): got \(outcome), the model says \(run.expected[index])"
                break
            }
        }
        gate.open()
        try await file.close()
        try await sock.close()  // also ends the peer's sends if a failure left it blocked
        do {
            try await peer.join()
        } catch {
            failure = failure ?? "the peer failed: \(error)"
        }
        try await writer.close()
        return failure
    }
}
