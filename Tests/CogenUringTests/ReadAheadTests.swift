@testable import CogenUring
import Foundation
import Glibc
import Testing

/// The read-ahead limit (issue 11): what a socket takes from the kernel before its
/// coroutine asks stays under `Configuration.readAheadLimit`, on every engine.
@Suite(.enabled(if: ioUringUsable, "io_uring is refused by this kernel (on CI these tests run and fail instead)"))
struct ReadAheadTests {
    /// Not a multiple of the ring's 16 KiB buffers: the multishot's last receive is capped.
    static let limit = 20000

    /// A peer sends 1 MiB; the reader takes 100 bytes, then nothing for a while, then the
    /// rest in exact reads of 3000 bytes. What the socket holds never passes the limit,
    /// and every byte arrives in order.
    static func readAheadStaysUnderTheLimit(_ engine: Engine, singleReceives: Bool) async throws {
        let payload = pattern(1 << 20, seed: 11)
        let received = Box([UInt8]())
        let mostHeld = Box(0)
        try await runScheduler(engine, configure: { $0.readAheadLimit = Self.limit }) { scheduler in
            if singleReceives { scheduler.receiveLimitRefused = true }  // as on a kernel before 6.17
            let listener = try Socket.listening(on: .loopback(), on: scheduler)
            let address = try listener.localAddress
            scheduler.spawn {
                let client = try await Socket.connect(to: address)
                try await client.sendAll(payload)
                try await client.close()
            }
            scheduler.spawn {
                let server = try await listener.accept()
                var bytes = try await server.receive(maxLength: 100)
                // The reader lags: the socket may read ahead, up to the limit.
                for _ in 0..<50 {
                    try await scheduler.sleep(for: .milliseconds(2))
                    mostHeld.value = max(mostHeld.value, server.heldBytes)
                }
                while payload.count - bytes.count >= 3000 {
                    bytes += try await server.receive(exactly: 3000)
                    mostHeld.value = max(mostHeld.value, server.heldBytes)
                }
                while true {
                    let rest = try await server.receive()
                    if rest.isEmpty { break }
                    bytes += rest
                }
                received.value = bytes
                #expect(server.heldCapacity <= 64 << 10)
                try await server.close()
                try await listener.close()
            }
        }
        #expect(mismatch(received.value, payload) == nil)
        #expect(mostHeld.value <= Self.limit)
        if engine.modern && engine.backend == .ioUring {
            #expect(mostHeld.value > 0, "the multishot receive reads ahead")
        }
    }

    @Test(arguments: allBackends)
    func readAheadStaysUnderTheLimit(_ engine: Engine) async throws {
        try await Self.readAheadStaysUnderTheLimit(engine, singleReceives: false)
    }

    /// Where the kernel refuses a multishot's byte limit, single receives from the ring.
    @Test func singleReceivesFromTheRingStayUnderTheLimit() async throws {
        try await Self.readAheadStaysUnderTheLimit(allBackends[0], singleReceives: true)
    }

    /// On this kernel a multishot receive's byte limit is taken (Linux 6.17) or refused
    /// once, after which the socket receives one buffer at a time: either way nothing is
    /// lost, and a refusal is not a receive error.
    @Test func theByteLimitIsTakenOrRefusedQuietly() async throws {
        let echoed = Box([UInt8]())
        let refused = Box(false)
        try await runScheduler(allBackends[0], afterRun: { scheduler, _ in refused.value = scheduler.receiveLimitRefused }) { scheduler in
            let listener = try Socket.listening(on: .loopback(), on: scheduler)
            let address = try listener.localAddress
            scheduler.spawn {
                let server = try await listener.accept()
                let bytes = try await server.receive(exactly: 5)
                try await server.sendAll(bytes)
                try await server.close()
                try await listener.close()
            }
            scheduler.spawn {
                let client = try await Socket.connect(to: address)
                try await client.sendAll(Array("hello".utf8))
                echoed.value = try await client.receive(exactly: 5)
                try await client.close()
            }
        }
        #expect(echoed.value == Array("hello".utf8))
        var name = utsname()
        uname(&name)
        let release = withUnsafeBytes(of: name.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        let version = release.split(separator: ".").prefix(2).compactMap { Int($0.prefix { $0.isNumber }) }
        if KernelFeatures.current.multishotReceive && version.count == 2 && (version[0], version[1]) >= (6, 17) {
            #expect(!refused.value, "Linux \(release) takes the multishot receive's byte limit")
        }
    }

    /// An exact read of 1 MiB: the socket's array held it, and does not keep the storage.
    @Test(arguments: allBackends)
    func storageGoesBackAfterALargeRead(_ engine: Engine) async throws {
        let payload = pattern(1 << 20, seed: 5)
        let result = Box([UInt8]())
        let kept = Box(-1)
        try await runScheduler(engine) { scheduler in
            let listener = try Socket.listening(on: .loopback(), on: scheduler)
            let address = try listener.localAddress
            scheduler.spawn {
                let client = try await Socket.connect(to: address)
                try await client.sendAll(payload)
                try await client.close()
            }
            scheduler.spawn {
                let server = try await listener.accept()
                result.value = try await server.receive(exactly: 1 << 20)
                kept.value = server.heldCapacity
                try await server.close()
                try await listener.close()
            }
        }
        #expect(mismatch(result.value, payload) == nil)
        #expect(kept.value >= 0 && kept.value <= 64 << 10)
    }
}

extension ProcessWideTests {
    /// 200 connections whose clients (SO_RCVBUF 16 KiB) never read, each handler blocked
    /// in a send for 200 ms: the server grows by at most connections × (limit + the
    /// handler's buffer) + 4 MiB, and 240 KiB more of limit shows as at least half of
    /// 240 KiB more per connection (the limit is what bounds the memory).
    @Test(.serialized, arguments: ["io_uring", "io_uring-5x", "epoll"])
    func readAheadBoundsServerMemory(_ engine: String) async throws {
        var growth: [Int: Int] = [:]
        var connections = 0
        var handlerBuffer = 0
        for limit in [16 << 10, 256 << 10] {
            // On a thread of its own: waiting for the child must not hold a thread of the
            // cooperative pool that other tests need.
            let run: Result<(status: Int32, output: String), any Error> = await withCheckedContinuation { done in
                Thread {
                    done.resume(returning: Result {
                        try runHelper("read-ahead-bound", arguments: [engine, "\(limit)"], timeout: .seconds(150))
                    })
                }.start()
            }
            let (status, output) = try run.get()
            #expect(status == 0, "\(output)")
            let words = output.split(whereSeparator: \.isWhitespace).map(String.init)
            func value(_ name: String) -> Int? { words.firstIndex(of: name).flatMap { Int(words[$0 + 1]) } }
            guard let g = value("growth"), let pending = value("pending-ms"), let n = value("connections"),
                  let h = value("handler-buffer")
            else {
                Issue.record("unexpected output: \(output)")
                return
            }
            #expect(pending >= 200, "\(output)")
            #expect(n >= 200)
            #expect(g <= n * (limit + h) + (4 << 20), "limit \(limit): \(output)")
            growth[limit] = g
            connections = n
            handlerBuffer = h
        }
        if let small = growth[16 << 10], let large = growth[256 << 10] {
            #expect(large - small >= connections * (240 << 10) / 2,
                    "growth \(small) B at 16 KiB, \(large) B at 256 KiB (handler buffer \(handlerBuffer) B)")
        }
    }
}
