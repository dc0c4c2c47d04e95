// The code samples of the CogenHTTP DocC catalog (Sources/CogenHTTP/CogenHTTP.docc) and of
// the README's "HTTP server" section, copied here verbatim so that they keep compiling, and
// run against a real server. Change both places together.
import CogenHTTP
import CogenUring
import HTTPTypes
import Logging
import ServiceLifecycle
import Testing
import UnixSignals

// MARK: HandlingRequests.md, verbatim

func uppercase(_ exchange: HTTPExchange) async throws {
    let body = try await exchange.readBody()
    let shouted = body.map { $0 >= 0x61 && $0 <= 0x7A ? $0 - 0x20 : $0 }
    var fields = HTTPFields()
    fields[.contentType] = "text/plain"
    try await exchange.respond(HTTPResponse(status: .ok, headerFields: fields), body: shouted)
}

func countBytes(_ exchange: HTTPExchange) async throws {
    var total = 0
    while let piece = try await exchange.readBodyChunk(maxLength: 16384) {
        total += piece.count  // use the piece, then let it go: memory stays at one piece
    }
    try await exchange.respond(status: 200, contentType: "text/plain", body: Array("\(total) bytes\n".utf8))
}

func countdown(_ exchange: HTTPExchange) async throws {
    try await exchange.startResponse(HTTPResponse(status: .ok))  // chunked for 1.1
    for n in (1...3).reversed() {
        try await exchange.write(Array("\(n)\n".utf8))
    }
    try await exchange.finishResponse()
}

func download(_ exchange: HTTPExchange) async throws {
    let pieces = [[UInt8]](repeating: [UInt8](repeating: 0x2E, count: 1000), count: 4)
    try await exchange.startResponse(HTTPResponse(status: .ok), contentLength: 4000)
    for piece in pieces { try await exchange.write(piece) }
    try await exchange.finishResponse()
}

func echo(_ exchange: HTTPExchange) async throws {
    try await exchange.startResponse(HTTPResponse(status: .ok))
    while let piece = try await exchange.readBodyChunk() {
        try await exchange.write(piece)
    }
    try await exchange.finishResponse()
}

func makeRouter() -> Router {
    var router = Router()
    router.get("/users/:id") { exchange in
        let id = exchange.parameters["id"] ?? ""
        try await exchange.respond(status: 200, contentType: "text/plain", body: Array("user \(id)\n".utf8))
    }
    router.delete("/users/:id") { exchange in
        try await exchange.respond(HTTPResponse(status: .noContent))
    }
    router.post("/upload", countBytes)
    return router
}

struct OutOfStock: Error {}

func failsEarly(_ exchange: HTTPExchange) async throws {
    throw OutOfStock()  // the client gets 500
}

func failsLate(_ exchange: HTTPExchange) async throws {
    try await exchange.startResponse(HTTPResponse(status: .ok))
    try await exchange.write(Array("partial".utf8))
    throw OutOfStock()  // the connection closes; no final chunk
}

/// The samples that listen on port 8080 or install signal handlers: compiled, never run
/// (the tests run the same code on port 0).
enum CompiledOnlySamples {
    static func catalogOverview() throws {
        var router = Router()
        router.get("/hello/:name") { exchange in
            let name = exchange.parameters["name"] ?? "world"
            try await exchange.respond(HTTPResponse(status: .ok), body: Array("Hello, \(name)!\n".utf8))
        }
        let server = try HTTPServer(configuration: .init(address: .loopback(port: 8080)), responder: router)
        // ... serve until it is time to stop:
        server.shutdown(gracePeriod: .seconds(5))
    }

    static func wholeBodyServer() throws -> HTTPServer {
        let server = try HTTPServer(configuration: .init(address: .loopback(port: 8080)), handler: uppercase)
        return server
    }

    static func routerServer() throws -> HTTPServer {
        let server = try HTTPServer(configuration: .init(address: .loopback(port: 8080)), responder: makeRouter())
        return server
    }

    static func serviceGroup() async throws {
        let server = try HTTPServer(configuration: .init(address: .loopback(port: 8080)), responder: makeRouter())
        let group = ServiceGroup(
            configuration: .init(services: [server], gracefulShutdownSignals: [.sigterm], logger: Logger(label: "app")))
        try await group.run()
    }

    /// README, "HTTP server".
    static func readmeHelloWorld() async throws {
        var router = Router()
        router.get("/hello/:name") { exchange in
            let name = exchange.parameters["name"] ?? "world"
            try await exchange.respond(status: 200, contentType: "text/plain", body: Array("Hello, \(name)!\n".utf8))
        }
        let server = try HTTPServer(configuration: .init(address: .loopback(port: 8080)), responder: router)
        let group = ServiceGroup(
            configuration: .init(services: [server], gracefulShutdownSignals: [.sigterm], logger: Logger(label: "hello")))
        try await group.run()  // until SIGTERM: then idle connections close, requests in flight finish
    }
}

// MARK: The samples, run

/// A chunked request body of `count` bytes in pieces of `piece` bytes.
func chunkedBody(_ bytes: [UInt8], piece: Int) -> String {
    var text = ""
    var index = 0
    while index < bytes.count {
        let end = min(index + piece, bytes.count)
        text += String(end - index, radix: 16) + "\r\n" + String(decoding: bytes[index..<end], as: UTF8.self) + "\r\n"
        index = end
    }
    return text + "0\r\n\r\n"
}

@Suite("DocC samples against a real server")
struct DocExamplesTests {
    @Test(arguments: allBackends)
    func wholeBody(engine: Engine) async throws {
        try await withHTTPServer(engine, handler: uppercase) { server in
            let response = try await withClient(server) { client in
                try client.send("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\nhello world")
                return try client.readResponse()
            }
            #expect(response.status == 200)
            #expect(response.bodyText == "HELLO WORLD")
            #expect(response.field("Content-Type") == "text/plain")
            #expect(response.field("Content-Length") == "11")
        }
    }

    @Test(arguments: allBackends)
    func streamingRequestBody(engine: Engine) async throws {
        let body = [UInt8]((0..<100_000).map { UInt8(ascii: "a") + UInt8($0 % 26) })
        try await withHTTPServer(engine, handler: countBytes) { server in
            let (chunked, sized) = try await withClient(server) { client in
                try client.send("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" + chunkedBody(body, piece: 7000))
                let chunked = try client.readResponse()
                try client.send("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: \(body.count)\r\n\r\n")
                try client.send(body)
                return (chunked, try client.readResponse())
            }
            #expect(chunked.bodyText == "100000 bytes\n")
            #expect(sized.bodyText == "100000 bytes\n")
        }
    }

    @Test(arguments: allBackends)
    func streamingResponses(engine: Engine) async throws {
        try await withHTTPServer(engine, handler: countdown) { server in
            let modern = try await withClient(server) { client in
                try client.send(get("/"))
                return try client.readResponse()
            }
            #expect(modern.chunked)
            #expect(modern.bodyText == "3\n2\n1\n")
            let old = try await withClient(server) { client in
                try client.send("GET / HTTP/1.0\r\n\r\n")
                return try client.readResponse()
            }
            #expect(old.closeDelimited)
            #expect(old.bodyText == "3\n2\n1\n")
            #expect(old.closesConnection)
            #expect(old.field("Transfer-Encoding") == nil)
        }
        try await withHTTPServer(engine, handler: download) { server in
            let sized = try await withClient(server) { client in
                try client.send(get("/"))
                return try client.readResponse()
            }
            #expect(sized.field("Content-Length") == "4000")
            #expect(sized.field("Transfer-Encoding") == nil)
            #expect(sized.body.count == 4000 && sized.body.allSatisfy { $0 == 0x2E })
        }
    }

    @Test(arguments: allBackends)
    func streamingBothWays(engine: Engine) async throws {
        let body = [UInt8]((0..<60_000).map { UInt8(truncatingIfNeeded: $0 &* 31) })
        try await withHTTPServer(engine, handler: echo) { server in
            let response = try await withClient(server) { client in
                try client.send("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: \(body.count)\r\n\r\n")
                try client.send(body)
                return try client.readResponse()
            }
            #expect(response.chunked)
            let same = response.body == body
            #expect(same, "echoed \(response.body.count) bytes")
        }
    }

    @Test(arguments: allBackends)
    func routerTable(engine: Engine) async throws {
        try await withHTTPServer(engine, responder: makeRouter()) { server in
            let answers = try await withClient(server) { client -> [String] in
                var answers: [String] = []
                for (request, isHead) in [
                    (get("/users/7"), false),
                    ("HEAD /users/7 HTTP/1.1\r\nHost: t\r\n\r\n", true),
                    ("PUT /users/7 HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n", false),
                    ("OPTIONS /users/7 HTTP/1.1\r\nHost: t\r\n\r\n", false),
                    (get("/users/7/"), false),
                    (get("/users"), false),
                    ("POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc", false),
                ] {
                    try client.send(request)
                    let response = try client.readResponse(forHEAD: isHead)
                    answers.append(
                        "\(response.status) allow=\(response.field("Allow") ?? "-") "
                            + "length=\(response.field("Content-Length") ?? "-") \(response.bodyText)")
                }
                return answers
            }
            #expect(
                answers == [
                    "200 allow=- length=7 user 7\n",
                    "200 allow=- length=7 ",
                    "405 allow=GET, HEAD, DELETE, OPTIONS length=0 ",
                    "204 allow=GET, HEAD, DELETE, OPTIONS length=- ",
                    "404 allow=- length=0 ",
                    "404 allow=- length=0 ",
                    "200 allow=- length=8 3 bytes\n",
                ])
        }
    }

    @Test(arguments: allBackends)
    func handlerThrowingBeforeTheHeadGets500AndTheConnectionGoesOn(engine: Engine) async throws {
        var router = Router()
        router.get("/early", failsEarly)
        router.get("/fine") { try await $0.respond(status: 200, body: Array("fine".utf8)) }
        try await withHTTPServer(engine, responder: router) { server in
            let (early, fine) = try await withClient(server) { client in
                try client.send(get("/early"))
                let early = try client.readResponse()
                try client.send(get("/fine"))
                return (early, try client.readResponse())
            }
            #expect(early.status == 500)
            #expect(fine.status == 200 && fine.bodyText == "fine")
            #expect(server.statistics.handlerErrors == 1)
        }
    }

    @Test(arguments: allBackends)
    func handlerThrowingAfterTheHeadCutsTheConnection(engine: Engine) async throws {
        try await withHTTPServer(engine, handler: failsLate) { server in
            let (outcome, received) = try await withClient(server) { client -> (String, String) in
                try client.send(get("/"))
                let outcome: String
                do {
                    outcome = "complete: \(try client.readResponse())"
                } catch {
                    outcome = "truncated"
                }
                return (outcome, String(decoding: client.pending, as: UTF8.self))
            }
            #expect(outcome == "truncated")
            #expect(received.contains("partial"))
            #expect(!received.contains("\r\n0\r\n\r\n"))
        }
    }

    @Test(arguments: allBackends)
    func serviceGroupSample(engine: Engine) async throws {
        // The sample's group, stopped by `triggerGracefulShutdown()` instead of SIGTERM (a
        // signal handler would change this whole test process; ServiceTests has SIGTERM).
        try await withHTTPServer(engine, responder: makeRouter()) { server in
            let group = ServiceGroup(configuration: .init(services: [server], logger: Logger(label: "app")))
            async let running: Void = group.run()
            let response = try await withClient(server) { client in
                try client.send(get("/users/1"))
                return try client.readResponse()
            }
            #expect(response.bodyText == "user 1\n")
            await group.triggerGracefulShutdown()
            try await running
        }
    }

    @Test(arguments: allBackends)
    func readmeHelloWorld(engine: Engine) async throws {
        var router = Router()
        router.get("/hello/:name") { exchange in
            let name = exchange.parameters["name"] ?? "world"
            try await exchange.respond(status: 200, contentType: "text/plain", body: Array("Hello, \(name)!\n".utf8))
        }
        try await withHTTPServer(engine, responder: router) { server in
            let response = try await withClient(server) { client in
                try client.send(get("/hello/Swift"))
                return try client.readResponse()
            }
            #expect(response.bodyText == "Hello, Swift!\n")
        }
    }
}
