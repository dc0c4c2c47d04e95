@testable import CogenHTTP
import CogenUring
import Foundation
import Logging
import HTTPTypes
import Testing

/// The per-scheduler cache of rendered response heads: a response value seen before is
/// copied from the cache, and nothing a responder can do makes it send a stale head.
@Suite("Response head cache", .timeLimit(.minutes(2)))
struct ResponseHeadCacheTests {
    static let serverLine = Array("Server: cogen\r\n".utf8)

    static func text(_ head: borrowing RenderedHead) -> String { String(decoding: head.bytes, as: UTF8.self) }

    @Test func aStoredResponseIsRenderedOnceAndCopiesAreTheirOwn() {
        let cache = ResponseHeadCache(serverLine: Self.serverLine)
        let stored = HTTPResponse(status: .ok, headerFields: [.contentType: "text/plain"])
        let first = cache.withHead(for: stored) { Self.text($0) }
        #expect(first == "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nServer: cogen\r\n")
        #expect(cache.withHead(for: stored) { Self.text($0) } == first)
        // A changed copy has storage of its own: it is a different key.
        var changed = stored
        changed.headerFields[.contentType] = "application/json"
        #expect(cache.withHead(for: changed) { Self.text($0) }
            == "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nServer: cogen\r\n")
        var status = stored
        status.status = .notFound
        #expect(cache.withHead(for: status) { ($0.code, Self.text($0)) }
            == (404, "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nServer: cogen\r\n"))
        // The stored one is untouched by its copies' changes.
        #expect(cache.withHead(for: stored) { Self.text($0) } == first)
    }

    @Test func responsesBuiltPerRequestAreRenderedEachTime() {
        let cache = ResponseHeadCache(serverLine: Self.serverLine)
        // More shapes than the cache holds, each built anew: every one renders its own fields.
        for n in 0..<(3 * ResponseHeadCache.capacity) {
            let response = HTTPResponse(status: .ok, headerFields: [HTTPField.Name("X-N")!: "\(n)"])
            #expect(cache.withHead(for: response) { Self.text($0) }
                == "HTTP/1.1 200 OK\r\nX-N: \(n)\r\nServer: cogen\r\n")
        }
        for n in 0..<(3 * ResponseHeadCache.capacity) {
            let type = "text/x-\(n % (ResponseHeadCache.capacity + 3))"
            #expect(cache.withHead(code: 200 + n % 3, contentType: type) { Self.text($0) }
                == "HTTP/1.1 \(200 + n % 3) \(n % 3 == 0 ? "OK" : n % 3 == 1 ? "Created" : "")\r\nServer: cogen\r\nContent-Type: \(type)\r\n")
        }
    }

    @Test func fieldsTheServerOwnsAreLeftToIt() {
        let cache = ResponseHeadCache(serverLine: Self.serverLine)
        let response = HTTPResponse(status: .ok, headerFields: [
            .contentLength: "999", .transferEncoding: "chunked", .connection: "close",
            .date: "Sun, 06 Nov 1994 08:49:37 GMT", .server: "mine",
        ])
        let (text, hasDate, closes) = cache.withHead(for: response) { (Self.text($0), $0.hasDate, $0.closes) }
        #expect(text == "HTTP/1.1 200 OK\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\nServer: mine\r\n")
        #expect(hasDate && closes)
    }

    /// On a live connection: stored, changed and per-request responses interleaved, and a
    /// stored `Connection: close` response, each with its own fields, whatever came before.
    @Test(arguments: allBackends)
    func interleavedShapesOnOneConnection(engine: Engine) async throws {
        let plain = HTTPResponse(status: .ok, headerFields: [.contentType: "text/plain"])
        let closing = HTTPResponse(status: .ok, headerFields: [.connection: "close"])
        try await withHTTPServer(engine, handler: { exchange in
            let n = Int(exchange.path.dropFirst()) ?? 0
            switch n % 4 {
            case 0: try await exchange.respond(plain, body: Array("plain".utf8))
            case 1:
                var mine = plain
                mine.headerFields[HTTPField.Name("X-N")!] = "\(n)"
                try await exchange.respond(mine, body: Array("\(n)".utf8))
            case 2: try await exchange.respond(status: 201, contentType: "text/x-\(n)", body: [])
            default:
                try await exchange.respond(n == 23 ? closing : HTTPResponse(status: .accepted), body: [])
            }
        }) { server in
            let responses = try await withClient(server) { client in
                try client.send((0..<24).map { get("/\($0)") }.joined())
                return try (0..<24).map { _ in try client.readResponse() }
            }
            for (n, response) in responses.enumerated() {
                switch n % 4 {
                case 0:
                    #expect(response.status == 200 && response.bodyText == "plain")
                    #expect(response.field("Content-Type") == "text/plain" && response.field("X-N") == nil)
                case 1:
                    #expect(response.field("X-N") == "\(n)" && response.bodyText == "\(n)")
                    #expect(response.field("Content-Type") == "text/plain")
                case 2:
                    #expect(response.status == 201 && response.field("Content-Type") == "text/x-\(n)")
                default:
                    #expect(response.status == (n == 23 ? 200 : 202))
                    #expect(response.closesConnection == (n == 23))
                }
                #expect(response.allFields("Date").count == 1 && response.allFields("Server") == ["cogen"])
                #expect(response.field("Content-Length") != nil)
            }
        }
    }
}

@Suite("Exchange byte comparisons")
struct ExchangeComparisonTests {
    static func exchange(_ request: String) throws -> HTTPExchange {
        var parser = RequestHeadParser()
        let bytes = Array(request.utf8)
        let result = try bytes.withUnsafeBytes { try parser.parse($0) }
        guard case .complete(let head, _) = result else { throw ClientError(description: "incomplete head") }
        return HTTPExchange(head: head, logger: Logger(label: "comparisons"))
    }

    @Test func pathAndMethodAgainstLiteralsOfAnyLength() throws {
        let root = try Self.exchange("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        #expect(root.pathIs("/") && !root.pathIs("/x") && !root.pathIs("") && !root.pathIs("//"))
        #expect(root.methodIs("GET") && !root.methodIs("G") && !root.methodIs("GETS") && !root.methodIs("get"))
        let long = try Self.exchange("HEAD /plaintext?x=1 HTTP/1.1\r\nHost: a\r\n\r\n")
        #expect(long.pathIs("/plaintext?x=1") && !long.pathIs("/plaintext") && long.methodIs("HEAD"))
        #expect(long.isHeadRequest && !root.isHeadRequest)
        let connect = try Self.exchange("CONNECT a:1 HTTP/1.1\r\nHost: a:1\r\n\r\n")
        #expect(!connect.pathIs("/") && connect.methodIs("CONNECT"))
    }
}

/// The whole-response calls' synchronous first step (`beginWhole`, inlined into the
/// caller): what it refuses and what it answers instead, on a live connection.
@Suite("Whole responses", .timeLimit(.minutes(2)))
struct WholeResponseTests {
    /// A second response is refused (`responseAlreadyStarted`, thrown by the call) and
    /// leaves the first one intact; the connection goes on.
    @Test(arguments: allBackends)
    func aSecondResponseIsRefused(engine: Engine) async throws {
        let refused = PthreadLock(0)
        try await withHTTPServer(engine, handler: { exchange in
            let useStatus = exchange.pathIs("/status")
            if useStatus {
                try await exchange.respond(status: 200, contentType: "text/plain", body: Array("first".utf8))
            } else {
                try await exchange.respond(HTTPResponse(status: .ok), body: Array("first".utf8))
            }
            for second in 0..<2 {
                do {
                    if second == 0 {
                        try await exchange.respond(status: 500, body: Array("second".utf8))
                    } else {
                        try await exchange.respond(HTTPResponse(status: .badRequest), body: Array("second".utf8))
                    }
                } catch HTTPServerError.responseAlreadyStarted {
                    refused.withLock { $0 += 1 }
                }
            }
        }) { server in
            let responses = try await withClient(server) { client in
                try client.send(get("/status") + get("/value"))
                return try (0..<2).map { _ in try client.readResponse() }
            }
            for response in responses {
                #expect(response.status == 200 && response.bodyText == "first")
                #expect(!response.closesConnection)
            }
        }
        #expect(refused.withLock { $0 } == 4)
    }

    /// A status code outside 100...999 is logged and answered with 500; the call returns
    /// normally and the connection goes on.
    @Test(arguments: allBackends)
    func anInvalidStatusIsAnsweredWith500(engine: Engine) async throws {
        let entries = PthreadLock<[(Logger.Level, String)]>([])
        try await withHTTPServer(
            engine,
            configure: { $0.logger = Logger(label: "whole") { _ in CapturingLogHandler(entries: entries) } },
            handler: { exchange in
                try await exchange.respond(status: exchange.pathIs("/low") ? 99 : 1000, body: Array("never".utf8))
            }
        ) { server in
            let responses = try await withClient(server) { client in
                try client.send(get("/low") + get("/high"))
                return try (0..<2).map { _ in try client.readResponse() }
            }
            for response in responses {
                #expect(response.status == 500 && response.bodyText.isEmpty && !response.closesConnection)
            }
        }
        let logged = entries.withLock { $0 }.filter { $0.0 == .error && $0.1.contains("invalid status code") }
        #expect(logged.count == 2)
    }
}
