@testable import CogenUring
import Foundation
import Testing

/// `count` buffers of 0 to 36 bytes (every 37th one empty), cut from one pattern: their
/// concatenation is `pattern(total, seed:)`.
private func smallBuffers(_ count: Int, seed: Int) -> (buffers: [[UInt8]], joined: [UInt8]) {
    let sizes = (0..<count).map { $0 % 37 }
    let joined = pattern(sizes.reduce(0, +), seed: seed)
    var buffers: [[UInt8]] = []
    buffers.reserveCapacity(count)
    var start = 0
    for size in sizes {
        buffers.append(Array(joined[start..<start + size]))
        start += size
    }
    return (buffers, joined)
}

/// `count` buffers of `size` bytes each, cut from one pattern.
private func largeBuffers(_ count: Int, size: Int, seed: Int) -> (buffers: [[UInt8]], joined: [UInt8]) {
    let joined = pattern(count * size, seed: seed)
    let buffers = (0..<count).map { Array(joined[$0 * size..<($0 + 1) * size]) }
    return (buffers, joined)
}

@Suite(.enabled(if: ioUringUsable, "io_uring is refused by this kernel (on CI these tests run and fail instead)"))
struct VectoredSendTests {
    /// Many small buffers (up to and beyond `IOV_MAX`), a peer that reads slowly through
    /// small kernel buffers: the sends are partial and go on from the middle of a buffer;
    /// every byte arrives, in order.
    @Test(arguments: allBackends, [1, 1024, 3000])
    func sendAllOfManySmallBuffersToASlowReader(_ backend: Engine, count: Int) async throws {
        let (buffers, joined) = smallBuffers(count, seed: count)
        let received = Box<[UInt8]>([])
        let sent = Box(false)
        try await runScheduler(backend, bound: .seconds(60)) { scheduler in
            scheduler.spawn {
                let (client, server) = try await smallBufferedPair(scheduler)
                scheduler.spawn("reader") {
                    while true {
                        let bytes = try await server.receive(maxLength: 700)
                        if bytes.isEmpty { break }
                        received.value += bytes
                        try await scheduler.sleep(for: .milliseconds(1))  // pacing, not synchronization
                    }
                    try await server.close()
                }
                try await client.sendAll(buffers, timeout: .weak(.seconds(20)))
                sent.value = true
                try await client.shutdown(.write)
                try await client.close()
            }
        }
        #expect(sent.value)
        #expect(mismatch(received.value, joined) == nil)
    }

    /// One vectored send takes what fits and says how much: a send that stops in the
    /// middle of a buffer is taken up from there by the caller, and the bytes arrive in
    /// order. At most `IOV_MAX` buffers go in one send.
    @Test(arguments: allBackends)
    func partialSendsLandMidBuffer(_ backend: Engine) async throws {
        let (buffers, joined) = largeBuffers(200, size: 9973, seed: 3)
        let received = Box<[UInt8]>([])
        let midBuffer = Box(0)
        let sends = Box(0)
        let limited = Box(-1)
        try await runScheduler(backend, bound: .seconds(60)) { scheduler in
            scheduler.spawn {
                let (client, server) = try await smallBufferedPair(scheduler)
                scheduler.spawn("reader") {
                    while true {
                        let bytes = try await server.receive(deadline: .after(.seconds(20)))
                        if bytes.isEmpty { break }
                        received.value += bytes
                    }
                    try await server.close()
                }
                var position = VectoredPosition()
                while position.index < buffers.count {
                    // What is left, as the caller would hand it over: the rest of the
                    // current buffer, then the buffers after it.
                    let rest = [Array(buffers[position.index][position.offset...])] + buffers[(position.index + 1)...]
                    let count = try await client.send(rest, deadline: .after(.seconds(20)))
                    #expect(count > 0)
                    sends.value += 1
                    position = position.advanced(by: count, in: buffers)
                    if position.offset != 0 { midBuffer.value += 1 }
                }
                // Empty lists and empty buffers send nothing and never wait.
                #expect(try await client.send([[UInt8]]()) == 0)
                #expect(try await client.send([[], []]) == 0)
                try await client.sendAll([[], []])
                // More than IOV_MAX one-byte buffers: one send takes at most 1024.
                let (many, _) = largeBuffers(1500, size: 1, seed: 0)
                limited.value = try await client.send(many)
                try await client.shutdown(.write)
                try await client.close()
            }
        }
        let many = largeBuffers(1500, size: 1, seed: 0).joined
        #expect(mismatch(received.value, joined + many.prefix(max(limited.value, 0))) == nil)
        #expect(sends.value > 1)
        #expect(midBuffer.value > 0, "no send of \(sends.value) stopped inside a buffer")
        #expect(limited.value >= 1 && limited.value <= SendMessageOperation.vectorLimit)
    }

    /// A strong timeout ends the send-all when the peer never reads, and reports exactly
    /// the bytes that went out: the peer receives those and nothing more.
    @Test(arguments: allBackends)
    func strongTimeoutReportsTheBytesSent(_ backend: Engine) async throws {
        let (buffers, joined) = largeBuffers(64, size: 65536, seed: 7)
        let transferred = Box(-1)
        let received = Box<[UInt8]>([])
        let after = Box<[UInt8]>([9])
        try await runScheduler(backend, bound: .seconds(60)) { scheduler in
            scheduler.spawn {
                let (client, server) = try await smallBufferedPair(scheduler)
                do {
                    try await client.sendAll(buffers, timeout: .strong(.milliseconds(300)))
                } catch let error as TimeoutError {
                    transferred.value = error.bytesTransferred
                }
                try await client.shutdown(.write)
                try await client.close()
                if transferred.value > 0 {
                    received.value = try await server.receive(exactly: transferred.value, timeout: .weak(.seconds(20)))
                }
                after.value = try await server.receive(deadline: .after(.seconds(20)))
                try await server.close()
            }
        }
        #expect(transferred.value > 0 && transferred.value < joined.count)
        #expect(mismatch(received.value, Array(joined.prefix(max(transferred.value, 0)))) == nil)
        #expect(after.value.isEmpty, "bytes beyond those reported sent")
    }

    /// A weak timeout lets a send-all go on as long as every pause of the peer is shorter
    /// than the timeout, however long the whole send takes.
    @Test(arguments: allBackends)
    func weakTimeoutSurvivesProgress(_ backend: Engine) async throws {
        let (buffers, joined) = largeBuffers(1600, size: 5000, seed: 11)  // 8 MB
        let received = Box<[UInt8]>([])
        let outcome = Box("")
        try await runScheduler(backend, bound: .seconds(60)) { scheduler in
            scheduler.spawn {
                let (client, server) = try await smallBufferedPair(scheduler, size: 65536)
                scheduler.spawn("reader") {
                    // Four pauses of 400 ms, each well under the 1.5 s inactivity timeout,
                    // 1.6 s together; the rest of the payload is far more than the kernel
                    // buffers, so the sender waits through each pause.
                    for _ in 0..<4 {
                        try await scheduler.sleep(for: .milliseconds(400))
                        received.value += try await server.receive(exactly: joined.count / 5, timeout: .weak(.seconds(20)))
                    }
                    received.value += try await server.receive(
                        exactly: joined.count - received.value.count, timeout: .weak(.seconds(20)))
                    try await server.close()
                }
                let start = ContinuousClock.now
                do {
                    try await client.sendAll(buffers, timeout: .weak(.milliseconds(1500)))
                    let elapsed = ContinuousClock.now - start
                    outcome.value = elapsed > .milliseconds(1500) ? "sent" : "sent early (\(elapsed))"
                } catch {
                    outcome.value = "\(error)"
                }
                try await client.close()
            }
        }
        #expect(outcome.value == "sent")
        #expect(mismatch(received.value, joined) == nil)
    }

    /// A peer that resets the connection: the pending send-all fails with a closed
    /// connection.
    @Test(arguments: allBackends)
    func resetPeerIsConnectionClosed(_ backend: Engine) async throws {
        let (buffers, _) = largeBuffers(64, size: 65536, seed: 13)
        let outcome = Box("")
        try await runScheduler(backend, bound: .seconds(60)) { scheduler in
            scheduler.spawn {
                let (client, server) = try await smallBufferedPair(scheduler)
                scheduler.spawn("resetter") {
                    // Once bytes arrive the send is under way; then reset (SO_LINGER 0).
                    _ = try await server.receive(exactly: 1, timeout: .weak(.seconds(20)))
                    var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
                    setsockopt(server.descriptor, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
                    try await server.close()
                }
                do {
                    try await client.sendAll(buffers, timeout: .strong(.seconds(20)))
                    outcome.value = "sent everything"
                } catch let error as SocketError {
                    outcome.value = error.isConnectionClosed ? "closed" : "\(error)"
                } catch {
                    outcome.value = "\(error)"
                }
                try await client.close()
            }
        }
        #expect(outcome.value == "closed")
    }

    /// Cancelling the coroutine while its vectored send is pending: it resumes with
    /// `CancellationError` only after the final completion, and the buffers stay alive
    /// until then (the peer receives the very bytes reported, intact).
    @Test(arguments: allBackends)
    func cancellationKeepsTheBuffersUntilTheFinalCompletion(_ backend: Engine) async throws {
        let outcome = Box("")
        let received = Box<[UInt8]>([])
        let expected = largeBuffers(64, size: 65536, seed: 17).joined
        try await runScheduler(backend, bound: .seconds(60)) { scheduler in
            scheduler.spawn {
                let (client, server) = try await smallBufferedPair(scheduler)
                let sender = scheduler.spawn("sender") {
                    // Made inside the coroutine: once it is cancelled, only the operation
                    // holds them.
                    let (buffers, _) = largeBuffers(64, size: 65536, seed: 17)
                    do {
                        try await client.sendAll(buffers)
                        outcome.value = "sent everything"
                    } catch is CancellationError {
                        outcome.value = "cancelled"
                    }
                }
                // Bytes arrive: the send is under way (and soon waits on the full window).
                received.value = try await server.receive(exactly: 1, timeout: .weak(.seconds(20)))
                sender.cancel()
                try await sender.join()
                try await client.shutdown(.write)
                try await client.close()
                while true {
                    let bytes = try await server.receive(deadline: .after(.seconds(20)))
                    if bytes.isEmpty { break }
                    received.value += bytes
                }
                try await server.close()
            }
        }
        #expect(outcome.value == "cancelled")
        #expect(received.value.count < expected.count)
        #expect(mismatch(received.value, Array(expected.prefix(received.value.count))) == nil)
    }

    /// The send lets go of the buffers when it returns (the socket keeps its operation for
    /// the next send, not the caller's arrays): mutating one afterwards does not copy it.
    @Test(arguments: allBackends)
    func buffersAreLetGoWhenTheSendReturns(_ backend: Engine) async throws {
        let moved = Box<[String]>([])
        let received = Box<[UInt8]>([])
        try await runScheduler(backend, bound: .seconds(60)) { scheduler in
            scheduler.spawn {
                let (client, server) = try await smallBufferedPair(scheduler, size: 65536)
                var head = Array("HTTP/1.1 200 OK\r\n\r\n".utf8)
                var body = pattern(30_000, seed: 2)
                for round in 0..<3 {
                    let before = body.withUnsafeBufferPointer { UInt(bitPattern: $0.baseAddress) }
                    if round == 2 {
                        _ = try await client.send([head, body])
                    } else {
                        try await client.sendAll([head, body], timeout: .weak(.seconds(20)))
                        received.value += try await server.receive(exactly: head.count + body.count, timeout: .weak(.seconds(20)))
                    }
                    body[0] &+= 1
                    head[0] = head[0]
                    if body.withUnsafeBufferPointer({ UInt(bitPattern: $0.baseAddress) }) != before {
                        moved.value.append("round \(round)")
                    }
                }
                try await client.close()
                try await server.close()
            }
        }
        #expect(moved.value == [])
        #expect(received.value.count == 2 * (19 + 30_000))
    }

    /// One vectored send and one plain send cannot be pending together on a socket.
    @Test(arguments: allBackends)
    func aSecondSendIsBusy(_ backend: Engine) async throws {
        let outcome = Box("")
        try await runScheduler(backend, bound: .seconds(60)) { scheduler in
            scheduler.spawn {
                let (client, server) = try await smallBufferedPair(scheduler)
                let sender = scheduler.spawn("sender") {
                    try? await client.sendAll(largeBuffers(64, size: 65536, seed: 1).buffers)
                }
                _ = try await server.receive(exactly: 1, timeout: .weak(.seconds(20)))
                do {
                    _ = try await client.send([[1, 2, 3]])
                    outcome.value = "sent"
                } catch let error as SocketError {
                    outcome.value = error.errno == EBUSY ? "busy" : "\(error)"
                }
                sender.cancel()
                try await sender.join()
                try await client.close()
                try await server.close()
            }
        }
        #expect(outcome.value == "busy")
    }
}
