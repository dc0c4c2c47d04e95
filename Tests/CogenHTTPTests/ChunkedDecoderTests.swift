@testable import CogenHTTP
import PropertyTestSupport
import Testing

/// What feeding pieces to a fresh decoder ended in: the content decoded (in every case: the
/// decoder hands out content before it looks at the framing after it) and how it ended.
struct ChunkedOutcome: Hashable, CustomStringConvertible {
    enum End: Hashable {
        /// Complete; the total bytes consumed up to the body's end.
        case complete(consumed: Int)
        case error(ChunkedBodyError)
        /// All input consumed, body not complete.
        case incomplete
        /// A call consumed nothing and returned no content, with input left: a decoder bug.
        case stuck
    }

    var content: [UInt8]
    var end: End

    var description: String {
        "\(end), content \(content.count) bytes \(String(decoding: content.prefix(40), as: UTF8.self).debugDescription)"
    }
}

struct ChunkedLimits {
    var maxChunkExtensionLength = 256
    var maxTrailerSize = 4096
    var maxTrailerFieldCount = 32
    var maxBodySize: Int64 = .max

    func makeDecoder() -> ChunkedDecoder {
        ChunkedDecoder(
            maxChunkExtensionLength: maxChunkExtensionLength, maxTrailerSize: maxTrailerSize,
            maxTrailerFieldCount: maxTrailerFieldCount, maxBodySize: maxBodySize)
    }
}

func decodeChunked(_ pieces: [[UInt8]], limits: ChunkedLimits = .init()) -> ChunkedOutcome {
    var decoder = limits.makeDecoder()
    var content: [UInt8] = []
    var total = 0
    for piece in pieces {
        var offset = 0
        while offset < piece.count {
            let output: ChunkedDecoder.Output
            do {
                output = try piece[offset...].withUnsafeBytes { bytes in
                    try decoder.decode(bytes)
                }
            } catch let error as ChunkedBodyError {
                return ChunkedOutcome(content: content, end: .error(error))
            } catch {
                return ChunkedOutcome(content: content, end: .stuck)
            }
            let rest = piece.count - offset
            guard output.consumed >= 0, output.consumed <= rest, output.content.lowerBound >= 0,
                output.content.upperBound <= output.consumed
            else { return ChunkedOutcome(content: content, end: .stuck) }
            content += piece[(offset + output.content.lowerBound)..<(offset + output.content.upperBound)]
            offset += output.consumed
            total += output.consumed
            if output.isComplete { return ChunkedOutcome(content: content, end: .complete(consumed: total)) }
            if output.consumed == 0 && output.content.isEmpty { return ChunkedOutcome(content: content, end: .stuck) }
        }
    }
    return ChunkedOutcome(content: content, end: .incomplete)
}

func decodeChunked(_ text: String, limits: ChunkedLimits = .init()) -> ChunkedOutcome {
    decodeChunked([Array(text.utf8)], limits: limits)
}

func expectChunkedRejected(
    _ text: String, _ error: ChunkedBodyError, status: Int = 400, limits: ChunkedLimits = .init(),
    sourceLocation: SourceLocation = #_sourceLocation
) {
    #expect(decodeChunked(text, limits: limits).end == .error(error), "\(text.debugDescription)", sourceLocation: sourceLocation)
    #expect(error.status == status, sourceLocation: sourceLocation)
}

func expectChunkedBody(
    _ text: String, _ body: String, limits: ChunkedLimits = .init(), sourceLocation: SourceLocation = #_sourceLocation
) {
    let outcome = decodeChunked(text, limits: limits)
    #expect(outcome.end == .complete(consumed: text.utf8.count), "\(text.debugDescription)", sourceLocation: sourceLocation)
    #expect(outcome.content == Array(body.utf8), "\(text.debugDescription)", sourceLocation: sourceLocation)
}

@Suite("ChunkedDecoder")
struct ChunkedDecoderTests {
    // MARK: accepted bodies (RFC 9112 §7.1)

    @Test func oneChunkThenLastChunk_RFC9112_7_1() {
        expectChunkedBody("5\r\nhello\r\n0\r\n\r\n", "hello")
        expectChunkedBody("0\r\n\r\n", "")
    }

    @Test func severalChunksHexSizesLeadingZeros_RFC9112_7_1() {
        let big = String(repeating: "x", count: 0x1A)
        expectChunkedBody("5\r\nhello\r\n1a\r\n\(big)\r\n1A\r\n\(big)\r\n000\r\n\r\n", "hello" + big + big)
        expectChunkedBody("0005\r\nhello\r\n0\r\n\r\n", "hello")
    }

    @Test func contentMayHoldCRLFAndAnyByte() {
        expectChunkedBody("6\r\n\r\n\n\r\u{0}:\r\n0\r\n\r\n", "\r\n\n\r\u{0}:")
    }

    @Test func extensionsAreValidatedAndIgnored_RFC9112_7_1_1() {
        expectChunkedBody("5;a\r\nhello\r\n0\r\n\r\n", "hello")
        expectChunkedBody("5;a=b;c=\"d \\\" e\";f\r\nhello\r\n0;last\r\n\r\n", "hello")
        expectChunkedBody("5 ;a = b ; c\r\nhello\r\n0\r\n\r\n", "hello")  // BWS
        expectChunkedBody("5;a=\"\"\r\nhello\r\n0\r\n\r\n", "hello")
    }

    @Test func trailersAreValidatedAndDiscarded_RFC9112_7_1_2() {
        expectChunkedBody("5\r\nhello\r\n0\r\nX-Sum: 1\r\nY:\r\nZ: a b\t\r\n\r\n", "hello")
    }

    @Test func bytesAfterTheBodyAreNotConsumed() {
        let outcome = decodeChunked("3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\n")
        #expect(outcome.end == .complete(consumed: 13))
        #expect(outcome.content == Array("abc".utf8))
    }

    @Test func oneCallStopsAfterOneRunOfContent() throws {
        var decoder = ChunkedLimits().makeDecoder()
        let bytes = Array("5\r\nhello\r\n2\r\nab\r\n0\r\n\r\n".utf8)
        var outputs: [ChunkedDecoder.Output] = []
        var offset = 0
        try bytes.withUnsafeBytes { all in
            while offset < all.count {
                let output = try decoder.decode(UnsafeRawBufferPointer(rebasing: all[offset...]))
                outputs.append(output)
                offset += output.consumed
                if output.isComplete { break }
            }
        }
        #expect(
            outputs == [
                .init(consumed: 8, content: 3..<8, isComplete: false),
                .init(consumed: 7, content: 5..<7, isComplete: false),
                .init(consumed: 7, content: 7..<7, isComplete: true),
            ])
        // Complete: later calls consume nothing.
        let again = try [UInt8](repeating: 0x41, count: 4).withUnsafeBytes { bytes in
            try decoder.decode(bytes)
        }
        #expect(again == .init(consumed: 0, content: 0..<0, isComplete: true))
    }

    @Test func contentIsHandedOutBeforeAnErrorThatFollowsIt() {
        let outcome = decodeChunked("5\r\nhelloXX")
        #expect(outcome.content == Array("hello".utf8))
        #expect(outcome.end == .error(.missingCRLFAfterData))
    }

    // MARK: rejected framing (400)

    @Test func chunkSizeNotHex_RFC9112_7_1() {
        for text in ["\r\n", "x\r\n", " 5\r\n", "-5\r\n", "+5\r\n", ";a\r\n", "0x5\r\n"] {
            let expected: ChunkedBodyError = text == "0x5\r\n" ? .junkAfterChunkSize : .invalidChunkSize
            expectChunkedRejected(text, expected)
        }
    }

    @Test func chunkSizeOverflow_RFC9112_7_1() {
        expectChunkedRejected("8000000000000000\r\n", .chunkSizeOverflow)
        expectChunkedRejected("ffffffffffffffffffff\r\n", .chunkSizeOverflow)
        expectChunkedRejected(String(repeating: "0", count: 33) + "1\r\n", .chunkSizeOverflow)
        // The largest size is fine (the body simply is not there yet).
        #expect(decodeChunked("7fffffffffffffff\r\nabc").end == .incomplete)
        #expect(decodeChunked(String(repeating: "0", count: 31) + "1\r\na\r\n0\r\n\r\n").content == [0x61])
    }

    @Test func junkAfterChunkSize_RFC9112_7_1() {
        for text in ["5x\r\n", "5 x\r\n", "5 \r\n", "5\t\r\n", "5 5\r\n"] {
            expectChunkedRejected(text, .junkAfterChunkSize)
        }
    }

    @Test func malformedChunkExtensions_RFC9112_7_1_1() {
        for text in [
            "5;\r\n", "5;=b\r\n", "5;a=\r\n", "5;a=b c\r\n", "5;a b\r\n", "5;a=\"b\r\n", "5;a=\"b\\\r\n",
            "5;a=\"b\"c\r\n", "5;a=b \r\n", "5;a \r\n", "5;a@b\r\n", "5;a=b@\r\n", "5;a=\"\u{1}\"\r\n",
            "5;a=\"\u{7F}\"\r\n", "5;a;\r\n",
        ] {
            expectChunkedRejected(text, .invalidChunkExtension)
        }
    }

    @Test func bareCROrLFInChunkSizeLine_RFC9112_7_1() {
        expectChunkedRejected("5\rhello", .bareCR)
        expectChunkedRejected("5\nhello\r\n", .bareLF)
        expectChunkedRejected("5;a=b\nhello\r\n", .bareLF)
        expectChunkedRejected("5;a=\"b\nc\"\r\n", .bareLF)
        expectChunkedRejected("5;a\rb\r\n", .bareCR)
        expectChunkedRejected("5\r\nhello\r\n0\n\r\n", .bareLF)
        // A bare LF where the next chunk-size line should start is not a size.
        expectChunkedRejected("5\r\nhello\r\n\n0\r\n\r\n", .invalidChunkSize)
    }

    @Test func chunkDataMustEndWithCRLF_RFC9112_7_1() {
        for text in ["5\r\nhelloX\r\n", "5\r\nhello\n0\r\n\r\n", "5\r\nhello\rX", "5\r\nhello\r\r\n", "5\r\nhello0\r\n\r\n"] {
            expectChunkedRejected(text, .missingCRLFAfterData)
        }
    }

    @Test func malformedTrailerFields_RFC9112_7_1_2() {
        let prefix = "0\r\n"
        for line in ["NoColon", ": empty name", "Bad Name: v", "Bad : v", "X: a\u{0}b", "X: a\u{7F}", "X@: v", "X: a\u{1}"] {
            expectChunkedRejected(prefix + line + "\r\n\r\n", .invalidTrailerField)
        }
        expectChunkedRejected(prefix + "X: a\r\n b\r\n\r\n", .obsoleteLineFoldingInTrailer)
        expectChunkedRejected(prefix + " X: a\r\n\r\n", .obsoleteLineFoldingInTrailer)
        expectChunkedRejected(prefix + "X: a\rb\r\n\r\n", .bareCR)
        expectChunkedRejected(prefix + "X: a\n\r\n", .bareLF)
        expectChunkedRejected(prefix + "\n", .bareLF)
        expectChunkedRejected(prefix + "\rX", .bareCR)
    }

    // MARK: limits, each checked while receiving

    @Test func extensionLengthLimitIs400PerLine() {
        let limits = ChunkedLimits(maxChunkExtensionLength: 6)
        expectChunkedBody("5;a=bcd\r\nhello\r\n0;a=bcd\r\n\r\n", "hello", limits: limits)  // 6 bytes each line
        expectChunkedRejected("5;a=bcde\r\n", .chunkExtensionTooLong, limits: limits)
        // Checked as bytes arrive: no CRLF needed.
        expectChunkedRejected("5;" + String(repeating: "a", count: 100), .chunkExtensionTooLong, limits: limits)
        expectChunkedRejected("5" + String(repeating: " ", count: 7), .chunkExtensionTooLong, limits: limits)
    }

    @Test func bodyLimitIs413AtTheChunkSizeLine() {
        let limits = ChunkedLimits(maxBodySize: 10)
        expectChunkedBody("5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n", "helloworld", limits: limits)
        // Detected at the size line that passes the limit, before its data arrives.
        let outcome = decodeChunked("5\r\nhello\r\n6\r", limits: limits)
        #expect(outcome.end == .error(.bodyTooLarge))
        #expect(outcome.content == Array("hello".utf8))
        #expect(ChunkedBodyError.bodyTooLarge.status == 413)
        expectChunkedRejected("b;x\r\n", .bodyTooLarge, status: 413, limits: limits)
        expectChunkedRejected("7fffffffffffffff\r\n", .bodyTooLarge, status: 413, limits: limits)
        // Overflow is a malformed size (400), whatever the limit.
        expectChunkedRejected("80000000000000000\r\n", .chunkSizeOverflow, limits: limits)
    }

    @Test func trailerSizeLimitIs431() {
        // "X: 12345\r\n" is 10 bytes; the final empty line does not count.
        let limits = ChunkedLimits(maxTrailerSize: 10)
        expectChunkedBody("0\r\nX: 12345\r\n\r\n", "", limits: limits)
        expectChunkedRejected("0\r\nX: 123456\r\n\r\n", .trailerSectionTooLarge, status: 431, limits: limits)
        expectChunkedRejected("0\r\nX: 1\r\nY: 1\r\n\r\n", .trailerSectionTooLarge, status: 431, limits: limits)
        // Checked as bytes arrive.
        expectChunkedRejected("0\r\nX: " + String(repeating: "v", count: 100), .trailerSectionTooLarge, status: 431, limits: limits)
        expectChunkedRejected("0\r\n" + String(repeating: "N", count: 100), .trailerSectionTooLarge, status: 431, limits: limits)
    }

    @Test func trailerFieldCountLimitIs431() {
        let limits = ChunkedLimits(maxTrailerFieldCount: 2)
        expectChunkedBody("0\r\nA: 1\r\nB: 2\r\n\r\n", "", limits: limits)
        expectChunkedRejected("0\r\nA: 1\r\nB: 2\r\nC", .tooManyTrailerFields, status: 431, limits: limits)
    }

    @Test func everyErrorHasAStatusAndAReason() {
        let all: [ChunkedBodyError] = [
            .invalidChunkSize, .chunkSizeOverflow, .junkAfterChunkSize, .invalidChunkExtension, .chunkExtensionTooLong,
            .bareCR, .bareLF, .missingCRLFAfterData, .invalidTrailerField, .obsoleteLineFoldingInTrailer, .bodyTooLarge,
            .trailerSectionTooLarge, .tooManyTrailerFields,
        ]
        for error in all {
            #expect([400, 413, 431].contains(error.status))
            #expect(!error.reason.isEmpty)
        }
    }

    // MARK: split invariance

    static let corpus: [String] = [
        "5\r\nhello\r\n0\r\n\r\n",
        "1\r\na\r\n2\r\nbc\r\n1A\r\n" + String(repeating: "z", count: 26) + "\r\n0\r\n\r\nGET / HTTP/1.1\r\n",
        "5;a=b;c=\"q\\\"x\" ; d\r\nhello\r\n0;e\r\nX-T: v\r\nY: \r\n\r\n",
        "4\r\n\r\n\r\n\r\n0\r\n\r\n",
        "0000A\r\n0123456789\r\n0\r\n\r\n",
        "5\r\nhello\n0\r\n\r\n",
        "5\nhello\r\n0\r\n\r\n",
        "5 \r\nhello\r\n0\r\n\r\n",
        "5;a=\"open\r\nhello\r\n",
        "fffffffffffffffffff\r\n",
        "9\r\nhello\r\n0\r\n\r\n",
        "5\r\nhello\r\n0\r\nX: a\r\n b\r\n\r\n",
        "5\r\nhello\r\n0\r\nX : a\r\n\r\n",
        "5\r\nhello\r\n0\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\n\r\n",
        "5;" + String(repeating: "e", count: 80) + "\r\nhello\r\n0\r\n\r\n",
        "5\r\nhello\r\n0\r\nX: " + String(repeating: "t", count: 120) + "\r\n\r\n",
        "40\r\n" + String(repeating: "b", count: 64) + "\r\n40\r\n" + String(repeating: "c", count: 64) + "\r\n0\r\n\r\n",
        "5\r\nhel",
    ]

    /// Small limits, so that the corpus and its mutations reach them.
    static let smallLimits = ChunkedLimits(
        maxChunkExtensionLength: 40, maxTrailerSize: 64, maxTrailerFieldCount: 4, maxBodySize: 100)

    @Test func splitAtEveryByteBoundaryDecodesTheSame() {
        for text in Self.corpus {
            let bytes = Array(text.utf8)
            for limits in [ChunkedLimits(), Self.smallLimits] {
                let whole = decodeChunked([bytes], limits: limits)
                #expect(whole.end != .stuck)
                for cut in 0...bytes.count {
                    let split = decodeChunked([Array(bytes[..<cut]), Array(bytes[cut...])], limits: limits)
                    #expect(split == whole, "cut at \(cut) of \(text.debugDescription)")
                }
                let byteByByte = decodeChunked(bytes.map { [$0] }, limits: limits)
                #expect(byteByByte == whole, "byte by byte: \(text.debugDescription)")
            }
        }
    }

    @Test func seededMutationsNeverCrashAndAreSplitInvariant() {
        var random = SplitMix64(seed: 0x7_1_2026)
        let interesting: [UInt8] = Array(";=\" \t\r\n:0fFxX\\".utf8) + [0x00, 0x7F, 0x80, 0x01]
        var outcomes: [String: Int] = [:]
        var failures = 0
        for _ in 0..<4000 {
            var bytes = Array(Self.corpus[random.below(Self.corpus.count)].utf8)
            for _ in 0..<(1 + random.below(3)) { random.mutate(&bytes, interesting: interesting) }
            let limits = random.below(2) == 0 ? Self.smallLimits : ChunkedLimits()
            let whole = decodeChunked([bytes], limits: limits)
            var pieces: [[UInt8]] = []
            var start = 0
            while start < bytes.count {
                let length = 1 + random.below(max(1, bytes.count / 3))
                pieces.append(Array(bytes[start..<min(bytes.count, start + length)]))
                start += length
            }
            let split = decodeChunked(pieces, limits: limits)
            let byteByByte = decodeChunked(bytes.map { [$0] }, limits: limits)
            if whole.end == .stuck || split != whole || byteByByte != whole {
                failures += 1
                if failures <= 5 { Issue.record("\(bytes): whole \(whole), split \(split), byte by byte \(byteByByte)") }
            }
            let key: String =
                switch whole.end {
                case .complete: "complete"
                case .error(let error): "\(error.status) \(error)"
                case .incomplete: "incomplete"
                case .stuck: "stuck"
                }
            outcomes[key, default: 0] += 1
        }
        print("ChunkedDecoder mutations, seed 0x712026, 4000 cases: \(outcomes.sorted { $0.key < $1.key })")
        #expect(failures == 0)
        #expect((outcomes["complete"] ?? 0) > 0)
        #expect(outcomes.keys.contains { $0.hasPrefix("400") })
        #expect(outcomes.keys.contains { $0.hasPrefix("413") })
        #expect(outcomes.keys.contains { $0.hasPrefix("431") })
    }
}
