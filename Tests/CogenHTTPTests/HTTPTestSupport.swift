import CogenHTTP
import CogenUring
import Foundation
import HTTPTypes
import PropertyTestSupport
import Testing

/// An engine an HTTP test runs on: a backend, with the kernel's newer paths on, or off
/// (the 5.x paths on this kernel).
struct Engine: Sendable, CustomTestStringConvertible {
    let backend: Backend
    let modern: Bool

    func configure(_ configuration: inout Scheduler.Configuration) {
        configuration.backend = backend
        if !modern {
            configuration.useMultishotAccept = false
            configuration.useProvidedBuffers = false
        }
    }

    var testDescription: String {
        backend == .epoll ? "epoll" : modern ? "\(backend)" : "\(backend), 5.x paths"
    }
}

/// The engines every HTTP test runs on.
let allBackends: [Engine] = [
    Engine(backend: .ioUring, modern: true),
    Engine(backend: .epoll, modern: false),
]

/// Runs a blocking call on a thread of its own and awaits its result (the cooperative pool
/// has two threads here; a blocked one starves the other tests). The result goes through a
/// pthread lock, which ThreadSanitizer sees.
func offThePool<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
    let result = PthreadLock<T?>(nil)
    await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
        let thread = Thread {
            let value = body()
            result.withLock { $0 = value }
            done.resume()
        }
        thread.stackSize = 8 << 20
        thread.start()
    }
    return result.withLock { $0 }!  // always set before the resume
}

struct ServerWatchdogExpired: Error, CustomStringConvertible {
    let bound: Duration
    var description: String { "watchdog: the test was still running after \(bound); the server was shut down" }
}

/// Starts an `HTTPServer` on 127.0.0.1 port 0 (one thread unless configured), runs `body`
/// with it, and shuts it down (off the pool). A watchdog shuts the server down after
/// `bound` and fails the test: blocked clients then see their connections closed.
@discardableResult
func withHTTPServer<T: Sendable>(
    _ engine: Engine,
    bound: Duration = .seconds(60),
    gracePeriod: Duration = .seconds(1),
    configure: (inout HTTPServer.Configuration) -> Void = { _ in },
    responder: some HTTPResponder,
    sourceLocation: SourceLocation = #_sourceLocation,
    _ body: (HTTPServer) async throws -> T
) async throws -> T {
    var configuration = HTTPServer.Configuration(address: .loopback())
    configuration.threads = 1
    engine.configure(&configuration.scheduler)
    configure(&configuration)
    let server = try HTTPServer(configuration: configuration, responder: responder)
    let finished = PthreadLock(false)
    let expired = PthreadLock(false)
    let watchdog = DispatchWorkItem {
        if !finished.withLock({ $0 }) {
            expired.withLock { $0 = true }
            server.shutdown(gracePeriod: .zero)
        }
    }
    DispatchQueue.global().asyncAfter(
        deadline: .now() + .milliseconds(Int(bound.components.seconds * 1000)), execute: watchdog)
    let result: Result<T, any Error>
    do { result = .success(try await body(server)) } catch { result = .failure(error) }
    finished.withLock { $0 = true }
    watchdog.cancel()
    if !expired.withLock({ $0 }) {
        _ = await offThePool { server.shutdown(gracePeriod: gracePeriod) }
    } else {
        Issue.record(ServerWatchdogExpired(bound: bound), sourceLocation: sourceLocation)
    }
    return try result.get()
}

/// `withHTTPServer` with a closure as the responder.
@discardableResult
func withHTTPServer<T: Sendable>(
    _ engine: Engine,
    bound: Duration = .seconds(60),
    gracePeriod: Duration = .seconds(1),
    configure: (inout HTTPServer.Configuration) -> Void = { _ in },
    sourceLocation: SourceLocation = #_sourceLocation,
    handler: @escaping @Sendable (HTTPExchange) async throws -> Void,
    _ body: (HTTPServer) async throws -> T
) async throws -> T {
    try await withHTTPServer(
        engine, bound: bound, gracePeriod: gracePeriod, configure: configure, responder: ClosureResponder(handler),
        sourceLocation: sourceLocation, body)
}

struct ClientError: Error, CustomStringConvertible {
    let description: String
}

/// A blocking TCP (or Unix) client for tests: plain POSIX calls with a receive timeout, to
/// be used off the cooperative pool (`offThePool`, or inside `RawClient.session`).
final class RawClient: @unchecked Sendable {
    // @unchecked: used by one thread at a time.
    let descriptor: Int32
    /// Bytes received and not yet taken by a `readResponse`.
    var pending: [UInt8] = []
    var atEndOfStream = false

    /// Connects to `address` with `SO_RCVTIMEO` = `timeout`.
    init(connectingTo address: SocketAddress, timeout: Duration = .seconds(10)) throws {
        let port = address.port
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw ClientError(description: "socket: errno \(errno)") }
        descriptor = fd
        var tv = timeval(tv_sec: Int(timeout.components.seconds), tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        let status = connectToLoopback(fd, port: port)
        guard status == 0 else {
            // No close here: every stored property is set, so `deinit` runs on this throw
            // and closes the descriptor (a second close could hit another test's new one).
            throw ClientError(description: "connect: errno \(errno)")
        }
    }

    deinit { Glibc.close(descriptor) }

    /// Sends all of `bytes` (`MSG_NOSIGNAL`).
    func send(_ bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            let sent = bytes[offset...].withUnsafeBytes {
                Glibc.send(descriptor, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL))
            }
            if sent < 0 {
                if errno == EINTR { continue }
                throw ClientError(description: "send: errno \(errno)")
            }
            offset += sent
        }
    }

    func send(_ text: String) throws { try send(Array(text.utf8)) }

    /// Half-closes the sending side.
    func shutdownWrite() { Glibc.shutdown(descriptor, Int32(SHUT_WR)) }

    /// Receives once into `pending`; false at end of stream (or reset). Throws on timeout.
    @discardableResult
    func receiveMore() throws -> Bool {
        if atEndOfStream { return false }
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = Glibc.recv(descriptor, &buffer, buffer.count, 0)
            if count > 0 {
                pending += buffer[..<count]
                return true
            }
            if count == 0 || errno == ECONNRESET {
                atEndOfStream = true
                return false
            }
            if errno == EINTR { continue }
            throw ClientError(description: "recv: errno \(errno) (EAGAIN: timed out)")
        }
    }

    /// Reads until end of stream; returns everything received (pending included).
    func readToEnd() throws -> [UInt8] {
        while try receiveMore() {}
        defer { pending = [] }
        return pending
    }

    /// Whether the server closed the connection: end of stream (or reset) within the
    /// receive timeout, after any bytes still pending.
    func isClosedByPeer() -> Bool {
        while true {
            do { if !(try receiveMore()) { return true } } catch { return false }
        }
    }

    /// Reads one response. `head` : the request was HEAD (no body whatever the fields say).
    func readResponse(forHEAD head: Bool = false) throws -> TestResponse {
        while true {
            if let (response, used) = try TestResponse.parse(pending, forHEAD: head, atEnd: atEndOfStream) {
                pending.removeFirst(used)
                return response
            }
            if !(try receiveMore()) {
                if let (response, used) = try TestResponse.parse(pending, forHEAD: head, atEnd: true) {
                    pending.removeFirst(used)
                    return response
                }
                throw ClientError(
                    description: "end of stream before a whole response; had \(pending.count) bytes: "
                        + String(decoding: pending.prefix(200), as: UTF8.self))
            }
        }
    }
}

/// A response as a test client read it.
struct TestResponse: Sendable, CustomStringConvertible {
    var status: Int
    var version: String
    /// Field lines as received (names keep their case).
    var fields: [(name: String, value: String)]
    var body: [UInt8]
    /// The body was chunked and ended with its final chunk.
    var chunked = false
    /// The body was delimited by the end of the stream.
    var closeDelimited = false
    /// The raw head.
    var rawHead: String

    func field(_ name: String) -> String? {
        fields.first { $0.name.lowercased() == name.lowercased() }?.value
    }
    func allFields(_ name: String) -> [String] {
        fields.filter { $0.name.lowercased() == name.lowercased() }.map(\.value)
    }
    var bodyText: String { String(decoding: body, as: UTF8.self) }
    var closesConnection: Bool { field("Connection")?.lowercased().contains("close") ?? false }
    var description: String { "\(status) \(fields.map { "\($0.name): \($0.value)" }) body \(body.count) bytes" }

    /// Parses one response from the front of `bytes`; nil when more bytes are needed.
    static func parse(_ bytes: [UInt8], forHEAD head: Bool, atEnd: Bool) throws -> (TestResponse, Int)? {
        guard let headEnd = find(bytes, Array("\r\n\r\n".utf8), from: 0) else { return nil }
        let headText = String(decoding: bytes[..<headEnd], as: UTF8.self)
        var lines = headText.components(separatedBy: "\r\n")
        let statusLine = lines.removeFirst()
        let parts = statusLine.split(separator: " ", maxSplits: 2)
        guard parts.count >= 2, let status = Int(parts[1]) else {
            throw ClientError(description: "bad status line: \(statusLine)")
        }
        var fields: [(String, String)] = []
        for line in lines {
            guard let colon = line.firstIndex(of: ":") else { throw ClientError(description: "bad field line: \(line)") }
            fields.append((String(line[..<colon]), line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)))
        }
        var response = TestResponse(
            status: status, version: String(parts[0]), fields: fields, body: [], rawHead: headText)
        let bodyStart = headEnd + 4
        if head || status / 100 == 1 || status == 204 || status == 304 {
            return (response, bodyStart)
        }
        if response.field("Transfer-Encoding")?.lowercased().contains("chunked") == true {
            var index = bodyStart
            var body: [UInt8] = []
            while true {
                guard let lineEnd = find(bytes, [13, 10], from: index) else { return nil }
                let sizeText = String(decoding: bytes[index..<lineEnd], as: UTF8.self)
                    .split(separator: ";").first.map(String.init) ?? ""
                guard let size = Int(sizeText.trimmingCharacters(in: .whitespaces), radix: 16) else {
                    throw ClientError(description: "bad chunk size line: \(sizeText)")
                }
                index = lineEnd + 2
                if size == 0 {
                    // Trailers, then the final CRLF.
                    while true {
                        guard let end = find(bytes, [13, 10], from: index) else { return nil }
                        let empty = end == index
                        index = end + 2
                        if empty { break }
                    }
                    response.body = body
                    response.chunked = true
                    return (response, index)
                }
                guard bytes.count >= index + size + 2 else { return nil }
                body += bytes[index..<(index + size)]
                index += size + 2
            }
        }
        if let length = response.field("Content-Length").flatMap({ Int($0) }) {
            guard bytes.count >= bodyStart + length else { return nil }
            response.body = Array(bytes[bodyStart..<(bodyStart + length)])
            return (response, bodyStart + length)
        }
        // Close-delimited.
        guard atEnd else { return nil }
        response.body = Array(bytes[bodyStart...])
        response.closeDelimited = true
        return (response, bytes.count)
    }

    static func find(_ haystack: [UInt8], _ needle: [UInt8], from start: Int) -> Int? {
        guard haystack.count >= needle.count, start <= haystack.count - needle.count else { return nil }
        var i = start
        while i <= haystack.count - needle.count {
            if haystack[i] == needle[0] && Array(haystack[i..<(i + needle.count)]) == needle { return i }
            i += 1
        }
        return nil
    }
}

/// Opens a client to `server`, runs `body` with it off the cooperative pool, and returns
/// what it returns.
func withClient<T: Sendable>(
    _ server: HTTPServer, timeout: Duration = .seconds(10), _ body: @escaping @Sendable (RawClient) throws -> T
) async throws -> T {
    let address = server.address
    return try await offThePool { () -> Result<T, any Error> in
        Result { try body(try RawClient(connectingTo: address, timeout: timeout)) }
    }.get()
}

/// A GET request with `Host`.
func get(_ path: String, _ extra: String = "") -> String {
    "GET \(path) HTTP/1.1\r\nHost: test\r\n\(extra)\r\n"
}
