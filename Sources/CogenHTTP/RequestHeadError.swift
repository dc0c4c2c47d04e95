/// Why a request head was rejected, and the response status that rejection maps to.
///
/// Every case ends the connection after its error response (RFC 9112 §9.6 close). The
/// parser performs no I/O: it neither sends the response nor closes the socket.
public enum RequestHeadError: Error, Hashable, Sendable {
    // 400 Bad Request: syntax (RFC 9112 §2.2, §3, §5).
    /// A CR not followed by LF in the head (RFC 9112 §2.2).
    case bareCR
    /// An LF not preceded by CR in the head (RFC 9112 §2.2; rejected, not tolerated).
    case bareLF
    /// The request line is not `method SP request-target SP HTTP-version` (RFC 9112 §3).
    case malformedRequestLine
    /// The method holds a character that is not a `tchar` (RFC 9110 §9.1).
    case invalidMethod
    /// The request target holds a character outside visible ASCII (RFC 9112 §3.2).
    case invalidTarget
    /// The target's form does not fit the method: authority form without CONNECT, asterisk
    /// form without OPTIONS, or a target in no form (RFC 9112 §3.2).
    case invalidTargetForm
    /// The version is not `HTTP/` DIGIT `.` DIGIT (RFC 9112 §2.3).
    case malformedVersion
    /// A field line that begins with whitespace right after the request line (RFC 9112 §2.2).
    case whitespaceAfterRequestLine
    /// A field line continued by obsolete line folding (RFC 9112 §5.2).
    case obsoleteLineFolding
    /// Whitespace between a field name and its colon (RFC 9112 §5.1).
    case whitespaceBeforeColon
    /// A field line without a colon, or with an empty name (RFC 9112 §5).
    case missingColon
    /// A field name holds a character that is not a `tchar` (RFC 9110 §5.1).
    case invalidFieldName
    /// A field value holds NUL or another control character (RFC 9110 §5.5).
    case invalidFieldValue
    /// `Content-Length` is not digits only, or overflows (RFC 9112 §6.3, RFC 9110 §8.6).
    case invalidContentLength
    /// `Content-Length` repeated with different values (RFC 9110 §8.6).
    case conflictingContentLength
    /// `Content-Length` together with `Transfer-Encoding` (RFC 9112 §6.3).
    case contentLengthWithTransferEncoding
    /// `Transfer-Encoding` in an HTTP/1.0 request (RFC 9112 §6.1).
    case transferEncodingInHTTP10
    /// `chunked` applied more than once (RFC 9112 §6.1).
    case chunkedAppliedTwice
    /// A `Transfer-Encoding` whose final coding is not `chunked` (RFC 9112 §6.3).
    case chunkedNotFinal
    /// A `Transfer-Encoding` value that is not a list of tokens (RFC 9112 §6.1).
    case invalidTransferEncoding
    /// An HTTP/1.1 request without `Host` (RFC 9112 §3.2).
    case missingHost
    /// More than one `Host` field line (RFC 9112 §3.2).
    case multipleHosts
    /// A `Host` value that is not `uri-host [ ":" port ]` (RFC 9110 §7.2).
    case invalidHost
    // Other statuses.
    /// A major version other than 1 (505 HTTP Version Not Supported).
    case unsupportedVersion
    /// A transfer coding other than `chunked`, e.g. `gzip, chunked` (501 Not Implemented).
    case unsupportedTransferCoding
    /// An `Expect` value other than `100-continue` (417 Expectation Failed, RFC 9110 §10.1.1).
    case unsupportedExpectation
    /// `Content-Length` above the configured body limit (413 Content Too Large).
    case contentTooLarge
    /// The request line exceeds its limit (414 URI Too Long).
    case requestLineTooLong
    /// The header section exceeds its size limit (431 Request Header Fields Too Large).
    case headerSectionTooLarge
    /// The header section holds more field lines than allowed (431).
    case tooManyFields

    /// The response status this rejection maps to: 400, 413, 414, 417, 431, 501 or 505.
    public var status: Int {
        switch self {
        case .unsupportedVersion: 505
        case .unsupportedTransferCoding: 501
        case .unsupportedExpectation: 417
        case .contentTooLarge: 413
        case .requestLineTooLong: 414
        case .headerSectionTooLarge, .tooManyFields: 431
        default: 400
        }
    }

    /// A short human-readable reason, fit for a log line or an error response body.
    public var reason: String {
        switch self {
        case .bareCR: "bare CR in the request head"
        case .bareLF: "bare LF in the request head"
        case .malformedRequestLine: "malformed request line"
        case .invalidMethod: "invalid character in the method"
        case .invalidTarget: "invalid character in the request target"
        case .invalidTargetForm: "request target form not allowed for this method"
        case .malformedVersion: "malformed HTTP version"
        case .whitespaceAfterRequestLine: "whitespace-led line after the request line"
        case .obsoleteLineFolding: "obsolete line folding"
        case .whitespaceBeforeColon: "whitespace between field name and colon"
        case .missingColon: "field line without a name and colon"
        case .invalidFieldName: "invalid character in a field name"
        case .invalidFieldValue: "invalid character in a field value"
        case .invalidContentLength: "invalid Content-Length"
        case .conflictingContentLength: "repeated Content-Length values differ"
        case .contentLengthWithTransferEncoding: "Content-Length with Transfer-Encoding"
        case .transferEncodingInHTTP10: "Transfer-Encoding in an HTTP/1.0 request"
        case .chunkedAppliedTwice: "chunked applied twice"
        case .chunkedNotFinal: "chunked is not the final transfer coding"
        case .invalidTransferEncoding: "invalid Transfer-Encoding"
        case .missingHost: "HTTP/1.1 request without Host"
        case .multipleHosts: "more than one Host"
        case .invalidHost: "invalid Host"
        case .unsupportedVersion: "HTTP major version not supported"
        case .unsupportedTransferCoding: "transfer coding not implemented"
        case .unsupportedExpectation: "expectation not supported"
        case .contentTooLarge: "Content-Length above the body limit"
        case .requestLineTooLong: "request line too long"
        case .headerSectionTooLarge: "header section too large"
        case .tooManyFields: "too many header fields"
        }
    }
}
