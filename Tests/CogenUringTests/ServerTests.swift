@testable import CogenUring
import Foundation
import Synchronization
import Testing

@Suite(.enabled(if: ioUringUsable, "io_uring is refused by this kernel (on CI these tests run and fail instead)"))
struct ServerTests {
    final class Seen: Sendable {
        // A pthread lock: ThreadSanitizer cannot see `Synchronization.Mutex` (`PthreadLock`).
        let schedulers = PthreadLock<[ObjectIdentifier: Int]>([:])
    }

    final class Counter: Sendable {
        let value = Atomic<Int>(0)
    }

    /// An echo handler that records which scheduler served it.
    static func echo(_ seen: Seen) -> @Sendable (Socket) async throws -> Void {
        { connection in
            seen.schedulers.withLock { $0[ObjectIdentifier(connection.scheduler), default: 0] += 1 }
            while true {
                let bytes = try await connection.receive()
                if bytes.isEmpty { return }
                try await connection.sendAll(bytes)
            }
        }
    }

    @Test(arguments: allBackends, [1, 2])
    func servesAndShutsDownGracefully(_ backend: Engine, threads: Int) async throws {
        var configuration = Server.Configuration(address: .loopback())
        configuration.threads = threads
        backend.configure(&configuration.scheduler)
        let seen = Seen()
        let server = try Server(configuration: configuration, handler: Self.echo(seen))
        let address = server.address
        let echoed = Box(0)
        try await runScheduler(backend) { scheduler in
            for client in 0..<50 {
                scheduler.spawn {
                    let socket = try await Socket.connect(to: address)
                    let message = pattern(200, seed: client)
                    try await socket.sendAll(message)
                    if try await socket.receive(exactly: 200) == message { echoed.value += 1 }
                    try await socket.close()
                }
            }
        }
        let report = await offThePool { server.shutdown(gracePeriod: .seconds(5)) }
        #expect(echoed.value == 50)
        #expect(report.served == 50 && report.cut == 0)
        let perScheduler = seen.schedulers.withLock { $0 }
        #expect(perScheduler.values.reduce(0, +) == 50)
        // Two schedulers sharing the port (SO_REUSEPORT) both got connections.
        #expect(perScheduler.count == threads)
    }

    @Test(arguments: allBackends)
    func handlersStillRunningAfterTheGracePeriodAreCut(_ backend: Engine) async throws {
        var configuration = Server.Configuration(address: .loopback())
        backend.configure(&configuration.scheduler)
        let waiting = Counter()
        let server = try Server(configuration: configuration) { connection in
            waiting.value.add(1, ordering: .sequentiallyConsistent)
            _ = try await connection.receive()  // the clients never send
        }
        let address = server.address
        let clients = Box<[Socket]>([])
        try await runScheduler(backend) { scheduler in
            scheduler.spawn {
                for _ in 0..<5 { clients.value.append(try await Socket.connect(to: address)) }
                // Until all five handlers wait (the server's threads may be slow to get
                // the CPU on a loaded machine).
                while waiting.value.load(ordering: .sequentiallyConsistent) < 5 { try await scheduler.sleep(for: .milliseconds(5)) }
            }
        }
        let started = ContinuousClock.now
        let report = await offThePool { server.shutdown(gracePeriod: .milliseconds(100)) }
        #expect(ContinuousClock.now - started >= .milliseconds(100))
        #expect(report == Server.Report(served: 0, cut: 5, descriptorExhaustions: 0))
    }
}

@Suite(.enabled(if: ioUringUsable, "io_uring is refused by this kernel (on CI these tests run and fail instead)"))
struct DescriptorLimitTests {
    @Test func acceptingSurvivesDescriptorExhaustion() throws {
        let (status, output) = try runHelper("accept-under-descriptor-limit")
        #expect(status == 0, "\(output)")
    }
}
