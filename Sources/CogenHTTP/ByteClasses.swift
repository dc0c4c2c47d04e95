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
        let word = b < 64 ? low : high
        return b < 128 && (word >> UInt64(b & 63)) & 1 == 1
    }
}

/// Comparisons of received bytes against ASCII tokens, as string literals (no lazy globals),
/// a few word loads each.
enum Token {
    /// Whether the bytes of `range` equal `lowercase` (a lowercase token: letters, digits,
    /// `-`) ignoring ASCII case.
    ///
    /// The bytes hold no control character other than tab (a token, or a checked field
    /// value): then OR-ing 0x20 into every byte folds the case exactly, since the only other
    /// bytes it maps onto a token's bytes are controls other than tab (tab becomes `)`).
    @inline(__always)
    static func equalsLowercased(_ bytes: UnsafeRawPointer, _ range: Range<Int>, _ lowercase: StaticString) -> Bool {
        compare(bytes + range.lowerBound, range.count, lowercase, fold: 0x2020_2020_2020_2020)
    }

    /// Whether the bytes of `range` equal `token` exactly.
    @inline(__always)
    static func equals(_ bytes: UnsafeRawPointer, _ range: Range<Int>, _ token: StaticString) -> Bool {
        compare(bytes + range.lowerBound, range.count, token, fold: 0)
    }

    /// Whether the received bytes of `range` equal `lowercase` ignoring ASCII case (the same
    /// condition on the bytes as the pointer form).
    static func equalsLowercased(_ bytes: ArraySlice<UInt8>, _ lowercase: StaticString) -> Bool {
        bytes.withUnsafeBytes { buffer in
            guard let base = buffer.baseAddress else { return lowercase.utf8CodeUnitCount == 0 }
            return compare(base, buffer.count, lowercase, fold: 0x2020_2020_2020_2020)
        }
    }

    /// `count` bytes at `bytes`, each ORed with a byte of `fold`, against `token`: words of
    /// eight or four bytes (the last one overlapping the one before), bytes below four.
    @inline(__always)
    private static func compare(_ bytes: UnsafeRawPointer, _ count: Int, _ token: StaticString, fold: UInt64) -> Bool {
        let length = token.utf8CodeUnitCount
        guard count == length else { return false }
        let expected = UnsafeRawPointer(token.utf8Start)
        if length >= 8 {
            var offset = 0
            while true {
                let at = min(offset, length - 8)
                let word = bytes.loadUnaligned(fromByteOffset: at, as: UInt64.self) | fold
                if word != expected.loadUnaligned(fromByteOffset: at, as: UInt64.self) { return false }
                if at == length - 8 { return true }
                offset += 8
            }
        }
        if length >= 4 {
            let fold32 = UInt32(truncatingIfNeeded: fold)
            return bytes.loadUnaligned(as: UInt32.self) | fold32 == expected.loadUnaligned(as: UInt32.self)
                && bytes.loadUnaligned(fromByteOffset: length - 4, as: UInt32.self) | fold32
                    == expected.loadUnaligned(fromByteOffset: length - 4, as: UInt32.self)
        }
        let fold8 = UInt8(truncatingIfNeeded: fold)
        for i in 0..<length
        where bytes.load(fromByteOffset: i, as: UInt8.self) | fold8 != expected.load(fromByteOffset: i, as: UInt8.self) {
            return false
        }
        return true
    }
}

/// The ranges of the elements of a comma-separated list (RFC 9110 §5.6.1) in `bytes`, each
/// without surrounding whitespace; empty elements are kept (callers skip them). Allocates
/// nothing.
func listElements(_ bytes: UnsafeRawPointer, in range: Range<Int>) -> ListElements {
    ListElements(bytes: bytes, start: range.lowerBound, end: range.upperBound)
}

struct ListElements: Sequence, IteratorProtocol {
    let bytes: UnsafeRawPointer
    var start: Int
    let end: Int
    var finished = false

    init(bytes: UnsafeRawPointer, start: Int, end: Int) {
        self.bytes = bytes
        self.start = start
        self.end = end
    }

    mutating func next() -> Range<Int>? {
        guard !finished else { return nil }
        var i = start
        while i < end, bytes.load(fromByteOffset: i, as: UInt8.self) != ASCII.comma { i &+= 1 }
        let element = trimmed(bytes, start..<i)
        if i == end { finished = true } else { start = i + 1 }
        return element
    }
}

/// `range` without leading and trailing SP / HTAB.
@inline(__always)
func trimmed(_ bytes: UnsafeRawPointer, _ range: Range<Int>) -> Range<Int> {
    var lower = range.lowerBound
    var upper = range.upperBound
    while lower < upper, ASCII.isWhitespace(bytes.load(fromByteOffset: lower, as: UInt8.self)) { lower &+= 1 }
    while upper > lower, ASCII.isWhitespace(bytes.load(fromByteOffset: upper &- 1, as: UInt8.self)) { upper &-= 1 }
    return lower..<upper
}
