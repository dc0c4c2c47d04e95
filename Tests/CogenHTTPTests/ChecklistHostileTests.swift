import CogenHTTP
import Foundation
import HTTPTypes
import Testing

/// Issue 13's "Hostile clients" section, one test per rule, end to end against a real
/// server over raw sockets, on both engines, plain and under faults. Every rejection is
/// checked for its status, `Date`, `Server`, `Connection: close`, and the close.
@Suite("Checklist: hostile clients")
struct ChecklistHostileTests {
    // MARK: Limits, checked while receiving

    @Test("RFC 9112 §3: a request line over the limit gets 414, while receiving", arguments: checklistEngines)
    func requestLineOverLimitGets414(engine: CheckEngine) async throws {
        try await withChecklistServer(engine, configure: { $0.limits.maxRequestLineLength = 256 }) { server in
            let long = "GET /" + String(repeating: "a", count: 300)
            // Whole, and without its end: the limit must not wait for the CRLF.
            try await expectAllRejected([long + " HTTP/1.1\r\nHost: test\r\n\r\n", long], status: 414, by: server)
            let fits = "GET /" + String(repeating: "a", count: 256 - 14) + " HTTP/1.1"
            let reply = try await sendRequest(fits + "\r\nHost: test\r\n\r\n", to: server, afterwards: .staysOpen)
            #expect(reply.response.status == 200, "a request line of exactly the limit")
            expectPersistent(reply)
        }
    }

    @Test("RFC 6585 §5: a header section over the limit gets 431, while receiving", arguments: checklistEngines)
    func headerSectionOverLimitGets431(engine: CheckEngine) async throws {
        try await withChecklistServer(engine, configure: { $0.limits.maxHeaderSectionSize = 1024 }) { server in
            let fields = (0..<40).map { "X-Field-\($0): " + String(repeating: "v", count: 40) + "\r\n" }.joined()
            try await expectAllRejected(
                [get("/", fields), "GET / HTTP/1.1\r\nHost: test\r\n" + fields], status: 431, by: server)
        }
    }

    @Test("RFC 6585 §5: more header fields than the limit gets 431, while receiving", arguments: checklistEngines)
    func tooManyFieldsGets431(engine: CheckEngine) async throws {
        try await withChecklistServer(engine, configure: { $0.limits.maxFieldCount = 10 }) { server in
            let fields = (0..<11).map { "X-\($0): v\r\n" }.joined()
            try await expectAllRejected(
                ["GET / HTTP/1.1\r\nHost: test\r\n" + fields + "\r\n", "GET / HTTP/1.1\r\nHost: test\r\n" + fields],
                status: 431, by: server)
            let nine = (0..<9).map { "X-\($0): v\r\n" }.joined()
            let reply = try await sendRequest(get("/", nine), to: server, afterwards: .staysOpen)
            #expect(reply.response.status == 200, "ten fields (Host and nine) fit")
        }
    }

    @Test("RFC 9110 §15.5.14: a body over the limit gets 413, while receiving", arguments: checklistEngines)
    func bodyOverLimitGets413(engine: CheckEngine) async throws {
        try await withChecklistServer(engine, configure: { $0.limits.maxBodySize = 1000 }) { server in
            // Content-Length over the limit: at the head, before any body byte is sent.
            let head = "POST /read HTTP/1.1\r\nHost: test\r\nContent-Length: 1001\r\n\r\n"
            let chunks = "258\r\n" + String(repeating: "c", count: 600) + "\r\n"
            // A chunked body that passes the limit, and never ends: 413 as it passes.
            try await expectAllRejected(
                [head, "POST /ignored HTTP/1.1\r\nHost: test\r\nContent-Length: 5000\r\n\r\n", chunkedPost("/read") + chunks + chunks],
                status: 413, by: server)
            let fits = try await sendRequest(post("/read", String(repeating: "f", count: 1000)), to: server, afterwards: .staysOpen)
            #expect(fits.response.status == 200 && fits.response.body.count == 1000, "a body of exactly the limit")
        }
    }

    @Test("RFC 9112 §7.1.1: a chunk extension over the limit gets 400 or 431", arguments: checklistEngines)
    func chunkExtensionOverLimit(engine: CheckEngine) async throws {
        try await withChecklistServer(engine, configure: { $0.limits.maxChunkExtensionLength = 64 }) { server in
            let extensions = ";name=" + String(repeating: "e", count: 200)
            for request in [
                chunkedPost("/read") + "5" + extensions + "\r\nhello\r\n0\r\n\r\n",
                chunkedPost("/read") + "5" + extensions,  // unfinished: checked while receiving
                chunkedPost("/read") + "5\r\nhello\r\n0" + extensions + "\r\n\r\n",
            ] {
                let reply = try await sendRequest(request, to: server, afterwards: .closes)
                #expect([400, 431].contains(reply.response.status), "\(reply)")
                expectErrorReply(reply, status: reply.response.status)
            }
            let fits = try await sendRequest(
                chunkedPost("/read") + "5;a=b\r\nhello\r\n0\r\n\r\n", to: server, afterwards: .staysOpen)
            #expect(fits.response.bodyText == "hello")
        }
    }

    @Test("RFC 9112 §7.1.2: a trailer section over the limit gets 400 or 431", arguments: checklistEngines)
    func trailersOverLimit(engine: CheckEngine) async throws {
        try await withChecklistServer(engine, configure: { $0.limits.maxTrailerSize = 256 }) { server in
            let trailers = (0..<20).map { "X-Trailer-\($0): " + String(repeating: "t", count: 30) + "\r\n" }.joined()
            for request in [
                chunkedPost("/read") + "5\r\nhello\r\n0\r\n" + trailers + "\r\n",
                chunkedPost("/read") + "5\r\nhello\r\n0\r\n" + trailers,  // unfinished
                chunkedPost("/ignored") + "5\r\nhello\r\n0\r\n" + trailers + "\r\n",  // drained, not read
            ] {
                let reply = try await sendRequest(request, to: server, afterwards: .closes)
                if request.hasPrefix("POST /ignored") {
                    // The handler answered before the drain met the trailers: 200, then a close
                    // (and no second response).
                    #expect(reply.closed && reply.extraBytes == 0, "\(reply)")
                } else {
                    #expect([400, 431].contains(reply.response.status), "\(reply)")
                    expectErrorReply(reply, status: reply.response.status)
                }
            }
        }
    }

    @Test("Issue 13: every limit has a default (8 KiB line, 16 KiB head, 100 fields, 1 MiB body)", arguments: checklistEngines)
    func limitDefaults(engine: CheckEngine) async throws {
        try await withChecklistServer(engine) { server in
            try await expectAllRejected(
                ["GET /" + String(repeating: "l", count: 8200) + " HTTP/1.1\r\nHost: test\r\n\r\n"], status: 414, by: server)
            try await expectAllRejected(
                [
                    get("/", "X-Big: " + String(repeating: "h", count: 16400) + "\r\n"),
                    get("/", (0..<101).map { "X-\($0): v\r\n" }.joined()),
                ], status: 431, by: server)
            try await expectAllRejected(
                ["POST /read HTTP/1.1\r\nHost: test\r\nContent-Length: \((1 << 20) + 1)\r\n\r\n"], status: 413, by: server)
            let fits = try await sendRequest(
                get("/", (0..<99).map { "X-\($0): v\r\n" }.joined()), to: server, afterwards: .staysOpen)
            #expect(fits.response.status == 200, "100 fields (Host and 99) fit")
            // Just under the limits: a head of about 15 KiB (over several receive buffers) and
            // a request line of 8,000 bytes.
            let wide = try await sendRequest(
                "GET /" + String(repeating: "w", count: 8000) + " HTTP/1.1\r\nHost: test\r\n"
                    + (0..<14).map { "X-Wide-\($0): " + String(repeating: "v", count: 500) + "\r\n" }.joined() + "\r\n",
                to: server, afterwards: .staysOpen)
            #expect(wide.response.status == 200 && wide.response.bodyText.count == 4 + 1 + 8000, "\(wide.response)")
            expectPersistent(wide)
        }
    }

    // MARK: Deadlines

    @Test("RFC 9112 §9.5: past the request-head deadline (from the first byte): 408, then close", arguments: checklistEngines)
    func requestHeadDeadlineGets408(engine: CheckEngine) async throws {
        try await withChecklistServer(engine, configure: { $0.timeouts.requestHead = .seconds(1) }) { server in
            // A byte every 100 ms: an idle timer reset by each byte would never fire; the head
            // deadline (1 s) must, long before the 8 s of trickling end.
            let (answered, reply) = try await withClient(server, timeout: .seconds(5)) { client in
                try client.send("GET /slow HTTP/1.1\r\nHost: test\r\n")
                let answered = client.trickle(Array(("X-Slow: " + String(repeating: "s", count: 72)).utf8), interval: 100)
                return (answered, try finish(client, afterwards: .closes))
            }
            #expect(answered, "no answer while the head trickled in for 8 s")
            expectErrorReply(reply, status: 408)
            #expect(server.statistics.headTimeouts == 1, "\(server.statistics)")
        }
        // The deadline starts at the request's first byte, not at the previous response: a
        // request sent whole 1.5 s after the last one is served.
        try await withChecklistServer(
            engine, configure: { $0.timeouts.requestHead = .seconds(1); $0.timeouts.idle = .seconds(20) }
        ) { server in
            let responses = try await withClient(server, timeout: .seconds(5)) { client in
                try client.send(get("/first"))
                let first = try client.readResponse()
                Thread.sleep(forTimeInterval: 1.5)  // an idle gap longer than the head deadline
                try client.send(get("/second"))
                return [first, try client.readResponse()]
            }
            #expect(responses.map(\.bodyText) == ["GET /first", "GET /second"])
        }
    }

    @Test("RFC 9112 §9.5: before a request's first byte, the idle timeout closes silently", arguments: checklistEngines)
    func idleTimeoutClosesSilently(engine: CheckEngine) async throws {
        try await withChecklistServer(engine, configure: { $0.timeouts.idle = .seconds(1) }) { server in
            // A new connection that sends nothing, and one idle after a request.
            let fresh = try await withClient(server, timeout: .seconds(6)) { client in client.closeStatus() }
            #expect(fresh.closed && fresh.extra == 0, "fresh connection: \(fresh)")
            let (response, after) = try await withClient(server, timeout: .seconds(6)) { client in
                try client.send(get("/first"))
                return (try client.readResponse(), client.closeStatus())
            }
            #expect(response.status == 200 && !response.closesConnection)
            #expect(after.closed && after.extra == 0, "after a request: \(after)")
            #expect(server.statistics.idleTimeouts == 2 && server.statistics.headTimeouts == 0, "\(server.statistics)")
        }
    }

    @Test("Issue 13: a request body stalled past the body inactivity timeout gets 408, then close", arguments: checklistEngines)
    func bodyInactivityTimeoutGets408(engine: CheckEngine) async throws {
        try await withChecklistServer(
            engine, configure: { $0.timeouts.bodyInactivity = .seconds(1); $0.timeouts.requestHead = .seconds(1) }
        ) { server in
            try await expectAllRejected(
                [
                    "POST /read HTTP/1.1\r\nHost: test\r\nContent-Length: 100\r\n\r\n0123456789",
                    chunkedPost("/read") + "5\r\nhello\r\n",
                ], status: 408, by: server)
            // Inactivity, not a total: a body trickling a byte per 100 ms for 2 s is read whole.
            let trickled = try await withClient(server, timeout: .seconds(5)) { client in
                try client.send("POST /read HTTP/1.1\r\nHost: test\r\nContent-Length: 20\r\n\r\n")
                let early = client.trickle(Array("abcdefghijklmnopqrst".utf8), interval: 100)
                return (early, try client.readResponse())
            }
            #expect(trickled.1.status == 200 && trickled.1.bodyText == "abcdefghijklmnopqrst", "\(trickled.1)")
            // An unread body that stalls while it is drained after the response: a close, no 408.
            let reply = try await sendRequest(
                "POST /ignored HTTP/1.1\r\nHost: test\r\nContent-Length: 100\r\n\r\n0123456789", to: server,
                afterwards: .closes)
            #expect(reply.response.status == 200)
            #expect(reply.closed && reply.extraBytes == 0, "\(reply)")
            #expect(server.statistics.bodyTimeouts >= 2, "\(server.statistics)")
        }
    }

    // MARK: 400, then close

    @Test("RFC 9112 §6.3: Content-Length with Transfer-Encoding gets 400 and close", arguments: checklistEngines)
    func contentLengthWithTransferEncoding(engine: CheckEngine) async throws {
        try await withChecklistServer(engine) { server in
            try await expectAllRejected(
                [
                    "POST /read HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
                    "POST /read HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
                ], status: 400, by: server)
        }
    }

    @Test("RFC 9112 §6.1: Transfer-Encoding in an HTTP/1.0 request gets 400 and close", arguments: checklistEngines)
    func transferEncodingInHTTP10(engine: CheckEngine) async throws {
        try await withChecklistServer(engine) { server in
            try await expectAllRejected(
                ["POST /read HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"], status: 400, by: server)
        }
    }

    @Test("RFC 9112 §6.1: chunked applied twice gets 400 and close", arguments: checklistEngines)
    func chunkedAppliedTwice(engine: CheckEngine) async throws {
        try await withChecklistServer(engine) { server in
            try await expectAllRejected(
                [
                    chunkedPost("/read").replacingOccurrences(of: "chunked", with: "chunked, chunked") + "0\r\n\r\n",
                    chunkedPost("/read", "Transfer-Encoding: chunked\r\n") + "0\r\n\r\n",
                ], status: 400, by: server)
        }
    }

    @Test("RFC 9112 §6.3: a Transfer-Encoding whose final coding is not chunked gets 400 and close", arguments: checklistEngines)
    func finalCodingNotChunked(engine: CheckEngine) async throws {
        try await withChecklistServer(engine) { server in
            try await expectAllRejected(
                [
                    "POST /read HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
                    "POST /read HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: gzip\r\n\r\nabc",
                ], status: 400, by: server)
        }
    }

    @Test("RFC 9110 §8.6: an invalid Content-Length gets 400 and close", arguments: checklistEngines)
    func invalidContentLength(engine: CheckEngine) async throws {
        try await withChecklistServer(engine) { server in
            try await expectAllRejected(
                ["-1", "+5", "5a", "", "0x5", "5 5", "99999999999999999999999"].map {
                    "POST /read HTTP/1.1\r\nHost: test\r\nContent-Length: \($0)\r\n\r\nhello"
                }, status: 400, by: server)
        }
    }

    @Test("RFC 9110 §8.6: repeated Content-Length values that differ get 400 and close", arguments: checklistEngines)
    func conflictingContentLength(engine: CheckEngine) async throws {
        try await withChecklistServer(engine) { server in
            try await expectAllRejected(
                [
                    "POST /read HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
                    "POST /read HTTP/1.1\r\nHost: test\r\nContent-Length: 5, 6\r\n\r\nhello!",
                ], status: 400, by: server)
            // Identical repeats are one length.
            let same = try await sendRequest(
                "POST /read HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", to: server,
                afterwards: .staysOpen)
            #expect(same.response.bodyText == "hello")
        }
    }

    @Test("RFC 9112 §7.1: a chunk size that overflows or carries junk gets 400 and close", arguments: checklistEngines)
    func badChunkSize(engine: CheckEngine) async throws {
        try await withChecklistServer(engine) { server in
            try await expectAllRejected(
                ["1ffffffffffffffff", "ffffffffffffffffffff", "1g", "-1", "0x5", " 5", "5 x", "", "+5"].map {
                    chunkedPost("/read") + "\($0)\r\nhello\r\n0\r\n\r\n"
                }, status: 400, by: server)
        }
    }

    @Test("RFC 9112 §2.2: a bare CR in the head gets 400 and close", arguments: checklistEngines)
    func bareCRInHead(engine: CheckEngine) async throws {
        try await withChecklistServer(engine) { server in
            try await expectAllRejected(
                [
                    "GET / HTTP/1.1\rHost: test\r\n\r\n", "GET / HTTP/1.1\r\nHost: test\r\nX: a\rb\r\n\r\n",
                    "GET / HTTP/1.1\r\nHost: test\r\n\r\r\n",
                ], status: 400, by: server)
        }
    }

    @Test("RFC 9112 §2.2: a bare LF in the head gets 400 and close", arguments: checklistEngines)
    func bareLFInHead(engine: CheckEngine) async throws {
        try await withChecklistServer(engine) { server in
            try await expectAllRejected(
                [
                    "GET / HTTP/1.1\nHost: test\r\n\r\n", "GET / HTTP/1.1\r\nHost: test\nX: y\r\n\r\n",
                    "GET / HTTP/1.1\r\nHost: test\r\n\n",
                ], status: 400, by: server)
        }
    }

    @Test("RFC 9112 §7.1: a bare CR or LF in a chunk line gets 400 and close", arguments: checklistEngines)
    func bareCROrLFInChunkLine(engine: CheckEngine) async throws {
        try await withChecklistServer(engine) { server in
            try await expectAllRejected(
                [
                    "5\nhello\r\n0\r\n\r\n", "5\rhello\r\n0\r\n\r\n", "5\r\nhello\n0\r\n\r\n", "5\r\nhello\r0\r\n\r\n",
                    "5\r\nhello\r\n0\n\r\n", "5\r\nhello\r\n0\r\n\n", "5;a=b\n\r\nhello\r\n0\r\n\r\n",
                ].map { chunkedPost("/read") + $0 }, status: 400, by: server)
        }
    }

    @Test("RFC 9112 §5.2: obsolete line folding gets 400 and close", arguments: checklistEngines)
    func obsoleteLineFolding(engine: CheckEngine) async throws {
        try await withChecklistServer(engine) { server in
            try await expectAllRejected(
                ["GET / HTTP/1.1\r\nHost: test\r\nX: a\r\n b\r\n\r\n", "GET / HTTP/1.1\r\nHost: test\r\nX: a\r\n\tb\r\n\r\n"],
                status: 400, by: server)
        }
    }

    @Test("RFC 9112 §2.2: a whitespace-led line right after the request line gets 400 and close", arguments: checklistEngines)
    func whitespaceAfterRequestLine(engine: CheckEngine) async throws {
        try await withChecklistServer(engine) { server in
            try await expectAllRejected(
                ["GET / HTTP/1.1\r\n Host: test\r\n\r\n", "GET / HTTP/1.1\r\n\tX: y\r\nHost: test\r\n\r\n"],
                status: 400, by: server)
        }
    }

    @Test("RFC 9112 §5.1: whitespace between a field name and its colon gets 400 and close", arguments: checklistEngines)
    func whitespaceBeforeColon(engine: CheckEngine) async throws {
        try await withChecklistServer(engine) { server in
            try await expectAllRejected(
                ["GET / HTTP/1.1\r\nHost : test\r\n\r\n", "GET / HTTP/1.1\r\nHost: test\r\nX\t: y\r\n\r\n"],
                status: 400, by: server)
        }
    }

    @Test("RFC 9110 §5.5: NUL, CR or LF in a field value gets 400 and close", arguments: checklistEngines)
    func controlInFieldValue(engine: CheckEngine) async throws {
        try await withChecklistServer(engine) { server in
            try await expectAllRejected(
                [
                    "GET / HTTP/1.1\r\nHost: test\r\nX: a\u{0}b\r\n\r\n", "GET / HTTP/1.1\r\nHost: test\r\nX: a\rb\r\n\r\n",
                    "GET / HTTP/1.1\r\nHost: test\r\nX: a\nb\r\n\r\n",
                ], status: 400, by: server)
        }
    }

    @Test("RFC 9112 §3.2: an HTTP/1.1 request without Host gets 400 and close", arguments: checklistEngines)
    func missingHost(engine: CheckEngine) async throws {
        try await withChecklistServer(engine) { server in
            try await expectAllRejected(
                ["GET / HTTP/1.1\r\n\r\n", "GET / HTTP/1.1\r\nX-Host: test\r\n\r\n"], status: 400, by: server)
            // HTTP/1.0 may leave it out.
            let old = try await sendRequest("GET /old HTTP/1.0\r\n\r\n", to: server, afterwards: .closes)
            #expect(old.response.status == 200 && old.response.bodyText == "GET /old")
        }
    }

    @Test("RFC 9112 §3.2: more than one Host gets 400 and close", arguments: checklistEngines)
    func moreThanOneHost(engine: CheckEngine) async throws {
        try await withChecklistServer(engine) { server in
            try await expectAllRejected(
                [
                    "GET / HTTP/1.1\r\nHost: test\r\nHost: test\r\n\r\n", "GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n",
                    "GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n",
                ], status: 400, by: server)
        }
    }

    @Test("RFC 9110 §7.2: an invalid Host value gets 400 and close", arguments: checklistEngines)
    func invalidHost(engine: CheckEngine) async throws {
        try await withChecklistServer(engine) { server in
            try await expectAllRejected(
                ["a b", "a/b", "user@a", "[::1", "a:80:90", ":80", "a:b"].map { "GET / HTTP/1.1\r\nHost: \($0)\r\n\r\n" },
                status: 400, by: server)
        }
    }

    @Test("RFC 9110 §9.1: an invalid character in the method gets 400 and close", arguments: checklistEngines)
    func invalidMethod(engine: CheckEngine) async throws {
        try await withChecklistServer(engine) { server in
            try await expectAllRejected(
                ["G(T", "GE\u{7F}T", "GE\u{1}T", "G\"T", "GET:"].map { "\($0) / HTTP/1.1\r\nHost: test\r\n\r\n" },
                status: 400, by: server)
        }
    }

    @Test("RFC 9112 §3.2: an invalid character in the target gets 400 and close", arguments: checklistEngines)
    func invalidTarget(engine: CheckEngine) async throws {
        try await withChecklistServer(engine) { server in
            var requests = ["/a\u{1}b", "/a\u{7F}b", "/a\u{0}b"].map { Array("GET \($0) HTTP/1.1\r\nHost: test\r\n\r\n".utf8) }
            requests.append(Array("GET /caf".utf8) + [0xE9] + Array(" HTTP/1.1\r\nHost: test\r\n\r\n".utf8))
            try await expectAllRejected(requests, status: 400, by: server)
        }
    }

    @Test("RFC 9110 §5.1: an invalid character in a field name gets 400 and close", arguments: checklistEngines)
    func invalidFieldName(engine: CheckEngine) async throws {
        try await withChecklistServer(engine) { server in
            try await expectAllRejected(
                ["X(y)", "X\"y", "X y", "X@y", "X\u{1}y", "X/y"].map { "GET / HTTP/1.1\r\nHost: test\r\n\($0): v\r\n\r\n" },
                status: 400, by: server)
        }
    }

    @Test("RFC 9112 §2.3: a malformed version gets 400 and close", arguments: checklistEngines)
    func malformedVersion(engine: CheckEngine) async throws {
        try await withChecklistServer(engine) { server in
            try await expectAllRejected(
                ["HTTP/1", "http/1.1", "HTTP/1.10", "HTTP/a.1", "HTTP/1.1 ", "HTTP/11", "HTTPS/1.1"].map {
                    "GET / \($0)\r\nHost: test\r\n\r\n"
                }, status: 400, by: server)
            // Counted (issue 13, "Counters").
            let statistics = server.statistics
            #expect(statistics.parseErrors == 7 && statistics.responsesByClass == [0, 0, 0, 7, 0], "\(statistics)")
        }
    }

    @Test("RFC 9112 §6.1: a transfer coding we do not implement gets 501", arguments: checklistEngines)
    func unimplementedTransferCodingGets501(engine: CheckEngine) async throws {
        try await withChecklistServer(engine) { server in
            try await expectAllRejected(
                ["gzip, chunked", "deflate, chunked", "x-custom, chunked"].map {
                    "POST /read HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: \($0)\r\n\r\n0\r\n\r\n"
                }, status: 501, by: server)
        }
    }

    // MARK: After an error response

    @Test("RFC 9112 §9.6: after an error response, a lingering close lets the client read it", arguments: checklistEngines)
    func lingeringCloseAfterError(engine: CheckEngine) async throws {
        try await withChecklistServer(engine, configure: { $0.timeouts.linger = .seconds(3) }) { server in
            // The client sends more right behind its bad request. A server that closes with
            // those bytes unread resets the connection (RST); one that half-closes and drains
            // (§9.6) ends it with a FIN the client reads after the response.
            let (response, ending) = try await withClient(server, timeout: .seconds(5)) { client in
                client.setSendTimeout(.seconds(5))
                client.sendIgnoringErrors(
                    Array("GET / HTTP/1.1\r\nHost : test\r\n\r\n".utf8) + [UInt8](repeating: UInt8(ascii: "j"), count: 48 << 10))
                let response = try client.readResponse()
                return (response, client.ending())
            }
            #expect(response.status == 400)
            #expect(response.closesConnection)
            #expect(ending == .endOfStream, "the connection ended with \(ending), not a FIN after draining")
            // More bytes after the response was read: still a clean end.
            let late = try await withClient(server, timeout: .seconds(5)) { client -> (Int, RawClient.Ending) in
                client.setSendTimeout(.seconds(5))
                try client.send("GET / HTTP/1.1\r\nHost : test\r\n\r\n")
                let response = try client.readResponse()
                client.sendIgnoringErrors([UInt8](repeating: UInt8(ascii: "k"), count: 16 << 10))
                return (response.status, client.ending())
            }
            #expect(late.0 == 400)
            #expect(late.1 == .endOfStream, "the connection ended with \(late.1)")
            // The server still takes the client's bytes after its response (it drains for the
            // linger period) instead of resetting: a second send 200 ms later succeeds.
            let sends = try await withClient(server, timeout: .seconds(5)) { client -> [String] in
                client.setSendTimeout(.seconds(5))
                try client.send("POST / HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n")
                _ = try client.readResponse()
                var outcomes: [String] = []
                for _ in 0..<2 {
                    do {
                        try client.send([UInt8](repeating: UInt8(ascii: "m"), count: 4096))
                        outcomes.append("ok")
                    } catch {
                        outcomes.append("\(error)")
                    }
                    Thread.sleep(forTimeInterval: 0.2)  // shaping: a reset would be back by now
                }
                return outcomes
            }
            #expect(sends == ["ok", "ok"], "sends after the error response: \(sends)")
        }
    }

    // MARK: Connection cap (issue 7)

    @Test("Issue 7: at the per-scheduler connection cap, further connections wait in the backlog", arguments: checklistEngines)
    func connectionCapHoldsFurtherConnections(engine: CheckEngine) async throws {
        try await withChecklistServer(engine, configure: { $0.maxConnectionsPerScheduler = 2 }) { server in
            let address = server.address
            let outcome = try await offThePool { () -> Result<(Int, Int, Bool, TestResponse), any Error> in
                Result {
                    var first: RawClient? = try RawClient(connectingTo: address, timeout: .seconds(5))
                    let second = try RawClient(connectingTo: address, timeout: .seconds(5))
                    try first?.send(get("/one"))
                    try second.send(get("/two"))
                    let one = try first?.readResponse().status ?? 0
                    let two = try second.readResponse().status
                    // The third connects (the kernel's backlog) but is not served meanwhile.
                    let third = try RawClient(connectingTo: address, timeout: .seconds(5))
                    try third.send(get("/three"))
                    let servedEarly = third.isReadable(within: 1000)
                    first = nil  // closes: the third is accepted and served
                    return (one, two, servedEarly, try third.readResponse())
                }
            }.get()
            #expect(outcome.0 == 200 && outcome.1 == 200)
            #expect(!outcome.2, "a third connection was served at a cap of 2")
            #expect(outcome.3.status == 200 && outcome.3.bodyText == "GET /three")
        }
    }
}
