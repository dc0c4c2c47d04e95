public import CogenUring
public import HTTPTypes
public import Logging
internal import Glibc

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
///
/// **The fast path.** ``methodIs(_:)`` and ``pathIs(_:)`` compare the head's bytes, and
/// ``respond(status:contentType:body:)`` writes a response without any `HTTPTypes` value:
/// a responder using only these allocates nothing per request.
public final class HTTPExchange: @unchecked Sendable {
    // @unchecked Sendable: confined to its connection's scheduler thread. Its mutable
    // state is `@exclusivity(unchecked)`: never accessed reentrantly, and a dynamic
    // exclusivity check costs a thread-local lookup per access (as in the core).

    /// The parsed request head: its bytes, the ranges of method, target and fields, the
    /// body framing and the persistence the client asked for.
    @exclusivity(unchecked) public internal(set) var head: RequestHead

    /// Parameters captured by ``Router`` from `:name` segments of the matched route.
    @exclusivity(unchecked) public var parameters: [String: String] = [:]

    /// The logger of the server.
    public let logger: Logger

    // MARK: Connection state (one exchange per connection, reused for every request)

    /// The connection (nil for an exchange made without one, e.g. in a unit test: its
    /// responses stay in `output`).
    let connection: Server.Connection?
    let socket: Socket?
    let setup: ConnectionSetup
    let context: SchedulerContext
    @exclusivity(unchecked) var parser: RequestHeadParser
    /// Responses not sent yet: whole responses coalesced until the batch ends (no complete
    /// request left in the held bytes), the 64 KiB bound, or a streamed response. Owned
    /// by the exchange; handed to the socket only for the duration of a send (the send
    /// operation lets go of it at its final completion), so emptying it keeps its
    /// capacity and the next batch allocates nothing.
    @exclusivity(unchecked) var output: [UInt8] = []
    /// Responses in `output`.
    @exclusivity(unchecked) var coalescedResponses = 0
    /// The connection was half-closed and drained (lingering close): nothing more to do.
    @exclusivity(unchecked) var lingered = false

    // MARK: Request state (reset by `begin(_:)`)

    @exclusivity(unchecked) var cachedRequest: HTTPRequest?
    @exclusivity(unchecked) var cachedPath: String?
    @exclusivity(unchecked) var isHead = false
    @exclusivity(unchecked) var body = BodyState.none
    @exclusivity(unchecked) var continueSent = false
    @exclusivity(unchecked) var response = ResponseState.none
    /// The connection ends after this response (decided when its head is written).
    @exclusivity(unchecked) var closeAfterResponse = false
    /// A body error that ends the connection, with the status to answer if no response
    /// was started (413, 400, 408).
    @exclusivity(unchecked) var bodyFailureStatus: Int?
    /// The body could not be read to its end (limit, malformed, stalled, peer gone).
    @exclusivity(unchecked) var bodyFailed = false

    enum BodyState {
        case none
        case length(remaining: Int64)
        case chunked(ChunkedDecoder)
        /// The body was read to its end.
        case complete
    }

    enum ResponseState: Equatable {
        case none
        /// A whole response was written (to `output`, or sent).
        case complete
        /// A streamed response's head was sent; its body goes on.
        case streaming(StreamFraming)
    }

    enum StreamFraming: Equatable {
        case length(total: Int64, written: Int64)
        case chunked
        case closeDelimited
        /// HEAD, 1xx, 204, 304: the writes are dropped.
        case none
    }

    init(connection: Server.Connection, setup: ConnectionSetup, context: SchedulerContext) {
        self.connection = connection
        self.socket = connection.socket
        self.setup = setup
        self.context = context
        self.logger = setup.logger
        self.parser = RequestHeadParser(limits: setup.parserLimits)
        self.head = RequestHead.empty
        output.reserveCapacity(4096)
    }

    /// An exchange without a connection (tests of responders): responses stay in `output`.
    init(head: RequestHead, logger: Logger) {
        self.connection = nil
        self.socket = nil
        self.setup = ConnectionSetup(
            configuration: HTTPServer.Configuration(address: .loopback()), responder: ClosureResponder { _ in })
        self.context = SchedulerContext(serverLine: setup.serverLine)
        self.logger = logger
        self.parser = RequestHeadParser(limits: setup.parserLimits)
        self.head = head
        begin()
    }

    /// Resets the request state for a new ``head``.
    func begin() {
        cachedRequest = nil
        cachedPath = nil
        if !parameters.isEmpty { parameters = [:] }
        isHead = headBytesEqual(head.methodRange, "HEAD")
        switch head.framing {
        case .none: body = .complete
        case .contentLength(let length): body = length == 0 ? .complete : .length(remaining: length)
        case .chunked:
            body = .chunked(ChunkedDecoder(
                maxChunkExtensionLength: setup.limits.maxChunkExtensionLength,
                maxTrailerSize: setup.limits.maxTrailerSize,
                maxTrailerFieldCount: setup.limits.maxFieldCount,
                maxBodySize: setup.limits.maxBodySize))
        }
        continueSent = false
        response = .none
        closeAfterResponse = false
        bodyFailureStatus = nil
        bodyFailed = false
    }

    // MARK: The request

    /// The request as `HTTPTypes` values, built from ``head`` once, on first use.
    public var request: HTTPRequest {
        if let cachedRequest { return cachedRequest }
        // The parser checked every token `HTTPTypes` checks; a refusal is not expected.
        let built = (try? head.makeRequest()) ?? HTTPRequest(method: .get, scheme: nil, authority: nil, path: path)
        cachedRequest = built
        return built
    }

    /// The request's path and query as sent (`/users/7?x=1`); for an absolute-form target,
    /// what follows its authority. Decoded on first use.
    public var path: String {
        if let cachedPath { return cachedPath }
        let decoded: String =
            if let range = head.pathRange { range.isEmpty ? "/" : head.string(range) } else { "" }
        cachedPath = decoded
        return decoded
    }

    /// Whether this is a HEAD request (its response carries no body).
    public var isHeadRequest: Bool { isHead }

    /// The client's address (`nil` for some Unix-domain peers).
    public var peerAddress: SocketAddress? { socket?.peerAddress }

    /// Whether the request's method is `method`, compared byte for byte (no `String` made).
    /// - Parameter method: An uppercase method name, e.g. `"GET"`.
    /// - Returns: Whether the request line carries exactly that method.
    ///
    /// No system call: it reads the head's bytes.
    public func methodIs(_ method: StaticString) -> Bool {
        headBytesEqual(head.methodRange, method)
    }

    /// Whether the request's path (and query), as ``path`` returns it, is `path`, compared
    /// byte for byte (no `String` made).
    /// - Parameter path: E.g. `"/plaintext"`.
    /// - Returns: Whether they are equal.
    ///
    /// No system call: it reads the head's bytes.
    public func pathIs(_ path: StaticString) -> Bool {
        guard let range = head.pathRange else { return false }
        return headBytesEqual(range, path)
    }

    /// Whether the head's bytes in `range` are `text`: a length check and a `memcmp`, with
    /// the head borrowed in place (no copy of it, no reference counting).
    @inline(__always)
    func headBytesEqual(_ range: Range<Int>, _ text: StaticString) -> Bool {
        guard range.count == text.utf8CodeUnitCount, range.upperBound <= head.bytes.count else { return false }
        // `withUTF8Buffer`, not `utf8Start`: a one-character literal has no pointer.
        return text.withUTF8Buffer { expected in
            head.bytes.withUnsafeBufferPointer { bytes in
                guard let base = bytes.baseAddress, let other = expected.baseAddress else { return range.isEmpty }
                return memcmp(base + range.lowerBound, other, range.count) == 0
            }
        }
    }

    // MARK: The body

    /// Reads the whole request body (empty when there is none).
    /// - Parameter maxLength: The most bytes accepted; `nil`: ``HTTPServer/Limits/maxBodySize``.
    /// - Returns: The body.
    /// - Throws: ``HTTPServerError/bodyTooLarge(limit:)`` (the server answers 413 unless a
    ///   response was sent), ``HTTPServerError/malformedBody(_:)``, ``HTTPServerError/bodyTimeout``,
    ///   ``HTTPServerError/connectionClosed``.
    ///
    /// Receives with the multishot `IORING_OP_RECV` (epoll: `recv(2)`), in place.
    public func readBody(maxLength: Int64? = nil) async throws -> [UInt8] {
        let limit = min(maxLength ?? setup.limits.maxBodySize, setup.limits.maxBodySize)
        var collected: [UInt8] = []
        switch body {
        case .complete, .none:
            return []
        case .length(let remaining):
            if remaining > limit { throw failBody(.bodyTooLarge(limit: limit), status: 413) }
            // What the client announced, up to 1 MiB: the rest grows as it arrives.
            collected.reserveCapacity(Int(min(remaining, 1 << 20)))
        case .chunked:
            break
        }
        while try await nextBodyPiece(maxLength: 1 << 20, into: &collected) != nil {
            if Int64(collected.count) > limit { throw failBody(.bodyTooLarge(limit: limit), status: 413) }
        }
        return collected
    }

    /// Reads the next piece of the request body as it arrives; `nil` at its end.
    /// - Parameter maxLength: The most bytes returned at once.
    /// - Returns: At least one byte, or `nil` once the body is complete.
    /// - Throws: As ``readBody(maxLength:)``.
    ///
    /// Receives with the multishot `IORING_OP_RECV` (epoll: `recv(2)`), in place; nothing
    /// beyond the read-ahead limit is taken from the kernel until this is called again.
    public func readBodyChunk(maxLength: Int = 65536) async throws -> [UInt8]? {
        var piece: [UInt8] = []
        guard try await nextBodyPiece(maxLength: max(1, maxLength), into: &piece) != nil else { return nil }
        return piece
    }

    // MARK: The response

    /// Whether the response head has been handed to the socket (after it, an error can
    /// only cut the connection).
    public var hasStartedResponse: Bool { response != .none }

    /// Sends a whole response. `Content-Length`, `Date`, `Server` and, when the connection
    /// ends after it, `Connection: close` are added; the body is left out for HEAD, 1xx,
    /// 204 and 304. Responses to pipelined requests are coalesced into one send.
    /// - Parameters:
    ///   - response: Status and header fields.
    ///   - body: The body.
    /// - Throws: ``HTTPServerError/responseAlreadyStarted`` on a second response; socket errors.
    ///
    /// `IORING_OP_SEND` (epoll: `send(2)`), possibly later, with other responses.
    // Inlinable, over a synchronous first step: a response that needs no wait (the usual
    // case) costs the caller no async frame of its own.
    @inlinable
    public func respond(_ response: HTTPResponse, body: [UInt8] = []) async throws {
        let rest = try beginWhole(response, body: body)
        if rest != .done { try await finishWhole(rest, body: body) }
    }

    /// ``respond(_:body:)`` up to its first wait: the head, and the body when it fits.
    @usableFromInline
    func beginWhole(_ response: HTTPResponse, body: [UInt8]) throws -> WholeRest {
        guard self.response == .none else { throw HTTPServerError.responseAlreadyStarted }
        // The status line and fields of a response value seen before are copied whole.
        return context.heads.withHead(for: response) { beginWhole($0, body: body) }
    }

    /// Sends a whole response without building any `HTTPTypes` value: the fast path for
    /// small fixed responses. Like ``respond(_:body:)``, with only a status code, an
    /// optional `Content-Type` and the body.
    /// - Parameters:
    ///   - status: The status code (100...999; another is logged and answered with 500);
    ///     the standard reason phrase of the server's own statuses is sent, else none.
    ///   - contentType: The `Content-Type` value, if any.
    ///   - body: The body.
    /// - Throws: ``HTTPServerError/responseAlreadyStarted`` on a second response; socket errors.
    ///
    /// `IORING_OP_SEND` (epoll: `send(2)`), possibly later, with other responses.
    @inlinable
    public func respond(status: Int = 200, contentType: String? = nil, body: [UInt8]) async throws {
        let rest = try beginWhole(status: status, contentType: contentType, body: body)
        if rest != .done { try await finishWhole(rest, body: body) }
    }

    /// ``respond(status:contentType:body:)`` up to its first wait. An invalid status is
    /// logged and answered with 500.
    @usableFromInline
    func beginWhole(status: Int, contentType: String?, body: [UInt8]) throws -> WholeRest {
        guard response == .none else { throw HTTPServerError.responseAlreadyStarted }
        guard (100...999).contains(status) else {
            logger.error("responder gave an invalid status code \(status): 500 sent instead")
            return beginWhole(code: 500, reason: nil, fields: nil, contentType: nil, body: [])
        }
        return context.heads.withHead(code: status, contentType: contentType) { beginWhole($0, body: body) }
    }

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
    public func startResponse(_ response: HTTPResponse, contentLength: Int64? = nil) async throws {
        guard self.response == .none else { throw HTTPServerError.responseAlreadyStarted }
        let code = response.status.code
        let framing: StreamFraming
        let headFraming: HeadFraming
        if Self.hasNoBody(code) {
            framing = .none
            headFraming = code == 304 ? .omitted : .none
        } else if let contentLength {
            framing = isHead ? .none : .length(total: max(0, contentLength), written: 0)
            headFraming = .length(max(0, contentLength))
        } else if head.version == .http1_1 {
            framing = isHead ? .none : .chunked
            headFraming = .chunked
        } else {
            framing = isHead ? .none : .closeDelimited
            headFraming = .omitted
            closeAfterResponse = true
        }
        self.response = .streaming(framing)
        writeHead(
            code: code, reason: response.status.reasonPhrase, fields: response.headerFields, contentType: nil,
            framing: headFraming)
        try await flush()
    }

    /// Sends a piece of a streamed response body (a chunk, in chunked encoding); waits
    /// while the client reads slowly.
    /// - Parameter bytes: The piece; empty pieces are skipped.
    /// - Throws: ``HTTPServerError/contentLengthExceeded``; socket errors; ``TimeoutError``
    ///   after ``HTTPServer/Timeouts/sendInactivity``.
    ///
    /// `IORING_OP_SENDMSG` (epoll: `sendmsg(2)`).
    public func write(_ bytes: [UInt8]) async throws {
        guard case .streaming(let framing) = response else { throw HTTPServerError.responseNotStarted }
        if bytes.isEmpty { return }
        switch framing {
        case .none:
            return
        case .length(let total, let written):
            guard written + Int64(bytes.count) <= total else { throw HTTPServerError.contentLengthExceeded }
            response = .streaming(.length(total: total, written: written + Int64(bytes.count)))
            try await sendAfterOutput(bytes, trailer: nil)
        case .closeDelimited:
            try await sendAfterOutput(bytes, trailer: nil)
        case .chunked:
            ResponseBytes.appendHex(bytes.count, to: &output)
            output.append(contentsOf: ResponseBytes.crlf)
            try await sendAfterOutput(bytes, trailer: ResponseBytes.crlf)
        }
    }

    /// Ends a streamed response: the final chunk in chunked encoding; with a
    /// `Content-Length`, checks that it was met.
    /// - Throws: ``HTTPServerError/contentLengthMismatch``; socket errors.
    ///
    /// `IORING_OP_SEND` (epoll: `send(2)`).
    public func finishResponse() async throws {
        guard case .streaming(let framing) = response else { throw HTTPServerError.responseNotStarted }
        switch framing {
        case .length(let total, let written) where written != total:
            throw HTTPServerError.contentLengthMismatch
        case .chunked:
            // Coalesced with what follows: the batch's end sends it.
            output.append(contentsOf: ResponseBytes.lastChunk)
        case .closeDelimited:
            try await flush()
        case .length, .none:
            break
        }
        response = .complete
    }
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
