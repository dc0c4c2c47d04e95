public import CogenUring
import Foundation

// Seeded cases for the property tests of the byte readers (issue 11, part 7): a random
// generator of our own, the byte streams, and how a peer writes them (where the stream is
// cut, the pauses, the empty segments, how it ends). The models that predict the readers'
// results live with each suite.

/// SplitMix64 (Steele, Lea, Flood 2014): a tiny generator whose sequence depends only on
/// its seed, on every platform and toolchain.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    public private(set) var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A number in `0..<bound` (multiply-high: no rejection loop, a bias of at most
    /// bound/2⁶⁴), the same on every toolchain, unlike `Int.random(in:using:)`.
    public mutating func below(_ bound: Int) -> Int {
        guard bound > 1 else { return 0 }
        return Int(next().multipliedFullWidth(by: UInt64(bound)).high)
    }

    /// A number in `range`.
    public mutating func int(in range: ClosedRange<Int>) -> Int {
        range.lowerBound + below(range.upperBound - range.lowerBound + 1)
    }

    /// True `percent` times in a hundred.
    public mutating func percent(_ percent: Int) -> Bool { below(100) < percent }

    /// One random edit of `bytes`, as the parsers' mutation tests make them: at a random
    /// position, a byte overwritten, inserted or removed (half the time one of
    /// `interesting`), or up to 40 bytes repeated there.
    public mutating func mutate(_ bytes: inout [UInt8], interesting: [UInt8]) {
        let position = below(bytes.count + 1)
        let byte = percent(50) ? interesting[below(interesting.count)] : UInt8(truncatingIfNeeded: next())
        switch below(4) {
        case 0 where position < bytes.count: bytes[position] = byte
        case 1: bytes.insert(byte, at: position)
        case 2 where position < bytes.count: bytes.remove(at: position)
        default:
            let length = min(below(40), bytes.count - position)
            bytes.insert(contentsOf: bytes[position..<(position + length)], at: position)
        }
    }

    /// One of `choices`, each with its weight.
    public mutating func pick<T>(_ choices: [(Int, T)]) -> T {
        var ticket = below(choices.reduce(0) { $0 + $1.0 })
        for (weight, choice) in choices {
            if ticket < weight { return choice }
            ticket -= weight
        }
        return choices[choices.count - 1].1
    }
}

/// The seeds a property test runs, from the environment:
/// - `COGEN_PROPERTY_SEED` (decimal or `0x` hex): the base seed (default fixed, so CI
///   runs the same cases every time);
/// - `COGEN_PROPERTY_CASES`: cases per engine instead of the test's default;
/// - `COGEN_PROPERTY_REPLAY` (a case seed from a failure message): run only that case.
public struct PropertySettings: Sendable, CustomStringConvertible {
    public let seed: UInt64
    public let cases: Int
    public let replay: UInt64?

    public init(defaultCases: Int) {
        let environment = ProcessInfo.processInfo.environment
        seed = environment["COGEN_PROPERTY_SEED"].flatMap(Self.parse) ?? 0x00C0_FFEE_5EED
        cases = environment["COGEN_PROPERTY_CASES"].flatMap { Int($0) } ?? defaultCases
        replay = environment["COGEN_PROPERTY_REPLAY"].flatMap(Self.parse)
    }

    /// The case seeds of one test on one engine (`salt` tells them apart).
    public func caseSeeds(salt: String) -> [UInt64] {
        if let replay { return [replay] }
        var generator = SplitMix64(seed: seed ^ fnv1a(salt))
        return (0..<cases).map { _ in generator.next() }
    }

    public var description: String {
        replay.map { "replaying case seed \(hex($0))" } ?? "base seed \(hex(seed)), \(cases) cases"
    }

    private static func parse(_ text: String) -> UInt64? {
        text.hasPrefix("0x") ? UInt64(text.dropFirst(2), radix: 16) : UInt64(text)
    }
}

/// A seed as the environment variables take it.
public func hex(_ value: UInt64) -> String { "0x" + String(value, radix: 16) }

/// FNV-1a: a stable hash of a test's name (Swift's `Hasher` is seeded per process).
public func fnv1a(_ text: String) -> UInt64 {
    text.utf8.reduce(0xCBF2_9CE4_8422_2325) { ($0 ^ UInt64($1)) &* 0x100_0000_01B3 }
}

public let newline = UInt8(ascii: "\n")
public let carriageReturn = UInt8(ascii: "\r")

/// How a stream ends.
public enum StreamEnd: String, Sendable {
    case empty = "empty stream"
    case afterNewline = "EOF right after a newline"
    case midLine = "EOF mid-line"
}

/// A byte stream: `lines` lines of text (`\n`, `\r\n`, stray `\r`, empty lines, long lines), or
/// random bytes (`randomBytes`: every value; or a tiny alphabet dense in newlines).
public func makeStream(
    _ random: inout SplitMix64, randomBytes: Bool = false, lines lineCount: ClosedRange<Int> = 1...10
) -> (bytes: [UInt8], end: StreamEnd) {
    let end: StreamEnd = random.pick([(4, .empty), (48, .afterNewline), (48, .midLine)])
    if end == .empty { return ([], end) }
    // Most streams are short (many cases per second); a few are long (every receive path's
    // sizes: 4096, 65536, the provided buffers') or have long lines.
    let big = random.below(1000) < 3
    var bytes: [UInt8] = []
    if randomBytes {
        let count = big ? random.int(in: 20_000...100_000) : random.pick([(6, 1...40), (3, 41...600), (1, 601...5000)]).randomElement(&random)
        bytes.reserveCapacity(count + 8)
        if random.percent(50) {
            // Every byte value, eight per draw.
            while bytes.count < count { withUnsafeBytes(of: random.next()) { bytes.append(contentsOf: $0) } }
            bytes.removeLast(bytes.count - count)
        } else {
            let alphabet: [UInt8] = [newline, carriageReturn, 0, 0xFF, UInt8(ascii: "a")]
            for _ in 0..<count { bytes.append(alphabet[random.below(alphabet.count)]) }
        }
    } else {
        let lines = big ? random.int(in: 20...100) : random.int(in: lineCount)
        let longLines = big || random.percent(10)
        for _ in 0..<lines {
            let length = longLines
                ? random.pick([(30, 0...3), (40, 4...40), (20, 41...300), (8, 301...5000), (2, 5001...70_000)]).randomElement(&random)
                : random.pick([(30, 0...3), (50, 4...40), (20, 41...300)]).randomElement(&random)
            // Letters with a stray CR now and then: one draw per byte would be slow in
            // debug builds, so a run of letters, then maybe a CR.
            var left = length
            while left > 0 {
                let run = min(left, random.int(in: 1...60))
                let letter = UInt8(ascii: "a") + UInt8(random.below(26))
                bytes.append(contentsOf: repeatElement(letter, count: run - 1))
                bytes.append(random.percent(40) ? carriageReturn : letter)
                left -= run
            }
            if random.percent(25) { bytes.append(carriageReturn) }
            bytes.append(newline)
        }
    }
    // Make the ending what was drawn.
    switch end {
    case .afterNewline:
        if bytes.last != newline { bytes.append(newline) }
    case .midLine:
        if bytes.last == newline || bytes.isEmpty || random.percent(70) {
            for _ in 0..<random.pick([(6, 1...3), (3, 4...50), (1, 51...3000)]).randomElement(&random) {
                bytes.append(random.percent(5) ? carriageReturn : UInt8(ascii: "A") + UInt8(random.below(26)))
            }
        }
    case .empty: break
    }
    return (bytes, end)
}

extension ClosedRange<Int> {
    func randomElement(_ random: inout SplitMix64) -> Int { random.int(in: self) }
}

/// What the writing peer does between two segments.
public enum Pause: Sendable, Equatable {
    /// Write on at once (consecutive segments may arrive as one).
    case none
    /// Yield to the back of the run queue.
    case yield
    /// Sleep for zero: the loop makes at least one pass through the kernel first.
    case loopPass
    /// Sleep a little.
    case sleep(Duration)
}

/// How the peer writes a stream: segment by segment, each after its pause; empty segments
/// are pauses without a write. Then it ends the stream, by `shutdown(SHUT_WR)` or `close`.
public struct WritePlan: Sendable, CustomStringConvertible {
    public var stream: [UInt8]
    public var end: StreamEnd
    public var segments: [(range: Range<Int>, pause: Pause)]
    public var pauseBeforeEnd: Pause
    public var closes: Bool
    /// Where the peer waits for the reader's ``Gate`` (a cut), if anywhere: the reader
    /// makes a read with a timeout that needs bytes from beyond it, then opens it.
    public var gate: Int?

    /// Cuts `stream` at every CR and LF (before and after it), at each of `cuts` (the
    /// caller's: its readers' limits −1, 0, +1 from where each read starts) and at a few
    /// random places; adds empty segments and pauses.
    public init(stream: [UInt8], end: StreamEnd, cuts: [Int], gate: Int? = nil, _ random: inout SplitMix64) {
        self.stream = stream
        self.end = end
        self.gate = gate
        var points = Set((cuts + (gate.map { [$0] } ?? [])).filter { $0 > 0 && $0 < stream.count })
        for (index, byte) in stream.enumerated() where byte == newline || byte == carriageReturn {
            points.insert(index)
            points.insert(index + 1)
        }
        for _ in 0..<random.below(4) where stream.count > 1 { points.insert(random.int(in: 1...(stream.count - 1))) }
        points.remove(0)
        points.remove(stream.count)
        let bounds = [0] + points.sorted() + [stream.count]
        // Segments of stream after stream make many sends: mostly no pause then.
        let busy = bounds.count > 200
        func pause() -> Pause {
            busy ? random.pick([(90, .none), (8, .yield), (2, .loopPass)])
                : random.pick([(35, .none), (25, .yield), (30, .loopPass), (10, .sleep(.microseconds(random.int(in: 20...300))))])
        }
        segments = []
        for index in 0..<(bounds.count - 1) where bounds[index] < bounds[index + 1] || stream.isEmpty {
            while random.percent(10) { segments.append((bounds[index]..<bounds[index], pause())) }
            segments.append((bounds[index]..<bounds[index + 1], pause()))
        }
        if random.percent(10) { segments.append((stream.count..<stream.count, pause())) }
        pauseBeforeEnd = pause()
        closes = random.percent(30)
    }

    public var description: String {
        let sizes = segments.prefix(40).map { "\($0.range.count)\(code($0.pause))" }.joined(separator: " ")
        return "\(stream.count) bytes (\(end.rawValue))\(gate.map { ", gate at \($0)" } ?? "") in \(segments.count) segments [\(sizes)\(segments.count > 40 ? " …" : "")]"
            + " then \(code(pauseBeforeEnd))\(closes ? "close" : "shutdown")"
    }

    private func code(_ pause: Pause) -> String {
        switch pause {
        case .none: ""
        case .yield: "y"
        case .loopPass: "p"
        case .sleep(let duration): "s\(duration.components.attoseconds / 1_000_000_000_000)"
        }
    }
}

/// Bytes for a failure message: printable ASCII as is, the rest escaped; long runs cut.
public func show(_ bytes: some Collection<UInt8>, limit: Int = 80) -> String {
    var text = "\""
    for byte in bytes.prefix(limit) {
        switch byte {
        case newline: text += "\\n"
        case carriageReturn: text += "\\r"
        case 0x20...0x7E where byte != UInt8(ascii: "\\") && byte != UInt8(ascii: "\""): text.append(Character(UnicodeScalar(byte)))
        default: text += "\\x" + (byte < 16 ? "0" : "") + String(byte, radix: 16)
        }
    }
    return text + "\"" + (bytes.count > limit ? "…(\(bytes.count) bytes)" : "")
}

/// Holds the peer at the plan's gate until the reader opens it.
public final class Gate: @unchecked Sendable {
    // @unchecked Sendable: used on one scheduler's thread.
    public private(set) var isOpen = false
    private let opened = Signal<Void>()

    public init() {}

    public func open() {
        isOpen = true
        opened.signal(())
    }

    func pass() async throws {
        if !isOpen { try await opened.wait() }
    }
}

/// The peer: writes a plan's segments after their pauses (waiting at its gate), then ends
/// the stream.
public func play(_ plan: WritePlan, through socket: Socket, on scheduler: Scheduler, gate: Gate) async throws {
    func wait(_ pause: Pause) async throws {
        switch pause {
        case .none: break
        case .yield: await scheduler.yield()
        case .loopPass: try await scheduler.sleep(for: .zero)
        case .sleep(let duration): try await scheduler.sleep(for: duration)
        }
    }
    var passed = plan.gate == nil
    for (range, pause) in plan.segments {
        if !passed && range.lowerBound == plan.gate {
            try await gate.pass()
            passed = true
        }
        try await wait(pause)
        if !range.isEmpty { try await socket.sendAll(Array(plan.stream[range])) }
    }
    if !passed { try await gate.pass() }
    try await wait(plan.pauseBeforeEnd)
    if plan.closes { try await socket.close() } else { try await socket.shutdown(.write) }
}

/// What a run saw: cases, calls and outcomes per reader, for the report.
public struct ReaderTally: CustomStringConvertible {
    public var cases = 0
    public var calls: [String: Int] = [:]
    public var outcomes: [String: Int] = [:]
    public var ends: [String: Int] = [:]
    public var failures: [String] = []

    public init() {}

    public var description: String {
        func list(_ counts: [String: Int]) -> String { counts.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ") }
        return "\(cases) cases; calls: \(list(calls)); outcomes: \(list(outcomes)); \(list(ends))"
    }
}


/// Where a gate may go so that a read starting at `position` must time out: before the
/// last byte it needs (`needed` bytes from `position`; one more than is left when the read
/// needs the end of the stream), and not before `reach`, the bytes the earlier reads
/// needed (they would wait for the gate forever). nil when there is no such place.
public func gatePosition(
    from position: Int, needing needed: Int, reach: Int, count: Int, _ random: inout SplitMix64
) -> Int? {
    let lowest = max(position, reach)
    let highest = min(position + needed - 1, count)
    return lowest <= highest ? random.int(in: lowest...highest) : nil
}
