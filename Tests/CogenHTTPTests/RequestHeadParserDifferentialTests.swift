@testable import CogenHTTP
import PropertyTestSupport
import Testing

// The parser reads each input in place and copies a head once; the reference
// (`ReferenceRequestHeadParser`, the parser before that rewrite) copied line by line and went
// through arrays. Random heads, random splits, random limits: both must give the same heads,
// the same errors, the same consumed counts, including for several pipelined heads in a row.

protocol HeadParsing {
    init(limits: RequestHeadParser.Limits)
    mutating func parse(_ input: UnsafeRawBufferPointer) throws(RequestHeadError) -> RequestHeadParser.Result
}

extension RequestHeadParser: HeadParsing {}
extension ReferenceRequestHeadParser: HeadParsing {}

/// Feeds `pieces` in order to one parser, going on after each complete head with the rest of
/// the piece (pipelining); stops at the first error. Every outcome, in order.
func feedAll<P: HeadParsing>(_: P.Type, _ pieces: [[UInt8]], limits: RequestHeadParser.Limits) -> [Outcome] {
    var parser = P(limits: limits)
    var outcomes: [Outcome] = []
    var total = 0
    for piece in pieces {
        var offset = 0
        while offset < piece.count {
            do {
                let result = try piece[offset...].withUnsafeBytes { try parser.parse($0) }
                switch result {
                case .needMoreBytes(let consumed):
                    guard consumed == piece.count - offset else { return outcomes + [.incomplete(consumed: -1)] }
                    total += consumed
                    offset = piece.count
                case .complete(let head, let consumed):
                    outcomes.append(.head(head, consumed: total + consumed))
                    total += consumed
                    offset += consumed
                }
            } catch let error as RequestHeadError {
                return outcomes + [.error(error)]
            } catch {
                return outcomes + [.incomplete(consumed: -2)]
            }
        }
    }
    return outcomes + [.incomplete(consumed: total)]
}

/// Random heads from the parts that matter to the parser, then a few random byte edits.
struct RandomHeads {
    var random: SplitMix64

    static let methods = ["GET", "POST", "CONNECT", "OPTIONS", "HEAD", "G@T", "", "get", "PUT\t"]
    static let targets = [
        "/", "/plaintext", "*", "http://h:1/a", "HTTP://h.example/x?y", "h:443", "[::1]:80", "/a b", "/\u{80}",
        "http://:1/", "/" + String(repeating: "p", count: 40), "a:/b", "/q?x=1&y=2",
    ]
    static let versions = ["HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/1.9", "HTTP/1.x", "HTTP/1.1 ", "HTTP/11", "http/1.1"]
    static let names = [
        "Host", "host", "HOST", "Content-Length", "content-length", "Transfer-Encoding", "TRANSFER-ENCODING",
        "Connection", "connection", "Expect", "Accept", "X-A", "Hosts", "Bad Name", "", "Host ", "Accept-Encoding",
        "Content-Lengthy", "Exp@ct", "Cookie", "User-Agent",
    ]
    static let values = [
        "localhost:8080", "a", "", " ", "chunked", "CHUNKED", "gzip, chunked", "chunked, chunked", "chunked;q=1",
        "chunked ;x", "chunked x", ",", "close", "Keep-Alive", "keep-alive, close", "100-continue", "100-Continue",
        "x", "5", "05", "5, 5", "5, 6", "", "99999999999999999999", "-1", "\t v \t", "a\u{0}b", "\u{7F}", "\u{80}\u{FF}",
        "a\u{1F}bcdefghijklmnop", "text/plain,text/html;q=0.9,application/xhtml+xml;q=0.9,*/*;q=0.7",
        "[::1]", "[::1]:8", "h:", ":80", "h:x", "h/p", "abcdefgh\tijklmnopqrstuvwxyz0123456789",
    ]
    static let lineEnds = ["\r\n", "\r\n", "\r\n", "\r\n", "\r\n", "\r\n", "\n", "\r", " \r\n", "\r\r\n"]

    mutating func element<T>(_ choices: [T]) -> T { choices[random.below(choices.count)] }

    /// Whether this head uses only well-formed parts (its values may still be refused).
    var clean = false

    mutating func lineEnd() -> String { clean || random.percent(90) ? "\r\n" : element(Self.lineEnds) }

    mutating func headText() -> String {
        var text = ""
        for _ in 0..<(random.percent(10) ? random.below(10) : 0) { text += lineEnd() }
        if clean {
            text += element(["GET", "POST", "HEAD", "OPTIONS", "CONNECT", "GET", "GET"]) + " "
                + element(["/", "/plaintext", "*", "http://h:1/a", "h:443", "/q?x=1&y=2"]) + " "
                + element(["HTTP/1.1", "HTTP/1.1", "HTTP/1.0"])
            text += lineEnd()
            if random.percent(80) { text += element(["Host", "host"]) + ": " + element(["h", "localhost:8080", "h:443", ""]) + "\r\n" }
        } else if random.percent(10) {
            text += element(["GET / HTTP/1.1", "GET  / HTTP/1.1", " GET / HTTP/1.1", "GET /", "GET / HTTP/1.1 x", "x"])
        } else {
            text += element(Self.methods) + " " + element(Self.targets) + " " + element(Self.versions)
        }
        if !clean { text += lineEnd() }
        if !clean && random.percent(5) { text += element([" x: y", "\tx: y"]) + lineEnd() }
        for _ in 0..<random.below(9) {
            let name = clean ? element(Self.cleanNames) : element(Self.names)
            let value = clean && random.percent(50) ? element(Self.cleanValues) : element(Self.values)
            let separator = clean ? element([": ", ":", ":\t"]) : element([": ", ":", ":  ", ": ", " : ", ":\t"])
            text += name + separator + value + element(["", "", "", " ", "\t"])
            text += lineEnd()
            if !clean && random.percent(3) { text += element([" folded", "\tfolded"]) + lineEnd() }
        }
        text += lineEnd()
        return text
    }

    static let cleanNames = [
        "Content-Length", "Transfer-Encoding", "Connection", "connection", "Expect", "Accept", "X-A", "Cookie",
        "User-Agent", "Accept-Encoding", "Hosts",
    ]
    static let cleanValues = ["chunked", "close", "keep-alive", "Keep-Alive", "100-continue", "5", "5, 5", "x", "\t v \t"]

    mutating func head() -> [UInt8] {
        clean = random.percent(50)
        var bytes = Array(headText().utf8)
        if clean { return bytes }
        // A few random edits, as in the mutation test, sometimes none.
        let interesting: [UInt8] = [0x0D, 0x0A, 0x20, 0x09, 0x3A, 0x00, 0x7F, 0x80, 0x2C, 0x2F, 0x2A, 0x40, 0x1F, 0x3B]
        for _ in 0..<(random.percent(40) ? 0 : 1 + random.below(3)) {
            random.mutate(&bytes, interesting: interesting)
        }
        return bytes
    }

    mutating func limits() -> RequestHeadParser.Limits {
        switch random.below(3) {
        case 0: RequestHeadParser.Limits()
        case 1:
            RequestHeadParser.Limits(
                maxRequestLineLength: random.int(in: 0...60), maxHeaderSectionSize: random.int(in: 0...300),
                maxFieldCount: random.int(in: 0...8), maxContentLength: Int64(random.int(in: 0...10)))
        default:
            RequestHeadParser.Limits(
                maxRequestLineLength: random.int(in: 10...200), maxHeaderSectionSize: random.int(in: 50...2000),
                maxFieldCount: random.int(in: 1...30), maxContentLength: 1000)
        }
    }

    /// `bytes` cut into random pieces (sometimes whole, sometimes byte by byte).
    mutating func split(_ bytes: [UInt8]) -> [[UInt8]] {
        if random.percent(15) { return [bytes] }
        if random.percent(10) { return bytes.map { [$0] } }
        var pieces: [[UInt8]] = []
        var start = 0
        while start < bytes.count {
            let length = random.percent(20) ? random.int(in: 0...3) : 1 + random.below(max(1, bytes.count / 2))
            pieces.append(Array(bytes[start..<min(bytes.count, start + length)]))
            start += length
        }
        return pieces
    }
}

/// Whether two outcome lists are the same, described briefly when not (no large diffs).
func sameOutcomes(_ a: [Outcome], _ b: [Outcome]) -> String? {
    a == b ? nil : "\(a) vs \(b)"
}

@Suite("RequestHeadParser differential")
struct RequestHeadParserDifferentialTests {
    @Test func randomHeadsAndSplitsMatchTheReferenceParser() {
        let settings = PropertySettings(defaultCases: 20_000)
        var outcomes: [String: Int] = [:]
        var mismatches = 0
        for seed in settings.caseSeeds(salt: "RequestHeadParser differential") {
            var heads = RandomHeads(random: SplitMix64(seed: seed))
            var bytes: [UInt8] = []
            for _ in 0..<(heads.random.percent(30) ? 2 + heads.random.below(3) : 1) { bytes += heads.head() }
            if heads.random.percent(20) { bytes += Array("GET /next HTTP/1.1\r\nHo".utf8) }
            let limits = heads.limits()
            let pieces = heads.split(bytes)
            let reference = feedAll(ReferenceRequestHeadParser.self, pieces, limits: limits)
            let ours = feedAll(RequestHeadParser.self, pieces, limits: limits)
            let whole = feedAll(RequestHeadParser.self, [bytes], limits: limits)
            if let difference = sameOutcomes(ours, reference) ?? sameOutcomes(whole, reference) {
                mismatches += 1
                if mismatches <= 5 {
                    Issue.record("case seed \(hex(seed)) (COGEN_PROPERTY_REPLAY): \(bytes) split \(pieces.map(\.count)) limits \(limits): \(difference)")
                }
            }
            let key: String =
                switch reference.first {
                case .head?: "2xx"
                case .error(let error)?: "\(error.status)"
                default: "incomplete"
                }
            outcomes[key, default: 0] += 1
        }
        print("RequestHeadParser differential, \(settings): \(outcomes.sorted { $0.key < $1.key })")
        #expect(mismatches == 0)
        // The cases reach acceptance, rejection and the limits.
        #expect((outcomes["2xx"] ?? 0) > 0 && (outcomes["400"] ?? 0) > 0 && (outcomes["431"] ?? 0) > 0)
    }

    @Test func benchmarkHeadsMatchTheReferenceAtEveryCut() {
        let techEmpower =
            "GET /plaintext HTTP/1.1\r\nHost: localhost:8080\r\n"
            + "Accept: text/plain,text/html;q=0.9,application/xhtml+xml;q=0.9,application/xml;q=0.8,*/*;q=0.7\r\n"
            + "Connection: keep-alive\r\n\r\n"
        let large =
            "GET /api/v1/users/12345/profile?include=settings HTTP/1.1\r\nHost: www.example.com\r\n"
            + "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0\r\n"
            + "Accept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate, br\r\nConnection: keep-alive\r\n"
            + "Cookie: session=7f3a9c2e4b1d8f6a; theme=dark\r\nSec-Fetch-Dest: document\r\nDNT: 1\r\n"
            + "If-None-Match: \"33a64df551425fcc55e4d42a148795d9f25f89d4\"\r\nPriority: u=0, i\r\n\r\n"
        for text in [techEmpower + techEmpower + techEmpower, large + techEmpower + large] {
            let bytes = Array(text.utf8)
            for cut in 0...bytes.count {
                let pieces = [Array(bytes[..<cut]), Array(bytes[cut...])]
                let ours = feedAll(RequestHeadParser.self, pieces, limits: .init())
                let reference = feedAll(ReferenceRequestHeadParser.self, pieces, limits: .init())
                #expect(ours.count == 4 && ours == reference, "cut at \(cut)")
            }
        }
    }
}
