// Byte classes of RFC 9110 / RFC 3986, as 256-entry tables: one load per byte on the hot path.

enum ASCII {
    static let cr: UInt8 = 0x0D
    static let lf: UInt8 = 0x0A
    static let space: UInt8 = 0x20
    static let tab: UInt8 = 0x09
    static let colon = UInt8(ascii: ":")
    static let comma = UInt8(ascii: ",")
    static let semicolon = UInt8(ascii: ";")
    static let slash = UInt8(ascii: "/")
    static let question = UInt8(ascii: "?")
    static let asterisk = UInt8(ascii: "*")
    static let openBracket = UInt8(ascii: "[")
    static let closeBracket = UInt8(ascii: "]")

    @inline(__always) static func isWhitespace(_ b: UInt8) -> Bool { b == space || b == tab }
    @inline(__always) static func isDigit(_ b: UInt8) -> Bool { b >= 0x30 && b <= 0x39 }
    @inline(__always) static func isAlpha(_ b: UInt8) -> Bool { (b | 0x20) >= 0x61 && (b | 0x20) <= 0x7A }
    @inline(__always) static func lower(_ b: UInt8) -> UInt8 { b >= 0x41 && b <= 0x5A ? b | 0x20 : b }
    /// VCHAR: visible ASCII, what a request target may hold.
    @inline(__always) static func isVisible(_ b: UInt8) -> Bool { b >= 0x21 && b <= 0x7E }
    /// field-vchar / SP / HTAB (RFC 9110 §5.5): visible ASCII, obs-text, space, tab.
    @inline(__always) static func isFieldValueByte(_ b: UInt8) -> Bool {
        (b >= 0x20 && b != 0x7F) || b == tab
    }

    /// tchar (RFC 9110 §5.6.2): ALPHA, DIGIT and ``!#$%&'*+-.^_`|~``, as a 128-bit mask
    /// (bit b of `low` for bytes 0–63, of `high` for 64–127): no table, no lazy global.
    @inline(__always) static func isTchar(_ b: UInt8) -> Bool {
        inMask(b, low: 0x03FF_6CFA_0000_0000, high: 0x57FF_FFFF_C7FF_FFFE)
    }

    /// A character of a reg-name or an IP literal's inside (':' handled by the caller):
    /// unreserved / pct-encoded ('%') / sub-delims (RFC 3986 §3.2.2).
    @inline(__always) static func isHostChar(_ b: UInt8) -> Bool {
        inMask(b, low: 0x2BFF_7FF2_0000_0000, high: 0x47FF_FFFE_87FF_FFFE)
    }

    @inline(__always) static func inMask(_ b: UInt8, low: UInt64, high: UInt64) -> Bool {
        if b < 64 { return (low >> UInt64(b)) & 1 == 1 }
        if b < 128 { return (high >> UInt64(b - 64)) & 1 == 1 }
        return false
    }
}

/// Case-insensitive comparisons of received bytes against lowercase ASCII tokens.
enum Token {
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
func listElements(_ bytes: [UInt8], in range: Range<Int>) -> ListElements {
    ListElements(bytes: bytes, start: range.lowerBound, end: range.upperBound)
}

struct ListElements: Sequence, IteratorProtocol {
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
        let element = trimmed(bytes, start..<i)
        if i == end { finished = true } else { start = i + 1 }
        return element
    }
}

/// `range` without leading and trailing SP / HTAB.
func trimmed(_ bytes: [UInt8], _ range: Range<Int>) -> Range<Int> {
    var lower = range.lowerBound
    var upper = range.upperBound
    while lower < upper, ASCII.isWhitespace(bytes[lower]) { lower += 1 }
    while upper > lower, ASCII.isWhitespace(bytes[upper - 1]) { upper -= 1 }
    return lower..<upper
}
