import CogenHTTP
@testable import CogenUring
import Foundation
import HTTPTypes
import Testing

// Support for the issue-13 checklist suites (ChecklistProtocolTests, ChecklistHostileTests,
// PersistenceTests, PipeliningTests, HandlerErrorTests): the engines they run on (each
// backend, plain and under issue 6's faults), one handler that every suite's requests are
// routed through, and a client that reports what it saw, so that every `#expect` runs in
// the test's own task.

/// An engine a checklist test runs on: a backend, and whether issue 6's fault injector is on
/// (see `probabilities`). Connection resets are made by the client (`resetOnClose`).
struct CheckEngine: Sendable, CustomTestStringConvertible {
    let engine: Engine
    let faults: Bool

    var testDescription: String { faults ? "\(engine.testDescription) + faults" : engine.testDescription }

    #if DEBUG
    /// The faults and their probabilities: issue 6's short transfers (and, on io_uring's
    /// modern paths, ended multishot streams and buffer droughts), plus the core's other
    /// kernel-side faults (an operation cancelled at submission, a cancel racing a completion;
    /// epoll: `EAGAIN`/`EINTR` without the call; io_uring: `io_uring_enter` failing).
    var probabilities: [Fault: Double] {
        guard faults else { return [:] }
        var probabilities: [Fault: Double] = [.shortTransfer: 0.3, .cancelledEarly: 0.1, .completionAfterCancel: 0.1]
        if engine.backend == .epoll {
            probabilities[.wouldBlock] = 0.2
            probabilities[.interrupted] = 0.2
        } else {
            probabilities[.enterFailure] = 0.1
        }
        if engine.backend == .ioUring && engine.modern {
            probabilities[.multishotEnd] = 0.2
            probabilities[.noBuffers] = 0.2
        }
        return probabilities
    }
    #endif

    func configure(_ configuration: inout Scheduler.Configuration) {
        #if DEBUG
        guard faults else { return }
        if engine.backend == .ioUring && engine.modern {
            // Few buffers, so that a drought (buffers withheld until a receive ends with
            // ENOBUFS) is reached within a test's traffic.
            configuration.receiveBufferCount = 16
            configuration.maxBuffersPerConnection = 4
        }
        configuration.faultInjection = FaultInjection(seed: checklistFaultSeed, probabilities: probabilities)
        #endif
    }
}

/// The fault injector's seed: `COGEN_CHECKLIST_SEED`, else a fixed one. (A seed fixes the
/// decisions, not which operation each falls on: see DESIGN.md, "Fault injection".)
let checklistFaultSeed: UInt64 =
    ProcessInfo.processInfo.environment["COGEN_CHECKLIST_SEED"].flatMap { UInt64($0) } ?? 0x13C0_FFEE

/// Every checklist test runs on these: io_uring, epoll and io_uring's 5.x paths (no multishot
/// accept, no provided buffers: the server's receive path differs there), then all three
/// again with faults.
let checklistEngines: [CheckEngine] = [false, true].flatMap { faults in
    (allBackends + [Engine(backend: .ioUring, modern: false)]).map { CheckEngine(engine: $0, faults: faults) }
}

/// `withHTTPServer` on a checklist engine, with the checklist handler unless one is given.
@discardableResult
func withChecklistServer<T: Sendable>(
    _ engine: CheckEngine,
    bound: Duration = .seconds(90),
    configure: (inout HTTPServer.Configuration) -> Void = { _ in },
    handler: @escaping @Sendable (HTTPExchange) async throws -> Void = makeChecklistHandler(),
    sourceLocation: SourceLocation = #_sourceLocation,
    _ body: (HTTPServer) async throws -> T
) async throws -> T {
    try await withHTTPServer(
        engine.engine, bound: bound,
        configure: {
            engine.configure(&$0.scheduler)
            configure(&$0)
        },
        sourceLocation: sourceLocation, handler: handler, body)
}

struct ChecklistHandlerError: Error {}

/// The paths the checklist handler was called with, in order.
final class RequestLog: Sendable {
    private let paths = PthreadLock<[String]>([])
    func record(_ path: String) { paths.withLock { $0.append(path) } }
    var all: [String] { paths.withLock { $0 } }
}

/// The body of `/fixed` (GET and HEAD).
let fixedBody = Array("fixed body 0123456789".utf8)

/// The one handler of the checklist, routed by path prefix:
/// - default: does not read the body; answers 200 `"<method> <path>"`;
/// - `/read…`: reads the whole body and answers it back (header `X-Request: <method> <path>`);
///   `/read-one`: reads one byte of it and answers that byte;
/// - `/fixed`: answers ``fixedBody``; `/authority…`: `"<authority> <path>"`;
/// - `/status/N`: answers status N with a body (that the server must drop for 204/304);
///   `/stream-status/N`: streams status N with no body;
/// - `/stream`: streams `hello world` in two writes without a length; `/stream-length`:
///   the same with `Content-Length: 11`; `/stream-big/N`: N bytes streamed without a length;
/// - `/stream-slow`: streams `first`, waits 1 s, streams `second`;
/// - `/big/N`: a whole response of N bytes; `/sleep/N`: answers after N ms;
/// - `/close`: answers with `Connection: close`; `/own-framing`: sets `Content-Length`,
///   `Transfer-Encoding`, `Server` and `Date` itself;
/// - `/throw-before`: throws; `/no-response`: returns without answering;
/// - `/throw-after-chunked`, `/throw-after-length`: throw after the head and part of the body;
/// - `/limit-after-head`: starts a streamed response, then reads the body (over the limit);
/// - CONNECT: 403 `"CONNECT <target>"`; OPTIONS: 200 `"OPTIONS <path>"`.
func makeChecklistHandler(log: RequestLog? = nil) -> @Sendable (HTTPExchange) async throws -> Void {
    { exchange in
        let path = exchange.path
        let method = exchange.request.method.rawValue
        log?.record(path)
        func answer(_ status: Int = 200, _ body: [UInt8], fields: HTTPFields = [:]) async throws {
            var response = HTTPResponse(status: .init(code: status))
            response.headerFields = fields
            try await exchange.respond(response, body: body)
        }
        func answer(_ text: String) async throws { try await answer(200, Array(text.utf8)) }
        func number(after prefix: String) -> Int { Int(path.dropFirst(prefix.count)) ?? 0 }

        if method == "CONNECT" {
            return try await answer(403, Array("CONNECT \(exchange.head.string(exchange.head.targetRange))".utf8))
        }
        if path == "/read-one" {
            // Reads one byte of the body and answers: the rest is drained by the server.
            let piece = try await exchange.readBodyChunk(maxLength: 1) ?? []
            return try await answer(200, piece)
        }
        if path.hasPrefix("/read") {
            let body = try await exchange.readBody()
            return try await answer(200, body, fields: [HTTPField.Name("X-Request")!: "\(method) \(path)"])
        }
        if path == "/fixed" { return try await answer(200, fixedBody) }
        if path.hasPrefix("/authority") {
            return try await answer("\(exchange.request.authority ?? "-") \(path)")
        }
        if path.hasPrefix("/status/") {
            return try await answer(number(after: "/status/"), Array("a body to drop".utf8))
        }
        if path.hasPrefix("/stream-status/") {
            try await exchange.startResponse(HTTPResponse(status: .init(code: number(after: "/stream-status/"))))
            return try await exchange.finishResponse()
        }
        if path == "/stream" || path == "/stream-length" {
            try await exchange.startResponse(
                HTTPResponse(status: .ok), contentLength: path == "/stream" ? nil : 11)
            try await exchange.write(Array("hello ".utf8))
            try await exchange.write(Array("world".utf8))
            return try await exchange.finishResponse()
        }
        if path.hasPrefix("/stream-big/") {
            try await exchange.startResponse(HTTPResponse(status: .ok))
            var left = number(after: "/stream-big/")
            while left > 0 {
                let piece = min(left, 4096)
                try await exchange.write([UInt8](repeating: UInt8(ascii: "s"), count: piece))
                left -= piece
            }
            return try await exchange.finishResponse()
        }
        if path == "/stream-slow" {
            // A piece, a pause (shaping: a response held back until the end would arrive
            // whole), then the rest.
            try await exchange.startResponse(HTTPResponse(status: .ok))
            try await exchange.write(Array("first".utf8))
            try await Scheduler.current?.sleep(for: .seconds(1))
            try await exchange.write(Array("second".utf8))
            return try await exchange.finishResponse()
        }
        if path.hasPrefix("/big/") {
            return try await answer(200, bigBody(number(after: "/big/")))
        }
        if path.hasPrefix("/sleep/") {
            try await Scheduler.current?.sleep(for: .milliseconds(number(after: "/sleep/")))
            return try await answer("\(method) \(path)")
        }
        if path == "/close" {
            return try await answer(200, Array("closing".utf8), fields: [.connection: "close"])
        }
        if path == "/own-framing" {
            // Framing and singleton fields the server owns, set by the handler anyway.
            return try await answer(
                200, Array("abc".utf8),
                fields: [
                    .contentLength: "999", .transferEncoding: "chunked", HTTPField.Name("Server")!: "handler",
                    HTTPField.Name("Date")!: "Thu, 01 Jan 1970 00:00:00 GMT",
                ])
        }
        if path == "/throw-before" { throw ChecklistHandlerError() }
        if path == "/no-response" { return }
        if path == "/throw-after-chunked" {
            try await exchange.startResponse(HTTPResponse(status: .ok))
            try await exchange.write(Array("partial".utf8))
            throw ChecklistHandlerError()
        }
        if path == "/throw-after-length" {
            try await exchange.startResponse(HTTPResponse(status: .ok), contentLength: 100)
            try await exchange.write(Array("0123456789".utf8))
            throw ChecklistHandlerError()
        }
        if path == "/limit-after-head" {
            try await exchange.startResponse(HTTPResponse(status: .ok))
            try await exchange.write(Array("partial".utf8))
            _ = try await exchange.readBody()
            try await exchange.write(Array("the limit was not hit".utf8))
            return try await exchange.finishResponse()
        }
        try await answer("\(method) \(path)")
    }
}

/// `count` bytes of a pattern that shows misplaced bytes (a prefix of one made once: debug
/// builds are slow at byte loops).
func bigBody(_ count: Int) -> [UInt8] {
    count <= bigPattern.count ? Array(bigPattern[..<count]) : (0..<count).map { UInt8(truncatingIfNeeded: $0 % 251) }
}
private let bigPattern: [UInt8] = (0..<(2 << 20)).map { UInt8(truncatingIfNeeded: $0 % 251) }

// MARK: The client's side

extension RawClient {
    /// Sends, ignoring a failure (the server may already have closed: its response is
    /// what the test looks at).
    func sendIgnoringErrors(_ bytes: [UInt8]) { _ = try? send(bytes) }
    func sendIgnoringErrors(_ text: String) { sendIgnoringErrors(Array(text.utf8)) }

    /// Sets the receive timeout.
    func setReceiveTimeout(_ timeout: Duration) {
        let (seconds, attoseconds) = timeout.components
        var tv = timeval(tv_sec: Int(seconds), tv_usec: Int(attoseconds / 1_000_000_000_000))
        setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    /// Whether bytes (or the end of stream) can be read within `milliseconds`.
    func isReadable(within milliseconds: Int32) -> Bool {
        if !pending.isEmpty || atEndOfStream { return true }
        var entry = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
        return poll(&entry, 1, milliseconds) > 0
    }

    /// Makes `close` (the deinit) reset the connection: `SO_LINGER` on with 0 s.
    func resetOnClose() {
        var option = linger(l_onoff: 1, l_linger: 0)
        setsockopt(descriptor, SOL_SOCKET, SO_LINGER, &option, socklen_t(MemoryLayout<linger>.size))
    }

    /// Sets the send timeout (a send to a server that neither reads nor closes fails).
    func setSendTimeout(_ timeout: Duration) {
        var tv = timeval(tv_sec: Int(timeout.components.seconds), tv_usec: 0)
        setsockopt(descriptor, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    /// How a connection's incoming side ended.
    enum Ending: Sendable, Equatable {
        /// A FIN: `recv` returned 0.
        case endOfStream
        /// A reset: `recv` failed with `ECONNRESET`.
        case reset
        /// Nothing within the receive timeout.
        case timeout
    }

    /// Reads (and drops) everything until the connection ends; says how it ended.
    func ending() -> Ending {
        pending = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = Glibc.recv(descriptor, &buffer, buffer.count, 0)
            if count > 0 { continue }
            if count == 0 { return .endOfStream }
            if errno == EINTR { continue }
            return errno == ECONNRESET ? .reset : .timeout
        }
    }

    /// Sends `bytes` one at a time, waiting up to `interval` for the server between two:
    /// returns as soon as the server sends something or closes (true), or false once all
    /// were sent and the server stayed silent for one more interval.
    func trickle(_ bytes: [UInt8], interval milliseconds: Int32) -> Bool {
        for byte in bytes {
            if isReadable(within: milliseconds) { return true }
            sendIgnoringErrors([byte])
        }
        return isReadable(within: milliseconds)
    }

    /// After a response: whether the server closed (end of stream within the receive
    /// timeout), and the bytes that came before the end (none expected).
    func closeStatus() -> (closed: Bool, extra: Int) {
        let closed = isClosedByPeer()
        let extra = pending.count
        pending = []
        return (closed, extra)
    }
}

/// What happens after a response, as a test expects it.
enum Afterwards: Sendable {
    /// The connection stays open: a second request (`GET /again`) is answered.
    case staysOpen
    /// The server closes the connection after the response.
    case closes
    /// Not looked at.
    case unchecked
}

/// What one request on a fresh connection got back.
struct Reply: Sendable, CustomStringConvertible {
    var response: TestResponse
    /// Responses before the final one (100 Continue).
    var interim: [TestResponse] = []
    /// `.closes`: the server closed the connection (end of stream, nothing more).
    var closed = false
    /// Bytes received after the response and before the end of stream.
    var extraBytes = 0
    /// `.staysOpen`: the answer to the second request.
    var followUp: TestResponse?

    var description: String {
        "\(response); interim \(interim.map(\.status)); closed \(closed); extra \(extraBytes); follow-up \(followUp.map { "\($0)" } ?? "-")"
    }
}

/// Sends `bytes` on a fresh connection, reads the response (skipping 1xx responses into
/// `interim`), then checks what `afterwards` says: that the server closes, or that it
/// answers a second request.
func sendRequest(
    _ bytes: [UInt8], to server: HTTPServer, head: Bool = false, afterwards: Afterwards,
    timeout: Duration = .seconds(5)
) async throws -> Reply {
    try await withClient(server, timeout: timeout) { client in
        client.sendIgnoringErrors(bytes)
        return try finish(client, head: head, afterwards: afterwards)
    }
}

func sendRequest(
    _ text: String, to server: HTTPServer, head: Bool = false, afterwards: Afterwards,
    timeout: Duration = .seconds(5)
) async throws -> Reply {
    try await sendRequest(Array(text.utf8), to: server, head: head, afterwards: afterwards, timeout: timeout)
}

/// Reads a final response (1xx ones go to `interim`) and checks `afterwards`.
func finish(_ client: RawClient, head: Bool = false, afterwards: Afterwards) throws -> Reply {
    var interim: [TestResponse] = []
    var response = try client.readResponse(forHEAD: head)
    while response.status / 100 == 1 && interim.count < 8 {
        interim.append(response)
        response = try client.readResponse(forHEAD: head)
    }
    var reply = Reply(response: response, interim: interim)
    switch afterwards {
    case .closes:
        (reply.closed, reply.extraBytes) = client.closeStatus()
    case .staysOpen:
        client.sendIgnoringErrors(get("/again"))
        reply.followUp = try? client.readResponse()
    case .unchecked:
        break
    }
    return reply
}

// MARK: Checks

/// Parses an IMF-fixdate (RFC 9110 §5.6.7), `Sun, 06 Nov 1994 08:49:37 GMT`, by hand (no
/// formatter shared between threads), the day name checked against the date.
func parseHTTPDate(_ text: String) -> Date? {
    let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
    let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
    let words = text.split(separator: " ", omittingEmptySubsequences: false).map(String.init)
    guard text.utf8.count == 29, words.count == 6, words[0].count == 4, words[0].hasSuffix(","),
        let weekday = days.firstIndex(of: String(words[0].dropLast())), words[1].count == 2,
        let day = Int32(words[1]), let month = months.firstIndex(of: words[2]), words[3].count == 4,
        let year = Int32(words[3]), words[5] == "GMT"
    else { return nil }
    let clock = words[4].split(separator: ":", omittingEmptySubsequences: false).map { Int32($0) }
    guard words[4].count == 8, clock.count == 3, let hour = clock[0], let minute = clock[1], let second = clock[2]
    else { return nil }
    var parts = tm()
    parts.tm_year = year - 1900
    parts.tm_mon = Int32(month)
    parts.tm_mday = day
    parts.tm_hour = hour
    parts.tm_min = minute
    parts.tm_sec = second
    let seconds = timegm(&parts)  // normalizes parts, weekday included
    guard parts.tm_wday == Int32(weekday), parts.tm_mday == day, hour < 24, minute < 60, second < 61 else { return nil }
    return Date(timeIntervalSince1970: TimeInterval(seconds))
}

/// Every response carries `Date` (an IMF-fixdate near now) and `Server` (RFC 9110 §6.6.1,
/// §10.2.4); 1xx, 204 and 304 carry no body, 1xx and 204 neither `Content-Length` nor
/// `Transfer-Encoding` (RFC 9110 §15.2, §15.3.5, §15.4.5, RFC 9112 §6.1).
func expectStandardFields(
    _ response: TestResponse, serverName: String = "cogen", sourceLocation: SourceLocation = #_sourceLocation
) {
    // 100 Continue and other 1xx: Date and Server are optional there (RFC 9110 §6.6.1 "MAY").
    if response.status / 100 != 1 {
        let date = response.field("Date")
        #expect(date != nil, "no Date in \(response.rawHead)", sourceLocation: sourceLocation)
        if let date {
            let parsed = parseHTTPDate(date)
            #expect(parsed != nil, "Date is not an IMF-fixdate: \(date)", sourceLocation: sourceLocation)
            if let parsed {
                // Loosely: this runs when the test checks, maybe long after the response came
                // (dateChangesEverySecond checks the age at arrival).
                let age = -parsed.timeIntervalSinceNow
                #expect(age > -2 && age < 120, "Date \(date) is \(age) s old", sourceLocation: sourceLocation)
            }
        }
        #expect(response.field("Server") == serverName, "Server: \(response.rawHead)", sourceLocation: sourceLocation)
    }
    #expect(response.allFields("Date").count <= 1 && response.allFields("Server").count <= 1, sourceLocation: sourceLocation)
    if response.status / 100 == 1 || response.status == 204 {
        #expect(response.field("Content-Length") == nil, "\(response.status) with Content-Length", sourceLocation: sourceLocation)
        #expect(response.field("Transfer-Encoding") == nil, "\(response.status) with Transfer-Encoding", sourceLocation: sourceLocation)
    }
}

/// An error response (RFC 9112 §9.6): `status`, the standard fields, `Connection: close`,
/// and the server closes the connection after it, with nothing more.
func expectErrorReply(
    _ reply: Reply, status: Int, _ comment: String = "", sourceLocation: SourceLocation = #_sourceLocation
) {
    #expect(reply.response.status == status, "\(comment): \(reply)", sourceLocation: sourceLocation)
    #expect(reply.interim.isEmpty, "\(comment): interim responses before the error", sourceLocation: sourceLocation)
    expectStandardFields(reply.response, sourceLocation: sourceLocation)
    #expect(reply.response.closesConnection, "\(comment): no Connection: close", sourceLocation: sourceLocation)
    #expect(reply.closed, "\(comment): the connection stayed open", sourceLocation: sourceLocation)
    #expect(reply.extraBytes == 0, "\(comment): bytes after the error response", sourceLocation: sourceLocation)
}

/// A response after which the connection stays open: the standard fields, no
/// `Connection: close`, and `GET /again` answered on the same connection.
func expectPersistent(_ reply: Reply, sourceLocation: SourceLocation = #_sourceLocation) {
    expectStandardFields(reply.response, sourceLocation: sourceLocation)
    #expect(!reply.response.closesConnection, "Connection: close on a persistent connection", sourceLocation: sourceLocation)
    #expect(reply.followUp?.status == 200, "second request not answered: \(reply)", sourceLocation: sourceLocation)
    #expect(reply.followUp?.bodyText == "GET /again", "second request: \(reply)", sourceLocation: sourceLocation)
}

/// Each request of `requests` on its own connection gets `status`, `Connection: close`,
/// the standard fields, and a closed connection.
func expectAllRejected(
    _ requests: [[UInt8]], status: Int, by server: HTTPServer, sourceLocation: SourceLocation = #_sourceLocation
) async throws {
    for request in requests {
        let reply = try await sendRequest(request, to: server, afterwards: .closes)
        let shown = String(decoding: request.prefix(120), as: UTF8.self).debugDescription
        expectErrorReply(reply, status: status, shown, sourceLocation: sourceLocation)
    }
}

func expectAllRejected(
    _ requests: [String], status: Int, by server: HTTPServer, sourceLocation: SourceLocation = #_sourceLocation
) async throws {
    try await expectAllRejected(requests.map { Array($0.utf8) }, status: status, by: server, sourceLocation: sourceLocation)
}

// MARK: Requests

/// A POST with a `Content-Length` body.
func post(_ path: String, _ body: String, _ extra: String = "", version: String = "1.1") -> String {
    "POST \(path) HTTP/\(version)\r\nHost: test\r\nContent-Length: \(body.utf8.count)\r\n\(extra)\r\n\(body)"
}

/// A POST head announcing a chunked body (the chunks follow).
func chunkedPost(_ path: String, _ extra: String = "") -> String {
    "POST \(path) HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\(extra)\r\n"
}
