import CogenHTTP
import CogenUring
import Foundation
import HTTPTypes
import Testing

/// The server's core paths, on every engine: keep-alive, pipelining coalesced into one
/// send, request bodies (Content-Length, chunked), streamed responses, errors, HEAD,
/// deadlines. The exhaustive RFC checklist lives in its own suites.
@Suite("Server core", .timeLimit(.minutes(2)))
struct ServerCoreTests {
    static let hello: [UInt8] = Array("Hello, World!".utf8)

    @Test("GET on a kept-alive connection, with Date and Server", arguments: allBackends)
    func keepAliveGet(engine: Engine) async throws {
        try await withHTTPServer(engine, handler: { exchange in
            try await exchange.respond(status: 200, contentType: "text/plain", body: Self.hello)
        }) { server in
            let responses = try await withClient(server) { client in
                var responses: [TestResponse] = []
                for _ in 0..<3 {
                    try client.send(get("/plaintext"))
                    responses.append(try client.readResponse())
                }
                return responses
            }
            for response in responses {
                #expect(response.status == 200)
                #expect(response.bodyText == "Hello, World!")
                #expect(response.field("Content-Length") == "13")
                #expect(response.field("Content-Type") == "text/plain")
                #expect(response.field("Server") == "cogen")
                #expect(response.field("Date")?.hasSuffix(" GMT") == true)
                #expect(!response.closesConnection)
            }
            #expect(server.statistics.requests == 3)
            #expect(server.statistics.responsesByClass[1] == 3)
        }
    }

    @Test("16 pipelined requests in one packet: answered in order, in one send", arguments: allBackends)
    func pipelined(engine: Engine) async throws {
        try await withHTTPServer(engine, handler: { exchange in
            var fields = HTTPFields()
            fields[.contentType] = "text/plain"
            try await exchange.respond(HTTPResponse(status: .ok, headerFields: fields), body: Array(exchange.path.utf8))
        }) { server in
            let (responses, firstReceive) = try await withClient(server) { client in
                try client.send((0..<16).map { get("/\($0)") }.joined())
                try client.receiveMore()
                let first = client.pending.count
                var responses: [TestResponse] = []
                for _ in 0..<16 { responses.append(try client.readResponse()) }
                return (responses, first)
            }
            #expect(responses.map(\.bodyText) == (0..<16).map { "/\($0)" })
            // One send for the batch: the first receive holds every response (they are
            // small; loopback delivers one send as one segment).
            let total = responses.reduce(0) { $0 + $1.rawHead.utf8.count + 4 + $1.body.count }
            #expect(firstReceive == total)
        }
    }

    @Test("POST with a Content-Length body and a chunked body", arguments: allBackends)
    func requestBodies(engine: Engine) async throws {
        try await withHTTPServer(engine, handler: { exchange in
            let body = try await exchange.readBody()
            try await exchange.respond(status: 200, body: Array("got \(body.count): ".utf8) + body)
        }) { server in
            let (fixed, chunked, after) = try await withClient(server) { client in
                try client.send("POST /a HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello")
                let fixed = try client.readResponse()
                try client.send(
                    "POST /b HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                        + "3;ext=1\r\nabc\r\n4\r\ndefg\r\n0\r\nTrailer: x\r\n\r\n")
                let chunked = try client.readResponse()
                try client.send(get("/c"))
                return (fixed, chunked, try client.readResponse())
            }
            #expect(fixed.bodyText == "got 5: hello")
            #expect(chunked.bodyText == "got 7: abcdefg")
            #expect(after.bodyText == "got 0: ")
        }
    }

    @Test("An unread body is drained before the next request", arguments: allBackends)
    func unreadBodyDrained(engine: Engine) async throws {
        try await withHTTPServer(engine, handler: { exchange in
            try await exchange.respond(status: 200, body: Array(exchange.path.utf8))
        }) { server in
            let bodies = try await withClient(server) { client in
                try client.send("POST /a HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello" + get("/b"))
                return [try client.readResponse().bodyText, try client.readResponse().bodyText]
            }
            #expect(bodies == ["/a", "/b"])
        }
    }

    @Test("Streamed responses: chunked, Content-Length, HTTP/1.0 close-delimited", arguments: allBackends)
    func streaming(engine: Engine) async throws {
        try await withHTTPServer(engine, handler: { exchange in
            let length: Int64? = exchange.path == "/length" ? 10 : nil
            try await exchange.startResponse(HTTPResponse(status: .ok), contentLength: length)
            try await exchange.write(Array("01234".utf8))
            try await exchange.write(Array("56789".utf8))
            try await exchange.finishResponse()
        }) { server in
            let (chunked, fixed) = try await withClient(server) { client in
                try client.send(get("/chunked"))
                let chunked = try client.readResponse()
                try client.send(get("/length"))
                return (chunked, try client.readResponse())
            }
            #expect(chunked.chunked && chunked.bodyText == "0123456789")
            #expect(fixed.field("Content-Length") == "10" && fixed.bodyText == "0123456789")
            let old = try await withClient(server) { client in
                try client.send("GET /old HTTP/1.0\r\n\r\n")
                return try client.readResponse()
            }
            #expect(old.closeDelimited && old.bodyText == "0123456789")
            #expect(old.closesConnection)
            #expect(old.field("Transfer-Encoding") == nil)
        }
    }

    @Test("A throwing responder: 500 before the head, a cut connection after", arguments: allBackends)
    func handlerErrors(engine: Engine) async throws {
        struct Failure: Error {}
        try await withHTTPServer(engine, handler: { exchange in
            if exchange.path == "/late" {
                try await exchange.startResponse(HTTPResponse(status: .ok))
                try await exchange.write(Array("partial".utf8))
            }
            if exchange.path != "/fine" { throw Failure() }
            try await exchange.respond(status: 200, body: [])
        }) { server in
            let (early, fine) = try await withClient(server) { client in
                try client.send(get("/early"))
                let early = try client.readResponse()
                try client.send(get("/fine"))
                return (early, try client.readResponse())
            }
            #expect(early.status == 500)
            #expect(fine.status == 200)
            let late = try await withClient(server) { client in
                try client.send(get("/late"))
                return try client.readToEnd()
            }
            let text = String(decoding: late, as: UTF8.self)
            #expect(text.contains("partial") && !text.hasSuffix("0\r\n\r\n"))
        }
    }

    @Test("HEAD: the headers, no body", arguments: allBackends)
    func head(engine: Engine) async throws {
        try await withHTTPServer(engine, handler: { exchange in
            try await exchange.respond(status: 200, body: Self.hello)
        }) { server in
            let (head, next) = try await withClient(server) { client in
                try client.send("HEAD / HTTP/1.1\r\nHost: t\r\n\r\n" + get("/"))
                return (try client.readResponse(forHEAD: true), try client.readResponse())
            }
            #expect(head.field("Content-Length") == "13" && head.body.isEmpty)
            #expect(next.bodyText == "Hello, World!")
        }
    }

    @Test("A head not complete within its deadline gets 408, then the close", arguments: allBackends)
    func headDeadline(engine: Engine) async throws {
        try await withHTTPServer(engine, configure: { $0.timeouts.requestHead = .milliseconds(500) }, handler: { exchange in
            try await exchange.respond(status: 200, body: [])
        }) { server in
            let (response, closed) = try await withClient(server) { client in
                try client.send("GET / HTTP/1.1\r\nHo")
                let response = try client.readResponse()
                return (response, client.isClosedByPeer())
            }
            #expect(response.status == 408 && response.closesConnection)
            #expect(closed)
            #expect(server.statistics.headTimeouts == 1)
        }
    }

    @Test("An idle connection is closed silently after the idle timeout", arguments: allBackends)
    func idleClose(engine: Engine) async throws {
        try await withHTTPServer(engine, configure: { $0.timeouts.idle = .milliseconds(300) }, handler: { exchange in
            try await exchange.respond(status: 200, body: [])
        }) { server in
            let bytes = try await withClient(server) { client in
                try client.send(get("/"))
                _ = try client.readResponse()
                return try client.readToEnd()
            }
            #expect(bytes.isEmpty)
            #expect(server.statistics.idleTimeouts == 1)
        }
    }

    @Test("Expect: 100-continue: 100 when the responder reads the body, then the response", arguments: allBackends)
    func expectContinue(engine: Engine) async throws {
        try await withHTTPServer(engine, handler: { exchange in
            let body = try await exchange.readBody()
            try await exchange.respond(status: 200, body: body)
        }) { server in
            let (interim, final) = try await withClient(server) { client in
                try client.send("POST / HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
                let interim = try client.readResponse()
                try client.send("ping")
                return (interim, try client.readResponse())
            }
            #expect(interim.status == 100)
            #expect(final.status == 200 && final.bodyText == "ping" && !final.closesConnection)
        }
    }

    @Test("A chunked body over the limit gets 413 and the close", arguments: allBackends)
    func chunkedBodyTooLarge(engine: Engine) async throws {
        try await withHTTPServer(engine, configure: { $0.limits.maxBodySize = 8 }, handler: { exchange in
            let body = try await exchange.readBody()
            try await exchange.respond(status: 200, body: body)
        }) { server in
            let (response, closed) = try await withClient(server) { client in
                try client.send("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n")
                let response = try client.readResponse()
                return (response, client.isClosedByPeer())
            }
            #expect(response.status == 413 && response.closesConnection)
            #expect(closed)
        }
    }

    @Test("Graceful shutdown closes an idle connection at once", arguments: allBackends)
    func shutdownIdle(engine: Engine) async throws {
        var configuration = HTTPServer.Configuration(address: .loopback())
        configuration.threads = 1
        engine.configure(&configuration.scheduler)
        let server = try HTTPServer(configuration: configuration) { exchange in
            try await exchange.respond(status: 200, body: [])
        }
        let address = server.address
        let client = try await offThePool { () -> Result<RawClient, any Error> in
            Result {
                let client = try RawClient(connectingTo: address)
                try client.send(get("/"))
                _ = try client.readResponse()
                return client
            }
        }.get()
        let report = await server.gracefulShutdown(gracePeriod: .seconds(5))
        #expect(report.closedWhileIdle == 1 && report.cut == 0)
        #expect(report.statistics.requests == 1)
        let closed = await offThePool { client.isClosedByPeer() }
        #expect(closed)
    }
}
