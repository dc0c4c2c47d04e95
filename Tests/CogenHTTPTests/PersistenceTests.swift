import CogenHTTP
import Foundation
import HTTPTypes
import Testing

/// RFC 9112 §9.3 (persistence) for HTTP/1.0 and 1.1, one test per rule, end to end on both
/// engines, plain and under faults.
@Suite("Checklist: persistence (RFC 9112 §9.3)")
struct PersistenceTests {
    @Test("RFC 9112 §9.3: HTTP/1.1 is persistent by default", arguments: checklistEngines)
    func http11PersistsByDefault(engine: CheckEngine) async throws {
        try await withChecklistServer(engine) { server in
            let reply = try await sendRequest(get("/first"), to: server, afterwards: .staysOpen)
            #expect(reply.response.status == 200 && reply.response.bodyText == "GET /first")
            expectPersistent(reply)
            // Many requests, one connection.
            let statuses = try await withClient(server, timeout: .seconds(5)) { client in
                try (0..<20).map { index -> Int in
                    try client.send(get("/n\(index)"))
                    let response = try client.readResponse()
                    return response.bodyText == "GET /n\(index)" ? response.status : -1
                }
            }
            #expect(statuses == Array(repeating: 200, count: 20))
        }
    }

    @Test("RFC 9112 §9.3: HTTP/1.1 with Connection: close closes after the response", arguments: checklistEngines)
    func http11ConnectionCloseCloses(engine: CheckEngine) async throws {
        try await withChecklistServer(engine) { server in
            for option in ["close", "Close", "CLOSE", "keep-alive, close", "foo , close", "close, foo"] {
                let reply = try await sendRequest(get("/bye", "Connection: \(option)\r\n"), to: server, afterwards: .closes)
                #expect(reply.response.status == 200 && reply.response.bodyText == "GET /bye", "\(option)")
                expectStandardFields(reply.response)
                #expect(reply.response.closesConnection, "Connection: \(option): no Connection: close in the response")
                #expect(reply.closed && reply.extraBytes == 0, "Connection: \(option): \(reply)")
            }
            // Not the close option: a token that only contains it.
            let reply = try await sendRequest(get("/stay", "Connection: closed, x-close\r\n"), to: server, afterwards: .staysOpen)
            expectPersistent(reply)
        }
    }

    @Test("RFC 9112 §9.3: HTTP/1.0 closes after the response by default", arguments: checklistEngines)
    func http10ClosesByDefault(engine: CheckEngine) async throws {
        try await withChecklistServer(engine) { server in
            for request in ["GET /old HTTP/1.0\r\n\r\n", "GET /old HTTP/1.0\r\nHost: test\r\n\r\n", post("/read", "abc", version: "1.0")] {
                let reply = try await sendRequest(request, to: server, afterwards: .closes)
                #expect(reply.response.status == 200, "\(request.debugDescription): \(reply)")
                expectStandardFields(reply.response)
                #expect(reply.response.field("Transfer-Encoding") == nil)
                #expect(reply.closed && reply.extraBytes == 0, "\(request.debugDescription): \(reply)")
            }
        }
    }

    @Test("RFC 9112 §9.3: HTTP/1.0 with Connection: keep-alive persists, and says so", arguments: checklistEngines)
    func http10KeepAlivePersists(engine: CheckEngine) async throws {
        try await withChecklistServer(engine) { server in
            let responses = try await withClient(server, timeout: .seconds(5)) { client in
                try (0..<3).map { index -> TestResponse in
                    try client.send("GET /k\(index) HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
                    return try client.readResponse()
                }
            }
            for (index, response) in responses.enumerated() {
                #expect(response.status == 200 && response.bodyText == "GET /k\(index)")
                expectStandardFields(response)
                #expect(response.field("Transfer-Encoding") == nil)
                // A 1.0 client assumes a close unless the response keeps the connection alive.
                #expect(response.field("Connection")?.lowercased() == "keep-alive", "\(response.rawHead)")
                #expect(response.field("Content-Length") != nil, "a persistent 1.0 response needs a length")
            }
            // The last request without keep-alive ends it.
            let last = try await withClient(server, timeout: .seconds(5)) { client in
                try client.send("GET /k HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
                _ = try client.readResponse()
                try client.send("GET /end HTTP/1.0\r\n\r\n")
                return try finish(client, afterwards: .closes)
            }
            #expect(last.response.bodyText == "GET /end")
            #expect(last.closed)
        }
    }

    @Test("RFC 9112 §9.3: HTTP/1.0 keep-alive ends with a close-delimited response", arguments: checklistEngines)
    func http10KeepAliveEndsWithCloseDelimitedResponse(engine: CheckEngine) async throws {
        try await withChecklistServer(engine) { server in
            let reply = try await sendRequest(
                "GET /stream HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", to: server, afterwards: .closes)
            #expect(reply.response.field("Transfer-Encoding") == nil)
            #expect(reply.response.closesConnection)
            #expect(reply.response.bodyText == "hello world")
            #expect(reply.closed)
            // With a length given, the connection persists.
            let length = try await withClient(server, timeout: .seconds(5)) { client in
                try client.send("GET /stream-length HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
                let first = try client.readResponse()
                try client.send("GET /after HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
                return (first, try client.readResponse())
            }
            #expect(length.0.field("Content-Length") == "11" && length.0.bodyText == "hello world")
            #expect(length.1.bodyText == "GET /after")
        }
    }

    @Test("RFC 9112 §9.3: a response with Connection: close from the handler closes", arguments: checklistEngines)
    func handlerConnectionCloseCloses(engine: CheckEngine) async throws {
        try await withChecklistServer(engine) { server in
            let reply = try await sendRequest(get("/close"), to: server, afterwards: .closes)
            #expect(reply.response.bodyText == "closing")
            #expect(reply.response.allFields("Connection").count == 1, "\(reply.response.rawHead)")
            #expect(reply.closed)
        }
    }

    @Test("RFC 9112 §9.6: a client's half-close after a request still gets the response", arguments: checklistEngines)
    func halfClosedClientGetsResponse(engine: CheckEngine) async throws {
        try await withChecklistServer(engine) { server in
            let reply = try await withClient(server, timeout: .seconds(5)) { client in
                try client.send(get("/half") + get("/half2"))
                client.shutdownWrite()
                let first = try client.readResponse()
                return (first, try finish(client, afterwards: .closes))
            }
            #expect(reply.0.status == 200 && reply.0.bodyText == "GET /half")
            #expect(reply.1.response.bodyText == "GET /half2")
            #expect(reply.1.closed, "the server closes once the client's end is read")
        }
    }

    @Test("RFC 9112 §9.3: a close after a rejected request ends a persistent connection", arguments: checklistEngines)
    func errorEndsPersistentConnection(engine: CheckEngine) async throws {
        try await withChecklistServer(engine) { server in
            let reply = try await withClient(server, timeout: .seconds(5)) { client in
                try client.send(get("/ok"))
                let ok = try client.readResponse()
                try client.send("GET / HTTP/1.1\r\nHost: test\r\nBad Name: x\r\n\r\n")
                return (ok, try finish(client, afterwards: .closes))
            }
            #expect(reply.0.status == 200 && !reply.0.closesConnection)
            expectErrorReply(reply.1, status: 400)
        }
    }
}
