public import CogenUring
public import HTTPTypes
public import Logging

/// One request and its response, as a responder sees them.
///
/// The server makes one exchange per connection and reuses it for each request on that
/// connection, so answering a request allocates no exchange. It is confined to the
/// connection's scheduler thread (like its `Socket`) and valid only during
/// ``HTTPResponder/respond(to:)``: keep nothing of it afterwards.
///
/// **The request.** ``head`` holds the bytes and ranges the parser found (no `String` per
/// header line); ``request`` builds the `HTTPTypes` request from them once, on first use.
///
/// **The body** is read as it arrives: whole with ``readBody(maxLength:)``, or in pieces with
/// ``readBodyChunk(maxLength:)`` (backpressure: nothing beyond the scheduler's read-ahead
/// limit is taken from the kernel until the responder reads it). Reading it sends
/// `100 Continue` first when the client asked for it. An unread body is drained after the
/// response (up to ``HTTPServer/Limits/maxDrainSize``).
///
/// **The response** is sent whole with ``respond(_:body:)`` (coalesced with the responses
/// to other pipelined requests into one send), or streamed with
/// ``startResponse(_:contentLength:)``, ``write(_:)`` and ``finishResponse()``.
public final class HTTPExchange: @unchecked Sendable {
    // @unchecked Sendable: confined to its connection's scheduler thread.

    /// The parsed request head: its bytes, the ranges of method, target and fields, the
    /// body framing and the persistence the client asked for.
    public internal(set) var head: RequestHead

    /// Parameters captured by ``Router`` from `:name` segments of the matched route.
    public var parameters: [String: String] = [:]

    /// The logger of the server.
    public let logger: Logger

    init(head: RequestHead, logger: Logger) {
        self.head = head
        self.logger = logger
    }

    // MARK: The request (API surface; the core fills these in)

    /// The request as `HTTPTypes` values, built from ``head`` once, on first use.
    public var request: HTTPRequest { HTTPRequest(method: .get, scheme: nil, authority: nil, path: "/") }

    /// The request's path and query as sent (`/users/7?x=1`); for an absolute-form target,
    /// what follows its authority. Decoded on first use.
    public var path: String { "/" }

    /// Whether this is a HEAD request (its response carries no body).
    public var isHeadRequest: Bool { false }

    /// The client's address (`nil` for some Unix-domain peers).
    public var peerAddress: SocketAddress? { nil }

    // MARK: The body

    /// Reads the whole request body (empty when there is none).
    /// - Parameter maxLength: The most bytes accepted; `nil`: ``HTTPServer/Limits/maxBodySize``.
    /// - Returns: The body.
    /// - Throws: ``HTTPServerError/bodyTooLarge(limit:)`` (the server answers 413 unless a
    ///   response was sent), ``HTTPServerError/malformedBody(_:)``, ``HTTPServerError/bodyTimeout``,
    ///   ``HTTPServerError/connectionClosed``.
    ///
    /// Receives with the multishot `IORING_OP_RECV` (epoll: `recv(2)`), in place.
    public func readBody(maxLength: Int64? = nil) async throws -> [UInt8] { [] }

    /// Reads the next piece of the request body as it arrives; `nil` at its end.
    /// - Parameter maxLength: The most bytes returned at once.
    /// - Returns: At least one byte, or `nil` once the body is complete.
    /// - Throws: As ``readBody(maxLength:)``.
    ///
    /// Receives with the multishot `IORING_OP_RECV` (epoll: `recv(2)`), in place; nothing
    /// beyond the read-ahead limit is taken from the kernel until this is called again.
    public func readBodyChunk(maxLength: Int = 65536) async throws -> [UInt8]? { nil }

    // MARK: The response

    /// Whether the response head has been handed to the socket (after it, an error can
    /// only cut the connection).
    public var hasStartedResponse: Bool { false }

    /// Sends a whole response. `Content-Length`, `Date`, `Server` and, when the connection
    /// ends after it, `Connection: close` are added; the body is left out for HEAD, 1xx,
    /// 204 and 304. Responses to pipelined requests are coalesced into one send.
    /// - Parameters:
    ///   - response: Status and header fields.
    ///   - body: The body.
    /// - Throws: ``HTTPServerError/responseAlreadyStarted`` on a second response; socket errors.
    ///
    /// `IORING_OP_SEND` (epoll: `send(2)`), possibly later, with other responses.
    public func respond(_ response: HTTPResponse, body: [UInt8] = []) async throws {}

    /// Sends a response head, to be followed by ``write(_:)`` calls and ``finishResponse()``.
    /// With `contentLength` the response carries `Content-Length`; without it, chunked
    /// encoding for HTTP/1.1 and a close-delimited body with `Connection: close` for
    /// HTTP/1.0. Coalesced responses waiting are flushed first.
    /// - Parameters:
    ///   - response: Status and header fields.
    ///   - contentLength: The exact body length, if known.
    /// - Throws: ``HTTPServerError/responseAlreadyStarted``; socket errors.
    ///
    /// `IORING_OP_SEND` / `IORING_OP_SENDMSG` (epoll: `send(2)` / `sendmsg(2)`).
    public func startResponse(_ response: HTTPResponse, contentLength: Int64? = nil) async throws {}

    /// Sends a piece of a streamed response body (a chunk, in chunked encoding); waits
    /// while the client reads slowly.
    /// - Parameter bytes: The piece; empty pieces are skipped.
    /// - Throws: ``HTTPServerError/contentLengthExceeded``; socket errors; ``TimeoutError``
    ///   after ``HTTPServer/Timeouts/sendInactivity``.
    ///
    /// `IORING_OP_SENDMSG` (epoll: `sendmsg(2)`).
    public func write(_ bytes: [UInt8]) async throws {}

    /// Ends a streamed response: the final chunk in chunked encoding; with a
    /// `Content-Length`, checks that it was met.
    /// - Throws: ``HTTPServerError/contentLengthMismatch``; socket errors.
    ///
    /// `IORING_OP_SEND` (epoll: `send(2)`).
    public func finishResponse() async throws {}
}

/// Why an exchange could not go on.
public enum HTTPServerError: Error, Hashable, Sendable {
    /// The request body exceeds the limit (413 if no response was sent yet).
    case bodyTooLarge(limit: Int64)
    /// The chunked body is malformed (400 if no response was sent yet).
    case malformedBody(String)
    /// The body stalled past ``HTTPServer/Timeouts/bodyInactivity``.
    case bodyTimeout
    /// The client closed the connection, or it was reset.
    case connectionClosed
    /// A second response to one request.
    case responseAlreadyStarted
    /// ``HTTPExchange/write(_:)`` or ``HTTPExchange/finishResponse()`` without a streamed response.
    case responseNotStarted
    /// More body bytes written than the `Content-Length` given.
    case contentLengthExceeded
    /// ``HTTPExchange/finishResponse()`` with fewer bytes written than the `Content-Length` given.
    case contentLengthMismatch
}
