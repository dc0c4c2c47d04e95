import CogenHTTP
import CogenUring
import Foundation
import HTTPTypes
import Testing

/// Issue 13, "Graceful shutdown": stop accepting; close idle keep-alive connections at
/// once; let requests in flight finish within a grace period, then cut them; report how
/// many were served and how many were cut.
@Suite
struct GracefulShutdownTests {
    /// What the handlers did, by request name, for the test to check.
    final class HandlerLog: Sendable {
        private let state = PthreadLock<
            (started: Set<String>, finished: Set<String>, interrupted: [String: String], released: Set<String>)
        >(([], [], [:], []))
        func start(_ name: String) { state.withLock { _ = $0.started.insert(name) } }
        func finish(_ name: String) { state.withLock { _ = $0.finished.insert(name) } }
        func interrupt(_ name: String, _ error: any Error) { state.withLock { $0.interrupted[name] = "\(error)" } }
        var started: Set<String> { state.withLock { $0.started } }
        var finished: Set<String> { state.withLock { $0.finished } }
        var interrupted: [String: String] { state.withLock { $0.interrupted } }
        /// Lets the gated handler `name` go on.
        func release(_ name: String) { state.withLock { _ = $0.released.insert(name) } }
        func isReleased(_ name: String) -> Bool { state.withLock { $0.released.contains(name) } }
    }

    /// Routes: `/fast` answers at once; `/slow/<name>/<ms>` sleeps on the scheduler (a timer,
    /// no thread blocked) and answers; `/stream/<name>/<ms>` sends a response head and a first
    /// chunk, sleeps, then ends the body. With `<ms>` 0 the handler waits instead until the test
    /// releases it (so a request is surely in flight when the shutdown begins, however slow
    /// the machine).
    static func handler(_ log: HandlerLog) -> @Sendable (HTTPExchange) async throws -> Void {
        { exchange in
            let parts = exchange.path.split(separator: "/").map(String.init)
            guard parts.count == 3, let ms = Int(parts[2]) else {
                try await exchange.respond(HTTPResponse(status: .ok), body: Array("fast".utf8))
                return
            }
            let name = parts[1]
            guard let scheduler = Scheduler.current else { throw ClientError(description: "no scheduler") }
            if parts[0] == "stream" {
                try await exchange.startResponse(HTTPResponse(status: .ok))
                try await exchange.write(Array("partial".utf8))
            }
            log.start(name)
            do {
                if ms > 0 {
                    try await scheduler.sleep(for: .milliseconds(ms))
                } else {
                    var waits = 0
                    while !log.isReleased(name) {
                        guard waits < 6000 else { throw ClientError(description: "\(name) never released") }
                        try await scheduler.sleep(for: .milliseconds(5))
                        waits += 1
                    }
                }
            } catch {
                log.interrupt(name, error)
                throw error
            }
            log.finish(name)
            if parts[0] == "stream" {
                try await exchange.write(Array(" and the rest".utf8))
                try await exchange.finishResponse()
            } else {
                try await exchange.respond(HTTPResponse(status: .ok), body: Array("slow \(name)".utf8))
            }
        }
    }

    /// Opens a client and sends `request` (off the pool).
    static func open(_ address: SocketAddress, _ request: String, timeout: Duration = .seconds(15)) async throws
        -> RawClient
    {
        try await offThePool { () -> Result<RawClient, any Error> in
            Result {
                let client = try RawClient(connectingTo: address, timeout: timeout)
                try client.send(request)
                return client
            }
        }.get()
    }

    @Test(arguments: allBackends)
    func inFlightFinishIdleCloseAtOnceLateAreCutAndReportCounts(engine: Engine) async throws {
        let log = HandlerLog()
        let grace = Duration.seconds(3)
        try await withHTTPServer(engine, bound: .seconds(60), handler: Self.handler(log)) { server in
            let address = server.address

            // D: one request with `Connection: close`, served to its end before the shutdown.
            let d = try await Self.open(address, get("/fast", "Connection: close\r\n"))
            let dOutcome = try await offThePool { Result { (try d.readResponse().status, d.isClosedByPeer()) } }.get()
            #expect(dOutcome == (200, true))
            #expect(await eventually { server.statistics.connectionsOpen == 0 }, "\(server.statistics)")

            // A: a keep-alive connection, idle after its response.
            let a = try await Self.open(address, get("/fast"))
            #expect(try await offThePool { Result { try a.readResponse().status } }.get() == 200)
            // B: in flight, done well within the grace period.
            let b = try await Self.open(address, get("/slow/b/0"))
            // C: in flight past the grace period, no response head sent yet.
            let c = try await Self.open(address, get("/slow/c/30000"))
            // E: in flight past the grace period, a streamed response begun.
            let e = try await Self.open(address, get("/stream/e/30000"))
            let ePrefix = try await offThePool { () -> Result<Bool, any Error> in
                Result {
                    while TestResponse.find(e.pending, Array("partial".utf8), from: 0) == nil {
                        guard try e.receiveMore() else { return false }
                    }
                    return true
                }
            }.get()
            #expect(ePrefix, "the streamed response's first chunk did not arrive")
            #expect(await eventually { log.started == ["b", "c", "e"] }, "started: \(log.started)")

            let start = monotonicNanoseconds()
            async let reportResult = server.gracefulShutdown(gracePeriod: grace)
            async let aClosed = offThePool { a.isClosedByPeer() ? monotonicNanoseconds() : nil }
            async let bResponse = offThePool { () -> Result<(TestResponse, Bool, UInt64), any Error> in
                Result {
                    let response = try b.readResponse()
                    let at = monotonicNanoseconds()
                    return (response, b.isClosedByPeer(), at)
                }
            }
            async let cEnd = offThePool { () -> Result<([UInt8], UInt64), any Error> in
                Result { (try c.readToEnd(), monotonicNanoseconds()) }
            }
            async let eEnd = offThePool { () -> Result<([UInt8], UInt64), any Error> in
                Result { (try e.readToEnd(), monotonicNanoseconds()) }
            }

            // Idle connections are closed at once: well before the grace period ends.
            let aAt = await aClosed
            #expect(aAt != nil, "the idle connection was not closed")
            // The shutdown has begun (the idle connection is closed): B may finish now.
            log.release("b")
            if let aAt {
                #expect(aAt - start < 1_500_000_000, "idle connection closed after \(milliseconds(aAt - start))")
            }
            // The listener stopped accepting (it was closed before the idle connections): a
            // new connection is refused, or never served.
            // (Not `RawClient`: when its connect fails, its initializer closes the descriptor
            // and then its deinit closes the same number again, which by then may be another
            // thread's descriptor: tests running alongside saw EBADF and lost connections.)
            let port = address.port
            let newConnection = await offThePool { () -> String in
                guard let fd = try? connectLoopback(port: port, timeoutSeconds: 2) else { return "refused" }
                defer { close(fd) }
                let request = Array(get("/fast").utf8)
                let sent = request.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                guard sent == request.count else { return "reset" }
                var buffer = [UInt8](repeating: 0, count: 4096)
                let count = recv(fd, &buffer, buffer.count, 0)
                if count >= 12 { return "served \(String(decoding: buffer[9..<12], as: UTF8.self))" }
                return count == 0 ? "not served (closed)" : "not served"
            }
            #expect(!newConnection.hasPrefix("served"), "a connection made during the shutdown: \(newConnection)")

            // In flight, within the grace period: finished, then the connection ends.
            let (bResponseValue, bClosed, bAt) = try await bResponse.get()
            #expect(bResponseValue.status == 200 && bResponseValue.bodyText == "slow b", "\(bResponseValue)")
            #expect(bClosed, "the connection stayed open after its request finished during the shutdown")
            // The server says it closes (RFC 9112 §9.6).
            #expect(bResponseValue.closesConnection, "\(bResponseValue)")

            // Past the grace period: cut, no response (C), a chunked body without its end (E).
            let (cBytes, cAt) = try await cEnd.get()
            #expect(cBytes.isEmpty, "the cut request got \(String(decoding: cBytes.prefix(200), as: UTF8.self))")
            #expect(
                cAt - start >= 2_800_000_000, "cut after \(milliseconds(cAt - start)), before the grace period ended")
            let (eBytes, _) = try await eEnd.get()
            let eText = String(decoding: e.pending + eBytes, as: UTF8.self)
            #expect(
                !eText.contains("0\r\n\r\n") && !eText.contains("the rest"), "the cut stream ended properly: \(eText)")

            let report = await reportResult
            print(
                "graceful shutdown [\(engine.testDescription)]: \(report); idle closed after "
                    + "\(milliseconds((aAt ?? start) - start)), in-flight answered after \(milliseconds(bAt - start)) "
                    + "(Connection: \(bResponseValue.field("Connection") ?? "-")), cut after \(milliseconds(cAt - start)); "
                    + "new connection: \(newConnection); handlers interrupted: \(log.interrupted)")
            #expect(log.finished == ["b"], "finished: \(log.finished)")
            #expect(Set(log.interrupted.keys) == ["c", "e"], "interrupted: \(log.interrupted)")
            // D ended by itself before the shutdown, B during it; A was idle; C and E were cut.
            #expect(report.cut == 2, "\(report)")
            #expect(report.closedWhileIdle == 1, "\(report)")
            #expect(report.served == 2, "\(report)")
            #expect(report.statistics.requests == 5, "\(report)")
            #expect(report.statistics.connectionsAccepted == 5, "\(report)")
            #expect(report.statistics.connectionsOpen == 0, "\(report)")
        }
    }

    /// A streamed response in flight when the shutdown begins, finished within the grace
    /// period: the client gets all of it, then the connection closes, and it counts as
    /// served (it was not idle when the shutdown began, nor closed at once).
    @Test(arguments: allBackends)
    func streamedResponseFinishedWithinGraceIsServed(engine: Engine) async throws {
        let log = HandlerLog()
        try await withHTTPServer(engine, bound: .seconds(60), handler: Self.handler(log)) { server in
            let address = server.address
            let idle = try await Self.open(address, get("/fast"))
            #expect(try await offThePool { Result { try idle.readResponse().status } }.get() == 200)
            let f = try await Self.open(address, get("/stream/f/0"))
            #expect(await eventually { log.started == ["f"] }, "started: \(log.started)")
            async let reportResult = server.gracefulShutdown(gracePeriod: .seconds(3))
            // Once the idle connection is closed, the shutdown has begun: F may finish.
            #expect(await offThePool { idle.isClosedByPeer() })
            log.release("f")
            let (response, closed) = try await offThePool { () -> Result<(TestResponse, Bool), any Error> in
                Result { (try f.readResponse(), f.isClosedByPeer()) }
            }.get()
            let report = await reportResult
            print("graceful shutdown, streamed response in flight [\(engine.testDescription)]: \(report)")
            #expect(
                response.status == 200 && response.chunked && response.bodyText == "partial and the rest",
                "\(response) \(response.bodyText)")
            #expect(closed, "the connection stayed open after its response during the shutdown")
            #expect(log.finished == ["f"])
            #expect(report.cut == 0, "\(report)")
            #expect(report.closedWhileIdle == 1, "only the idle connection was closed while idle: \(report)")
            #expect(report.served == 1, "the streamed exchange finished within the grace period: \(report)")
        }
    }

    @Test(arguments: allBackends)
    func idleConnectionsDoNotHoldUpShutdown(engine: Engine) async throws {
        let log = HandlerLog()
        try await withHTTPServer(engine, bound: .seconds(60), handler: Self.handler(log)) { server in
            let address = server.address
            var clients: [RawClient] = []
            for index in 0..<20 {
                let client = try await Self.open(address, get("/fast"))
                let status = await offThePool { Result { try client.readResponse().status } }
                #expect(
                    (try? status.get()) == 200,
                    "connection \(index): \(status); server: \(server.statistics)")
                clients.append(client)
            }
            let start = monotonicNanoseconds()
            // A long grace period: only requests in flight may use it, and there are none.
            let report = await server.gracefulShutdown(gracePeriod: .seconds(30))
            let took = monotonicNanoseconds() - start
            let closed = await offThePool { [clients] in clients.filter { $0.isClosedByPeer() }.count }
            print("graceful shutdown, 20 idle [\(engine.testDescription)]: \(report); took \(milliseconds(took))")
            #expect(took < 10_000_000_000, "a shutdown with only idle connections took \(milliseconds(took))")
            #expect(closed == 20)
            #expect(report.closedWhileIdle == 20, "\(report)")
            #expect(report.cut == 0 && report.served == 0, "\(report)")
        }
    }
}
