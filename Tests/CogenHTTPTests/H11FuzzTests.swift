@testable import CogenHTTP
import CogenUring
import Foundation
import HTTPTypes
import Logging
import PropertyTestSupport
import Testing

// The fuzz test: generated and mutated requests (single ones, pipelined batches, ones past
// every limit) go to a real HTTPServer on each backend, one connection per case (sent whole,
// then half-closed); everything the server sends until it closes is kept, and h11, as the
// client, judges it (`scripts/h11-oracle.py responses`): every response well-formed, framing
// consistent (no body for HEAD/204/304, Content-Length right, chunked well-formed), nothing
// left over after the last response. The test adds: `Date` and `Server` on every response;
// no `Content-Length`/`Transfer-Encoding` on 1xx/204; an error status carries
// `Connection: close` and is the last response; and where our own parser and decoder can
// tell how the server must answer (how many responses, the final error status), it does.
// It reports how many cases ended in each status, and the server must still answer at the
// end.

/// The limits the fuzzed server runs with: small, so the generated cases reach them.
let fuzzLimits: HTTPServer.Limits = {
    var limits = HTTPServer.Limits()
    limits.maxRequestLineLength = 512
    limits.maxHeaderSectionSize = 2048
    limits.maxFieldCount = 20
    limits.maxBodySize = 4096
    limits.maxChunkExtensionLength = 64
    limits.maxTrailerSize = 256
    return limits
}()

/// The handler's paths: each answers in a different way.
let fuzzPaths = ["/", "/echo", "/stream", "/sized", "/204", "/304", "/throw", "/nobody", "/big", "/plaintext"]

/// Paths whose handler does not read the request body (the server drains it, or closes).
let fuzzPathsNotReadingBody: Set<String> = ["/sized", "/204", "/304", "/throw", "/nobody", "/big"]

struct FuzzHandlerError: Error {}

@Sendable func fuzzHandler(_ exchange: HTTPExchange) async throws {
    if exchange.methodIs("CONNECT") {
        var fields = HTTPFields()
        fields[.allow] = "GET, HEAD, POST"
        try await exchange.respond(HTTPResponse(status: .methodNotAllowed, headerFields: fields))
        return
    }
    switch exchange.path {
    case "/echo":
        let body = try await exchange.readBody()
        try await exchange.respond(status: 200, contentType: "application/octet-stream", body: body)
    case "/stream":
        _ = try await exchange.readBody()
        try await exchange.startResponse(HTTPResponse(status: .ok))
        try await exchange.write(Array("chunk one, ".utf8))
        try await exchange.write(Array("chunk two".utf8))
        try await exchange.finishResponse()
    case "/sized":
        try await exchange.startResponse(HTTPResponse(status: .ok), contentLength: 10)
        try await exchange.write(Array("0123".utf8))
        try await exchange.write(Array("456789".utf8))
        try await exchange.finishResponse()
    case "/204":
        try await exchange.respond(status: 204, body: [])
    case "/304":
        try await exchange.respond(status: 304, body: [])
    case "/throw":
        throw FuzzHandlerError()
    case "/nobody":
        try await exchange.respond(status: 200, contentType: "text/plain", body: Array("x".utf8))
    case "/big":
        try await exchange.respond(status: 200, body: [UInt8](repeating: 0x61, count: 100_000))
    default:
        _ = try await exchange.readBody()
        try await exchange.respond(status: 200, contentType: "text/plain", body: Array("ok".utf8))
    }
}

/// What our parser and decoder, with the server's limits, say the server must answer.
struct FuzzPrediction {
    /// The methods of the requests answered, in order ("GET" for a request rejected before
    /// its method was read).
    var methods: [String] = []
    /// Whether `methods.count` is exactly the number of responses (false where it depends
    /// on timing: a body cut short by the end of the stream).
    var countIsCertain = true
    /// The status of the last response, when it is an error our parser or decoder finds.
    var finalStatus: Int?
}

func predictExchanges(_ bytes: [UInt8]) -> FuzzPrediction {
    var prediction = FuzzPrediction()
    let limits = fuzzLimits
    var parser = RequestHeadParser(
        limits: .init(
            maxRequestLineLength: limits.maxRequestLineLength, maxHeaderSectionSize: limits.maxHeaderSectionSize,
            maxFieldCount: limits.maxFieldCount, maxContentLength: limits.maxBodySize))
    var offset = 0
    while offset < bytes.count {
        let result: RequestHeadParser.Result
        do {
            result = try bytes[offset...].withUnsafeBytes { try parser.parse($0) }
        } catch let error as RequestHeadError {
            prediction.methods.append("GET")
            prediction.finalStatus = error.status
            return prediction
        } catch {
            prediction.countIsCertain = false
            return prediction
        }
        guard case .complete(let head, let consumed) = result else {
            return prediction  // the stream ends inside a head: the server closes silently
        }
        offset += consumed
        let method = head.string(head.methodRange)
        prediction.methods.append(method)
        let path = head.pathRange.map { $0.isEmpty ? "/" : head.string($0) } ?? ""
        let readsBody = method != "CONNECT" && !fuzzPathsNotReadingBody.contains(path)
        switch head.framing {
        case .none:
            break
        case .contentLength(let length):
            guard Int64(bytes.count - offset) >= length else {
                prediction.countIsCertain = false
                return prediction
            }
            offset += Int(length)
            // A body left unread with no 100 sent: the response closes the connection.
            if !readsBody && head.expectsContinue && length > 0 { return prediction }
        case .chunked:
            let outcome = decodeChunked(
                [Array(bytes[offset...])],
                limits: ChunkedLimits(
                    maxChunkExtensionLength: limits.maxChunkExtensionLength, maxTrailerSize: limits.maxTrailerSize,
                    maxTrailerFieldCount: limits.maxFieldCount, maxBodySize: limits.maxBodySize))
            switch outcome.end {
            case .complete(let used):
                offset += used
                if !readsBody && head.expectsContinue { return prediction }
            case .error(let error):
                // A handler that reads the body gets the error's status instead of its own
                // response; one that does not has answered, and the drain closes.
                if readsBody { prediction.finalStatus = error.status }
                return prediction
            case .incomplete, .stuck:
                prediction.countIsCertain = false
                return prediction
            }
        }
        if !head.keepAlive { return prediction }
        // An HTTP/1.0 streamed response without a length is close-delimited.
        if head.version == .http1_0 && path == "/stream" && method != "HEAD" { return prediction }
    }
    return prediction
}

/// Cases past each limit of `fuzzLimits` (and the 501/505 rules), built on a valid request.
extension RequestGenerator {
    mutating func oversized() -> [UInt8] {
        let host = "Host: fuzz\r\n"
        switch below(9) {
        case 0: return Array("GET /\(String(repeating: "a", count: 520 + below(200))) HTTP/1.1\r\n\(host)\r\n".utf8)
        case 1:
            let fields = (0..<(21 + below(10))).map { "X-F\($0): v\r\n" }.joined()
            return Array("GET / HTTP/1.1\r\n\(host)\(fields)\r\n".utf8)
        case 2: return Array("GET / HTTP/1.1\r\n\(host)X-Big: \(String(repeating: "b", count: 2100 + below(500)))\r\n\r\n".utf8)
        case 3:
            let length = 4097 + below(2000)
            return Array("POST /echo HTTP/1.1\r\n\(host)Content-Length: \(length)\r\n\r\n".utf8)
                + [UInt8](repeating: 0x63, count: length)
        case 4:
            let chunk = String(repeating: "d", count: 1000)
            let chunks = (0..<5).map { _ in "3e8\r\n\(chunk)\r\n" }.joined()
            return Array("POST \(pick(["/echo", "/", "/nobody"])) HTTP/1.1\r\n\(host)Transfer-Encoding: chunked\r\n\r\n\(chunks)0\r\n\r\n".utf8)
        case 5:
            return Array("POST /echo HTTP/1.1\r\n\(host)Transfer-Encoding: chunked\r\n\r\n5;\(String(repeating: "e", count: 70))\r\nhello\r\n0\r\n\r\n".utf8)
        case 6:
            return Array("POST /echo HTTP/1.1\r\n\(host)Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: \(String(repeating: "t", count: 300))\r\n\r\n".utf8)
        case 7: return Array("GET / HTTP/\(pick(["2.0", "3.0", "0.9"]))\r\n\(host)\r\n".utf8)
        default: return Array("POST /echo HTTP/1.1\r\n\(host)Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n".utf8)
        }
    }

    /// A fuzz case: one generated (maybe mutated) request, a pipelined batch, or one past a limit.
    mutating func fuzzCase() -> [UInt8] {
        switch below(20) {
        case 0..<13:
            return next()
        case 13..<17:
            var batch: [UInt8] = []
            for _ in 0..<(2 + below(4)) {
                var request = valid()
                request.after = []
                if chance(20) { mutate(&request) }
                batch += request.bytes
            }
            return batch
        default:
            return oversized()
        }
    }
}

/// Sends each case on its own connection to `address`, half-closes, and reads until the
/// server closes; `workers` connections at a time. A case that fails on the client side
/// (no close within the timeout) gets `nil`.
func exchangeAll(_ cases: [[UInt8]], with address: SocketAddress, workers: Int) -> [[UInt8]?] {
    let results = PthreadLock<[[UInt8]?]>(Array(repeating: nil, count: cases.count))
    DispatchQueue.concurrentPerform(iterations: workers) { worker in
        for index in stride(from: worker, to: cases.count, by: workers) {
            guard let client = try? RawClient(connectingTo: address, timeout: .seconds(10)) else { continue }
            try? client.send(cases[index])  // the server may close early (an error): read anyway
            client.shutdownWrite()
            let received = try? client.readToEnd()
            results.withLock { $0[index] = received }
        }
    }
    return results.withLock { $0 }
}

/// The statuses a report counts by name; others are grouped as "other".
let reportedStatuses = ["2xx", "400", "413", "414", "431", "501", "505"]

@Suite("H11 fuzz")
struct H11FuzzTests {
    /// The judge itself: h11 refuses what the fuzz test must catch.
    @Test func h11JudgeCatchesMalformedResponses() throws {
        guard h11IsAvailable("H11 fuzz judge") else { return }
        let good = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        let cases: [(methods: String, response: String, ok: Bool)] = [
            ("GET GET", good + good, true),
            ("GET", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n", true),
            ("HEAD", good, false),  // a body after a HEAD response
            ("GET", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nok", false),  // short of Content-Length
            ("GET", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n", false),  // no last chunk
            ("GET", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", false),  // bad chunk size
            ("GET", "HTTP/1.1 2000 OK\r\n\r\n", false),  // bad status line
            ("GET", "HTTP/1.1 200 OK\r\nBad Name: v\r\nContent-Length: 0\r\n\r\n", false),
        ]
        let verdicts = try runH11Oracle(
            mode: "responses",
            cases: cases.map { hexString(Array($0.methods.utf8)) + ":" + hexString(Array($0.response.utf8)) })
        for (item, verdict) in zip(cases, verdicts) {
            #expect((verdict["r"] as? String == "ok") == item.ok, "\(escaped(Array(item.response.utf8))): \(verdict)")
        }
        // Bytes after a response that closes the connection are left over (the test fails them).
        let closing = "HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n" + good
        let leftover = try runH11Oracle(mode: "responses", cases: [hexString(Array("GET GET".utf8)) + ":" + hexString(Array(closing.utf8))])
        #expect(leftover.first?["trailing"] as? Int == good.utf8.count)
    }

    @Test(arguments: allBackends)
    func serverResponsesSatisfyH11(engine: Engine) async throws {
        guard h11IsAvailable("H11 fuzz") else { return }
        let seed: UInt64 = ProcessInfo.processInfo.environment["H11_FUZZ_SEED"].flatMap { UInt64($0) } ?? 0xF022_2026
        var generator = RequestGenerator(random: SplitMix64(seed: seed))
        generator.paths = fuzzPaths
        let cases = (0..<1000).map { _ in generator.fuzzCase() }
        let predictions = cases.map(predictExchanges)
        let started = ContinuousClock.now

        let (received, stillAnswering) = try await withHTTPServer(
            engine, bound: .seconds(150),
            configure: { configuration in
                configuration.limits = fuzzLimits
                configuration.timeouts.requestHead = .seconds(5)
                configuration.timeouts.linger = .seconds(1)
                // The /throw cases log an error each: keep the test's output readable.
                configuration.logger.logLevel = .critical
            },
            handler: fuzzHandler
        ) { server in
            let address = server.address
            let received = await offThePool { exchangeAll(cases, with: address, workers: 4) }
            // The server still answers after all of it.
            let last = try await withClient(server) { client -> Int in
                try client.send(get("/plaintext", "Connection: close\r\n"))
                return try client.readResponse().status
            }
            return (received, last == 200)
        }
        let exchanged = ContinuousClock.now - started
        #expect(stillAnswering, "the server no longer answers after the fuzz cases")

        // h11 judges every case's bytes, in one run.
        let lines = zip(predictions, received).map { prediction, bytes in
            hexString(Array(prediction.methods.joined(separator: " ").utf8)) + ":" + hexString(bytes ?? [])
        }
        let verdicts = try runH11Oracle(mode: "responses", cases: lines)

        var endedIn: [String: Int] = [:]
        var allStatuses: [Int: Int] = [:]
        var failures = 0
        func fail(_ index: Int, _ what: String) {
            failures += 1
            if failures <= 10 {
                let response = received[index].map { escaped($0.prefix(600)) } ?? "nil"
                Issue.record("case \(index): \(what)\n request: \(escaped(cases[index].prefix(600)))\n response: \(response)")
            }
        }
        let errorStatuses: Set<Int> = [400, 408, 413, 414, 417, 431, 501, 505]
        for (index, verdict) in verdicts.enumerated() {
            guard received[index] != nil else {
                fail(index, "the client saw no close (or could not connect)")
                continue
            }
            guard verdict["r"] as? String == "ok" else {
                fail(index, "h11: \(verdict["error"] ?? verdict)")
                continue
            }
            if let trailing = verdict["trailing"] as? Int, trailing > 0 {
                fail(index, "\(trailing) bytes after the last response h11 could read: \(escaped(bytesFromHex(verdict["trailing_head"] as? String ?? "")))")
            }
            let responses = (verdict["responses"] as? [[String: Any]]) ?? []
            for (position, response) in responses.enumerated() {
                let status = (response["status"] as? Int) ?? 0
                allStatuses[status, default: 0] += 1
                let pairs: [[String]] = (response["headers"] as? [[String]]) ?? []
                let headers: [(String, String)] = pairs.map { pair -> (String, String) in
                    let name = String(decoding: bytesFromHex(pair.first ?? ""), as: UTF8.self).lowercased()
                    let value = String(decoding: bytesFromHex(pair.last ?? ""), as: UTF8.self).lowercased()
                    return (name, value)
                }
                let names = Set(headers.map { $0.0 })
                if !names.contains("date") || !names.contains("server") {
                    fail(index, "response \(position) (\(status)) lacks Date or Server: \(headers)")
                }
                if status == 204 && (names.contains("content-length") || names.contains("transfer-encoding")) {
                    fail(index, "a 204 with Content-Length or Transfer-Encoding: \(headers)")
                }
                if status == 304 && names.contains("transfer-encoding") {
                    fail(index, "a 304 with Transfer-Encoding: \(headers)")
                }
                if errorStatuses.contains(status) {
                    let closes = headers.contains { $0.0 == "connection" && $0.1.contains("close") }
                    if !closes { fail(index, "error \(status) without Connection: close") }
                    if position != responses.count - 1 { fail(index, "error \(status) is not the last response") }
                }
            }
            let prediction = predictions[index]
            if prediction.countIsCertain && responses.count != prediction.methods.count {
                fail(index, "\(responses.count) responses, expected \(prediction.methods.count) (\(prediction.methods))")
            }
            if let expected = prediction.finalStatus, let last = responses.last?["status"] as? Int, last != expected {
                fail(index, "ended in \(last), expected \(expected)")
            }
            let key: String
            if let last = responses.last?["status"] as? Int {
                key = last / 100 == 2 ? "2xx" : reportedStatuses.contains(String(last)) ? String(last) : "other (\(last))"
            } else {
                key = "no response"
            }
            endedIn[key, default: 0] += 1
        }
        let summary: String = endedIn.keys.sorted().map { key in "\(key): \(endedIn[key] ?? 0)" }.joined(separator: ", ")
        let statusSummary: String = allStatuses.keys.sorted().map { key in "\(key): \(allStatuses[key] ?? 0)" }
            .joined(separator: ", ")
        let name = engine.testDescription
        print("H11 fuzz [\(name)], seed \(hex(seed)), \(cases.count) cases in \(exchanged): ended in \(summary)")
        print("H11 fuzz [\(name)], all responses by status: \(statusSummary)")
        #expect(failures == 0, "\(failures) cases failed")
        for status in reportedStatuses {
            #expect((endedIn[status] ?? 0) > 0, "no case ended in \(status)")
        }
    }
}
