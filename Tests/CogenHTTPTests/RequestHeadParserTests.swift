import CogenHTTP
import HTTPTypes
import PropertyTestSupport
import Testing

/// What feeding a sequence of pieces to a fresh parser ended in.
enum Outcome: Hashable, CustomStringConvertible {
    /// A complete head and the total bytes consumed, across all pieces, up to its end.
    case head(RequestHead, consumed: Int)
    case error(RequestHeadError)
    case incomplete(consumed: Int)

    var description: String {
        switch self {
        case .head(let head, let consumed):
            "head(\(head.string(head.methodRange)) \(head.string(head.targetRange)), \(head.framing), keepAlive \(head.keepAlive), consumed \(consumed))"
        case .error(let error): "error(\(error))"
        case .incomplete(let consumed): "incomplete(\(consumed))"
        }
    }
}

func feed(_ pieces: [[UInt8]], limits: RequestHeadParser.Limits = .init()) -> Outcome {
    var parser = RequestHeadParser(limits: limits)
    var total = 0
    for piece in pieces {
        do {
            let result = try piece.withUnsafeBytes { try parser.parse($0) }
            switch result {
            case .needMoreBytes(let consumed):
                guard consumed == piece.count else { return .incomplete(consumed: -1) }
                total += consumed
            case .complete(let head, let consumed):
                return .head(head, consumed: total + consumed)
            }
        } catch let error as RequestHeadError {
            return .error(error)
        } catch {
            return .incomplete(consumed: -2)
        }
    }
    return .incomplete(consumed: total)
}

func feed(_ text: String, limits: RequestHeadParser.Limits = .init()) -> Outcome {
    feed([Array(text.utf8)], limits: limits)
}

/// The head of `text`, which must parse.
func head(_ text: String, sourceLocation: SourceLocation = #_sourceLocation) throws -> RequestHead {
    guard case .head(let head, _) = feed(text) else {
        Issue.record("expected a head, got \(feed(text))", sourceLocation: sourceLocation)
        throw CancellationError()
    }
    return head
}

func expectRejected(
    _ text: String, _ error: RequestHeadError, status: Int = 400,
    limits: RequestHeadParser.Limits = .init(), sourceLocation: SourceLocation = #_sourceLocation
) {
    #expect(feed(text, limits: limits) == .error(error), sourceLocation: sourceLocation)
    #expect(error.status == status, sourceLocation: sourceLocation)
}

@Suite("RequestHeadParser")
struct RequestHeadParserTests {
    // MARK: accepted heads

    @Test func simpleGetParsesMethodTargetVersionAndFields() throws {
        let h = try head("GET /a?b=c HTTP/1.1\r\nHost: example.com\r\nX-Thing:  v  \r\n\r\n")
        #expect(h.string(h.methodRange) == "GET")
        #expect(h.string(h.targetRange) == "/a?b=c")
        #expect(h.version == .http1_1)
        #expect(h.targetForm == .origin)
        #expect(h.fields.count == 2)
        #expect(h.string(h.fields[1].name) == "X-Thing")
        #expect(h.string(h.fields[1].value) == "v")
        #expect(h.authorityRange.map(h.string) == "example.com")
        #expect(h.framing == .none)
        #expect(h.keepAlive)
        #expect(!h.expectsContinue)
    }

    @Test func consumedStopsAtTheEndOfTheHead() {
        let text = "GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /next HTTP/1.1\r\n"
        guard case .head(_, let consumed) = feed(text) else {
            Issue.record("no head")
            return
        }
        #expect(consumed == "GET / HTTP/1.1\r\nHost: a\r\n\r\n".utf8.count)
    }

    @Test func pipelinedHeadsParseOneAfterAnother() throws {
        let bytes = Array("GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n".utf8)
        var parser = RequestHeadParser()
        var offset = 0
        var targets: [String] = []
        while offset < bytes.count {
            let result = try bytes[offset...].withUnsafeBytes { try parser.parse($0) }
            guard case .complete(let h, let consumed) = result else { break }
            targets.append(h.string(h.targetRange))
            offset += consumed
        }
        #expect(targets == ["/1", "/2"])
    }

    @Test func leadingEmptyLineIsIgnored_RFC9112_2_2() throws {
        let h = try head("\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n")
        #expect(h.string(h.methodRange) == "GET")
    }

    @Test func tooManyLeadingEmptyLinesAreRejected_RFC9112_2_2() {
        expectRejected(String(repeating: "\r\n", count: 9) + "GET / HTTP/1.1\r\nHost: a\r\n\r\n", .malformedRequestLine)
    }

    @Test func makeRequestBuildsHTTPTypesOnce() throws {
        let h = try head("POST /p?q HTTP/1.1\r\nHost: example.com:8080\r\nContent-Length: 3\r\nX-A: 1\r\n\r\n")
        let request = try h.makeRequest()
        #expect(request.method == .post)
        #expect(request.scheme == nil)
        #expect(request.authority == "example.com:8080")
        #expect(request.path == "/p?q")
        #expect(request.headerFields[.contentLength] == "3")
        #expect(request.headerFields[HTTPField.Name("x-a")!] == "1")
        #expect(request.headerFields.count == 2)  // Host is the authority
    }

    // MARK: request line (RFC 9112 §3)

    @Test func invalidMethodCharacter_RFC9112_3() {
        expectRejected("G(T / HTTP/1.1\r\nHost: a\r\n\r\n", .invalidMethod)
        expectRejected("GE\u{7F}T / HTTP/1.1\r\nHost: a\r\n\r\n", .invalidMethod)
    }

    @Test func invalidTargetCharacter_RFC9112_3_2() {
        expectRejected("GET /a\u{01}b HTTP/1.1\r\nHost: a\r\n\r\n", .invalidTarget)
        expectRejected("GET /caf\u{E9} HTTP/1.1\r\nHost: a\r\n\r\n", .invalidTarget)
    }

    @Test func malformedRequestLine_RFC9112_3() {
        expectRejected("GET\r\nHost: a\r\n\r\n", .malformedRequestLine)
        expectRejected("GET /\r\nHost: a\r\n\r\n", .malformedRequestLine)
        expectRejected("GET  / HTTP/1.1\r\nHost: a\r\n\r\n", .malformedRequestLine)
        expectRejected(" GET / HTTP/1.1\r\nHost: a\r\n\r\n", .malformedRequestLine)
    }

    @Test func malformedVersion_RFC9112_2_3() {
        expectRejected("GET / HTTP/1.1 \r\nHost: a\r\n\r\n", .malformedVersion)
        expectRejected("GET / http/1.1\r\nHost: a\r\n\r\n", .malformedVersion)
        expectRejected("GET / HTTP/1\r\nHost: a\r\n\r\n", .malformedVersion)
        expectRejected("GET / HTTP/1.10\r\nHost: a\r\n\r\n", .malformedVersion)
        expectRejected("GET / HTTP/a.1\r\nHost: a\r\n\r\n", .malformedVersion)
    }

    @Test func majorVersionOtherThanOneGets505_RFC9112_2_3() {
        expectRejected("GET / HTTP/2.0\r\nHost: a\r\n\r\n", .unsupportedVersion, status: 505)
        expectRejected("GET / HTTP/0.9\r\nHost: a\r\n\r\n", .unsupportedVersion, status: 505)
    }

    @Test func minorVersionAboveOneIsHandledAs11_RFC9110_6_2() throws {
        let h = try head("GET / HTTP/1.7\r\nHost: a\r\n\r\n")
        #expect(h.version == .http1_1)
        #expect(h.keepAlive)
    }

    // MARK: line syntax (RFC 9112 §2.2, §5)

    @Test func bareCRInTheHeadIsRejected_RFC9112_2_2() {
        expectRejected("GET / HTTP/1.1\rHost: a\r\n\r\n", .bareCR)
        expectRejected("GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n", .bareCR)
    }

    @Test func bareLFInTheHeadIsRejected_RFC9112_2_2() {
        expectRejected("GET / HTTP/1.1\nHost: a\r\n\r\n", .bareLF)
        expectRejected("GET / HTTP/1.1\r\nHost: a\n\r\n", .bareLF)
        expectRejected("GET / HTTP/1.1\r\nHost: a\r\n\n", .bareLF)
    }

    @Test func whitespaceLedLineAfterRequestLine_RFC9112_2_2() {
        expectRejected("GET / HTTP/1.1\r\n Host: a\r\n\r\n", .whitespaceAfterRequestLine)
        expectRejected("GET / HTTP/1.1\r\n\tHost: a\r\n\r\n", .whitespaceAfterRequestLine)
    }

    @Test func obsoleteLineFoldingIsRejected_RFC9112_5_2() {
        expectRejected("GET / HTTP/1.1\r\nHost: a\r\nX: b\r\n c\r\n\r\n", .obsoleteLineFolding)
    }

    @Test func whitespaceBetweenFieldNameAndColon_RFC9112_5_1() {
        expectRejected("GET / HTTP/1.1\r\nHost : a\r\n\r\n", .whitespaceBeforeColon)
        expectRejected("GET / HTTP/1.1\r\nHost: a\r\nX\t: b\r\n\r\n", .whitespaceBeforeColon)
    }

    @Test func invalidFieldNameCharacter_RFC9110_5_1() {
        expectRejected("GET / HTTP/1.1\r\nHost: a\r\nX(y): b\r\n\r\n", .invalidFieldName)
        expectRejected("GET / HTTP/1.1\r\nHost: a\r\nX y: b\r\n\r\n", .invalidFieldName)
    }

    @Test func fieldLineWithoutColon_RFC9112_5() {
        expectRejected("GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n", .missingColon)
        expectRejected("GET / HTTP/1.1\r\nHost: a\r\n: empty\r\n\r\n", .missingColon)
    }

    @Test func nulOrControlInFieldValue_RFC9110_5_5() {
        expectRejected("GET / HTTP/1.1\r\nHost: a\r\nX: a\u{0}b\r\n\r\n", .invalidFieldValue)
        expectRejected("GET / HTTP/1.1\r\nHost: a\r\nX: a\u{7F}b\r\n\r\n", .invalidFieldValue)
    }

    @Test func obsTextAndTabsInFieldValueAreAccepted_RFC9110_5_5() throws {
        let h = try head("GET / HTTP/1.1\r\nHost: a\r\nX: \tcaf\u{E9}\tau lait \r\n\r\n")
        #expect(h.string(h.fields[1].value) == "caf\u{E9}\tau lait")
    }

    // MARK: limits

    @Test func requestLineLimitGets414WhileReceiving() {
        let limits = RequestHeadParser.Limits(maxRequestLineLength: 32)
        // No CRLF yet: the limit is checked as bytes arrive.
        expectRejected("GET /" + String(repeating: "a", count: 40), .requestLineTooLong, status: 414, limits: limits)
        let exact = "GET /" + String(repeating: "a", count: 32 - 14) + " HTTP/1.1"
        #expect(exact.utf8.count == 32)
        if case .head = feed(exact + "\r\nHost: a\r\n\r\n", limits: limits) {} else {
            Issue.record("a request line of exactly the limit must parse")
        }
    }

    @Test func headerSectionLimitGets431WhileReceiving() {
        let limits = RequestHeadParser.Limits(maxHeaderSectionSize: 64)
        expectRejected(
            "GET / HTTP/1.1\r\nHost: a\r\nX: " + String(repeating: "b", count: 100), .headerSectionTooLarge,
            status: 431, limits: limits)
        let fits = "Host: a\r\nX: " + String(repeating: "b", count: 64 - 9 - 5 - 2) + "\r\n\r\n"
        #expect(fits.utf8.count == 64)
        if case .head = feed("GET / HTTP/1.1\r\n" + fits, limits: limits) {} else {
            Issue.record("a header section of exactly the limit must parse")
        }
    }

    @Test func fieldCountLimitGets431() {
        let limits = RequestHeadParser.Limits(maxFieldCount: 3)
        expectRejected("GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\n", .tooManyFields, status: 431, limits: limits)
        if case .head = feed("GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\n\r\n", limits: limits) {} else {
            Issue.record("three fields must parse")
        }
    }

    @Test func contentLengthAboveBodyLimitGets413() {
        let limits = RequestHeadParser.Limits(maxContentLength: 10)
        expectRejected("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n", .contentTooLarge, status: 413, limits: limits)
    }

    // MARK: framing (RFC 9112 §6)

    @Test func contentLengthFraming_RFC9112_6_3() throws {
        #expect(try head("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 42\r\n\r\n").framing == .contentLength(42))
        #expect(try head("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n").framing == .contentLength(0))
    }

    @Test func invalidContentLength_RFC9112_6_3() {
        for value in ["-1", "+1", "1a", "", "0x10", "1 2", "99999999999999999999"] {
            expectRejected("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \(value)\r\n\r\n", .invalidContentLength)
        }
    }

    @Test func repeatedContentLength_RFC9110_8_6() throws {
        #expect(try head("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n").framing == .contentLength(5))
        #expect(try head("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n").framing == .contentLength(5))
        expectRejected("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", .conflictingContentLength)
        expectRejected("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\n", .conflictingContentLength)
    }

    @Test func chunkedFraming_RFC9112_6_1() throws {
        #expect(try head("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n").framing == .chunked)
        #expect(try head("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: CHUNKED\r\n\r\n").framing == .chunked)
    }

    @Test func contentLengthWithTransferEncoding_RFC9112_6_3() {
        expectRejected(
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            .contentLengthWithTransferEncoding)
    }

    @Test func transferEncodingInHTTP10_RFC9112_6_1() {
        expectRejected("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", .transferEncodingInHTTP10)
    }

    @Test func chunkedAppliedTwice_RFC9112_6_1() {
        expectRejected("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", .chunkedAppliedTwice)
        expectRejected(
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            .chunkedAppliedTwice)
    }

    @Test func chunkedNotFinal_RFC9112_6_3() {
        expectRejected("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", .chunkedNotFinal)
        expectRejected("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", .chunkedNotFinal)
    }

    @Test func unimplementedTransferCodingGets501_RFC9112_6_1() {
        expectRejected(
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", .unsupportedTransferCoding,
            status: 501)
    }

    @Test func invalidTransferEncodingValue_RFC9112_6_1() {
        expectRejected("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ,\r\n\r\n", .invalidTransferEncoding)
        expectRejected("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chu nked\r\n\r\n", .invalidTransferEncoding)
    }

    // MARK: Host and target forms (RFC 9112 §3.2)

    @Test func http11WithoutHost_RFC9112_3_2() {
        expectRejected("GET / HTTP/1.1\r\n\r\n", .missingHost)
    }

    @Test func http10WithoutHostIsAccepted_RFC9112_3_2() throws {
        #expect(try head("GET / HTTP/1.0\r\n\r\n").authorityRange == nil)
    }

    @Test func moreThanOneHost_RFC9112_3_2() {
        expectRejected("GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n", .multipleHosts)
        expectRejected("GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", .multipleHosts)
    }

    @Test func invalidHostValue_RFC9110_7_2() {
        for value in ["a b", "a/b", "a:b", "user@a", "[::1", "a:80:90", ":80"] {
            expectRejected("GET / HTTP/1.1\r\nHost: \(value)\r\n\r\n", .invalidHost)
        }
    }

    @Test func validHostValues_RFC9110_7_2() throws {
        for value in ["a", "example.com:8080", "[::1]:80", "127.0.0.1", "a:", ""] {
            _ = try head("GET / HTTP/1.1\r\nHost: \(value)\r\n\r\n")
        }
    }

    @Test func absoluteFormOverridesHost_RFC9112_3_2_2() throws {
        let h = try head("GET http://example.com:81/p?q HTTP/1.1\r\nHost: other\r\n\r\n")
        #expect(h.targetForm == .absolute)
        #expect(h.authorityRange.map(h.string) == "example.com:81")
        let request = try h.makeRequest()
        #expect(request.scheme == "http")
        #expect(request.authority == "example.com:81")
        #expect(request.path == "/p?q")
        #expect(try head("GET http://example.com HTTP/1.1\r\nHost: x\r\n\r\n").makeRequest().path == "/")
        expectRejected("GET http:///p HTTP/1.1\r\nHost: x\r\n\r\n", .invalidTarget)
    }

    @Test func authorityFormOnlyWithCONNECT_RFC9112_3_2_3() throws {
        let h = try head("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
        #expect(h.targetForm == .authority)
        #expect(h.pathRange == nil)
        #expect(try h.makeRequest().authority == "example.com:443")
        expectRejected("GET example.com:443 HTTP/1.1\r\nHost: a\r\n\r\n", .invalidTargetForm)
        expectRejected("CONNECT / HTTP/1.1\r\nHost: a\r\n\r\n", .invalidTargetForm)
        expectRejected("CONNECT example.com HTTP/1.1\r\nHost: a\r\n\r\n", .invalidTargetForm)
    }

    @Test func asteriskFormOnlyWithOPTIONS_RFC9112_3_2_4() throws {
        #expect(try head("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n").targetForm == .asterisk)
        expectRejected("GET * HTTP/1.1\r\nHost: a\r\n\r\n", .invalidTargetForm)
    }

    // MARK: persistence (RFC 9112 §9.3) and expectations (RFC 9110 §10.1.1)

    @Test func http11IsPersistentUnlessClose_RFC9112_9_3() throws {
        #expect(try head("GET / HTTP/1.1\r\nHost: a\r\n\r\n").keepAlive)
        #expect(try !head("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").keepAlive)
        #expect(try !head("GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, CLOSE\r\n\r\n").keepAlive)
    }

    @Test func http10IsPersistentOnlyWithKeepAlive_RFC9112_9_3() throws {
        #expect(try !head("GET / HTTP/1.0\r\n\r\n").keepAlive)
        #expect(try head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keepAlive)
        #expect(try !head("GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n").keepAlive)
    }

    @Test func expect100Continue_RFC9110_10_1_1() throws {
        #expect(try head("POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n").expectsContinue)
        // Ignored in HTTP/1.0.
        #expect(try !head("POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n").expectsContinue)
    }

    @Test func otherExpectationGets417_RFC9110_10_1_1() {
        expectRejected("POST / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\n\r\n", .unsupportedExpectation, status: 417)
    }

    @Test func everyErrorMapsToItsStatus() {
        #expect(RequestHeadError.bareCR.status == 400)
        #expect(RequestHeadError.requestLineTooLong.status == 414)
        #expect(RequestHeadError.tooManyFields.status == 431)
        #expect(!RequestHeadError.missingHost.reason.isEmpty)
    }

    // MARK: split invariance

    static let corpus: [String] = [
        "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        "\r\nGET /x?y HTTP/1.1\r\nHost: example.com:80\r\nAccept: */*\r\nUser-Agent: t\r\n\r\n",
        "POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\nConnection: close\r\n\r\nhello world!",
        "POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        "GET http://h:1/a HTTP/1.1\r\nHost: b\r\n\r\nGET /next HTTP/1.1\r\n",
        "OPTIONS * HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        "CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n",
        "GET / HTTP/1.1\rHost: a\r\n\r\n",
        "GET / HTTP/1.1\nHost: a\r\n\r\n",
        "GET / HTTP/1.1\r\n Host: a\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nX: b\r\n\tc\r\n\r\n",
        "GET / HTTP/1.1\r\nHost : a\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nX: \u{0}\r\n\r\n",
        "G@T / HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET / HTTP/2.0\r\nHost: a\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        "GET / HTTP/1.1\r\n\r\n",
        "GET * HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nExpect: x\r\n\r\n",
        "GET /" + String(repeating: "a", count: 200) + " HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nX: " + String(repeating: "b", count: 200) + "\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\n",
    ]

    /// Small limits, so that the corpus and its mutations reach them.
    static let smallLimits = RequestHeadParser.Limits(
        maxRequestLineLength: 128, maxHeaderSectionSize: 160, maxFieldCount: 5, maxContentLength: 1000)

    @Test func splitAtEveryByteBoundaryParsesTheSame() {
        for text in Self.corpus {
            let bytes = Array(text.utf8)
            for limits in [RequestHeadParser.Limits(), Self.smallLimits] {
                let whole = feed([bytes], limits: limits)
                for cut in 0...bytes.count {
                    let split = feed([Array(bytes[..<cut]), Array(bytes[cut...])], limits: limits)
                    #expect(split == whole, "cut at \(cut) of \(text.debugDescription)")
                }
                let byteByByte = feed(bytes.map { [$0] }, limits: limits)
                #expect(byteByByte == whole, "byte by byte: \(text.debugDescription)")
            }
        }
    }

    @Test func seededMutationsNeverCrashAndAreSplitInvariant() {
        var random = SplitMix64(seed: 0x13_2026)
        let interesting: [UInt8] = [0x0D, 0x0A, 0x20, 0x09, 0x3A, 0x00, 0x7F, 0x80, 0x2C, 0x2F, 0x2A, 0x40]
        var outcomes: [String: Int] = [:]
        for _ in 0..<3000 {
            var bytes = Array(Self.corpus[Int(random.next() % UInt64(Self.corpus.count))].utf8)
            for _ in 0..<(1 + random.below(3)) { random.mutate(&bytes, interesting: interesting) }
            let limits = random.next() % 2 == 0 ? Self.smallLimits : RequestHeadParser.Limits()
            let whole = feed([bytes], limits: limits)
            var pieces: [[UInt8]] = []
            var start = 0
            while start < bytes.count {
                let length = 1 + Int(random.next() % UInt64(max(1, bytes.count / 3)))
                pieces.append(Array(bytes[start..<min(bytes.count, start + length)]))
                start += length
            }
            let split = feed(pieces, limits: limits)
            #expect(split == whole, "\(bytes)")
            let byteByByte = feed(bytes.map { [$0] }, limits: limits)
            #expect(byteByByte == whole, "\(bytes)")
            if case .head(let h, _) = whole {
                _ = try? h.makeRequest()  // never crashes either
            }
            let key: String =
                switch whole {
                case .head: "2xx"
                case .error(let error): "\(error.status)"
                case .incomplete: "incomplete"
                }
            outcomes[key, default: 0] += 1
        }
        print("RequestHeadParser mutations, seed 0x132026, 3000 cases: \(outcomes.sorted { $0.key < $1.key })")
        // Both outcomes occur: the mutations exercise acceptance and rejection.
        #expect((outcomes["2xx"] ?? 0) > 0)
        #expect((outcomes["400"] ?? 0) > 0)
    }
}

