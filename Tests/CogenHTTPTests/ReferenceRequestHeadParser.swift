// The request-head parser as it was before the single-copy rewrite (commit bedea0b), kept
// verbatim but renamed: the property tests feed it and the real parser the same random heads
// and splits and expect identical results and errors.
@testable import CogenHTTP

/// An incremental parser of HTTP/1.x request heads (RFC 9112 §2–§3, §5, §6.1–§6.3, §9.3).
///
/// A pure state machine over bytes: it does no I/O. The server hands it the bytes received so
/// far (for example inside `Socket.withReceivedBytes`, with no copy of the receive buffer) and
/// it returns how many it consumed. It copies only the bytes of the head into the head's own
/// array. Call it again with the bytes that follow; a request split at any byte boundary
/// parses the same as in one piece, and every limit is checked as the bytes arrive, never
/// once the head is complete.
///
/// After ``Result/complete(_:consumed:)`` the parser is ready for the next (pipelined)
/// request; the bytes after `consumed` belong to the body or to the next request. After an
/// error the connection must close; ``reset()`` makes the parser usable again.
struct ReferenceRequestHeadParser: Sendable {
    typealias Limits = RequestHeadParser.Limits
    typealias Result = RequestHeadParser.Result

    /// The most empty lines tolerated before a request line (RFC 9112 §2.2 asks for one).
    static let maxLeadingEmptyLines = 8
    /// The most bytes reserved for a head at its first line (it grows past that if needed).
    static let initialCapacity = 4096

    private enum Phase {
        case requestLine
        case firstFieldLine
        case fieldLines
    }

    /// The limits this parser enforces.
    let limits: Limits

    // The state carried from one call to the next. Every decision depends only on the bytes
    // seen so far, in order, never on where one call's input ended: that is what makes the
    // result independent of how the request was split.
    private var head: [UInt8] = []
    private var phase = Phase.requestLine
    private var lineStart = 0
    private var sawCR = false
    private var leadingEmptyLines = 0
    private var headerSectionStart = 0
    private var methodRange = 0..<0
    private var targetRange = 0..<0
    private var version = RequestHead.Version.http1_1
    private var fields: [RequestHead.Field] = []

    /// Creates a parser.
    ///
    /// - Parameter limits: The limits heads must fit.
    init(limits: Limits = Limits()) {
        self.limits = limits
    }

    /// Forgets a partly parsed head.
    mutating func reset() {
        head = []
        phase = .requestLine
        lineStart = 0
        sawCR = false
        leadingEmptyLines = 0
        headerSectionStart = 0
        methodRange = 0..<0
        targetRange = 0..<0
        version = .http1_1
        fields = []
    }

    /// Takes back the storage of a head its user is done with, so the next head is parsed
    /// into it: a server that hands each finished head back parses without allocating.
    /// Does nothing while a head is partly parsed. `finished` is left empty.
    /// (SPI for `Benchmarks/parse-bench`, which parses as the server does.)
    mutating func reuseStorage(of finished: inout RequestHead) {
        guard head.isEmpty && fields.isEmpty else { return }
        swap(&head, &finished.bytes)
        head.removeAll(keepingCapacity: true)
        swap(&fields, &finished.fields)
        fields.removeAll(keepingCapacity: true)
    }

    /// Parses the next received bytes.
    ///
    /// - Parameter input: Bytes received after those consumed by earlier calls.
    /// - Returns: ``Result/needMoreBytes(consumed:)`` having consumed all of `input`, or
    ///   ``Result/complete(_:consumed:)`` with the head and how much of `input` it took.
    /// - Throws: ``RequestHeadError``, with the status to answer, when the head is invalid or
    ///   exceeds a limit; the connection should then close.
    mutating func parse(_ input: UnsafeRawBufferPointer) throws(RequestHeadError) -> Result {
        var copied = 0  // input[..<copied] is already in `head`
        var i = 0
        let count = input.count
        while i < count {
            if !sawCR {
                // Content bytes up to the next CR or LF: only the limits concern them, and a
                // limit crossed anywhere in the run is the same error as at its first byte.
                var next = i
                while next < count, input[next] != ASCII.cr, input[next] != ASCII.lf { next += 1 }
                if next > i {
                    let end = head.count + (next - copied)  // position after the run
                    switch phase {
                    case .requestLine:
                        if end - lineStart > limits.maxRequestLineLength { throw .requestLineTooLong }
                    case .firstFieldLine, .fieldLines:
                        if end - headerSectionStart > limits.maxHeaderSectionSize { throw .headerSectionTooLarge }
                    }
                }
                i = next
                if i == count { break }
            }
            let byte = input[i]
            i += 1
            if phase != .requestLine && head.count + (i - copied) - headerSectionStart > limits.maxHeaderSectionSize {
                throw .headerSectionTooLarge
            }
            if sawCR {
                guard byte == ASCII.lf else { throw .bareCR }
                sawCR = false
                // One allocation for most heads: they arrive whole, in one input.
                if head.isEmpty { head.reserveCapacity(min(count, Self.initialCapacity)) }
                head.append(contentsOf: UnsafeRawBufferPointer(rebasing: input[copied..<i]))
                copied = i
                let line = lineStart..<(head.count - 2)
                lineStart = head.count
                if let complete = try processLine(line) {
                    return .complete(complete, consumed: i)
                }
            } else if byte == ASCII.cr {
                sawCR = true
            } else {
                throw .bareLF
            }
        }
        head.append(contentsOf: UnsafeRawBufferPointer(rebasing: input[copied..<count]))
        return .needMoreBytes(consumed: count)
    }

    /// Handles one complete line (CRLF excluded); returns the head when `line` is the empty
    /// line that ends it.
    private mutating func processLine(_ line: Range<Int>) throws(RequestHeadError) -> RequestHead? {
        switch phase {
        case .requestLine:
            if line.isEmpty {
                leadingEmptyLines += 1
                if leadingEmptyLines > Self.maxLeadingEmptyLines { throw .malformedRequestLine }
                return nil
            }
            try parseRequestLine(line)
            phase = .firstFieldLine
            headerSectionStart = lineStart
            return nil
        case .firstFieldLine, .fieldLines:
            if line.isEmpty {
                let result = try finishHead()
                reset()
                return result
            }
            if ASCII.isWhitespace(head[line.lowerBound]) {
                throw phase == .firstFieldLine ? .whitespaceAfterRequestLine : .obsoleteLineFolding
            }
            if fields.count >= limits.maxFieldCount { throw .tooManyFields }
            if fields.isEmpty { fields.reserveCapacity(16) }
            fields.append(try parseFieldLine(line))
            phase = .fieldLines
            return nil
        }
    }

    /// `method SP request-target SP HTTP-version` (RFC 9112 §3), single spaces only.
    private mutating func parseRequestLine(_ line: Range<Int>) throws(RequestHeadError) {
        guard let firstSpace = head[line].firstIndex(of: ASCII.space), firstSpace > line.lowerBound
        else { throw .malformedRequestLine }
        let afterMethod = (firstSpace + 1)..<line.upperBound
        guard let secondSpace = head[afterMethod].firstIndex(of: ASCII.space), secondSpace > firstSpace + 1
        else { throw .malformedRequestLine }
        let method = line.lowerBound..<firstSpace
        let target = (firstSpace + 1)..<secondSpace
        let version = (secondSpace + 1)..<line.upperBound
        for index in method where !ASCII.isTchar(head[index]) { throw .invalidMethod }
        for index in target where !ASCII.isVisible(head[index]) { throw .invalidTarget }
        self.version = try parseVersion(version)
        methodRange = method
        targetRange = target
    }

    /// `HTTP/` DIGIT `.` DIGIT (RFC 9112 §2.3); major ≠ 1 → 505, 1.x with x ≥ 1 → 1.1.
    private func parseVersion(_ range: Range<Int>) throws(RequestHeadError) -> RequestHead.Version {
        let prefix = "HTTP/".utf8
        guard range.count == 8, head[range.lowerBound..<(range.lowerBound + 5)].elementsEqual(prefix)
        else { throw .malformedVersion }
        let major = head[range.lowerBound + 5]
        let dot = head[range.lowerBound + 6]
        let minor = head[range.lowerBound + 7]
        guard ASCII.isDigit(major), dot == UInt8(ascii: "."), ASCII.isDigit(minor) else {
            throw .malformedVersion
        }
        guard major == UInt8(ascii: "1") else { throw .unsupportedVersion }
        return minor == UInt8(ascii: "0") ? .http1_0 : .http1_1
    }

    /// `field-name ":" OWS field-value OWS` (RFC 9112 §5).
    private func parseFieldLine(_ line: Range<Int>) throws(RequestHeadError) -> RequestHead.Field {
        var i = line.lowerBound
        while i < line.upperBound, ASCII.isTchar(head[i]) { i += 1 }
        guard i < line.upperBound else { throw .missingColon }
        let stop = head[i]
        if stop != ASCII.colon {
            if ASCII.isWhitespace(stop) {
                var j = i
                while j < line.upperBound, ASCII.isWhitespace(head[j]) { j += 1 }
                if j < line.upperBound, head[j] == ASCII.colon { throw .whitespaceBeforeColon }
            }
            throw .invalidFieldName
        }
        guard i > line.lowerBound else { throw .missingColon }
        let name = line.lowerBound..<i
        let value = refTrimmed(head, (i + 1)..<line.upperBound)
        for index in value where !ASCII.isFieldValueByte(head[index]) { throw .invalidFieldValue }
        return RequestHead.Field(name: name, value: value)
    }

    /// The checks that need the whole head: Host, target form, framing, expectations,
    /// persistence. Fixed order, so one head always gets the same error.
    private func finishHead() throws(RequestHeadError) -> RequestHead {
        var host: Range<Int>?
        var hostCount = 0
        var contentLengthValues: [Range<Int>] = []
        var transferEncodingValues: [Range<Int>] = []
        var connectionValues: [Range<Int>] = []
        var expectValues: [Range<Int>] = []
        for field in fields {
            let name = head[field.name]
            switch name.count {
            case 4 where RefToken.equalsLowercased(name, RefToken.host):
                hostCount += 1
                host = field.value
            case 6 where RefToken.equalsLowercased(name, RefToken.expect):
                expectValues.append(field.value)
            case 10 where RefToken.equalsLowercased(name, RefToken.connection):
                connectionValues.append(field.value)
            case 14 where RefToken.equalsLowercased(name, RefToken.contentLength):
                contentLengthValues.append(field.value)
            case 17 where RefToken.equalsLowercased(name, RefToken.transferEncoding):
                transferEncodingValues.append(field.value)
            default:
                break
            }
        }

        // Host (RFC 9112 §3.2).
        if hostCount > 1 { throw .multipleHosts }
        if hostCount == 0 && version == .http1_1 { throw .missingHost }
        if let host, !host.isEmpty {
            guard isValidAuthority(host, requirePort: false) else { throw .invalidHost }
        }

        // Target form (RFC 9112 §3.2).
        let method = head[methodRange]
        let isConnect = method.elementsEqual(RefToken.connect)
        var form = RequestHead.TargetForm.origin
        var authority = host
        var path: Range<Int>? = targetRange
        var scheme: Range<Int>?
        if isConnect {
            guard isValidAuthority(targetRange, requirePort: true) else { throw .invalidTargetForm }
            form = .authority
            authority = targetRange
            path = nil
        } else if targetRange.count == 1 && head[targetRange.lowerBound] == ASCII.asterisk {
            guard method.elementsEqual(RefToken.options) else { throw .invalidTargetForm }
            form = .asterisk
        } else if head[targetRange.lowerBound] == ASCII.slash {
            form = .origin
        } else if let absolute = try absoluteForm(targetRange) {
            form = .absolute
            scheme = absolute.scheme
            authority = absolute.authority
            path = absolute.path
        } else {
            throw .invalidTargetForm
        }

        // Framing (RFC 9112 §6.1, §6.3).
        var framing = RequestHead.BodyFraming.none
        if !transferEncodingValues.isEmpty {
            if version == .http1_0 { throw .transferEncodingInHTTP10 }
            if !contentLengthValues.isEmpty { throw .contentLengthWithTransferEncoding }
            try checkTransferCodings(transferEncodingValues)
            framing = .chunked
        } else if !contentLengthValues.isEmpty {
            let length = try contentLength(contentLengthValues)
            if length > limits.maxContentLength { throw .contentTooLarge }
            framing = .contentLength(length)
        }

        // Expect (RFC 9110 §10.1.1): 100-continue only counts for 1.1; others → 417.
        var expectsContinue = false
        for value in expectValues {
            for element in refListElements(head, in: value) where !element.isEmpty {
                guard RefToken.equalsLowercased(head[element], RefToken.continue100) else {
                    throw .unsupportedExpectation
                }
                expectsContinue = version == .http1_1
            }
        }

        // Persistence (RFC 9112 §9.3).
        var sawClose = false
        var sawKeepAlive = false
        for value in connectionValues {
            for element in refListElements(head, in: value) {
                if RefToken.equalsLowercased(head[element], RefToken.close) { sawClose = true }
                if RefToken.equalsLowercased(head[element], RefToken.keepAlive) { sawKeepAlive = true }
            }
        }
        let keepAlive = !sawClose && (version == .http1_1 || sawKeepAlive)

        return RequestHead(
            bytes: head,
            methodRange: methodRange,
            targetRange: targetRange,
            version: version,
            targetForm: form,
            fields: fields,
            authorityRange: authority,
            pathRange: path,
            schemeRange: scheme,
            framing: framing,
            keepAlive: keepAlive,
            expectsContinue: expectsContinue
        )
    }

    /// `scheme "://" authority [ path-abempty [ "?" query ] ]`, or `nil` if `range` has no
    /// scheme. An absolute-form target with a bad authority is a bad target.
    private func absoluteForm(
        _ range: Range<Int>
    ) throws(RequestHeadError) -> (scheme: Range<Int>, authority: Range<Int>, path: Range<Int>)? {
        guard ASCII.isAlpha(head[range.lowerBound]) else { return nil }
        var i = range.lowerBound + 1
        while i < range.upperBound {
            let b = head[i]
            guard ASCII.isAlpha(b) || ASCII.isDigit(b) || b == UInt8(ascii: "+") || b == UInt8(ascii: "-")
                || b == UInt8(ascii: ".")
            else { break }
            i += 1
        }
        let scheme = range.lowerBound..<i
        guard range.upperBound - i >= 3, head[i] == ASCII.colon, head[i + 1] == ASCII.slash,
            head[i + 2] == ASCII.slash
        else { return nil }
        let authorityStart = i + 3
        var authorityEnd = authorityStart
        while authorityEnd < range.upperBound, head[authorityEnd] != ASCII.slash,
            head[authorityEnd] != ASCII.question
        {
            authorityEnd += 1
        }
        let authority = authorityStart..<authorityEnd
        guard !authority.isEmpty, isValidAuthority(authority, requirePort: false) else {
            throw .invalidTarget
        }
        return (scheme, authority, authorityEnd..<range.upperBound)
    }

    /// `uri-host [ ":" port ]` (RFC 9110 §7.2, RFC 3986 §3.2.2), the port required for
    /// CONNECT's authority form (`uri-host ":" port`, RFC 9112 §3.2.3).
    private func isValidAuthority(_ range: Range<Int>, requirePort: Bool) -> Bool {
        guard !range.isEmpty else { return false }
        var i = range.lowerBound
        if head[i] == ASCII.openBracket {
            i += 1
            while i < range.upperBound, head[i] != ASCII.closeBracket {
                guard ASCII.isHostChar(head[i]) || head[i] == ASCII.colon else { return false }
                i += 1
            }
            guard i < range.upperBound, i > range.lowerBound + 1 else { return false }
            i += 1  // ']'
        } else {
            while i < range.upperBound, head[i] != ASCII.colon {
                guard ASCII.isHostChar(head[i]) else { return false }
                i += 1
            }
            if i == range.lowerBound { return false }
        }
        if i == range.upperBound { return !requirePort }
        guard head[i] == ASCII.colon else { return false }
        i += 1
        if requirePort && i == range.upperBound { return false }
        while i < range.upperBound {
            guard ASCII.isDigit(head[i]) else { return false }
            i += 1
        }
        return true
    }

    /// The transfer codings of all `Transfer-Encoding` lines, in order: exactly one
    /// `chunked`, last; any other coding is not implemented (501).
    private func checkTransferCodings(_ values: [Range<Int>]) throws(RequestHeadError) {
        var codings: [Range<Int>] = []
        for value in values {
            for element in refListElements(head, in: value) where !element.isEmpty {
                // A coding's name ends at its parameters (`;`) or whitespace before them.
                var end = element.lowerBound
                while end < element.upperBound, ASCII.isTchar(head[end]) { end += 1 }
                if end < element.upperBound {
                    var j = end
                    while j < element.upperBound, ASCII.isWhitespace(head[j]) { j += 1 }
                    guard j < element.upperBound, head[j] == ASCII.semicolon else {
                        throw .invalidTransferEncoding
                    }
                }
                guard end > element.lowerBound else { throw .invalidTransferEncoding }
                codings.append(element.lowerBound..<end)
            }
        }
        guard let last = codings.last else { throw .invalidTransferEncoding }
        var chunkedCount = 0
        for coding in codings where RefToken.equalsLowercased(head[coding], RefToken.chunked) {
            chunkedCount += 1
        }
        if chunkedCount > 1 { throw .chunkedAppliedTwice }
        guard RefToken.equalsLowercased(head[last], RefToken.chunked) else { throw .chunkedNotFinal }
        if codings.count > 1 { throw .unsupportedTransferCoding }
    }

    /// The value of one or more `Content-Length` lines, each possibly a list: every element
    /// `1*DIGIT`, all identical (RFC 9110 §8.6), no overflow.
    private func contentLength(_ values: [Range<Int>]) throws(RequestHeadError) -> Int64 {
        var first: ArraySlice<UInt8>?
        for value in values {
            for element in refListElements(head, in: value) {
                let digits = head[element]
                guard !digits.isEmpty, digits.allSatisfy(ASCII.isDigit) else { throw .invalidContentLength }
                if let first {
                    guard first.elementsEqual(digits) else { throw .conflictingContentLength }
                } else {
                    first = digits
                }
            }
        }
        var length: Int64 = 0
        for digit in first ?? [] {
            let (times10, overflow1) = length.multipliedReportingOverflow(by: 10)
            let (sum, overflow2) = times10.addingReportingOverflow(Int64(digit - 0x30))
            guard !overflow1, !overflow2 else { throw .invalidContentLength }
            length = sum
        }
        return length
    }
}

/// Case-insensitive comparisons of received bytes against lowercase ASCII tokens.
enum RefToken {
    static let host = Array("host".utf8)
    static let contentLength = Array("content-length".utf8)
    static let transferEncoding = Array("transfer-encoding".utf8)
    static let connection = Array("connection".utf8)
    static let expect = Array("expect".utf8)
    static let chunked = Array("chunked".utf8)
    static let close = Array("close".utf8)
    static let keepAlive = Array("keep-alive".utf8)
    static let continue100 = Array("100-continue".utf8)
    static let connect = Array("CONNECT".utf8)
    static let options = Array("OPTIONS".utf8)

    /// Whether `bytes` equals `lowercase` ignoring ASCII case.
    static func equalsLowercased(_ bytes: ArraySlice<UInt8>, _ lowercase: [UInt8]) -> Bool {
        guard bytes.count == lowercase.count else { return false }
        var i = bytes.startIndex
        for expected in lowercase {
            if ASCII.lower(bytes[i]) != expected { return false }
            i += 1
        }
        return true
    }
}

/// The ranges of the elements of a comma-separated list (RFC 9110 §5.6.1), each without
/// surrounding whitespace; empty elements are kept (callers skip them). Allocates nothing.
func refListElements(_ bytes: [UInt8], in range: Range<Int>) -> RefListElements {
    RefListElements(bytes: bytes, start: range.lowerBound, end: range.upperBound)
}

struct RefListElements: Sequence, IteratorProtocol {
    let bytes: [UInt8]
    var start: Int
    let end: Int
    var finished = false

    init(bytes: [UInt8], start: Int, end: Int) {
        self.bytes = bytes
        self.start = start
        self.end = end
    }

    mutating func next() -> Range<Int>? {
        guard !finished else { return nil }
        var i = start
        while i < end, bytes[i] != ASCII.comma { i += 1 }
        let element = refTrimmed(bytes, start..<i)
        if i == end { finished = true } else { start = i + 1 }
        return element
    }
}

/// `range` without leading and trailing SP / HTAB.
func refTrimmed(_ bytes: [UInt8], _ range: Range<Int>) -> Range<Int> {
    var lower = range.lowerBound
    var upper = range.upperBound
    while lower < upper, ASCII.isWhitespace(bytes[lower]) { lower += 1 }
    while upper > lower, ASCII.isWhitespace(bytes[upper - 1]) { upper -= 1 }
    return lower..<upper
}
