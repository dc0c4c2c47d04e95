import CogenHTTP
import CogenUring
import Foundation
import HTTPTypes
import Logging
import Testing

/// A log handler that keeps what it is given.
struct CapturingLogHandler: LogHandler {
    let entries: PthreadLock<[(Logger.Level, String)]>
    var logLevel: Logger.Level = .trace
    var metadata: Logger.Metadata = [:]
    var metadataProvider: Logger.MetadataProvider?

    func log(event: LogEvent) {
        entries.withLock { $0.append((event.level, event.message.description)) }
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }
}

/// Issue 13's "A handler that throws" rules, end to end on both engines, plain and under faults.
@Suite("Checklist: handler errors")
struct HandlerErrorTests {
    @Test("Issue 13: a handler that throws before the head gets 500, logged", arguments: checklistEngines)
    func throwBeforeHeadGets500(engine: CheckEngine) async throws {
        let entries = PthreadLock<[(Logger.Level, String)]>([])
        try await withChecklistServer(
            engine,
            configure: { $0.logger = Logger(label: "checklist") { _ in CapturingLogHandler(entries: entries) } }
        ) { server in
            for request in [
                get("/throw-before"), post("/throw-before", "an unread body"), get("/no-response"),
                post("/throw-before", String(repeating: "u", count: 100_000)),  // past the drain limit: a close
            ] {
                let reply = try await sendRequest(request, to: server, afterwards: .staysOpen)
                #expect(reply.response.status == 500, "\(request.debugDescription): \(reply)")
                expectStandardFields(reply.response)
                // The connection goes on, unless the 500 says it closes.
                if reply.response.closesConnection {
                    #expect(reply.followUp == nil, "Connection: close, yet a second request was answered")
                } else {
                    #expect(reply.followUp?.bodyText == "GET /again", "\(request.debugDescription): \(reply)")
                }
            }
        }
        let logged = entries.withLock { $0 }
        let counted = try await withChecklistServer(engine) { server in
            _ = try await sendRequest(get("/throw-before"), to: server, afterwards: .unchecked)
            _ = try await withClient(server) { client in
                try client.send(get("/throw-after-chunked"))
                return try client.readToEnd()  // the cut is counted before the close
            }
            return server.statistics
        }
        #expect(counted.handlerErrors == 2, "\(counted)")
        #expect(logged.contains { $0.0 >= .warning }, "the handler's error was not logged (warning or above): \(logged)")
    }

    @Test("Issue 13: a handler that throws after a chunked head: no final chunk, and a close", arguments: checklistEngines)
    func throwAfterChunkedHeadCuts(engine: CheckEngine) async throws {
        try await withChecklistServer(engine) { server in
            let bytes = try await withClient(server, timeout: .seconds(5)) { client in
                try client.send(get("/throw-after-chunked"))
                return try client.readToEnd()
            }
            let text = String(decoding: bytes, as: UTF8.self)
            #expect(text.hasPrefix("HTTP/1.1 200"), "\(text.prefix(200).debugDescription)")
            #expect(text.lowercased().contains("transfer-encoding: chunked"))
            #expect(text.contains("partial"))
            #expect(!text.hasSuffix("0\r\n\r\n"), "the final chunk was sent: \(text.debugDescription)")
            #expect(!text.contains("HTTP/1.1 500"), "a 500 after the head")
        }
    }

    @Test("Issue 13: a handler that throws after a Content-Length head: a short body, and a close", arguments: checklistEngines)
    func throwAfterContentLengthHeadCuts(engine: CheckEngine) async throws {
        try await withChecklistServer(engine) { server in
            let bytes = try await withClient(server, timeout: .seconds(5)) { client in
                try client.send(get("/throw-after-length"))
                return try client.readToEnd()
            }
            let text = String(decoding: bytes, as: UTF8.self)
            #expect(text.hasPrefix("HTTP/1.1 200"), "\(text.prefix(200).debugDescription)")
            let headEnd = text.range(of: "\r\n\r\n")
            #expect(text.contains("Content-Length: 100") || text.lowercased().contains("content-length: 100"))
            if let headEnd {
                let body = text[headEnd.upperBound...]
                #expect(body == "0123456789", "body: \(body.debugDescription)")
            }
        }
    }

    @Test("Issue 13: a body limit hit after the head was sent: a cut, as for a throw", arguments: checklistEngines)
    func bodyLimitAfterHeadCuts(engine: CheckEngine) async throws {
        try await withChecklistServer(engine, configure: { $0.limits.maxBodySize = 100 }) { server in
            let bytes = try await withClient(server, timeout: .seconds(5)) { client in
                client.setSendTimeout(.seconds(5))
                client.sendIgnoringErrors(
                    chunkedPost("/limit-after-head") + "64\r\n" + String(repeating: "x", count: 100) + "\r\n"
                        + "64\r\n" + String(repeating: "y", count: 100) + "\r\n0\r\n\r\n")
                return try client.readToEnd()
            }
            let text = String(decoding: bytes, as: UTF8.self)
            #expect(text.hasPrefix("HTTP/1.1 200"), "\(text.prefix(200).debugDescription)")
            #expect(text.contains("partial"))
            #expect(!text.contains("the limit was not hit"))
            #expect(!text.hasSuffix("0\r\n\r\n"), "the final chunk was sent: \(text.debugDescription)")
            #expect(!text.contains("HTTP/1.1 413"), "a 413 after the head")
        }
    }

    @Test("Issue 13: a handler error leaves other connections unaffected", arguments: checklistEngines)
    func handlerErrorLeavesOthersUnaffected(engine: CheckEngine) async throws {
        try await withChecklistServer(engine) { server in
            let address = server.address
            let outcome = try await offThePool { () -> Result<[String], any Error> in
                Result {
                    let keeper = try RawClient(connectingTo: address, timeout: .seconds(5))
                    try keeper.send(get("/before"))
                    var seen = [try keeper.readResponse().bodyText]
                    for path in ["/throw-after-chunked", "/throw-after-length", "/throw-before", "/no-response"] {
                        let victim = try RawClient(connectingTo: address, timeout: .seconds(5))
                        try victim.send(get(path))
                        if path.hasPrefix("/throw-after") {
                            _ = try victim.readToEnd()  // cut
                        } else {
                            _ = try victim.readResponse()  // 500
                        }
                        try keeper.send(get("/during\(path)"))
                        seen.append(try keeper.readResponse().bodyText)
                    }
                    let fresh = try RawClient(connectingTo: address, timeout: .seconds(5))
                    try fresh.send(get("/fresh"))
                    seen.append(try fresh.readResponse().bodyText)
                    return seen
                }
            }.get()
            #expect(
                outcome == [
                    "GET /before", "GET /during/throw-after-chunked", "GET /during/throw-after-length",
                    "GET /during/throw-before", "GET /during/no-response", "GET /fresh",
                ])
        }
    }
}
