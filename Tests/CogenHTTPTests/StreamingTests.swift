import CogenHTTP
import CogenUring
import Foundation
import HTTPTypes
import Testing

extension StressTests {
    /// Issue 13, "Streaming both ways against a slow reader, with the server's memory bounded".
    ///
    /// Every byte is accounted for: what the client wrote = its unacknowledged send queue
    /// (`SIOCOUTQ`) + the server socket's receive queue (the server's side of the loopback
    /// connection, through `NETLINK_SOCK_DIAG` as `ss` reads it) + what the server took from
    /// the kernel. The last, minus what the handler got, is what the server holds: it must
    /// stay within the scheduler's read-ahead limit. The other way: what the handler handed to
    /// `write` = what the client read + its receive queue (`FIONREAD`) + the server socket's
    /// send queue + what the server still holds, which must stay within the write in progress
    /// plus the send limit. Figures are taken when nothing moves (the handler paused, or the
    /// reader paused, and the queues stable for three samples 20 ms apart). The kernel's own
    /// buffers (the server socket's grow to 4 MiB here) are not the server's memory.
    ///
    /// `.serialized`: the cases measure the process's memory, and bulk transfers of one case
    /// would slow another's slow reader.
    @Suite(.serialized)
    struct StreamingTests {
        // MARK: Payload

        /// How a streamed response's body is delimited.
        enum Framing: String, Sendable, CaseIterable, CustomTestStringConvertible {
            /// HTTP/1.1 with a length given.
            case contentLength
            /// HTTP/1.1 without a length.
            case chunked
            /// HTTP/1.0 without a length: the end of the connection ends it.
            case closeDelimited
            var testDescription: String { rawValue }
        }

        /// The payload: byte `i` is `table[i % period]`; `wide` repeats the table's start after
        /// its end, so any run of up to 64 KiB from any offset is one contiguous slice.
        enum Pattern {
            static let period = 65521  // prime: no alignment with chunk or buffer sizes
            static let wide: [UInt8] = {
                var state: UInt64 = 0x9E37_79B9_7F4A_7C15
                var table = [UInt8](repeating: 0, count: period + 65536)
                for index in 0..<period {
                    state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
                    table[index] = UInt8(truncatingIfNeeded: state >> 56)
                }
                for index in period..<table.count { table[index] = table[index - period] }
                return table
            }()

            /// `count` (≤ 64 KiB) payload bytes from `offset`.
            static func bytes(from offset: Int, count: Int) -> [UInt8] {
                let start = offset % period
                return Array(wide[start..<(start + count)])
            }

            /// Whether `bytes` are the payload from `offset`.
            static func matches(_ bytes: UnsafeRawBufferPointer, at offset: Int) -> Bool {
                var done = 0
                return wide.withUnsafeBytes { table in
                    while done < bytes.count {
                        let start = (offset + done) % period
                        let count = min(bytes.count - done, 65536)
                        if memcmp(bytes.baseAddress! + done, table.baseAddress! + start, count) != 0 { return false }
                        done += count
                    }
                    return true
                }
            }
        }

        // MARK: Handlers and what they report

        struct HandlerState: Sendable {
            /// Upload: body bytes the handler got so far.
            var got = 0
            /// Upload: the pause point the handler waits at (-1: not paused).
            var pausedAt = -1
            /// Upload: pause points released by the test.
            var released = 0
            /// Download: body bytes handed to `write`, the call in progress included.
            var written = 0
            var startedAt: UInt64 = 0
            var finishedAt: UInt64 = 0
            var error: String?
        }

        final class HandlerLog: Sendable {
            private let states = PthreadLock<[String: HandlerState]>([:])
            func update(_ name: String, _ body: (inout HandlerState) -> Void) {
                states.withLock { body(&$0[name, default: HandlerState()]) }
            }
            subscript(name: String) -> HandlerState { states.withLock { $0[name] ?? HandlerState() } }
        }

        /// `/upload/<name>/<pause points, comma-separated, or ->/<ms per piece>`: reads the body
        /// with `readBodyChunk` (16 KiB at most per call), sleeping after each piece (a slow
        /// reader) and waiting at each pause point until the test releases it; answers
        /// `"<bytes> ok"` (or `mismatch`).
        /// `/download/<name>/<size>/<1: Content-Length, 0: chunked>`: streams `size` bytes in
        /// 64 KiB `write`s.
        static func handler(_ log: HandlerLog) -> @Sendable (HTTPExchange) async throws -> Void {
            { exchange in
                let parts = exchange.path.split(separator: "/").map(String.init)
                guard let scheduler = Scheduler.current, parts.count == 4 else {
                    try await exchange.respond(HTTPResponse(status: .notFound))
                    return
                }
                let name = parts[1]
                log.update(name) { $0.startedAt = monotonicNanoseconds() }
                do {
                    if parts[0] == "upload" {
                        let points = parts[2] == "-" ? [] : parts[2].split(separator: ",").compactMap { Int($0) }
                        let delay = Int(parts[3]) ?? 0
                        var got = 0
                        var intact = true
                        var next = 0
                        while let piece = try await exchange.readBodyChunk(maxLength: 16384) {
                            if intact { intact = piece.withUnsafeBytes { Pattern.matches($0, at: got) } }
                            got += piece.count
                            let total = got
                            log.update(name) { $0.got = total }
                            while next < points.count && got >= points[next] {
                                let point = next
                                log.update(name) { $0.pausedAt = point }
                                var waits = 0
                                while log[name].released <= point && waits < 12_000 {  // 60 s at most
                                    try await scheduler.sleep(for: .milliseconds(5))
                                    waits += 1
                                }
                                log.update(name) { $0.pausedAt = -1 }
                                next += 1
                            }
                            if delay > 0 { try await scheduler.sleep(for: .milliseconds(delay)) }
                        }
                        log.update(name) { $0.finishedAt = monotonicNanoseconds() }
                        try await exchange.respond(
                            HTTPResponse(status: .ok), body: Array("\(got) \(intact ? "ok" : "mismatch")".utf8))
                    } else {
                        guard let size = Int(parts[2]) else { throw ClientError(description: "bad size") }
                        try await exchange.startResponse(
                            HTTPResponse(status: .ok), contentLength: parts[3] == "1" ? Int64(size) : nil)
                        var written = 0
                        while written < size {
                            let count = min(65536, size - written)
                            let handed = written + count
                            log.update(name) { $0.written = handed }
                            try await exchange.write(Pattern.bytes(from: written, count: count))
                            written += count
                        }
                        try await exchange.finishResponse()
                        log.update(name) { $0.finishedAt = monotonicNanoseconds() }
                    }
                } catch {
                    log.update(name) { $0.error = "\(error)" }
                    throw error
                }
            }
        }

        // MARK: The client driver

        /// One streaming connection, as the client drives it.
        final class Stream {
            enum Kind {
                case upload(chunked: Bool)
                case download(Framing)
            }
            let name: String
            let kind: Kind
            let size: Int
            let pausePoints: [Int]
            let fd: Int32
            let clientPort: UInt16
            let serverPort: UInt16
            /// Keep every received byte (to check the body at the end).
            let keepsBytes: Bool

            // Upload: wire bytes queued before the next payload run (head, chunk framing).
            var framing: [UInt8] = []
            var framingSent = 0
            var payloadSent = 0
            var chunkLeft = 0
            var finalChunkQueued = false
            var wireSent = 0
            var headLength = 0
            // Both: what came back.
            var received: [UInt8] = []
            var receivedCount = 0
            var responseHeadLength: Int?
            var done = false
            var failure: String?
            // Download: the pause point the reader waits at (-1: reading).
            var readerPausedAt = -1
            var nextPause = 0
            /// The last bytes received (where a chunked body's end shows).
            var tail: [UInt8] = []
            var firstByteAt: UInt64 = 0
            var lastByteAt: UInt64 = 0

            init(name: String, kind: Kind, size: Int, pausePoints: [Int], port: UInt16, keepsBytes: Bool, delay: Int)
                throws
            {
                self.name = name
                self.kind = kind
                self.size = size
                self.pausePoints = pausePoints
                self.keepsBytes = keepsBytes
                serverPort = port
                // Small client buffers: the client's kernel hides little, so a server that
                // buffered without bound would show it.
                switch kind {
                case .upload: fd = try connectLoopback(port: port, sendBuffer: 65536, nonBlocking: true)
                case .download: fd = try connectLoopback(port: port, receiveBuffer: 262144, nonBlocking: true)
                }
                clientPort = localPort(of: fd)
                let points = pausePoints.isEmpty ? "-" : pausePoints.map(String.init).joined(separator: ",")
                switch kind {
                case .upload(let chunked):
                    let framingField = chunked ? "Transfer-Encoding: chunked" : "Content-Length: \(size)"
                    framing = Array(
                        "POST /upload/\(name)/\(points)/\(delay) HTTP/1.1\r\nHost: test\r\n\(framingField)\r\n\r\n".utf8
                    )
                    headLength = framing.count
                    chunkLeft = chunked ? 0 : size
                case .download(let bodyFraming):
                    // HTTP/1.0 and no length: a close-delimited body.
                    let version = bodyFraming == .closeDelimited ? "HTTP/1.0" : "HTTP/1.1"
                    let withLength = bodyFraming == .contentLength ? 1 : 0
                    framing = Array("GET /download/\(name)/\(size)/\(withLength) \(version)\r\nHost: test\r\n\r\n".utf8)
                    headLength = framing.count
                }
            }

            deinit { Glibc.close(fd) }

            /// Whether the client has request bytes left to send.
            var hasBytesToSend: Bool {
                if framingSent < framing.count { return true }
                guard case .upload(let chunked) = kind else { return false }
                return chunked ? !finalChunkQueued || chunkLeft > 0 : chunkLeft > 0
            }

            /// Sends what the socket takes without blocking. Returns whether anything was sent.
            @discardableResult
            func pushSends() -> Bool {
                var progressed = false
                while true {
                    if framingSent < framing.count {
                        let sent = framing[framingSent...].withUnsafeBytes {
                            Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL))
                        }
                        guard sent > 0 else { return noteSendError(sent, progressed) }
                        framingSent += sent
                        wireSent += sent
                        progressed = true
                        continue
                    }
                    guard case .upload(let chunked) = kind else { return progressed }
                    if chunkLeft == 0 {
                        guard chunked, !finalChunkQueued else { return progressed }
                        // The next chunk's size line (after the previous chunk's CRLF), or the end.
                        let prefix: [UInt8] = payloadSent > 0 ? [13, 10] : []
                        let next = min(32768, size - payloadSent)
                        framing = prefix + Array((next == 0 ? "0\r\n\r\n" : String(next, radix: 16) + "\r\n").utf8)
                        framingSent = 0
                        chunkLeft = next
                        if next == 0 { finalChunkQueued = true }
                        continue
                    }
                    let start = payloadSent % Pattern.period
                    let count = min(chunkLeft, 65536)
                    let sent = Pattern.wide.withUnsafeBytes {
                        Glibc.send(fd, $0.baseAddress! + start, count, Int32(MSG_NOSIGNAL))
                    }
                    guard sent > 0 else { return noteSendError(sent, progressed) }
                    payloadSent += sent
                    chunkLeft -= sent
                    wireSent += sent
                    progressed = true
                }
            }

            private func noteSendError(_ result: Int, _ progressed: Bool) -> Bool {
                if result < 0 && errno != EAGAIN && errno != EINTR && failure == nil {
                    failure = "send: errno \(errno)"
                }
                return progressed
            }

            /// Reads at most `budget` bytes (into `scratch`); returns how many.
            func read(budget: Int, scratch: inout [UInt8]) -> Int {
                var total = 0
                while total < budget && readerPausedAt < 0 {
                    let count = scratch.withUnsafeMutableBytes {
                        Glibc.recv(fd, $0.baseAddress, min($0.count, budget - total), 0)
                    }
                    if count > 0 {
                        if firstByteAt == 0 { firstByteAt = monotonicNanoseconds() }
                        lastByteAt = monotonicNanoseconds()
                        if keepsBytes || responseHeadLength == nil || received.count < 8192 {
                            received += scratch[..<count]
                        }
                        receivedCount += count
                        total += count
                        tail = Array((tail + scratch[max(0, count - 8)..<count]).suffix(8))
                        noteReceived()
                        continue
                    }
                    if count == 0 {
                        if case .download(.closeDelimited) = kind, let headLength = responseHeadLength,
                            receivedCount >= headLength + size
                        {
                            done = true
                        }
                        if !done && failure == nil { failure = "end of stream after \(receivedCount) bytes" }
                        done = true
                    } else if errno != EAGAIN && errno != EINTR && failure == nil {
                        failure = "recv: errno \(errno)"
                        done = true
                    }
                    return total
                }
                return total
            }

            private func noteReceived() {
                if responseHeadLength == nil, let end = TestResponse.find(received, [13, 10, 13, 10], from: 0) {
                    responseHeadLength = end + 4
                }
                guard let headLength = responseHeadLength else { return }
                switch kind {
                case .upload:
                    if (try? TestResponse.parse(received, forHEAD: false, atEnd: false)) != nil { done = true }
                case .download(let bodyFraming):
                    switch bodyFraming {
                    case .contentLength: if receivedCount >= headLength + size { done = true }
                    case .chunked: if receivedCount >= headLength + size && tailEndsChunkedBody() { done = true }
                    case .closeDelimited: break  // at the end of the stream
                    }
                    if nextPause < pausePoints.count && receivedCount - headLength >= pausePoints[nextPause] {
                        readerPausedAt = nextPause
                    }
                }
            }

            private func tailEndsChunkedBody() -> Bool {
                let end: [UInt8] = Array("\r\n0\r\n\r\n".utf8)
                return tail.count >= end.count && Array(tail.suffix(end.count)) == end
            }

            /// Whether the reader may read (a download not paused).
            var readerActive: Bool { readerPausedAt < 0 }

            func releaseReader() {
                readerPausedAt = -1
                nextPause += 1
            }

            /// The server's side of this connection, seen from the kernel.
            func serverQueues(_ table: [UInt32: KernelQueues]) -> KernelQueues? {
                table[KernelQueues.key(localPort: serverPort, remotePort: clientPort)]
            }

            /// Bytes the server holds (see the suite's comment), from a stable sample.
            func serverHeld(_ log: HandlerLog, _ table: [UInt32: KernelQueues]) -> (held: Int, detail: String)? {
                guard let queues = serverQueues(table) else { return nil }
                let state = log[name]
                switch kind {
                case .upload:
                    let outq = bytesInSendQueue(fd)
                    let taken = wireSent - outq - queues.rx
                    // Chunk framing the server consumed counts as held here (a few bytes a chunk).
                    let held = taken - headLength - state.got
                    return (
                        held, "sent \(wireSent), client outq \(outq), server rx \(queues.rx), handler got \(state.got)"
                    )
                case .download:
                    let inq = bytesInReceiveQueue(fd)
                    let accepted = receivedCount + inq + queues.tx - (responseHeadLength ?? 0)
                    let held = state.written - accepted
                    return (
                        held,
                        "handed to write \(state.written), client read \(receivedCount) + inq \(inq), server tx \(queues.tx)"
                    )
                }
            }

            /// A sample of everything that moves, to tell when nothing does.
            func sample(_ log: HandlerLog, _ table: [UInt32: KernelQueues]) -> [Int] {
                let queues = serverQueues(table)
                let state = log[name]
                return [
                    wireSent, receivedCount, bytesInSendQueue(fd), bytesInReceiveQueue(fd), queues?.tx ?? -1,
                    queues?.rx ?? -1,
                    state.got, state.written,
                ]
            }
        }

        /// What one quiescent point showed.
        struct Snapshot: Sendable {
            var point: Int
            /// When the point was reached.
            var at: UInt64
            var held: [Int]
            var details: [String]
            var stable: Bool
            var resident: Int
            var handlersFinished: Int
        }

        /// Drives `streams` from the calling (non-pool) thread until all are done or
        /// `timeout`: sends, reads (at most `readBudget` bytes per stream per tick of about
        /// `tick`), and at each pause point — every upload's handler waiting at it, every
        /// download's reader stopped at it — waits for the queues to settle, records a
        /// `Snapshot`, then releases the point. Between steps it polls for what the streams
        /// can do (at most `tick` ms); `throttled`, it sleeps `tick` ms instead (a reader at a
        /// fixed pace).
        static func drive(
            _ streams: [Stream], log: HandlerLog, readBudget: Int, tick: Int, releasedReadBudget: Int? = nil,
            throttled: Bool = false, timeout: Duration = .seconds(60)
        ) -> (snapshots: [Snapshot], timedOut: Bool) {
            var scratch = [UInt8](repeating: 0, count: 65536)
            var snapshots: [Snapshot] = []
            var budget = readBudget
            let points = streams.map(\.pausePoints.count).max() ?? 0
            var point = 0
            let end = monotonicNanoseconds() + UInt64(timeout.components.seconds) * 1_000_000_000
            var pollSet = streams.map { pollfd(fd: $0.fd, events: Int16(POLLIN), revents: 0) }

            func step() {
                for stream in streams where !stream.done {
                    stream.pushSends()
                    if stream.readerActive { _ = stream.read(budget: budget, scratch: &scratch) }
                }
            }

            func atPause(_ point: Int) -> Bool {
                streams.allSatisfy { stream in
                    guard point < stream.pausePoints.count else { return true }
                    switch stream.kind {
                    case .upload: return log[stream.name].pausedAt == point
                    case .download: return stream.readerPausedAt == point
                    }
                }
            }

            while streams.contains(where: { !$0.done }) {
                if monotonicNanoseconds() > end { return (snapshots, true) }
                step()
                if point < points && atPause(point) {
                    // Settle: everything the client can send is sent, and nothing has moved for
                    // three samples 20 ms apart.
                    var previous: [[Int]] = []
                    var quiet = 0
                    var tries = 0
                    while quiet < 3 && tries < 250 {
                        threadSleep(milliseconds: 20)
                        for stream in streams { stream.pushSends() }
                        let table = KernelQueues.table()
                        let sample = streams.flatMap { $0.sample(log, table) }
                        quiet = previous.last == sample ? quiet + 1 : 0
                        previous.append(sample)
                        tries += 1
                    }
                    let table = KernelQueues.table()
                    let held = streams.map { $0.serverHeld(log, table) }
                    snapshots.append(
                        Snapshot(
                            point: point, at: monotonicNanoseconds(), held: held.map { $0?.held ?? Int.max },
                            details: held.map { $0?.detail ?? "no kernel entry" },
                            stable: quiet >= 3, resident: residentBytes(),
                            handlersFinished: streams.filter { log[$0.name].finishedAt != 0 }.count))
                    for stream in streams {
                        switch stream.kind {
                        case .upload: log.update(stream.name) { $0.released = point + 1 }
                        case .download: if point < stream.pausePoints.count { stream.releaseReader() }
                        }
                    }
                    point += 1
                    if point == points, let releasedReadBudget { budget = releasedReadBudget }
                    continue
                }
                if throttled {
                    // A reader at a fixed pace: `readBudget` per `tick` at most.
                    threadSleep(milliseconds: tick)
                    continue
                }
                // Wait for what each stream can do next: read (unless its reader is paused),
                // send (while it has bytes to send). Nothing else wakes the loop but the tick.
                for (index, stream) in streams.enumerated() {
                    var events: Int32 = 0
                    if !stream.done && stream.readerActive { events |= Int32(POLLIN) }
                    if !stream.done && stream.hasBytesToSend { events |= Int32(POLLOUT) }
                    pollSet[index].fd = events == 0 ? -1 : stream.fd
                    pollSet[index].events = Int16(events)
                    pollSet[index].revents = 0
                }
                _ = poll(&pollSet, nfds_t(pollSet.count), Int32(tick))
            }
            return (snapshots, false)
        }

        static let readAheadLimit = Scheduler.Configuration().readAheadLimit

        static func configure(_ configuration: inout HTTPServer.Configuration) {
            configuration.limits.maxBodySize = 256 << 20
            // A slow reader, not a stalled one: the defaults (30 s) hold; the test's own
            // timeouts bound it.
        }

        // MARK: (a) request bodies read slowly

        @Test(arguments: allBackends, [false, true])
        func requestBodyReadSlowlyHoldsAtMostTheReadAheadLimit(engine: Engine, chunked: Bool) async throws {
            let size = 6 << 20
            let log = HandlerLog()
            try await withHTTPServer(
                engine, bound: .seconds(120), configure: Self.configure, handler: Self.handler(log)
            ) { server in
                let port = server.address.port
                let outcome = try await offThePool {
                    () -> Result<(String, [Snapshot], Bool, String?, UInt64), any Error> in
                    Result {
                        // A slow reader: 16 KiB per 1 ms sleep (≤ 16 MB/s); paused at 256 KiB and 3 MiB.
                        let stream = try Stream(
                            name: "a", kind: .upload(chunked: chunked), size: size, pausePoints: [256 << 10, 3 << 20],
                            port: port, keepsBytes: true, delay: 1)
                        let start = monotonicNanoseconds()
                        let (snapshots, timedOut) = Self.drive([stream], log: log, readBudget: 65536, tick: 2)
                        let body = (try? TestResponse.parse(stream.received, forHEAD: false, atEnd: true))?.0
                        return (
                            body.map { "\($0.status) \($0.bodyText)" } ?? "no response", snapshots, timedOut,
                            stream.failure,
                            monotonicNanoseconds() - start
                        )
                    }
                }.get()
                let (response, snapshots, timedOut, failure, took) = outcome
                let label = "streaming (a) [\(engine.testDescription), \(chunked ? "chunked" : "Content-Length")]"
                for snapshot in snapshots {
                    print(
                        "\(label) pause \(snapshot.point): server holds \(snapshot.held[0]) B (limit \(Self.readAheadLimit)); "
                            + "\(snapshot.details[0])\(snapshot.stable ? "" : " (unsettled)")")
                }
                print("\(label): \(response) in \(milliseconds(took)); handler: \(log["a"])")
                #expect(!timedOut && failure == nil, "\(failure ?? "timed out")")
                #expect(response == "200 \(size) ok")
                #expect(snapshots.count == 2)
                for snapshot in snapshots {
                    #expect(snapshot.stable, "the queues did not settle: \(snapshot.details)")
                    // The read-ahead limit, plus chunk framing (a few bytes per 32 KiB chunk).
                    #expect(snapshot.held[0] <= Self.readAheadLimit + 1024, "\(snapshot.details[0])")
                    #expect(snapshot.handlersFinished == 0)
                }
            }
        }

        // MARK: (b) streamed responses to a slow reader

        @Test(arguments: allBackends, Framing.allCases)
        func streamedResponseToSlowReaderBlocksInsteadOfBuffering(engine: Engine, framing: Framing) async throws {
            // More than the kernel's buffers can hide (the server's send buffer grows to
            // tcp_wmem's maximum, 4 MiB here), so the handler must wait for the reader: at
            // the second pause (2 MiB read) it cannot have handed more than about 6.3 MiB.
            let size = 8 << 20
            let log = HandlerLog()
            try await withHTTPServer(
                engine, bound: .seconds(120), configure: Self.configure, handler: Self.handler(log)
            ) { server in
                let port = server.address.port
                let outcome = try await offThePool {
                    () -> Result<(Bool, [Snapshot], Bool, String?, UInt64, UInt64), any Error> in
                    Result {
                        let stream = try Stream(
                            name: "b", kind: .download(framing), size: size, pausePoints: [256 << 10, 2 << 20],
                            port: port, keepsBytes: true, delay: 0)
                        // A slow reader: 32 KiB per 2 ms at most (16 MB/s), and stopped at each
                        // pause point.
                        let (snapshots, timedOut) = Self.drive(
                            [stream], log: log, readBudget: 32768, tick: 2, throttled: true)
                        var intact = false
                        if let (response, _) = try? TestResponse.parse(stream.received, forHEAD: false, atEnd: true) {
                            intact =
                                response.status == 200 && response.body.count == size
                                && response.body.withUnsafeBytes { Pattern.matches($0, at: 0) }
                                && response.chunked == (framing == .chunked)
                                && response.closeDelimited == (framing == .closeDelimited)
                                && (framing != .closeDelimited || response.closesConnection)
                        }
                        return (intact, snapshots, timedOut, stream.failure, stream.firstByteAt, stream.lastByteAt)
                    }
                }.get()
                let (intact, snapshots, timedOut, failure, firstByte, lastByte) = outcome
                let state = log["b"]
                let label = "streaming (b) [\(engine.testDescription), \(framing)]"
                for snapshot in snapshots {
                    print(
                        "\(label) pause \(snapshot.point): server holds \(snapshot.held[0]) B; \(snapshot.details[0])"
                            + (snapshot.stable ? "" : " (unsettled)"))
                }
                let handlerTime = state.finishedAt > state.startedAt ? state.finishedAt - state.startedAt : 0
                let readerTime = lastByte > firstByte ? lastByte - firstByte : 0
                print(
                    "\(label): handler wrote \(size) B in \(milliseconds(handlerTime)), the reader read for \(milliseconds(readerTime))"
                )
                #expect(!timedOut && failure == nil, "\(failure ?? "timed out")")
                #expect(intact, "the body arrived damaged or incomplete")
                #expect(state.error == nil, "\(state.error ?? "")")
                #expect(snapshots.count == 2)
                for snapshot in snapshots {
                    #expect(snapshot.stable, "the queues did not settle: \(snapshot.details)")
                    // The server holds at most the write in progress (64 KiB) and what its send
                    // queue may take besides (the tracked-send limit, 64 KiB), plus chunk
                    // framing: its sends block instead of buffering.
                    #expect(snapshot.held[0] <= 2 * 65536 + 1024, "\(snapshot.details[0])")
                    // The handler is still writing: its writes wait for the reader.
                    #expect(snapshot.handlersFinished == 0)
                }
            }
        }

        // MARK: (c) many slow connections at once

        @Test(arguments: allBackends)
        func manySlowConnectionsKeepMemoryBounded(engine: Engine) async throws {
            let count = 50
            // Uploads of 2 MiB (the server socket's receive queue holds about 100 KiB of them
            // here); downloads of 6 MiB, more than its send buffer (which grows to 4 MiB) can hide.
            let size = 2 << 20
            let log = HandlerLog()
            // The provided-buffer ring's pages touched up front: the kernel cycles through
            // the whole ring as data flows, and its first touch of each page (16 MiB, once per
            // scheduler) is not a cost per connection.
            let configure: (inout HTTPServer.Configuration) -> Void = {
                Self.configure(&$0)
                $0.scheduler.prefaultReceiveBuffers = true
            }
            try await withHTTPServer(engine, bound: .seconds(180), configure: configure, handler: Self.handler(log)) {
                server in
                let port = server.address.port
                let outcome = try await offThePool {
                    () -> Result<(Int, [Snapshot], Bool, [String], UInt64, UInt64), any Error> in
                    Result {
                        // Warm-up: one of each, whole, so one-time allocations are not counted.
                        let warm = [
                            try Stream(
                                name: "w0", kind: .upload(chunked: false), size: 1 << 20, pausePoints: [], port: port,
                                keepsBytes: false, delay: 0),
                            try Stream(
                                name: "w1", kind: .download(.chunked), size: 1 << 20, pausePoints: [], port: port,
                                keepsBytes: false, delay: 0),
                        ]
                        _ = Self.drive(warm, log: log, readBudget: 1 << 20, tick: 1)
                        let resident = residentBytes()
                        let start = monotonicNanoseconds()
                        // Half upload (chunked and not), half download; each pauses at 256 KiB:
                        // the uploads' handlers stop reading, the downloads' readers stop reading.
                        var streams: [Stream] = []
                        for index in 0..<count {
                            let kind: Stream.Kind =
                                index % 2 == 0
                                ? .upload(chunked: index % 4 == 0)
                                : .download(index % 4 == 1 ? .chunked : .contentLength)
                            streams.append(
                                try Stream(
                                    name: "c\(index)", kind: kind, size: index % 2 == 0 ? size : 3 * size,
                                    pausePoints: [256 << 10], port: port,
                                    keepsBytes: false, delay: 0))
                        }
                        let (snapshots, timedOut) = Self.drive(
                            streams, log: log, readBudget: 16384, tick: 2, releasedReadBudget: 1 << 20,
                            timeout: .seconds(120))
                        let failures =
                            streams.compactMap { stream in stream.failure.map { "\(stream.name): \($0)" } }
                            + streams.compactMap { stream in
                                log[stream.name].error.map { "\(stream.name) handler: \($0)" }
                            }
                        return (resident, snapshots, timedOut, failures, start, monotonicNanoseconds())
                    }
                }.get()
                let (resident, snapshots, timedOut, failures, start, end) = outcome
                let label =
                    "streaming (c) [\(engine.testDescription), \(count) connections, \(size >> 20) MiB up or \(3 * size >> 20) MiB down]"
                #expect(!timedOut, "timed out")
                #expect(failures.isEmpty, "\(failures.prefix(5))")
                #expect(snapshots.count == 1)
                guard let snapshot = snapshots.first else { return }
                let residentGrowth = snapshot.resident - resident
                let heldMax = snapshot.held.max() ?? 0
                let heldSum = snapshot.held.reduce(0) { $0 &+ min($1, 1 << 40) }
                print(
                    "\(label): resident +\(mebibytes(residentGrowth)) (\(residentGrowth / count / 1024) KiB per connection); server holds "
                        + "\(heldSum / 1024) KiB in all, at most \(heldMax / 1024) KiB on one connection"
                        + (snapshot.stable ? "" : " (unsettled)")
                        + "; all paused after \(milliseconds(snapshot.at - start)), "
                        + "all done after \(milliseconds(end - start))")
                #expect(snapshot.stable, "the queues did not settle")
                // Unbounded buffering would cost about 4 MiB a connection (the small client
                // buffers hide little); the read-ahead limit, one 64 KiB write and the send
                // queue cost a few hundred KiB at most.
                #expect(residentGrowth / count <= 1 << 20, "resident growth \(residentGrowth / count) B per connection")
                #expect(heldMax <= 2 * 65536 + 1024, "\(snapshot.details[snapshot.held.firstIndex(of: heldMax) ?? 0])")
                #expect(snapshot.handlersFinished == 0)
            }
        }
    }
}
