public import HTTPTypes

/// A parsed HTTP/1.x request head: request line, field lines, body framing and persistence.
///
/// The head owns one byte array, ``bytes``, holding exactly what the parser consumed for this
/// request; the method, the target and every field are ranges into it. No `String` is made
/// per field line: ``makeRequest()`` builds `HTTPTypes` values once, when a handler needs them.
public struct RequestHead: Hashable, Sendable {
    /// The HTTP version of a request head; `HTTP/1.x` with x > 1 is handled as 1.1.
    public enum Version: Hashable, Sendable {
        /// HTTP/1.0.
        case http1_0
        /// HTTP/1.1 (also HTTP/1.2 … HTTP/1.9, RFC 9110 §6.2).
        case http1_1
    }

    /// The form of the request target (RFC 9112 §3.2).
    public enum TargetForm: Hashable, Sendable {
        /// `/path?query`.
        case origin
        /// `scheme://authority/path?query`; its authority overrides `Host` (§3.2.2).
        case absolute
        /// `host:port`, only with CONNECT (§3.2.3).
        case authority
        /// `*`, only with OPTIONS (§3.2.4).
        case asterisk
    }

    /// How the request's body is delimited (RFC 9112 §6.3).
    public enum BodyFraming: Hashable, Sendable {
        /// No body: neither `Content-Length` nor `Transfer-Encoding`.
        case none
        /// A body of exactly this many bytes.
        case contentLength(Int64)
        /// A chunked body.
        case chunked
    }

    /// One field line: the ranges of its name and of its value (without surrounding
    /// whitespace) in ``RequestHead/bytes``.
    public struct Field: Hashable, Sendable {
        /// The range of the field name.
        public var name: Range<Int>
        /// The range of the field value, leading and trailing whitespace excluded.
        public var value: Range<Int>
    }

    /// The bytes of the head as received, empty lines before the request line included.
    public internal(set) var bytes: [UInt8]
    /// The range of the method in ``bytes``.
    public internal(set) var methodRange: Range<Int>
    /// The range of the request target in ``bytes``.
    public internal(set) var targetRange: Range<Int>
    /// The request's version.
    public internal(set) var version: Version
    /// The form of the request target.
    public internal(set) var targetForm: TargetForm
    /// The field lines, in order.
    public internal(set) var fields: [Field]
    /// The authority: of an absolute-form target, else of an authority-form target, else the
    /// `Host` value; `nil` when there is none (HTTP/1.0 without `Host`).
    public internal(set) var authorityRange: Range<Int>?
    /// The path and query: of an origin-form target, or what follows the authority of an
    /// absolute-form one (possibly empty); `*` for asterisk form; `nil` for authority form.
    public internal(set) var pathRange: Range<Int>?
    /// The scheme of an absolute-form target.
    public internal(set) var schemeRange: Range<Int>?
    /// How the body is delimited.
    public internal(set) var framing: BodyFraming
    /// Whether the connection stays open after this request (RFC 9112 §9.3): HTTP/1.1
    /// unless `Connection: close`, HTTP/1.0 only with `Connection: keep-alive`.
    public internal(set) var keepAlive: Bool
    /// Whether an HTTP/1.1 client sent `Expect: 100-continue` (ignored for HTTP/1.0).
    public internal(set) var expectsContinue: Bool

    /// Calls `body` with the bytes of `range` (one of this head's ranges).
    ///
    /// - Parameters:
    ///   - range: A range into ``bytes``.
    ///   - body: Receives those bytes.
    /// - Returns: What `body` returns.
    /// - Throws: What `body` throws.
    public func withBytes<R, E: Error>(
        in range: Range<Int>, _ body: (ArraySlice<UInt8>) throws(E) -> R
    ) throws(E) -> R {
        try body(bytes[range])
    }

    /// Decodes the bytes of `range` as a string (invalid UTF-8 repaired). Not for the hot path.
    ///
    /// - Parameter range: A range into ``bytes``.
    /// - Returns: The decoded string.
    public func string(_ range: Range<Int>) -> String {
        String(decoding: bytes[range], as: UTF8.self)
    }

    /// Builds the `HTTPTypes` request, once, at the handler boundary.
    ///
    /// `Host` goes into the request's authority and is left out of its header fields;
    /// every other field keeps its order and its name's case.
    ///
    /// - Returns: The method, scheme, authority, path and header fields of this head.
    /// - Throws: ``RequestHeadError/invalidMethod`` or ``RequestHeadError/invalidFieldName``
    ///   if `HTTPTypes` refuses a token the parser accepted (not expected: both check `tchar`).
    public func makeRequest() throws(RequestHeadError) -> HTTPRequest {
        guard let method = HTTPRequest.Method(string(methodRange)) else { throw .invalidMethod }
        var headerFields = HTTPFields()
        headerFields.reserveCapacity(fields.count)
        for field in fields where !Token.equalsLowercased(bytes[field.name], "host") {
            guard let name = HTTPField.Name(string(field.name)) else { throw .invalidFieldName }
            headerFields.append(HTTPField(name: name, value: bytes[field.value]))
        }
        let path: String? =
            switch targetForm {
            case .authority: nil
            case .absolute: pathRange.map { $0.isEmpty ? "/" : string($0) } ?? "/"
            case .origin, .asterisk: pathRange.map(string)
            }
        return HTTPRequest(
            method: method,
            scheme: schemeRange.map(string),
            authority: authorityRange.map(string),
            path: path,
            headerFields: headerFields
        )
    }
}
