import CogenHTTP
import Foundation
import HTTPTypes
import Testing

/// Issue 13's "Protocol" section, one test per rule, end to end against a real server over
/// raw sockets, on both engines, plain and under faults. (Pipelining: PipeliningTests;
/// persistence: PersistenceTests.)
@Suite("Checklist: protocol")
struct ChecklistProtocolTests {
    // MARK: Versions

    @Test("RFC 9110 §2.5: an HTTP/1.x request with x > 1 is handled as 1.1", arguments: checklistEngines)
    func minorVersionAboveOneIsHandledAsOneOne(engine: CheckEngine) async throws {
        try await withChecklistServer(engine) { server in
            let reply = try await sendRequest("GET /v HTTP/1.2\r\nHost: test\r\n\r\n", to: server, afterwards: .staysOpen)
            #expect(reply.response.status == 200)
            #expect(reply.response.bodyText == "GET /v")
            #expect(reply.response.version == "HTTP/1.1")
            expectPersistent(reply)
            // 1.9 too, and an HTTP/1.2 request without Host is rejected as 1.1 would be.
            let nine = try await sendRequest("GET /v9 HTTP/1.9\r\nHost: test\r\n\r\n", to: server, afterwards: .staysOpen)
            #expect(nine.response.bodyText == "GET /v9")
            expectPersistent(nine)
            try await expectAllRejected(["GET / HTTP/1.2\r\n\r\n"], status: 400, by: server)
        }
    }

    @Test("RFC 9110 §15.6.6: a major version other than 1 gets 505", arguments: checklistEngines)
    func otherMajorVersionGets505(engine: CheckEngine) async throws {
        try await withChecklistServer(engine) { server in
            try await expectAllRejected(
                [
                    "GET / HTTP/2.0\r\nHost: test\r\n\r\n",
                    "GET / HTTP/0.9\r\nHost: test\r\n\r\n",
                    "GET / HTTP/3.1\r\nHost: test\r\n\r\n",
                ], status: 505, by: server)
        }
    }

    // MARK: Message syntax

    @Test("RFC 9112 §2.2: empty lines before a request line are ignored", arguments: checklistEngines)
    func emptyLinesBeforeRequestLine(engine: CheckEngine) async throws {
        try await withChecklistServer(engine) { server in
            let reply = try await sendRequest("\r\n" + get("/after-empty-line"), to: server, afterwards: .staysOpen)
            #expect(reply.response.bodyText == "GET /after-empty-line")
            expectPersistent(reply)
            // A CRLF after a body (as some old clients send) before the next request.
            let responses = try await withClient(server, timeout: .seconds(5)) { client in
                try client.send(post("/read", "abc") + "\r\n" + get("/next"))
                return [try client.readResponse(), try client.readResponse()]
            }
            #expect(responses.map(\.bodyText) == ["abc", "GET /next"])
        }
    }

    @Test("RFC 9110 §5.1: field names are case-insensitive; values lose surrounding whitespace", arguments: checklistEngines)
    func fieldNamesAreCaseInsensitive(engine: CheckEngine) async throws {
        try await withChecklistServer(engine) { server in
            let reply = try await sendRequest(
                "POST /read HTTP/1.1\r\nhOsT: test\r\ncontent-LENGTH: \t 5 \t\r\n\r\nhello", to: server,
                afterwards: .staysOpen)
            #expect(reply.response.bodyText == "hello")
            expectPersistent(reply)
            let chunked = try await sendRequest(
                "POST /read HTTP/1.1\r\nHOST: test\r\nTRANSFER-encoding:  Chunked \r\nconnection: CLOSE\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
                to: server, afterwards: .closes)
            #expect(chunked.response.bodyText == "abc")
            #expect(chunked.closed)
            try await expectAllRejected(
                ["GET / HTTP/1.1\r\nhost: a\r\nHOST: b\r\n\r\n", "POST / HTTP/1.1\r\nHost: a\r\ncontent-length: 1\r\nTransfer-ENCODING: chunked\r\n\r\n"],
                status: 400, by: server)
        }
    }

    // MARK: Request bodies

    @Test("RFC 9112 §6.2: a Content-Length body is read whole", arguments: checklistEngines)
    func contentLengthBodyIsRead(engine: CheckEngine) async throws {
        try await withChecklistServer(engine) { server in
            let reply = try await sendRequest(post("/read", "hello body"), to: server, afterwards: .staysOpen)
            #expect(reply.response.status == 200)
            #expect(reply.response.bodyText == "hello body")
            #expect(reply.response.field("X-Request") == "POST /read")
            expectPersistent(reply)
        }
    }

    @Test("RFC 9112 §2.2: a bare CR or LF in content is data, not an error", arguments: checklistEngines)
    func bareCROrLFInContentIsAccepted(engine: CheckEngine) async throws {
        try await withChecklistServer(engine) { server in
            let raw = try await sendRequest(post("/read-raw", "a\rb\nc\r\n\n\r"), to: server, afterwards: .staysOpen)
            #expect(raw.response.status == 200)
            #expect(raw.response.bodyText == "a\rb\nc\r\n\n\r")
            expectPersistent(raw)
            let chunked = try await sendRequest(
                chunkedPost("/read-raw") + "4\r\n\r\r\n\n\r\n0\r\n\r\n", to: server, afterwards: .staysOpen)
            #expect(chunked.response.bodyText == "\r\r\n\n")
            expectPersistent(chunked)
        }
    }

    @Test("RFC 9112 §7.1: a chunked body is read whole", arguments: checklistEngines)
    func chunkedBodyIsRead(engine: CheckEngine) async throws {
        try await withChecklistServer(engine) { server in
            let request =
                chunkedPost("/read") + "5\r\nhello\r\n6;name=value\r\n world\r\nA\r\n0123456789\r\n"
                + "0003;q=\"a;b\" ; x\r\nabc\r\nf\r\n0123456789abcde\r\n0\r\n\r\n"
            let reply = try await sendRequest(request, to: server, afterwards: .staysOpen)
            #expect(reply.response.status == 200)
            #expect(reply.response.bodyText == "hello world0123456789abc0123456789abcde")
            expectPersistent(reply)
        }
    }

    @Test("RFC 9112 §7.1.2: trailer fields are read and discarded", arguments: checklistEngines)
    func trailersAreReadAndDiscarded(engine: CheckEngine) async throws {
        try await withChecklistServer(engine) { server in
            let request =
                chunkedPost("/read") + "5\r\nhello\r\n0\r\nX-Trailer: one\r\nX-Checksum: 1234\r\n\r\n"
            let reply = try await sendRequest(request, to: server, afterwards: .staysOpen)
            #expect(reply.response.status == 200)
            #expect(reply.response.bodyText == "hello")
            expectPersistent(reply)  // the trailers were not taken for the next request
        }
    }

    @Test("RFC 9112 §6.3: an unread body is drained before the next request", arguments: checklistEngines)
    func unreadBodyIsDrained(engine: CheckEngine) async throws {
        try await withChecklistServer(engine) { server in
            let body = String(repeating: "x", count: 3000)
            let reply = try await sendRequest(post("/ignored", body), to: server, afterwards: .staysOpen)
            #expect(reply.response.status == 200)
            #expect(reply.response.bodyText == "POST /ignored")
            expectPersistent(reply)
            let chunked = try await sendRequest(
                chunkedPost("/ignored-chunked") + "5\r\nhello\r\n400\r\n" + String(repeating: "y", count: 1024)
                    + "\r\n0\r\nX-T: 1\r\n\r\n", to: server, afterwards: .staysOpen)
            #expect(chunked.response.bodyText == "POST /ignored-chunked")
            expectPersistent(chunked)
        }
    }

    @Test("RFC 9112 §6.3: an unread body past the drain limit closes the connection", arguments: checklistEngines)
    func unreadBodyPastDrainLimitCloses(engine: CheckEngine) async throws {
        try await withChecklistServer(engine, configure: { $0.limits.maxDrainSize = 1024 }) { server in
            // The client is still sending its body (2,000 of 100,000 bytes) when the response comes.
            let head = "POST /ignored HTTP/1.1\r\nHost: test\r\nContent-Length: 100000\r\n\r\n"
            let (response, ending) = try await withClient(server, timeout: .seconds(5)) { client in
                client.setSendTimeout(.seconds(5))
                client.sendIgnoringErrors(head + String(repeating: "z", count: 20000))
                return (try client.readResponse(), client.ending())
            }
            #expect(response.status == 200)
            #expect(response.bodyText == "POST /ignored")
            expectStandardFields(response)
            #expect(response.closesConnection, "the server knew it would close: Connection: close")
            // Closed with a FIN after draining a while (§9.6), not reset over the unread bytes.
            #expect(ending == .endOfStream, "the connection ended with \(ending)")
        }
    }

    // MARK: Expect: 100-continue

    @Test("RFC 9110 §10.1.1: 100 Continue is sent only when the handler reads the body", arguments: checklistEngines)
    func continueOnlyWhenBodyIsRead(engine: CheckEngine) async throws {
        try await withChecklistServer(engine) { server in
            // The handler reads: 100 first, then (after the body) the response.
            let (interim, final) = try await withClient(server, timeout: .seconds(5)) { client in
                try client.send("POST /read HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
                let interim = try client.readResponse()
                try client.send("hello")
                return (interim, try client.readResponse())
            }
            #expect(interim.status == 100)
            expectStandardFields(interim)
            #expect(final.status == 200)
            #expect(final.bodyText == "hello")
            expectStandardFields(final)
            // The handler does not read: no 100; the response comes without the body being sent.
            let reply = try await sendRequest(
                "POST /not-read HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
                to: server, afterwards: .closes)
            #expect(reply.interim.isEmpty, "100 Continue sent though the body was never read")
            #expect(reply.response.status == 200)
            // A chunked body likewise.
            let (chunkedInterim, chunkedFinal) = try await withClient(server, timeout: .seconds(5)) { client in
                try client.send(chunkedPost("/read", "Expect: 100-continue\r\n"))
                let interim = try client.readResponse()
                try client.send("3\r\nabc\r\n0\r\n\r\n")
                return (interim, try client.readResponse())
            }
            #expect(chunkedInterim.status == 100)
            #expect(chunkedFinal.status == 200 && chunkedFinal.bodyText == "abc")
            // The expectation is case-insensitive (RFC 9110 §10.1.1).
            let (upperInterim, upperFinal) = try await withClient(server, timeout: .seconds(5)) { client in
                try client.send("POST /read HTTP/1.1\r\nHost: test\r\nContent-Length: 2\r\nExpect: 100-Continue\r\n\r\n")
                let interim = try client.readResponse()
                try client.send("ok")
                return (interim, try client.readResponse())
            }
            #expect(upperInterim.status == 100 && upperFinal.bodyText == "ok")
        }
    }

    @Test(
        "RFC 9110 §10.1.1: after 100 Continue, a body the handler left partly unread is drained; the connection goes on",
        arguments: checklistEngines)
    func continueThenPartlyReadBodyIsDrained(engine: CheckEngine) async throws {
        try await withChecklistServer(engine) { server in
            let (interim, reply) = try await withClient(server, timeout: .seconds(5)) { client in
                try client.send("POST /read-one HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
                let interim = try client.readResponse()
                try client.send("hello")
                return (interim, try finish(client, afterwards: .staysOpen))
            }
            #expect(interim.status == 100)
            #expect(reply.response.status == 200 && reply.response.bodyText == "h")
            expectPersistent(reply)
        }
    }

    @Test("RFC 9110 §10.1.1: Expect: 100-continue is ignored in HTTP/1.0", arguments: checklistEngines)
    func continueIgnoredInHTTP10(engine: CheckEngine) async throws {
        try await withChecklistServer(engine) { server in
            let (early, reply) = try await withClient(server, timeout: .seconds(5)) { client in
                try client.send("POST /read HTTP/1.0\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
                // A 1.0 client cannot be sent 100: nothing comes before the body.
                let early = client.isReadable(within: 300)
                try client.send("hello")
                return (early, try finish(client, afterwards: .closes))
            }
            #expect(!early, "bytes sent to an HTTP/1.0 client before its body")
            #expect(reply.interim.isEmpty, "100 Continue sent to HTTP/1.0")
            #expect(reply.response.status == 200)
            #expect(reply.response.bodyText == "hello")
            #expect(reply.response.field("Transfer-Encoding") == nil)
            expectStandardFields(reply.response)
            #expect(reply.closed, "HTTP/1.0 without keep-alive: closed")
        }
    }

    @Test("RFC 9110 §10.1.1: Content-Length over the body limit gets 413, never 100", arguments: checklistEngines)
    func continueOverLimitGets413(engine: CheckEngine) async throws {
        try await withChecklistServer(engine, configure: { $0.limits.maxBodySize = 1000 }) { server in
            let reply = try await sendRequest(
                "POST /read HTTP/1.1\r\nHost: test\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n",
                to: server, afterwards: .closes)
            expectErrorReply(reply, status: 413)
        }
    }

    @Test(
        "RFC 9110 §10.1.1: a response with the body unread and no 100 sent carries Connection: close and closes",
        arguments: checklistEngines)
    func unreadBodyWithoutContinueCloses(engine: CheckEngine) async throws {
        try await withChecklistServer(engine) { server in
            // The client waits for 100 and never sends its 5,000 bytes: the server must not
            // wait to drain them.
            let reply = try await sendRequest(
                "POST /not-read HTTP/1.1\r\nHost: test\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n",
                to: server, afterwards: .closes)
            #expect(reply.interim.isEmpty)
            #expect(reply.response.status == 200)
            #expect(reply.response.bodyText == "POST /not-read")
            expectStandardFields(reply.response)
            #expect(reply.response.closesConnection, "no Connection: close")
            #expect(reply.closed, "the connection stayed open (draining a body the client will not send?)")
        }
    }

    @Test("RFC 9110 §10.1.1: any other expectation gets 417", arguments: checklistEngines)
    func otherExpectationGets417(engine: CheckEngine) async throws {
        try await withChecklistServer(engine) { server in
            try await expectAllRejected(
                [
                    "GET / HTTP/1.1\r\nHost: test\r\nExpect: something-else\r\n\r\n",
                    "POST /read HTTP/1.1\r\nHost: test\r\nContent-Length: 1\r\nExpect: 100-continue-please\r\n\r\nx",
                ], status: 417, by: server)
        }
    }

    // MARK: Request targets

    @Test("RFC 9112 §3.2.1: an origin-form target reaches the handler as sent", arguments: checklistEngines)
    func originFormTarget(engine: CheckEngine) async throws {
        try await withChecklistServer(engine) { server in
            let reply = try await sendRequest(get("/a/b%20c?d=e&f=/g"), to: server, afterwards: .staysOpen)
            #expect(reply.response.bodyText == "GET /a/b%20c?d=e&f=/g")
            expectPersistent(reply)
        }
    }

    @Test("RFC 9112 §3.2.2: an absolute-form target is accepted and overrides Host", arguments: checklistEngines)
    func absoluteFormTargetOverridesHost(engine: CheckEngine) async throws {
        try await withChecklistServer(engine) { server in
            let reply = try await sendRequest(
                "GET http://example.org:8080/authority?x=1 HTTP/1.1\r\nHost: other.test\r\n\r\n", to: server,
                afterwards: .staysOpen)
            #expect(reply.response.status == 200)
            #expect(reply.response.bodyText == "example.org:8080 /authority?x=1")
            expectPersistent(reply)
            let bare = try await sendRequest(
                "GET http://example.org HTTP/1.1\r\nHost: example.org\r\n\r\n", to: server, afterwards: .staysOpen)
            #expect(bare.response.status == 200)
            #expect(["GET /", "GET "].contains(bare.response.bodyText), "\(bare)")
            expectPersistent(bare)
        }
    }

    @Test("RFC 9112 §3.2.3: authority form only with CONNECT", arguments: checklistEngines)
    func authorityFormOnlyWithConnect(engine: CheckEngine) async throws {
        try await withChecklistServer(engine) { server in
            let reply = try await sendRequest(
                "CONNECT example.org:443 HTTP/1.1\r\nHost: example.org:443\r\n\r\n", to: server, afterwards: .unchecked)
            #expect(reply.response.status == 403, "the handler answers CONNECT: \(reply)")
            #expect(reply.response.bodyText == "CONNECT example.org:443")
            try await expectAllRejected(
                [
                    "GET example.org:443 HTTP/1.1\r\nHost: example.org\r\n\r\n",
                    "POST example.org:80 HTTP/1.1\r\nHost: example.org\r\nContent-Length: 0\r\n\r\n",
                ], status: 400, by: server)
        }
    }

    @Test("RFC 9112 §3.2.4: asterisk form only with OPTIONS", arguments: checklistEngines)
    func asteriskFormOnlyWithOptions(engine: CheckEngine) async throws {
        try await withChecklistServer(engine) { server in
            let reply = try await sendRequest("OPTIONS * HTTP/1.1\r\nHost: test\r\n\r\n", to: server, afterwards: .staysOpen)
            #expect(reply.response.status == 200)
            #expect(reply.response.bodyText == "OPTIONS *")
            expectPersistent(reply)
            try await expectAllRejected(
                ["GET * HTTP/1.1\r\nHost: test\r\n\r\n", "HEAD * HTTP/1.1\r\nHost: test\r\n\r\n"], status: 400, by: server)
        }
    }

    // MARK: Responses

    @Test("RFC 9110 §9.3.2: HEAD gets the headers and no body", arguments: checklistEngines)
    func headGetsNoBody(engine: CheckEngine) async throws {
        try await withChecklistServer(engine) { server in
            // HEAD, then GET on the same connection: a body after the HEAD response would be
            // read as the next response's head.
            let responses = try await withClient(server, timeout: .seconds(5)) { client in
                try client.send(
                    "HEAD /fixed HTTP/1.1\r\nHost: test\r\n\r\n" + get("/fixed")
                        + "HEAD /stream HTTP/1.1\r\nHost: test\r\n\r\n" + get("/fixed")
                        + "HEAD /stream-length HTTP/1.1\r\nHost: test\r\n\r\n" + get("/fixed"))
                return [
                    try client.readResponse(forHEAD: true), try client.readResponse(),
                    try client.readResponse(forHEAD: true), try client.readResponse(),
                    try client.readResponse(forHEAD: true), try client.readResponse(),
                ]
            }
            #expect(responses.map(\.status) == [200, 200, 200, 200, 200, 200])
            for response in responses { expectStandardFields(response) }
            #expect(
                responses[1].body == fixedBody && responses[3].body == fixedBody && responses[5].body == fixedBody,
                "a HEAD response carried body bytes")
            let length = responses[0].field("Content-Length")
            #expect(length == nil || length == "\(fixedBody.count)", "HEAD's Content-Length is GET's: \(length ?? "-")")
            #expect(!responses[0].closesConnection && !responses[2].closesConnection && !responses[4].closesConnection)
        }
    }

    @Test("RFC 9110 §15.3.5: 204 carries no body, Content-Length or Transfer-Encoding", arguments: checklistEngines)
    func noContentCarriesNoBody(engine: CheckEngine) async throws {
        try await withChecklistServer(engine) { server in
            let responses = try await withClient(server, timeout: .seconds(5)) { client in
                try client.send(get("/status/204") + get("/stream-status/204") + get("/fixed"))
                return [try client.readResponse(), try client.readResponse(), try client.readResponse()]
            }
            #expect(responses.map(\.status) == [204, 204, 200])
            for response in responses { expectStandardFields(response) }  // no CL/TE on 204
            #expect(responses[2].body == fixedBody, "a 204 response carried body bytes")
        }
    }

    @Test("RFC 9110 §15.4.5: 304 carries no body", arguments: checklistEngines)
    func notModifiedCarriesNoBody(engine: CheckEngine) async throws {
        try await withChecklistServer(engine) { server in
            let responses = try await withClient(server, timeout: .seconds(5)) { client in
                try client.send(get("/status/304") + get("/stream-status/304") + get("/fixed"))
                return [try client.readResponse(), try client.readResponse(), try client.readResponse()]
            }
            #expect(responses.map(\.status) == [304, 304, 200])
            for response in responses { expectStandardFields(response) }
            #expect(responses[2].body == fixedBody, "a 304 response carried body bytes")
            #expect(responses[1].field("Transfer-Encoding") == nil, "a 304 announced a chunked body")
        }
    }

    @Test("RFC 9110 §15.2: 1xx carries no body, Content-Length or Transfer-Encoding", arguments: checklistEngines)
    func informationalCarriesNoBody(engine: CheckEngine) async throws {
        try await withChecklistServer(engine) { server in
            let (interim, rest) = try await withClient(server, timeout: .seconds(5)) { client in
                try client.send("POST /read HTTP/1.1\r\nHost: test\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
                let interim = try client.readResponse()
                try client.send("ok")
                // What follows the 100's empty line must be the final response's status line.
                while !client.pending.starts(with: Array("HTTP/1.1 200".utf8)) && client.pending.count < 12 {
                    guard try client.receiveMore() else { break }
                }
                let rest = String(decoding: client.pending.prefix(12), as: UTF8.self)
                _ = try client.readResponse()
                return (interim, rest)
            }
            #expect(interim.status == 100)
            #expect(interim.body.isEmpty)
            #expect(interim.field("Content-Length") == nil && interim.field("Transfer-Encoding") == nil, "\(interim.rawHead)")
            #expect(rest == "HTTP/1.1 200", "after the 100: \(rest.debugDescription)")
        }
    }

    @Test(
        "RFC 9112 §6.3: the server owns the response's framing: a handler's Content-Length, Transfer-Encoding, Server or Date is not doubled",
        arguments: checklistEngines)
    func handlerCannotBreakFraming(engine: CheckEngine) async throws {
        try await withChecklistServer(engine) { server in
            let responses = try await withClient(server, timeout: .seconds(5)) { client in
                try client.send(get("/own-framing") + get("/fixed"))
                return [try client.readResponse(), try client.readResponse()]
            }
            let response = responses[0]
            #expect(response.status == 200 && response.bodyText == "abc", "\(response.rawHead)")
            #expect(response.allFields("Content-Length").count <= 1, "\(response.rawHead)")
            #expect(response.allFields("Transfer-Encoding").count <= 1, "\(response.rawHead)")
            #expect(
                response.field("Content-Length") == nil || response.field("Transfer-Encoding") == nil,
                "both Content-Length and Transfer-Encoding: \(response.rawHead)")
            #expect(response.allFields("Server").count == 1 && response.allFields("Date").count == 1, "\(response.rawHead)")
            #expect(responses[1].body == fixedBody, "the next response is intact")
        }
    }

    // MARK: Date and Server

    @Test("RFC 9110 §6.6.1: every response carries Date and Server", arguments: checklistEngines)
    func everyResponseCarriesDateAndServer(engine: CheckEngine) async throws {
        try await withChecklistServer(engine, configure: { $0.limits.maxBodySize = 100 }) { server in
            for request in [
                get("/ok"), get("/status/404"), get("/status/204"), get("/throw-before"), get("/stream"),
                get("/stream-length"), "GET / HTTP/1.1\r\n\r\n", post("/read", String(repeating: "b", count: 101)),
                "GET / HTTP/1.0\r\n\r\n", get("/status/304"),
            ] {
                let reply = try await sendRequest(request, to: server, afterwards: .unchecked)
                expectStandardFields(reply.response)
            }
            // Counted by class (issue 13, "Counters"): 2xx ×5, 3xx, 4xx ×3 (404, 400, 413), 5xx.
            #expect(server.statistics.responsesByClass == [0, 5, 1, 3, 1], "\(server.statistics)")
        }
    }

    @Test("RFC 9110 §6.6.1: Date changes from one second to the next", arguments: checklistEngines)
    func dateChangesEverySecond(engine: CheckEngine) async throws {
        try await withChecklistServer(engine) { server in
            // Poll one connection until Date changes (formatted once a second, so within about
            // 1 s; 5 s allowed on a loaded machine).
            let (dates, ages) = try await withClient(server, timeout: .seconds(5)) { client -> ([String], [Double]) in
                var dates: [String] = []
                var ages: [Double] = []  // at arrival: at most about a second, never ahead
                for _ in 0..<50 {
                    try client.send(get("/date"))
                    let date = try client.readResponse().field("Date") ?? "-"
                    dates.append(date)
                    ages.append(parseHTTPDate(date).map { -$0.timeIntervalSinceNow } ?? .infinity)
                    if Set(dates).count > 1 { break }
                    Thread.sleep(forTimeInterval: 0.1)  // pacing, not synchronization
                }
                return (dates, ages)
            }
            // A Date is the second it was formatted, floored: 0 to 1 s old at once, more on a
            // loaded machine (3 s allowed).
            #expect(ages.allSatisfy { $0 > -1 && $0 < 3 }, "ages at arrival: \(ages)")
            let distinct = dates.reduce(into: [String]()) { if $0.last != $1 { $0.append($1) } }
            #expect(distinct.count == 2, "Date values seen: \(distinct)")
            if distinct.count == 2, let first = parseHTTPDate(distinct[0]), let second = parseHTTPDate(distinct[1]) {
                #expect(second.timeIntervalSince(first) >= 1 && second.timeIntervalSince(first) <= 6)
            }
        }
    }

    @Test("RFC 9110 §6.6.1: with several schedulers, every response still carries Date and Server", arguments: checklistEngines)
    func dateAndServerOnEveryScheduler(engine: CheckEngine) async throws {
        try await withChecklistServer(engine, configure: { $0.threads = 3 }) { server in
            let address = server.address
            let responses = try await offThePool { () -> Result<[TestResponse], any Error> in
                Result {
                    // Enough connections that SO_REUSEPORT spreads them over the three listeners.
                    let clients = try (0..<24).map { _ in try RawClient(connectingTo: address, timeout: .seconds(5)) }
                    for (index, client) in clients.enumerated() {
                        try client.send(get("/s\(index)") + post("/read", "body \(index)") + get("/status/404"))
                    }
                    return try clients.flatMap { client in try (0..<3).map { _ in try client.readResponse() } }
                }
            }.get()
            #expect(responses.count == 72)
            for (index, response) in responses.enumerated() {
                expectStandardFields(response)
                switch index % 3 {
                case 0: #expect(response.bodyText == "GET /s\(index / 3)")
                case 1: #expect(response.bodyText == "body \(index / 3)")
                default: #expect(response.status == 404)
                }
            }
        }
    }

    @Test("RFC 9110 §10.2.4: the Server field follows the configuration", arguments: checklistEngines)
    func serverFieldFollowsConfiguration(engine: CheckEngine) async throws {
        try await withChecklistServer(engine, configure: { $0.serverName = "checklist/1" }) { server in
            let reply = try await sendRequest(get("/"), to: server, afterwards: .staysOpen)
            expectStandardFields(reply.response, serverName: "checklist/1")
        }
        try await withChecklistServer(engine, configure: { $0.serverName = nil }) { server in
            let reply = try await sendRequest(get("/"), to: server, afterwards: .staysOpen)
            #expect(reply.response.field("Server") == nil)
            #expect(reply.response.field("Date") != nil)
        }
    }

    // MARK: Streamed responses (issue 13, Handler API)

    @Test("RFC 9112 §7.1: a streamed HTTP/1.1 response without a length is chunked", arguments: checklistEngines)
    func streamedResponseIsChunked(engine: CheckEngine) async throws {
        try await withChecklistServer(engine) { server in
            let reply = try await sendRequest(get("/stream"), to: server, afterwards: .staysOpen)
            #expect(reply.response.field("Transfer-Encoding")?.lowercased() == "chunked")
            #expect(reply.response.field("Content-Length") == nil)
            #expect(reply.response.chunked && reply.response.bodyText == "hello world")
            expectPersistent(reply)
        }
    }

    @Test("RFC 9112 §6.2: a streamed response with a length carries Content-Length", arguments: checklistEngines)
    func streamedResponseWithLength(engine: CheckEngine) async throws {
        try await withChecklistServer(engine) { server in
            let reply = try await sendRequest(get("/stream-length"), to: server, afterwards: .staysOpen)
            #expect(reply.response.field("Content-Length") == "11")
            #expect(reply.response.field("Transfer-Encoding") == nil)
            #expect(reply.response.bodyText == "hello world")
            expectPersistent(reply)
        }
    }

    @Test(
        "RFC 9112 §6.1: never Transfer-Encoding to HTTP/1.0: a streamed response is close-delimited",
        arguments: checklistEngines)
    func streamedResponseToHTTP10IsCloseDelimited(engine: CheckEngine) async throws {
        try await withChecklistServer(engine) { server in
            let reply = try await sendRequest(
                "GET /stream HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", to: server, afterwards: .closes)
            #expect(reply.response.status == 200)
            #expect(reply.response.field("Transfer-Encoding") == nil, "Transfer-Encoding sent to HTTP/1.0")
            #expect(reply.response.closesConnection, "a close-delimited body needs Connection: close")
            #expect(reply.response.closeDelimited && reply.response.bodyText == "hello world", "\(reply)")
            #expect(reply.closed)
            for path in ["/status/500", "/throw-before", "/fixed"] {
                let other = try await sendRequest("GET \(path) HTTP/1.0\r\n\r\n", to: server, afterwards: .closes)
                #expect(other.response.field("Transfer-Encoding") == nil, "\(path): Transfer-Encoding sent to HTTP/1.0")
            }
        }
    }

    // MARK: The parser on the socket

    @Test("RFC 9112 §2.2: a request split at any byte boundary parses the same", arguments: checklistEngines)
    func requestSplitAtAnyByteBoundary(engine: CheckEngine) async throws {
        try await withChecklistServer(engine) { server in
            let request = Array(
                "POST /read-split?q=1 HTTP/1.1\r\nHost: test\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello".utf8)
            let results = try await withClient(server, timeout: .seconds(5)) { client -> [String] in
                var wrong: [String] = []
                for cut in 1..<request.count {
                    try client.send(Array(request[..<cut]))
                    usleep(500)  // shaping (two segments, most of the time), not synchronization
                    try client.send(Array(request[cut...]))
                    let response = try client.readResponse()
                    if response.status != 200 || response.bodyText != "hello"
                        || response.field("X-Request") != "POST /read-split?q=1"
                    {
                        wrong.append("cut \(cut): \(response)")
                    }
                }
                return wrong
            }
            #expect(results.isEmpty, "\(results.prefix(5))")
        }
    }
}
