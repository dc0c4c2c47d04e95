@testable import CogenUring
import Foundation
import Glibc
import Testing

// In-place receives (issue 12, part 2): `withReceivedBytes` hands a parser the unconsumed
// bytes where they lie, `waitForBytes(beyond:)` waits for more. Every test runs on the
// engines of `allBackends` and on io_uring with a tiny provided-buffer ring (64-byte
// buffers, 3 per connection before they spill), where every head straddles buffers.

/// Where `\r\n\r\n` ends in `bytes`, or nil.
private func headEnd(_ bytes: UnsafeRawBufferPointer) -> Int? {
    guard bytes.count >= 4 else { return nil }
    for index in 0...(bytes.count - 4)
    where bytes[index] == 13 && bytes[index + 1] == 10 && bytes[index + 2] == 13 && bytes[index + 3] == 10 {
        return index + 4
    }
    return nil
}

/// Reads one head in place, waiting for more bytes while it is incomplete. Before each
/// wait it records how many bytes it saw and, with `ack`, once it saw some, sends one byte
/// to the peer (which sends its next piece only then: each piece is a segment of its own).
/// nil at end of stream.
private func readHead(_ socket: Socket, ack: Bool, seen: Box<[Int]>) async throws -> [UInt8]? {
    while true {
        let (head, count): ([UInt8]?, Int) = try socket.withReceivedBytes { bytes in
            if let end = headEnd(bytes) { return (end, (Array(bytes[..<end]), bytes.count)) }
            return (0, (nil, bytes.count))
        }
        if let head { return head }
        seen.value.append(count)
        if ack && count > 0 { try await socket.sendAll([UInt8(ascii: "k")]) }
        guard try await socket.waitForBytes(beyond: count, deadline: .after(.seconds(20))) else { return nil }
    }
}

/// Waits until `socket` holds at least `count` bytes (a tiny ring may bring a piece in
/// more than one receive).
private func holdAtLeast(_ count: Int, _ socket: Socket) async throws {
    while true {
        let held: Int = try socket.withReceivedBytes { (0, $0.count) }
        if held >= count { return }
        guard try await socket.waitForBytes(beyond: held, deadline: .after(.seconds(20))) else {
            throw EndOfStreamError(bytesAvailable: held, bytesWanted: count)
        }
    }
}

/// What a closure-based read sees, as an array (copied inside the closure).
private func peek(_ socket: Socket) throws -> [UInt8] {
    try socket.withReceivedBytes { (0, Array($0)) }
}

private let head = Array("GET /index.html HTTP/1.1\r\nHost: example.com\r\nUser-Agent: in-place\r\nAccept: */*\r\n\r\n".utf8)

@Suite(.enabled(if: ioUringUsable, "io_uring is refused by this kernel (on CI these tests run and fail instead)"))
struct InPlaceReceiveTests {
    /// A connected pair on one scheduler: `client` and `server` run as two coroutines.
    static func pair(
        _ engine: ReaderEngine, configure: @escaping @Sendable (inout Scheduler.Configuration) -> Void = { _ in },
        singleReceives: Bool = false,
        client: @escaping @Sendable (Socket) async throws -> Void,
        server: @escaping @Sendable (Socket) async throws -> Void
    ) async throws {
        let failures = Box<[String]>([])
        try await runScheduler(engine.engine, configure: {
            engine.configure(&$0)
            configure(&$0)
        }) { scheduler in
            if singleReceives { scheduler.receiveLimitRefused = true }  // as on a kernel before 6.17
            let listener = try Socket.listening(on: .loopback(), on: scheduler)
            let address = try listener.localAddress
            scheduler.spawn("client") {
                do {
                    let socket = try await Socket.connect(to: address)
                    try socket.setOption(.noDelay(true))
                    try await client(socket)
                    try await socket.close()
                } catch {
                    failures.value.append("client: \(error)")
                }
            }
            scheduler.spawn("server") {
                do {
                    let socket = try await listener.accept()
                    try await listener.close()
                    try await server(socket)
                    try await socket.close()
                } catch {
                    failures.value.append("server: \(error)")
                }
            }
        }
        #expect(failures.value.isEmpty, "\(failures.value)")
    }

    /// A head split across two ring buffers (two segments, the second sent once the
    /// server has looked at the first) is read whole; the body after it stays readable.
    @Test(arguments: ReaderEngine.all)
    func readsAHeadSplitAcrossTwoBuffers(_ engine: ReaderEngine) async throws {
        let body = Array("hello, body".utf8)
        let result = Box<[UInt8]?>(nil)
        let rest = Box<[UInt8]>([])
        let gathers = Box(-1)
        let seen = Box<[Int]>([])
        try await Self.pair(engine, client: { socket in
            try await socket.sendAll(Array(head[..<30]))
            _ = try await socket.receive(exactly: 1)
            try await socket.sendAll(Array(head[30...]) + body)
            _ = try await socket.receive()  // end of stream: the server is done
        }, server: { socket in
            result.value = try await readHead(socket, ack: true, seen: seen)
            rest.value = try await socket.receive(exactly: body.count)
            gathers.value = socket.inPlaceGathers
            try await socket.shutdown(.write)
        })
        #expect(result.value == head)
        #expect(rest.value == body)
        #expect(seen.value.last == 30)
        if engine.engine.modern && engine.engine.backend == .ioUring {
            // The head was in two ring buffers (more with the tiny ring): gathered once, as
            // the first piece had been looked at where it lay.
            #expect(gathers.value >= 1)
            if !engine.tinyRing { #expect(gathers.value == 1) }
        } else {
            #expect(gathers.value == 0, "without a ring, bytes are held in one array")
        }
    }

    /// One byte per segment: each wait returns with exactly one byte more, and the head is
    /// read whole (ring buffers of one byte each, spilled to the socket's array with the
    /// tiny ring).
    @Test(arguments: ReaderEngine.all)
    func readsAHeadOneBytePerSegment(_ engine: ReaderEngine) async throws {
        let result = Box<[UInt8]?>(nil)
        let seen = Box<[Int]>([])
        try await Self.pair(engine, client: { socket in
            for index in head.indices {
                try await socket.sendAll([head[index]])
                if index < head.count - 1 { _ = try await socket.receive(exactly: 1) }
            }
            _ = try await socket.receive()
        }, server: { socket in
            result.value = try await readHead(socket, ack: true, seen: seen)
            try await socket.shutdown(.write)
        })
        #expect(result.value == head)
        #expect(seen.value.filter { $0 > 0 } == Array(1..<head.count), "every wait brought exactly the next byte")
    }

    /// Consuming nothing leaves every byte in place; a wait then returns when more came,
    /// and a partial consumption leaves the rest to the next read and to `receive`.
    @Test(arguments: ReaderEngine.all)
    func consumesNothingThenMoreBytesArrive(_ engine: ReaderEngine) async throws {
        let log = Box<[String]>([])
        try await Self.pair(engine, client: { socket in
            try await socket.sendAll(Array("abc".utf8))
            _ = try await socket.receive(exactly: 1)
            try await socket.sendAll(Array("defgh".utf8))
            _ = try await socket.receive()
        }, server: { socket in
            func record(_ bytes: [UInt8]) { log.value.append(String(decoding: bytes, as: UTF8.self)) }
            try await holdAtLeast(3, socket)
            record(try peek(socket))
            record(try peek(socket))  // nothing consumed: the same bytes
            // A closure that consumes more than it got consumes nothing.
            #expect(throws: SocketError.self) { try socket.withReceivedBytes { ($0.count + 1, ()) } }
            // Nested in-place reads are refused.
            let nested: Bool = try socket.withReceivedBytes { _ in
                do {
                    try socket.withReceivedBytes { _ in (0, ()) }
                    return (0, false)
                } catch let error as SocketError {
                    return (0, error.errno == EBUSY)
                } catch {
                    return (0, false)
                }
            }
            #expect(nested)
            #expect(socket.heldBytes == 3)
            try await socket.sendAll([UInt8(ascii: "k")])
            try await holdAtLeast(8, socket)
            record(try peek(socket))
            // Two consumed in place; `receive` returns the rest, never those two again.
            let taken: [UInt8] = try socket.withReceivedBytes { (2, Array($0[..<2])) }
            record(taken)
            record(try await socket.receive(exactly: 6))
            #expect(socket.heldBytes == 0)
            try await socket.shutdown(.write)
        })
        #expect(log.value == ["abc", "abc", "abcdefgh", "ab", "cdefgh"])
    }

    /// The peer ends the stream with bytes not consumed: waits report the end, the bytes
    /// stay readable in place and by `receive`, which then reports the end as before.
    @Test(arguments: ReaderEngine.all)
    func endOfStreamLeavesUnconsumedBytes(_ engine: ReaderEngine) async throws {
        let log = Box<[String]>([])
        let ends = Box<[Bool]>([])
        let partial = Array("GET / HTTP/1.1\r\nHost: trunc".utf8)
        try await Self.pair(engine, client: { socket in
            try await socket.sendAll(partial)
            try await socket.shutdown(.write)
            _ = try await socket.receive()
        }, server: { socket in
            let seen = Box<[Int]>([])
            let result = try await readHead(socket, ack: false, seen: seen)
            ends.value.append(result == nil)
            log.value.append(String(decoding: try peek(socket), as: UTF8.self))
            ends.value.append(try await socket.waitForBytes(beyond: partial.count, deadline: .after(.seconds(20))))
            ends.value.append(try await socket.waitForBytes(beyond: 0, deadline: .after(.seconds(20))))  // held: true
            try socket.withReceivedBytes { _ in (4, ()) }
            // `receive` may return the rest in more than one piece (ring buffers), then the
            // end (empty) as before.
            var rest: [UInt8] = []
            var pieces = 0
            while true {
                let piece = try await socket.receive()
                if piece.isEmpty { break }
                rest += piece
                pieces += 1
                if pieces > partial.count { break }
            }
            log.value.append(String(decoding: rest, as: UTF8.self))
            ends.value.append(try await socket.waitForBytes(beyond: 0, deadline: .after(.seconds(20))))
            log.value.append(String(decoding: try peek(socket), as: UTF8.self))
            try await socket.shutdown(.write)
        })
        #expect(ends.value == [true, false, true, false])
        #expect(log.value == [
            String(decoding: partial, as: UTF8.self), String(decoding: partial[4...], as: UTF8.self), "",
        ])
    }

    /// A wait past its deadline throws `TimeoutError`; the bytes held stay in place, and
    /// the next wait gets what comes after.
    @Test(arguments: ReaderEngine.all)
    func aDeadlinePassesWhileWaiting(_ engine: ReaderEngine) async throws {
        let log = Box<[String]>([])
        try await Self.pair(engine, client: { socket in
            try await socket.sendAll(Array("abc".utf8))
            _ = try await socket.receive(exactly: 1)  // after the server's timeout
            try await socket.sendAll(Array("def".utf8))
            _ = try await socket.receive()
        }, server: { socket in
            try await holdAtLeast(3, socket)
            do {
                _ = try await socket.waitForBytes(beyond: 3, deadline: .after(.milliseconds(30)))
                log.value.append("no timeout")
            } catch let error as TimeoutError {
                log.value.append("timeout after \(error.bytesTransferred)")
            }
            log.value.append(String(decoding: try peek(socket), as: UTF8.self))
            try await socket.sendAll([UInt8(ascii: "k")])
            try await holdAtLeast(6, socket)
            log.value.append(String(decoding: try peek(socket), as: UTF8.self))
            try await socket.shutdown(.write)
        })
        #expect(log.value == ["timeout after 0", "abc", "abcdef"])
    }

    /// Bytes in one ring buffer are passed where they lie: no gather, nothing in the
    /// socket's own arrays.
    @Test func oneRingBufferIsNotCopied() async throws {
        let engine = ReaderEngine(engine: allBackends[0], tinyRing: false)
        let state = Box<(gathers: Int, capacity: Int, seen: [UInt8])>((-1, -1, []))
        try await Self.pair(engine, client: { socket in
            try await socket.sendAll(head)
            _ = try await socket.receive()
        }, server: { socket in
            let seen = Box<[Int]>([])
            let read = try await readHead(socket, ack: false, seen: seen)
            state.value = (socket.inPlaceGathers, socket.heldCapacity, read ?? [])
            try await socket.shutdown(.write)
        })
        #expect(state.value.seen == head)
        #expect(state.value.gathers == 0)
        #expect(state.value.capacity == 0, "the bytes never went to the socket's arrays")
    }

    /// A wait for more than the read-ahead limit throws `ReadAheadLimitError` and keeps
    /// the bytes; consuming them lets the next wait receive the rest (the receive is armed
    /// again), and every byte arrives once, in order.
    @Test(arguments: ReaderEngine.all)
    func aWaitBeyondTheReadAheadLimitThrows(_ engine: ReaderEngine) async throws {
        let limit = 1000
        let payload = pattern(2500, seed: 3)
        let received = Box<[UInt8]>([])
        let refusals = Box<[Int]>([])
        try await Self.pair(engine, configure: { $0.readAheadLimit = limit }, client: { socket in
            try await socket.sendAll(payload)
            _ = try await socket.receive()
        }, server: { socket in
            func takeAll() throws {
                try socket.withReceivedBytes {
                    received.value += Array($0)
                    return ($0.count, ())
                }
            }
            while received.value.count < payload.count {
                let held: Int = try socket.withReceivedBytes { (0, $0.count) }
                #expect(held <= limit)
                if received.value.count + held == payload.count {
                    try takeAll()
                    break
                }
                do {
                    guard try await socket.waitForBytes(beyond: held, deadline: .after(.seconds(20))) else { break }
                } catch let error as ReadAheadLimitError {
                    // The whole allowance is held: take it, in place.
                    refusals.value.append(error.bytesHeld)
                    try takeAll()
                }
            }
            try await socket.shutdown(.write)
        })
        #expect(mismatch(received.value, payload) == nil)
        #expect(refusals.value.count == 2)
        #expect(refusals.value.allSatisfy { $0 == limit })
    }

    /// A length-prefixed stream written in random pieces is parsed in place, record by
    /// record, whatever the cuts: nothing lost, repeated or reordered.
    @Test(arguments: ReaderEngine.all)
    func parsesRecordsCutAnywhere(_ engine: ReaderEngine) async throws {
        try await Self.parsesRecordsCutAnywhere(engine, singleReceives: false)
    }

    /// The same where the kernel refuses a multishot's byte limit: single receives from
    /// the ring, armed again by each wait.
    @Test(arguments: [false, true])
    func parsesRecordsWithSingleReceivesFromTheRing(tinyRing: Bool) async throws {
        try await Self.parsesRecordsCutAnywhere(
            ReaderEngine(engine: allBackends[0], tinyRing: tinyRing), singleReceives: true)
    }

    static func parsesRecordsCutAnywhere(_ engine: ReaderEngine, singleReceives: Bool) async throws {
        var generator = SystemRandomNumberGenerator()
        var records: [[UInt8]] = []
        for index in 0..<300 {
            let length = Int.random(in: 0...200, using: &generator)
            records.append(pattern(length, seed: index))
        }
        var stream: [UInt8] = []
        for record in records { stream += [UInt8(record.count)] + record }
        var cuts: [Int] = []
        var position = 0
        while position < stream.count {
            let piece = Int.random(in: 1...300, using: &generator)
            cuts.append(min(piece, stream.count - position))
            position += piece
        }
        let parsed = Box<[[UInt8]]>([])
        let pieces = cuts
        let bytes = stream
        try await Self.pair(engine, singleReceives: singleReceives, client: { socket in
            var offset = 0
            for (index, piece) in pieces.enumerated() {
                try await socket.sendAll(Array(bytes[offset..<(offset + piece)]))
                offset += piece
                if index % 7 == 0 { await Scheduler.current?.yield() }
            }
            try await socket.shutdown(.write)
            _ = try await socket.receive()
        }, server: { socket in
            while true {
                let (record, seen): ([UInt8]?, Int) = try socket.withReceivedBytes { bytes in
                    guard let length = bytes.first.map(Int.init), bytes.count > length else { return (0, (nil, bytes.count)) }
                    return (1 + length, (Array(bytes[1..<(1 + length)]), 0))
                }
                if let record {
                    parsed.value.append(record)
                    continue
                }
                guard try await socket.waitForBytes(beyond: seen, deadline: .after(.seconds(20))) else { break }
            }
            #expect(socket.heldBytes == 0)
            try await socket.shutdown(.write)
        })
        #expect(parsed.value.count == records.count)
        #expect(mismatch(parsed.value.flatMap { $0 }, records.flatMap { $0 }) == nil)
    }

    /// Eight connections parse records in place at once over one scheduler: with the tiny
    /// ring they share 16 buffers of 64 bytes, run out (`ENOBUFS`) and are armed again as
    /// buffers come back, while each holds bytes it has not consumed.
    @Test(arguments: ReaderEngine.all)
    func manyConnectionsParseInPlaceAtOnce(_ engine: ReaderEngine) async throws {
        try await Self.manyConnectionsParseInPlace(engine, fault: nil)
    }

    /// An engine and a fault the fault injector fires (`FaultInjection.swift`).
    struct FaultCase: Sendable, CustomTestStringConvertible {
        let engine: ReaderEngine
        let fault: Fault
        var testDescription: String { "\(engine.testDescription): \(fault)" }

        static let all: [FaultCase] = {
            let modern = ReaderEngine(engine: allBackends[0], tinyRing: false)
            let tiny = ReaderEngine(engine: allBackends[0], tinyRing: true)
            let old = ReaderEngine(engine: allBackends[1], tinyRing: false)
            let epoll = ReaderEngine(engine: allBackends[2], tinyRing: false)
            return [Fault.noBuffers, .multishotEnd, .cancelledEarly, .shortTransfer].map { FaultCase(engine: tiny, fault: $0) }
                + [Fault.multishotEnd, .cancelledEarly, .shortTransfer, .enterFailure].map { FaultCase(engine: modern, fault: $0) }
                + [Fault.cancelledEarly, .shortTransfer, .enterFailure].map { FaultCase(engine: old, fault: $0) }
                + [Fault.wouldBlock, .interrupted, .shortTransfer, .cancelledEarly].map { FaultCase(engine: epoll, fault: $0) }
        }()
    }

    /// The same under injected faults: buffers withheld (`ENOBUFS`), multishot receives
    /// that end early, operations cancelled by nobody, short transfers, failed kernel
    /// entries, spurious `EAGAIN` and `EINTR`. Every record still arrives once, in order.
    @Test(arguments: FaultCase.all)
    func manyConnectionsParseInPlaceUnderFaults(_ run: FaultCase) async throws {
        try await Self.manyConnectionsParseInPlace(run.engine, fault: run.fault)
    }

    static func manyConnectionsParseInPlace(_ engine: ReaderEngine, fault: Fault?) async throws {
        let connections = 8
        let streams = (0..<connections).map { connection in
            var stream: [UInt8] = []
            for index in 0..<60 {
                let record = pattern((index * 37 + connection * 11) % 180, seed: connection * 1000 + index)
                stream += [UInt8(record.count)] + record
            }
            return stream
        }
        let parsed = Box([[UInt8]](repeating: [], count: connections))
        let failures = Box<[String]>([])
        let fired = Box(0)
        try await runScheduler(engine.engine, configure: {
            engine.configure(&$0)
            if let fault {
                $0.faultInjection = FaultInjection(
                    seed: 0xF00D + UInt64(Fault.allCases.firstIndex(of: fault) ?? 0),
                    probabilities: [fault: fault == .enterFailure ? 0.4 : fault == .noBuffers ? 0.2 : 0.3])
            }
        }, afterRun: { scheduler, _ in
            if let fault { fired.value = scheduler.faultInjector?.fires[fault] ?? 0 }
        }) { scheduler in
            let listener = try Socket.listening(on: .loopback(), on: scheduler)
            let address = try listener.localAddress
            for connection in 0..<connections {
                scheduler.spawn("client \(connection)") {
                    do {
                        let socket = try await Socket.connect(to: address)
                        let stream = streams[connection]
                        var offset = 0
                        while offset < stream.count {
                            let piece = min(1 + (offset * 7 + connection) % 250, stream.count - offset)
                            try await socket.sendAll(Array(stream[offset..<(offset + piece)]))
                            offset += piece
                        }
                        try await socket.shutdown(.write)
                        _ = try await socket.receive()
                        try await socket.close()
                    } catch {
                        failures.value.append("client \(connection): \(error)")
                    }
                }
            }
            scheduler.spawn("acceptor") {
                for _ in 0..<connections {
                    let socket = try await listener.accept()
                    scheduler.spawn {
                        do {
                            // The first record names the connection (its length differs).
                            var records: [[UInt8]] = []
                            while true {
                                let (record, seen): ([UInt8]?, Int) = try socket.withReceivedBytes { bytes in
                                    guard let length = bytes.first.map(Int.init), bytes.count > length else {
                                        return (0, (nil, bytes.count))
                                    }
                                    return (1 + length, (Array(bytes[..<(1 + length)]), 0))
                                }
                                if let record {
                                    records.append(record)
                                    continue
                                }
                                // Pause now and then: the peer fills what this one holds.
                                if records.count % 9 == 4 { await scheduler.yield() }
                                guard try await socket.waitForBytes(beyond: seen, deadline: .after(.seconds(20))) else { break }
                            }
                            let stream = records.flatMap { $0 }
                            #expect(socket.heldBytes == 0)
                            if let index = streams.firstIndex(where: { $0.first == stream.first }) {
                                parsed.value[index] = stream
                            }
                            try await socket.shutdown(.write)
                            try await socket.close()
                        } catch {
                            failures.value.append("server: \(error)")
                        }
                    }
                }
                try await listener.close()
            }
        }
        #expect(failures.value.isEmpty, "\(failures.value)")
        for connection in 0..<connections {
            #expect(mismatch(parsed.value[connection], streams[connection]) == nil, "connection \(connection)")
        }
        if let fault { #expect(fired.value > 0, "the fault \(fault) fired") }
    }

    /// A wait ended by `close()` from another coroutine throws `EBADF`; one ended by a
    /// cancellation throws `CancellationError` and leaves the bytes held.
    @Test(arguments: ReaderEngine.all)
    func closeAndCancellationEndAWait(_ engine: ReaderEngine) async throws {
        let log = Box<[String]>([])
        try await Self.pair(engine, client: { socket in
            try await socket.sendAll(Array("ab".utf8))
            _ = try await socket.receive()
        }, server: { socket in
            guard let scheduler = Scheduler.current else { return }
            try await holdAtLeast(2, socket)
            let waiter = scheduler.spawn {
                do {
                    _ = try await socket.waitForBytes(beyond: 2, deadline: .after(.seconds(20)))
                    log.value.append("returned")
                } catch is CancellationError {
                    log.value.append("cancelled")
                }
            }
            await scheduler.yield()
            waiter.cancel()
            _ = try? await waiter.join()
            log.value.append(String(decoding: try peek(socket), as: UTF8.self))
            let closing = scheduler.spawn {
                do {
                    _ = try await socket.waitForBytes(beyond: 2, deadline: .after(.seconds(20)))
                    log.value.append("returned")
                } catch let error as SocketError {
                    log.value.append("errno \(error.errno)")
                }
            }
            await scheduler.yield()
            try await socket.close()
            _ = try? await closing.join()
        })
        #expect(log.value == ["cancelled", "ab", "errno \(EBADF)"])
    }

    /// The way an HTTP server stands on it: heads read in place, the idle wait for the
    /// next one inside `untilShutdown`, which a shutdown ends at once.
    @Test(arguments: allBackends)
    func aServerShutdownEndsAnIdleWait(_ backend: Engine) async throws {
        var configuration = Server.Configuration(address: .loopback())
        backend.configure(&configuration.scheduler)
        let heads = PthreadLock(0)
        let server = try Server(configuration: configuration) { (connection: Server.Connection) in
            while true {
                let (complete, held): (Bool, Int) = try connection.socket.withReceivedBytes { bytes in
                    if let end = headEnd(bytes) { return (end, (true, 0)) }
                    return (0, (false, bytes.count))
                }
                if complete {
                    heads.withLock { $0 += 1 }
                    try await connection.socket.sendAll(Array("HTTP/1.1 204 No Content\r\n\r\n".utf8))
                    continue
                }
                let more = try await connection.untilShutdown {
                    try await $0.waitForBytes(beyond: held, deadline: .after(.seconds(20)))
                }
                if !more { return }
            }
        }
        let address = server.address
        let shutdown = Box<Task<Server.Report, Never>?>(nil)
        let seen = Box<[String]>([])
        try await runScheduler(backend) { scheduler in
            scheduler.spawn {
                let client = try await Socket.connect(to: address)
                try await client.sendAll(head + head)
                let response = Array("HTTP/1.1 204 No Content\r\n\r\n".utf8)
                #expect(try await client.receive(exactly: 2 * response.count) == response + response)
                shutdown.value = Task.detached { await server.gracefulShutdown(gracePeriod: .seconds(10)) }
                let end = try? await client.receive()
                seen.value.append("closed (\(end?.count ?? 0) bytes)")
                try await client.close()
            }
        }
        let report = await shutdown.value?.value
        #expect(seen.value == ["closed (0 bytes)"])
        #expect(heads.withLock { $0 } == 2)
        #expect(report?.closedWhileIdle == 1)
        #expect(report?.cut == 0)
    }
}
