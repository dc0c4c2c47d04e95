// PLACEHOLDER for helper "chunked"'s decoder (branch `chunked`): the same interface, a
// minimal byte-at-a-time implementation so the server's call sites compile and work until
// that branch is merged. On merge, their file replaces this one.

/// Why a chunked body was rejected, and the status that maps to.
enum ChunkedBodyError: Error, Hashable, Sendable {
    /// Chunk framing that is not RFC 9112 §7.1 syntax.
    case malformed
    /// The body exceeds its limit.
    case bodyTooLarge
    /// A chunk extension exceeds its limit.
    case extensionTooLong
    /// The trailer section exceeds its limits.
    case trailersTooLarge

    var status: Int {
        switch self {
        case .malformed, .extensionTooLong: 400
        case .bodyTooLarge: 413
        case .trailersTooLarge: 431
        }
    }
}

/// A chunked-body decoder (RFC 9112 §7.1): a pure state machine over bytes.
struct ChunkedDecoder {
    struct Output {
        var consumed: Int
        var content: Range<Int>
        var isComplete: Bool
    }

    private enum State {
        case size, sizeCR, extensionBytes, data, dataCR, dataLF, trailerLineStart, trailerLine, trailerCR, finalLF, done
    }

    let maxChunkExtensionLength: Int
    let maxTrailerSize: Int
    let maxTrailerFieldCount: Int
    let maxBodySize: Int64
    private var state = State.size
    private var size: Int64 = 0
    private var sizeDigits = 0
    private var extensionLength = 0
    private var remaining: Int64 = 0
    private var total: Int64 = 0
    private var trailerBytes = 0
    private var trailerFields = 0
    private var lastChunk = false

    init(maxChunkExtensionLength: Int, maxTrailerSize: Int, maxTrailerFieldCount: Int, maxBodySize: Int64) {
        self.maxChunkExtensionLength = maxChunkExtensionLength
        self.maxTrailerSize = maxTrailerSize
        self.maxTrailerFieldCount = maxTrailerFieldCount
        self.maxBodySize = maxBodySize
    }

    mutating func decode(_ input: UnsafeRawBufferPointer) throws(ChunkedBodyError) -> Output {
        var i = 0
        while i < input.count {
            let byte = input[i]
            switch state {
            case .done:
                return Output(consumed: i, content: i..<i, isComplete: true)
            case .data:
                let run = Int(min(Int64(input.count - i), remaining))
                remaining -= Int64(run)
                if remaining == 0 { state = .dataCR }
                return Output(consumed: i + run, content: i..<(i + run), isComplete: false)
            case .size:
                if let digit = Self.hexValue(byte) {
                    guard sizeDigits < 15 else { throw .malformed }
                    size = size * 16 + Int64(digit)
                    sizeDigits += 1
                } else if sizeDigits == 0 {
                    throw .malformed
                } else if byte == 13 {
                    state = .sizeCR
                } else if byte == UInt8(ascii: ";") || byte == 32 || byte == 9 {
                    state = .extensionBytes
                    extensionLength = 1
                } else {
                    throw .malformed
                }
            case .extensionBytes:
                if byte == 13 {
                    state = .sizeCR
                } else {
                    guard byte != 10, byte != 0 else { throw .malformed }
                    extensionLength += 1
                    if extensionLength > maxChunkExtensionLength { throw .extensionTooLong }
                }
            case .sizeCR:
                guard byte == 10 else { throw .malformed }
                total += size
                if total > maxBodySize { throw .bodyTooLarge }
                remaining = size
                lastChunk = size == 0
                size = 0
                sizeDigits = 0
                extensionLength = 0
                state = lastChunk ? .trailerLineStart : .data
            case .dataCR:
                guard byte == 13 else { throw .malformed }
                state = .dataLF
            case .dataLF:
                guard byte == 10 else { throw .malformed }
                state = .size
            case .trailerLineStart:
                if byte == 13 {
                    state = .finalLF
                } else {
                    guard byte != 10 else { throw .malformed }
                    trailerFields += 1
                    if trailerFields > maxTrailerFieldCount { throw .trailersTooLarge }
                    trailerBytes += 1
                    state = .trailerLine
                }
            case .trailerLine:
                trailerBytes += 1
                if trailerBytes > maxTrailerSize { throw .trailersTooLarge }
                if byte == 13 { state = .trailerCR } else if byte == 10 || byte == 0 { throw .malformed }
            case .trailerCR:
                guard byte == 10 else { throw .malformed }
                trailerBytes += 1
                state = .trailerLineStart
            case .finalLF:
                guard byte == 10 else { throw .malformed }
                state = .done
                return Output(consumed: i + 1, content: (i + 1)..<(i + 1), isComplete: true)
            }
            i += 1
        }
        return Output(consumed: i, content: i..<i, isComplete: state == .done)
    }

    private static func hexValue(_ byte: UInt8) -> Int? {
        switch byte {
        case 0x30...0x39: Int(byte - 0x30)
        case 0x41...0x46: Int(byte - 0x41 + 10)
        case 0x61...0x66: Int(byte - 0x61 + 10)
        default: nil
        }
    }
}
