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
public struct RequestHeadParser: Sendable {
    /// The limits a head must fit, each checked while receiving.
    public struct Limits: Hashable, Sendable {
        /// The longest request line, CRLF excluded (414 past it).
        public var maxRequestLineLength: Int
        /// The largest header section: the field lines and the final empty line, CRLFs
        /// included (431 past it).
        public var maxHeaderSectionSize: Int
        /// The most field lines (431 past it).
        public var maxFieldCount: Int
        /// The largest `Content-Length` accepted (413 past it).
        public var maxContentLength: Int64

        /// Creates limits.
        ///
        /// - Parameters:
        ///   - maxRequestLineLength: The longest request line, CRLF excluded.
        ///   - maxHeaderSectionSize: The largest header section, CRLFs included.
        ///   - maxFieldCount: The most field lines.
        ///   - maxContentLength: The largest `Content-Length`.
        public init(
            maxRequestLineLength: Int = 8192,
            maxHeaderSectionSize: Int = 16384,
            maxFieldCount: Int = 100,
            maxContentLength: Int64 = .max
        ) {
            self.maxRequestLineLength = maxRequestLineLength
            self.maxHeaderSectionSize = maxHeaderSectionSize
            self.maxFieldCount = maxFieldCount
            self.maxContentLength = maxContentLength
        }
    }

    /// What one call to ``parse(_:)`` found.
    public enum Result: Hashable, Sendable {
        /// The head is not complete; all `consumed` bytes (the whole input) are kept.
        case needMoreBytes(consumed: Int)
        /// The head is complete; the input's first `consumed` bytes were its last ones.
        case complete(RequestHead, consumed: Int)
    }

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
    public let limits: Limits

    // The state carried from one call to the next. Every decision depends only on the bytes
    // seen so far, in order, never on where one call's input ended: that is what makes the
    // result independent of how the request was split.
    //
    // Positions are offsets in the head's byte stream (what `head` holds once complete). The
    // bytes of earlier inputs are in `head`; those of the current input are read in place and
    // copied once, when the head ends or the input does.
    private var head: [UInt8] = []
    private var phase = Phase.requestLine
    private var lineStart = 0
    private var sawCR = false
    /// Whether the current line holds a byte below 0x20 other than CR and LF, or 0x7F: when
    /// not, a field value needs no byte check.
    private var lineHasControl = false
    private var leadingEmptyLines = 0
    private var headerSectionStart = 0
    private var methodRange = 0..<0
    private var targetRange = 0..<0
    private var version = RequestHead.Version.http1_1
    private var fields: [RequestHead.Field] = []
    /// The fields `finishHead` checks, recognized as their lines arrive.
    private var known = KnownFields()

    /// Creates a parser.
    ///
    /// - Parameter limits: The limits heads must fit.
    public init(limits: Limits = Limits()) {
        self.limits = limits
    }

    /// Forgets a partly parsed head.
    public mutating func reset() {
        head = []
        phase = .requestLine
        lineStart = 0
        sawCR = false
        lineHasControl = false
        leadingEmptyLines = 0
        headerSectionStart = 0
        methodRange = 0..<0
        targetRange = 0..<0
        version = .http1_1
        fields = []
        known = KnownFields()
    }

    /// Takes back the storage of a head its user is done with, so the next head is parsed
    /// into it: a server that hands each finished head back parses without allocating.
    /// Does nothing while a head is partly parsed. `finished` is left empty.
    /// (SPI for `Benchmarks/parse-bench`, which parses as the server does.)
    @_spi(Benchmarks) public mutating func reuseStorage(of finished: inout RequestHead) {
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
    public mutating func parse(_ input: UnsafeRawBufferPointer) throws(RequestHeadError) -> Result {
        let count = input.count
        guard count > 0, let bytes = input.baseAddress else { return .needMoreBytes(consumed: 0) }
        // Stream position of input[0]; input[k] is at origin + k, and `stream[q]` reads the
        // stream position q (for q >= origin) in place.
        let origin = head.count
        let stream = bytes - origin
        var copied = 0  // input[..<copied] is already in `head`
        var i = 0
        // Positions are bounded by the bytes held in memory: wrapping arithmetic, no overflow
        // checks, in this loop.
        let maxHeaderSectionSize = limits.maxHeaderSectionSize
        while i < count {
            var afterCR = sawCR  // a CR came last; the byte at i must be its LF
            if !afterCR {
                // Content bytes up to the next CR or LF: only the limits concern them, and a
                // limit crossed anywhere in the run is the same error as at its first byte.
                let next = scanToLineEnd(bytes, from: i, count: count, control: &lineHasControl)
                if next > i {
                    let end = origin &+ next  // position after the run
                    switch phase {
                    case .requestLine:
                        if end &- lineStart > limits.maxRequestLineLength { throw .requestLineTooLong }
                    case .firstFieldLine, .fieldLines:
                        if end &- headerSectionStart > maxHeaderSectionSize { throw .headerSectionTooLarge }
                    }
                }
                i = next
                if i == count { break }
                if count &- i >= 2 && bytes.loadUnaligned(fromByteOffset: i, as: UInt16.self) == Self.crlf {
                    // CR LF (the usual case): the limit checked at the LF covers the CR too
                    // (the same error, nothing checked in between).
                    i &+= 2
                    if phase != .requestLine && origin &+ i &- headerSectionStart > maxHeaderSectionSize {
                        throw .headerSectionTooLarge
                    }
                } else {
                    // A CR or an LF: the limit counts it, then only a CR may come.
                    let byte = bytes.load(fromByteOffset: i, as: UInt8.self)
                    i &+= 1
                    if phase != .requestLine && origin &+ i &- headerSectionStart > maxHeaderSectionSize {
                        throw .headerSectionTooLarge
                    }
                    guard byte == ASCII.cr else { throw .bareLF }
                    if i == count {
                        sawCR = true  // its LF comes with the next input
                        break
                    }
                    afterCR = true
                }
            }
            if afterCR {
                // The byte after a CR.
                sawCR = false
                let byte = bytes.load(fromByteOffset: i, as: UInt8.self)
                i &+= 1
                if phase != .requestLine && origin &+ i &- headerSectionStart > maxHeaderSectionSize {
                    throw .headerSectionTooLarge
                }
                guard byte == ASCII.lf else { throw .bareCR }
            }
            let line = lineStart..<(origin &+ i &- 2)
            lineStart = origin &+ i
            let hasControl = lineHasControl
            lineHasControl = false
            if line.isEmpty && phase != .requestLine {
                // The empty line that ends the head: one copy of what is not in `head` yet.
                copy(input, from: copied, to: i)
                // `finishHead` resets the parser once the head is accepted.
                if origin == 0 {
                    // The whole head came in this input (the usual case): read it there.
                    return try finishHead(bytes, consumed: i)
                }
                let stored = head
                return try stored.withUnsafeBufferPointer { (buffer) throws(RequestHeadError) in
                    // `head` holds at least the request line here: never nil.
                    guard let storedBytes = buffer.baseAddress else { throw RequestHeadError.malformedRequestLine }
                    return try finishHead(UnsafeRawPointer(storedBytes), consumed: i)
                }
            }
            if line.lowerBound >= origin {
                try processLine(line, in: stream, hasControl: hasControl)
            } else {
                // The line began in an earlier input: read it from `head`.
                copy(input, from: copied, to: i)
                copied = i
                let stored = head
                try stored.withUnsafeBufferPointer { (buffer) throws(RequestHeadError) in
                    guard let storedBytes = buffer.baseAddress else { throw RequestHeadError.malformedRequestLine }
                    try processLine(line, in: UnsafeRawPointer(storedBytes), hasControl: hasControl)
                }
            }
        }
        copy(input, from: copied, to: count)
        return .needMoreBytes(consumed: count)
    }

    /// CR LF as a little-endian 16-bit word.
    static let crlf: UInt16 = 0x0A0D

    /// Appends `input[start..<end]` to `head`.
    private mutating func copy(_ input: UnsafeRawBufferPointer, from start: Int, to end: Int) {
        guard start < end else { return }
        // One allocation for most heads: they arrive whole, in one input.
        if head.isEmpty {
            let capacity = min(input.count, Self.initialCapacity)
            if head.capacity < capacity { head.reserveCapacity(capacity) }
        }
        head.append(contentsOf: UnsafeRawBufferPointer(rebasing: input[start..<end]))
    }

    /// Handles one complete line (CRLF excluded) other than the empty line that ends the head;
    /// `bytes` reads stream positions (at least those of `line`).
    @inline(__always)
    private mutating func processLine(
        _ line: Range<Int>, in bytes: UnsafeRawPointer, hasControl: Bool
    ) throws(RequestHeadError) {
        switch phase {
        case .requestLine:
            if line.isEmpty {
                leadingEmptyLines += 1
                if leadingEmptyLines > Self.maxLeadingEmptyLines { throw .malformedRequestLine }
                return
            }
            let requestLine = try Self.parseRequestLine(line, in: bytes)
            version = requestLine.version
            methodRange = requestLine.method
            targetRange = requestLine.target
            phase = .firstFieldLine
            headerSectionStart = lineStart
        case .firstFieldLine, .fieldLines:
            if ASCII.isWhitespace(bytes.load(fromByteOffset: line.lowerBound, as: UInt8.self)) {
                throw phase == .firstFieldLine ? .whitespaceAfterRequestLine : .obsoleteLineFolding
            }
            if fields.count >= limits.maxFieldCount { throw .tooManyFields }
            if fields.isEmpty && fields.capacity < 16 { fields.reserveCapacity(16) }
            let field = try Self.parseFieldLine(line, in: bytes, checkValue: hasControl)
            fields.append(field.field)
            known.add(field.kind, field.field.value)
            phase = .fieldLines
        }
    }
}

/// The content bytes from `start`: the index of the first CR or LF in `bytes[start..<count]`,
/// or `count`. Sets `control` when a byte below 0x20 other than CR and LF, or 0x7F, comes
/// before it. Eight bytes a step: a byte below 0x20 or equal to 0x7F stops the step, at the
/// first such byte (the lowest flag of these bit tricks is exact).
@inline(__always)
private func scanToLineEnd(_ bytes: UnsafeRawPointer, from start: Int, count: Int, control: inout Bool) -> Int {
    // Positions stay within 0...count: wrapping arithmetic drops the overflow checks.
    @inline(__always) func special(_ word: UInt64) -> UInt64 {
        let below20 = (word &- 0x2020_2020_2020_2020) & ~word
        let flipped = word ^ 0x7F7F_7F7F_7F7F_7F7F
        let del = (flipped &- 0x0101_0101_0101_0101) & ~flipped
        return (below20 | del) & 0x8080_8080_8080_8080
    }
    var i = start
    while count &- i >= 8 {
        let flags = special(UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: i, as: UInt64.self)))
        if flags == 0 {
            i &+= 8
            continue
        }
        let j = i &+ flags.trailingZeroBitCount &>> 3
        let byte = bytes.load(fromByteOffset: j, as: UInt8.self)
        if byte == ASCII.cr || byte == ASCII.lf { return j }
        control = true
        i = j &+ 1
    }
    while i < count {
        let byte = bytes.load(fromByteOffset: i, as: UInt8.self)
        if byte < 0x20 || byte == 0x7F {
            if byte == ASCII.cr || byte == ASCII.lf { return i }
            control = true
        }
        i &+= 1
    }
    return count
}

/// Skips the letters, digits, `-` and `.` (tchars and host characters all) from `start`, eight bytes a step while
/// eight remain before `end`: the index of the first other byte, or of the first byte the
/// steps did not reach (the caller checks the rest byte by byte).
@inline(__always)
private func skipNameBytes(_ bytes: UnsafeRawPointer, from start: Int, to end: Int) -> Int {
    // Per byte, on its low seven bits t (no carry or borrow crosses bytes): (127 + n) - t has
    // its top bit set iff t < n, and t + (127 - m) iff t > m; the word's own top bit must be 0.
    @inline(__always) func between(_ t: UInt64, _ m: UInt64, _ n: UInt64) -> UInt64 {
        (0x0101_0101_0101_0101 &* (127 &+ n) &- t) & (t &+ 0x0101_0101_0101_0101 &* (127 &- m))
    }
    var i = start
    while end &- i >= 8 {
        let word = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: i, as: UInt64.self))
        let low = word & 0x7F7F_7F7F_7F7F_7F7F
        let letter = between(low | 0x2020_2020_2020_2020, 0x60, 0x7B)
        let digit = between(low, 0x2F, 0x3A)
        let dashOrDot = between(low, 0x2C, 0x2F)
        let ok = (letter | digit | dashOrDot) & ~word & 0x8080_8080_8080_8080
        if ok == 0x8080_8080_8080_8080 {
            i &+= 8
            continue
        }
        return i &+ (~ok & 0x8080_8080_8080_8080).trailingZeroBitCount &>> 3
    }
    return i
}

/// A field `finishHead` checks.
enum KnownField {
    case other, host, expect, connection, contentLength, transferEncoding
}

/// The values of one known field name: the first, and whether more lines follow (then
/// `forEachValue` finds them all in `fields`, in order). No array, so nothing to retain.
struct FieldValues {
    var first: Range<Int>?
    var repeated = false

    var isEmpty: Bool { first == nil }

    mutating func append(_ value: Range<Int>) {
        if first == nil { first = value } else { repeated = true }
    }
}

/// The known fields of a head, gathered line by line.
struct KnownFields {
    var hostCount = 0
    var host: Range<Int>?
    var expect = FieldValues()
    var connection = FieldValues()
    var contentLength = FieldValues()
    var transferEncoding = FieldValues()

    @inline(__always)
    mutating func add(_ kind: KnownField, _ value: Range<Int>) {
        switch kind {
        case .other: break
        case .host:
            hostCount += 1
            host = value
        case .expect: expect.append(value)
        case .connection: connection.append(value)
        case .contentLength: contentLength.append(value)
        case .transferEncoding: transferEncoding.append(value)
        }
    }
}

// The line parsers and the whole-head checks read the stream through a raw pointer: no
// bounds checks, no array retains. Each range they get lies inside the bytes behind it.
extension RequestHeadParser {
    /// `method SP request-target SP HTTP-version` (RFC 9112 §3), single spaces only.
    @inline(__always)
    private static func parseRequestLine(
        _ line: Range<Int>, in bytes: UnsafeRawPointer
    ) throws(RequestHeadError) -> (method: Range<Int>, target: Range<Int>, version: RequestHead.Version) {
        func byte(_ index: Int) -> UInt8 { bytes.load(fromByteOffset: index, as: UInt8.self) }
        // Fast path: tchars up to the first space, visible bytes up to the second; any other
        // line takes the general path below, which finds the same errors in the same order.
        var i = line.lowerBound
        while i < line.upperBound, ASCII.isTchar(byte(i)) { i &+= 1 }
        if i < line.upperBound, i > line.lowerBound, byte(i) == ASCII.space {
            let firstSpace = i
            i &+= 1
            while i < line.upperBound, ASCII.isVisible(byte(i)) { i &+= 1 }
            if i < line.upperBound, i > firstSpace + 1, byte(i) == ASCII.space {
                let version = try parseVersion((i + 1)..<line.upperBound, in: bytes)
                return (line.lowerBound..<firstSpace, (firstSpace + 1)..<i, version)
            }
        }
        let firstSpace = firstIndex(of: ASCII.space, in: line, bytes)
        guard firstSpace < line.upperBound, firstSpace > line.lowerBound else { throw .malformedRequestLine }
        let secondSpace = firstIndex(of: ASCII.space, in: (firstSpace + 1)..<line.upperBound, bytes)
        guard secondSpace < line.upperBound, secondSpace > firstSpace + 1 else { throw .malformedRequestLine }
        let method = line.lowerBound..<firstSpace
        let target = (firstSpace + 1)..<secondSpace
        let version = (secondSpace + 1)..<line.upperBound
        for index in method where !ASCII.isTchar(bytes.load(fromByteOffset: index, as: UInt8.self)) {
            throw .invalidMethod
        }
        for index in target where !ASCII.isVisible(bytes.load(fromByteOffset: index, as: UInt8.self)) {
            throw .invalidTarget
        }
        return (method, target, try parseVersion(version, in: bytes))
    }

    /// `HTTP/` DIGIT `.` DIGIT (RFC 9112 §2.3); major ≠ 1 → 505, 1.x with x ≥ 1 → 1.1.
    private static func parseVersion(_ range: Range<Int>, in bytes: UnsafeRawPointer) throws(RequestHeadError) -> RequestHead.Version {
        guard range.count == 8 else { throw .malformedVersion }
        let word = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: range.lowerBound, as: UInt64.self))
        if word == Self.http11 { return .http1_1 }
        // "HTTP/" then three bytes: compare the low five bytes.
        guard word & 0xFF_FFFF_FFFF == Self.http11 & 0xFF_FFFF_FFFF else { throw .malformedVersion }
        let major = UInt8(truncatingIfNeeded: word >> 40)
        let dot = UInt8(truncatingIfNeeded: word >> 48)
        let minor = UInt8(truncatingIfNeeded: word >> 56)
        guard ASCII.isDigit(major), dot == UInt8(ascii: "."), ASCII.isDigit(minor) else {
            throw .malformedVersion
        }
        guard major == UInt8(ascii: "1") else { throw .unsupportedVersion }
        return minor == UInt8(ascii: "0") ? .http1_0 : .http1_1
    }

    /// `HTTP/1.1` as a little-endian word.
    static let http11: UInt64 = 0x312E_312F_5054_5448

    /// `field-name ":" OWS field-value OWS` (RFC 9112 §5), and which known field it is. The
    /// value's bytes are checked only when `checkValue` (the line holds a control byte).
    @inline(__always)
    private static func parseFieldLine(
        _ line: Range<Int>, in bytes: UnsafeRawPointer, checkValue: Bool
    ) throws(RequestHeadError) -> (field: RequestHead.Field, kind: KnownField) {
        var i = skipNameBytes(bytes, from: line.lowerBound, to: line.upperBound)
        while i < line.upperBound, ASCII.isTchar(bytes.load(fromByteOffset: i, as: UInt8.self)) { i &+= 1 }
        guard i < line.upperBound else { throw .missingColon }
        let stop = bytes.load(fromByteOffset: i, as: UInt8.self)
        if stop != ASCII.colon {
            if ASCII.isWhitespace(stop) {
                var j = i
                while j < line.upperBound, ASCII.isWhitespace(bytes.load(fromByteOffset: j, as: UInt8.self)) { j &+= 1 }
                if j < line.upperBound, bytes.load(fromByteOffset: j, as: UInt8.self) == ASCII.colon {
                    throw .whitespaceBeforeColon
                }
            }
            throw .invalidFieldName
        }
        guard i > line.lowerBound else { throw .missingColon }
        let name = line.lowerBound..<i
        let value = trimmed(bytes, (i + 1)..<line.upperBound)
        if checkValue {
            for index in value where !ASCII.isFieldValueByte(bytes.load(fromByteOffset: index, as: UInt8.self)) {
                throw .invalidFieldValue
            }
        }
        return (RequestHead.Field(name: name, value: value), knownField(name, in: bytes))
    }

    /// Which known field `name` (a token) names: by length and first letter, then the bytes.
    @inline(__always)
    static func knownField(_ name: Range<Int>, in bytes: UnsafeRawPointer) -> KnownField {
        let first = bytes.load(fromByteOffset: name.lowerBound, as: UInt8.self) | 0x20
        switch name.count {
        case 4 where first == UInt8(ascii: "h") && Token.equalsLowercased(bytes, name, "host"):
            return .host
        case 6 where first == UInt8(ascii: "e") && Token.equalsLowercased(bytes, name, "expect"):
            return .expect
        case 10 where first == UInt8(ascii: "c") && Token.equalsLowercased(bytes, name, "connection"):
            return .connection
        case 14 where first == UInt8(ascii: "c") && Token.equalsLowercased(bytes, name, "content-length"):
            return .contentLength
        case 17 where first == UInt8(ascii: "t") && Token.equalsLowercased(bytes, name, "transfer-encoding"):
            return .transferEncoding
        default:
            return .other
        }
    }

    /// The checks that need the whole head: Host, target form, framing, expectations,
    /// persistence. Fixed order, so one head always gets the same error. `bytes` reads the
    /// head's stream positions (`head`'s bytes, or the input's when it holds the whole head).
    ///
    /// Resets the parser when the head is accepted (then the head owns the arrays); an error
    /// leaves the state as it is, as every other error does.
    private mutating func finishHead(
        _ bytes: UnsafeRawPointer, consumed: Int
    ) throws(RequestHeadError) -> Result {
        // Host (RFC 9112 §3.2).
        if known.hostCount > 1 { throw .multipleHosts }
        if known.hostCount == 0 && version == .http1_1 { throw .missingHost }
        let host = known.host
        if let host, !host.isEmpty {
            guard Self.isValidAuthority(host, in: bytes, requirePort: false) else { throw .invalidHost }
        }

        // Target form (RFC 9112 §3.2).
        let isConnect = Token.equals(bytes, methodRange, "CONNECT")
        let firstTargetByte = bytes.load(fromByteOffset: targetRange.lowerBound, as: UInt8.self)
        var form = RequestHead.TargetForm.origin
        var authority = host
        var path: Range<Int>? = targetRange
        var scheme: Range<Int>?
        if isConnect {
            guard Self.isValidAuthority(targetRange, in: bytes, requirePort: true) else { throw .invalidTargetForm }
            form = .authority
            authority = targetRange
            path = nil
        } else if targetRange.count == 1 && firstTargetByte == ASCII.asterisk {
            guard Token.equals(bytes, methodRange, "OPTIONS") else { throw .invalidTargetForm }
            form = .asterisk
        } else if firstTargetByte == ASCII.slash {
            form = .origin
        } else if let absolute = try Self.absoluteForm(targetRange, in: bytes) {
            form = .absolute
            scheme = absolute.scheme
            authority = absolute.authority
            path = absolute.path
        } else {
            throw .invalidTargetForm
        }

        // Framing (RFC 9112 §6.1, §6.3).
        var framing = RequestHead.BodyFraming.none
        if !known.transferEncoding.isEmpty {
            if version == .http1_0 { throw .transferEncodingInHTTP10 }
            if !known.contentLength.isEmpty { throw .contentLengthWithTransferEncoding }
            try checkTransferCodings(in: bytes)
            framing = .chunked
        } else if !known.contentLength.isEmpty {
            let length = try contentLength(in: bytes)
            if length > limits.maxContentLength { throw .contentTooLarge }
            framing = .contentLength(length)
        }

        // Expect (RFC 9110 §10.1.1): 100-continue only counts for 1.1; others → 417.
        var expectsContinue = false
        try Self.forEachValue(of: .expect, known.expect, fields, in: bytes) { (value) throws(RequestHeadError) in
            for element in listElements(bytes, in: value) where !element.isEmpty {
                guard Token.equalsLowercased(bytes, element, "100-continue") else {
                    throw .unsupportedExpectation
                }
                expectsContinue = version == .http1_1
            }
        }

        // Persistence (RFC 9112 §9.3).
        var sawClose = false
        var sawKeepAlive = false
        if !known.connection.repeated, let value = known.connection.first,
            Token.equalsLowercased(bytes, value, "keep-alive")
        {
            sawKeepAlive = true  // the usual value, alone: what the list walk below finds
        } else {
            Self.forEachValue(of: .connection, known.connection, fields, in: bytes) { value in
                for element in listElements(bytes, in: value) {
                    if Token.equalsLowercased(bytes, element, "close") { sawClose = true }
                    if Token.equalsLowercased(bytes, element, "keep-alive") { sawKeepAlive = true }
                }
            }
        }
        let keepAlive = !sawClose && (version == .http1_1 || sawKeepAlive)

        // Accepted: the parser starts over, the head takes its arrays (moved, not shared:
        // no reference counting).
        var headBytes: [UInt8] = []
        swap(&headBytes, &head)
        var headFields: [RequestHead.Field] = []
        swap(&headFields, &fields)
        let method = methodRange
        let target = targetRange
        let headVersion = version
        reset()
        return .complete(RequestHead(
            bytes: headBytes,
            methodRange: method,
            targetRange: target,
            version: headVersion,
            targetForm: form,
            fields: headFields,
            authorityRange: authority,
            pathRange: path,
            schemeRange: scheme,
            framing: framing,
            keepAlive: keepAlive,
            expectsContinue: expectsContinue
        ), consumed: consumed)
    }

    /// Calls `body` with each value of the known field `kind`, in order: `values.first`
    /// alone, or, when the name repeats, every matching line of `fields`.
    @inline(__always)
    private static func forEachValue<E: Error>(
        of kind: KnownField, _ values: FieldValues, _ fields: [RequestHead.Field], in bytes: UnsafeRawPointer,
        _ body: (Range<Int>) throws(E) -> Void
    ) throws(E) {
        guard let first = values.first else { return }
        guard values.repeated else { return try body(first) }
        for field in fields where knownField(field.name, in: bytes) == kind { try body(field.value) }
    }

    /// `scheme "://" authority [ path-abempty [ "?" query ] ]`, or `nil` if `range` has no
    /// scheme. An absolute-form target with a bad authority is a bad target.
    private static func absoluteForm(
        _ range: Range<Int>, in bytes: UnsafeRawPointer
    ) throws(RequestHeadError) -> (scheme: Range<Int>, authority: Range<Int>, path: Range<Int>)? {
        func byte(_ index: Int) -> UInt8 { bytes.load(fromByteOffset: index, as: UInt8.self) }
        guard ASCII.isAlpha(byte(range.lowerBound)) else { return nil }
        var i = range.lowerBound + 1
        while i < range.upperBound {
            let b = byte(i)
            guard ASCII.isAlpha(b) || ASCII.isDigit(b) || b == UInt8(ascii: "+") || b == UInt8(ascii: "-")
                || b == UInt8(ascii: ".")
            else { break }
            i &+= 1
        }
        let scheme = range.lowerBound..<i
        guard range.upperBound - i >= 3, byte(i) == ASCII.colon, byte(i + 1) == ASCII.slash,
            byte(i + 2) == ASCII.slash
        else { return nil }
        let authorityStart = i + 3
        var authorityEnd = authorityStart
        while authorityEnd < range.upperBound, byte(authorityEnd) != ASCII.slash,
            byte(authorityEnd) != ASCII.question
        {
            authorityEnd &+= 1
        }
        let authority = authorityStart..<authorityEnd
        guard !authority.isEmpty, isValidAuthority(authority, in: bytes, requirePort: false) else {
            throw .invalidTarget
        }
        return (scheme, authority, authorityEnd..<range.upperBound)
    }

    /// `uri-host [ ":" port ]` (RFC 9110 §7.2, RFC 3986 §3.2.2), the port required for
    /// CONNECT's authority form (`uri-host ":" port`, RFC 9112 §3.2.3).
    private static func isValidAuthority(_ range: Range<Int>, in bytes: UnsafeRawPointer, requirePort: Bool) -> Bool {
        func byte(_ index: Int) -> UInt8 { bytes.load(fromByteOffset: index, as: UInt8.self) }
        guard !range.isEmpty else { return false }
        var i = range.lowerBound
        if byte(i) == ASCII.openBracket {
            i &+= 1
            while i < range.upperBound, byte(i) != ASCII.closeBracket {
                guard ASCII.isHostChar(byte(i)) || byte(i) == ASCII.colon else { return false }
                i &+= 1
            }
            guard i < range.upperBound, i > range.lowerBound + 1 else { return false }
            i &+= 1  // ']'
        } else {
            // Host characters up to the end or a colon (not a host character).
            i = skipNameBytes(bytes, from: i, to: range.upperBound)  // host characters all
            while i < range.upperBound, ASCII.isHostChar(byte(i)) { i &+= 1 }
            if i < range.upperBound && byte(i) != ASCII.colon { return false }
            if i == range.lowerBound { return false }
        }
        if i == range.upperBound { return !requirePort }
        guard byte(i) == ASCII.colon else { return false }
        i &+= 1
        if requirePort && i == range.upperBound { return false }
        while i < range.upperBound {
            guard ASCII.isDigit(byte(i)) else { return false }
            i &+= 1
        }
        return true
    }

    /// The transfer codings of all `Transfer-Encoding` lines, in order: exactly one
    /// `chunked`, last; any other coding is not implemented (501).
    private mutating func checkTransferCodings(in bytes: UnsafeRawPointer) throws(RequestHeadError) {
        func byte(_ index: Int) -> UInt8 { bytes.load(fromByteOffset: index, as: UInt8.self) }
        var codingCount = 0
        var chunkedCount = 0
        var last = 0..<0
        try Self.forEachValue(of: .transferEncoding, known.transferEncoding, fields, in: bytes) { (value) throws(RequestHeadError) in
            for element in listElements(bytes, in: value) where !element.isEmpty {
                // A coding's name ends at its parameters (`;`) or whitespace before them.
                var end = element.lowerBound
                while end < element.upperBound, ASCII.isTchar(byte(end)) { end &+= 1 }
                if end < element.upperBound {
                    var j = end
                    while j < element.upperBound, ASCII.isWhitespace(byte(j)) { j &+= 1 }
                    guard j < element.upperBound, byte(j) == ASCII.semicolon else {
                        throw .invalidTransferEncoding
                    }
                }
                guard end > element.lowerBound else { throw .invalidTransferEncoding }
                last = element.lowerBound..<end
                codingCount += 1
                if Token.equalsLowercased(bytes, last, "chunked") { chunkedCount += 1 }
            }
        }
        guard codingCount > 0 else { throw .invalidTransferEncoding }
        if chunkedCount > 1 { throw .chunkedAppliedTwice }
        guard Token.equalsLowercased(bytes, last, "chunked") else { throw .chunkedNotFinal }
        if codingCount > 1 { throw .unsupportedTransferCoding }
    }

    /// The value of one or more `Content-Length` lines, each possibly a list: every element
    /// `1*DIGIT`, all identical (RFC 9110 §8.6), no overflow.
    private mutating func contentLength(in bytes: UnsafeRawPointer) throws(RequestHeadError) -> Int64 {
        func byte(_ index: Int) -> UInt8 { bytes.load(fromByteOffset: index, as: UInt8.self) }
        var first: Range<Int>?
        try Self.forEachValue(of: .contentLength, known.contentLength, fields, in: bytes) { (value) throws(RequestHeadError) in
            for digits in listElements(bytes, in: value) {
                guard !digits.isEmpty else { throw .invalidContentLength }
                for index in digits where !ASCII.isDigit(byte(index)) { throw .invalidContentLength }
                if let first {
                    guard first.count == digits.count,
                        !zip(first, digits).contains(where: { byte($0) != byte($1) })
                    else { throw .conflictingContentLength }
                } else {
                    first = digits
                }
            }
        }
        var length: Int64 = 0
        for index in first ?? 0..<0 {
            let (times10, overflow1) = length.multipliedReportingOverflow(by: 10)
            let (sum, overflow2) = times10.addingReportingOverflow(Int64(byte(index) - 0x30))
            guard !overflow1, !overflow2 else { throw .invalidContentLength }
            length = sum
        }
        return length
    }
}

/// The first index of `target` in `range`, or `range.upperBound`.
@inline(__always)
private func firstIndex(of target: UInt8, in range: Range<Int>, _ bytes: UnsafeRawPointer) -> Int {
    var i = range.lowerBound
    while i < range.upperBound, bytes.load(fromByteOffset: i, as: UInt8.self) != target { i &+= 1 }
    return i
}
