/// An incremental decoder of the chunked transfer coding (RFC 9112 §7.1), for request bodies.
///
/// A pure state machine over bytes, like ``RequestHeadParser``: it does no I/O and copies
/// nothing. Each call consumes the framing at the front of its input and at most one run of
/// content, which it returns as a range of that input (the caller reads it in place, for
/// example inside `Socket.withReceivedBytes`). A body split at any byte boundary decodes to the
/// same content and the same error: every decision depends only on the bytes seen so far, in
/// order, and every limit is checked at the byte that crosses it.
///
/// Accepted:
/// ```
/// chunked-body = *chunk last-chunk trailer-section CRLF
/// chunk        = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
/// chunk-ext    = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
/// ```
/// Rejected: a size that is not hex or overflows, junk after it, a malformed or too long
/// extension, a bare CR or LF in a chunk-size line or a trailer line, chunk data not followed
/// by CRLF, a trailer field line that is not a valid field line (obs-fold included) (400); a
/// body whose total size would pass `maxBodySize`, at the chunk-size line that announces it
/// (413); a trailer section past its byte or field-count limit (431). Trailer fields are
/// validated and discarded. After an error the connection must close.
struct ChunkedDecoder: Sendable {
    /// What one call to ``decode(_:)`` did.
    struct Output: Hashable, Sendable {
        /// How many bytes of the input were consumed (framing and content).
        var consumed: Int
        /// The content found, a range of the input (possibly empty), within `0..<consumed`.
        var content: Range<Int>
        /// Whether the last chunk and the trailer section have been consumed: the body is over.
        var isComplete: Bool
    }

    /// The most hex digits a chunk size may have, leading zeros included (more is 400).
    static let maxChunkSizeDigits = 32

    private enum State: UInt8 {
        case sizeStart  // the first byte of a chunk-size line: a hex digit
        case size  // more hex digits
        case afterSize  // BWS after the digits, before ";" (no extension yet)
        case extNameStart  // after ";": BWS, then a token
        case extName
        case afterExtName  // BWS, then "=", ";" or CR
        case extValueStart  // after "=": BWS, then a token or a quoted-string
        case extToken
        case extQuoted
        case extQuotedPair
        case afterExtValue  // BWS, then ";" or CR
        case sizeLineLF  // CR seen at the end of a chunk-size line
        case data
        case dataCR  // chunk data done: CR must follow
        case dataLF
        case trailerLineStart
        case trailerName
        case trailerValue
        case trailerLF  // CR seen at the end of a trailer field line
        case finalLF  // CR seen on the empty line that ends the body
        case complete
    }

    let maxChunkExtensionLength: Int
    let maxTrailerSize: Int
    let maxTrailerFieldCount: Int
    let maxBodySize: Int64

    private var state = State.sizeStart
    private var size: Int64 = 0  // the chunk size being read
    private var sizeDigits = 0
    private var remaining: Int64 = 0  // content bytes left in the current chunk
    private var total: Int64 = 0  // content bytes announced so far (all chunks)
    private var extensionLength = 0  // bytes after the size digits on this line, CR excluded
    private var pendingWhitespace = false  // BWS seen, which only ";" (or "=", a name, a value) may follow
    private var trailerSize = 0
    private var trailerFieldCount = 0

    /// Creates a decoder for one body.
    ///
    /// - Parameters:
    ///   - maxChunkExtensionLength: The most bytes after the chunk size on one chunk-size line,
    ///     CRLF excluded (400 past it).
    ///   - maxTrailerSize: The most bytes of trailer field lines, their CRLFs included, the
    ///     final empty line not (431 past it).
    ///   - maxTrailerFieldCount: The most trailer field lines (431 past it).
    ///   - maxBodySize: The most content bytes in all chunks together (413 past it).
    init(maxChunkExtensionLength: Int, maxTrailerSize: Int, maxTrailerFieldCount: Int, maxBodySize: Int64) {
        self.maxChunkExtensionLength = maxChunkExtensionLength
        self.maxTrailerSize = maxTrailerSize
        self.maxTrailerFieldCount = maxTrailerFieldCount
        self.maxBodySize = maxBodySize
    }

    /// Whether the whole body has been decoded.
    var isComplete: Bool { state == .complete }

    /// The content bytes decoded or announced so far (chunk sizes read).
    var announcedBodySize: Int64 { total }

    /// Consumes framing and at most one run of content from the front of `input`.
    ///
    /// - Parameter input: The bytes that follow those consumed by earlier calls.
    /// - Returns: How much was consumed, the content found (a range of `input`, possibly
    ///   empty), and whether the body is complete. A call stops right after a run of content,
    ///   so the caller sees it before any error in what follows; call again with the rest.
    ///   Once complete, nothing more is consumed: what follows is the next request.
    /// - Throws: ``ChunkedBodyError`` with the status to answer; the connection should close.
    mutating func decode(_ input: UnsafeRawBufferPointer) throws(ChunkedBodyError) -> Output {
        let count = input.count
        var i = 0
        while i < count {
            switch state {
            case .complete:
                return Output(consumed: i, content: i..<i, isComplete: true)
            case .data:
                let start = i
                let run = Int(min(Int64(count - i), remaining))
                i += run
                remaining -= Int64(run)
                if remaining == 0 { state = .dataCR }
                return Output(consumed: i, content: start..<i, isComplete: false)
            case .trailerValue:
                // A run of field-value bytes: only the size limit concerns them, and crossing
                // it anywhere in the run is the same error as at the byte that crosses it.
                var next = i
                while next < count, ASCII.isFieldValueByte(input[next]) { next += 1 }
                trailerSize += next - i
                if trailerSize > maxTrailerSize { throw .trailerSectionTooLarge }
                i = next
                if i == count { break }
                let byte = input[i]
                i += 1
                try countTrailerByte()
                if byte == ASCII.cr {
                    state = .trailerLF
                } else if byte == ASCII.lf {
                    throw .bareLF
                } else {
                    throw .invalidTrailerField
                }
            default:
                let byte = input[i]
                i += 1
                try step(byte)
                if state == .complete { return Output(consumed: i, content: i..<i, isComplete: true) }
            }
        }
        return Output(consumed: count, content: count..<count, isComplete: state == .complete)
    }

    @inline(__always) private mutating func countTrailerByte() throws(ChunkedBodyError) {
        trailerSize += 1
        if trailerSize > maxTrailerSize { throw .trailerSectionTooLarge }
    }

    /// One byte of framing (a chunk-size line, the CRLF after data, a trailer line).
    private mutating func step(_ byte: UInt8) throws(ChunkedBodyError) {
        switch state {
        case .sizeStart:
            guard let digit = Self.hexValue(byte) else { throw .invalidChunkSize }
            size = Int64(digit)
            sizeDigits = 1
            extensionLength = 0
            pendingWhitespace = false
            state = .size
            return
        case .size:
            if let digit = Self.hexValue(byte) {
                sizeDigits += 1
                let (times16, overflow) = size.multipliedReportingOverflow(by: 16)
                guard !overflow, sizeDigits <= Self.maxChunkSizeDigits else { throw .chunkSizeOverflow }
                size = times16 | Int64(digit)
                return
            }
            // The size is complete: the body limit is checked here, before anything else.
            if size > maxBodySize - total { throw .bodyTooLarge }
            state = .afterSize
        case .sizeLineLF:
            guard byte == ASCII.lf else { throw .bareCR }
            total += size
            if size == 0 {
                state = .trailerLineStart
            } else {
                remaining = size
                state = .data
            }
            return
        case .dataCR:
            guard byte == ASCII.cr else { throw .missingCRLFAfterData }
            state = .dataLF
            return
        case .dataLF:
            guard byte == ASCII.lf else { throw .missingCRLFAfterData }
            state = .sizeStart
            return
        case .trailerLineStart:
            if byte == ASCII.cr {
                state = .finalLF
                return
            }
            if byte == ASCII.lf { throw .bareLF }
            if ASCII.isWhitespace(byte) { throw .obsoleteLineFoldingInTrailer }
            try countTrailerByte()
            trailerFieldCount += 1
            if trailerFieldCount > maxTrailerFieldCount { throw .tooManyTrailerFields }
            guard ASCII.isTchar(byte) else { throw .invalidTrailerField }
            state = .trailerName
            return
        case .trailerName:
            try countTrailerByte()
            if ASCII.isTchar(byte) { return }
            guard byte == ASCII.colon else { throw .invalidTrailerField }
            state = .trailerValue
            return
        case .trailerLF:
            guard byte == ASCII.lf else { throw .bareCR }
            try countTrailerByte()
            state = .trailerLineStart
            return
        case .finalLF:
            guard byte == ASCII.lf else { throw .bareCR }
            state = .complete
            return
        case .trailerValue, .data, .complete:
            return  // invariant: decode handles these states itself; never reached
        default:
            break
        }
        try extensionByte(byte)
    }

    /// One byte after the chunk size: BWS, extensions, the line's CR or LF.
    private mutating func extensionByte(_ byte: UInt8) throws(ChunkedBodyError) {
        if byte == ASCII.cr {
            try endOfSizeLine()
            state = .sizeLineLF
            return
        }
        if byte == ASCII.lf { throw .bareLF }
        extensionLength += 1
        if extensionLength > maxChunkExtensionLength { throw .chunkExtensionTooLong }
        let isSpace = ASCII.isWhitespace(byte)
        switch state {
        case .afterSize:
            if isSpace {
                pendingWhitespace = true
            } else if byte == ASCII.semicolon {
                pendingWhitespace = false
                state = .extNameStart
            } else {
                throw .junkAfterChunkSize
            }
        case .extNameStart:
            if isSpace { return }
            guard ASCII.isTchar(byte) else { throw .invalidChunkExtension }
            state = .extName
        case .extName, .afterExtName:
            if state == .extName && ASCII.isTchar(byte) { return }
            if isSpace {
                pendingWhitespace = true
                state = .afterExtName
            } else if byte == ASCII.semicolon {
                pendingWhitespace = false
                state = .extNameStart
            } else if byte == UInt8(ascii: "=") {
                pendingWhitespace = false
                state = .extValueStart
            } else {
                throw .invalidChunkExtension
            }
        case .extValueStart:
            if isSpace { return }
            if byte == UInt8(ascii: "\"") {
                state = .extQuoted
            } else if ASCII.isTchar(byte) {
                state = .extToken
            } else {
                throw .invalidChunkExtension
            }
        case .extToken, .afterExtValue:
            if state == .extToken && ASCII.isTchar(byte) { return }
            if isSpace {
                pendingWhitespace = true
                state = .afterExtValue
            } else if byte == ASCII.semicolon {
                pendingWhitespace = false
                state = .extNameStart
            } else {
                throw .invalidChunkExtension
            }
        case .extQuoted:
            // qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text (RFC 9110 §5.6.4)
            if byte == UInt8(ascii: "\"") {
                state = .afterExtValue
                pendingWhitespace = false
            } else if byte == UInt8(ascii: "\\") {
                state = .extQuotedPair
            } else if !ASCII.isFieldValueByte(byte) {
                throw .invalidChunkExtension
            }
        case .extQuotedPair:
            // quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text )
            guard ASCII.isFieldValueByte(byte) else { throw .invalidChunkExtension }
            state = .extQuoted
        default:
            return  // invariant: only the states of a chunk-size line come here
        }
    }

    /// The CR of a chunk-size line: the line must end in a complete state.
    private func endOfSizeLine() throws(ChunkedBodyError) {
        switch state {
        case .afterSize:
            // "5 \r\n": whitespace is allowed only before ";" (RFC 9112 §7.1.1).
            if pendingWhitespace { throw .junkAfterChunkSize }
        case .extName, .extToken:
            break
        case .afterExtName, .afterExtValue:
            if pendingWhitespace { throw .invalidChunkExtension }
        case .extQuoted, .extQuotedPair:
            throw .invalidChunkExtension
        default:  // after ";" or "=" with nothing following
            throw .invalidChunkExtension
        }
    }

    @inline(__always) private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case 0x30...0x39: byte - 0x30
        case 0x41...0x46: byte - 0x41 + 10
        case 0x61...0x66: byte - 0x61 + 10
        default: nil
        }
    }
}

/// Why a chunked request body was rejected, and the response status that rejection maps to.
///
/// Every case ends the connection after its error response (RFC 9112 §9.6 close).
public enum ChunkedBodyError: Error, Hashable, Sendable {
    // 400 Bad Request (RFC 9112 §7.1).
    /// A chunk-size line that does not start with a hex digit.
    case invalidChunkSize
    /// A chunk size past 2⁶³ − 1, or with too many digits.
    case chunkSizeOverflow
    /// A byte after the chunk size that starts neither an extension nor the line's CRLF.
    case junkAfterChunkSize
    /// A chunk extension that is not `;name[=token|quoted-string]` (RFC 9112 §7.1.1).
    case invalidChunkExtension
    /// The extensions of one chunk-size line exceed their limit.
    case chunkExtensionTooLong
    /// A CR not followed by LF in a chunk-size line or a trailer line.
    case bareCR
    /// An LF not preceded by CR in a chunk-size line or a trailer line.
    case bareLF
    /// Chunk data not followed by CRLF.
    case missingCRLFAfterData
    /// A trailer line that is not `field-name ":" field-value` (RFC 9112 §7.1.2, §5).
    case invalidTrailerField
    /// A trailer line that begins with whitespace (obsolete line folding, RFC 9112 §5.2).
    case obsoleteLineFoldingInTrailer
    // Other statuses.
    /// The chunk sizes announced pass the body limit (413 Content Too Large).
    case bodyTooLarge
    /// The trailer section exceeds its size limit (431).
    case trailerSectionTooLarge
    /// The trailer section holds more field lines than allowed (431).
    case tooManyTrailerFields

    /// The response status this rejection maps to: 400, 413 or 431.
    public var status: Int {
        switch self {
        case .bodyTooLarge: 413
        case .trailerSectionTooLarge, .tooManyTrailerFields: 431
        default: 400
        }
    }

    /// A short human-readable reason, fit for a log line or an error response body.
    public var reason: String {
        switch self {
        case .invalidChunkSize: "invalid chunk size"
        case .chunkSizeOverflow: "chunk size overflows"
        case .junkAfterChunkSize: "junk after the chunk size"
        case .invalidChunkExtension: "invalid chunk extension"
        case .chunkExtensionTooLong: "chunk extension too long"
        case .bareCR: "bare CR in a chunk line"
        case .bareLF: "bare LF in a chunk line"
        case .missingCRLFAfterData: "chunk data not followed by CRLF"
        case .invalidTrailerField: "invalid trailer field"
        case .obsoleteLineFoldingInTrailer: "obsolete line folding in the trailer section"
        case .bodyTooLarge: "chunked body above the body limit"
        case .trailerSectionTooLarge: "trailer section too large"
        case .tooManyTrailerFields: "too many trailer fields"
        }
    }
}
