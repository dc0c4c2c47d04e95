import CogenUring
import Foundation
import Glibc
import Testing

/// Issue 11: a call the documentation allows never stops the program. One that cannot
/// work throws an error saying what was wrong (these used to be `precondition`s).
@Suite struct MisuseTests {
    /// `Socket(family:)` off any scheduler: `SocketError` `EINVAL`, not a trap.
    @Test func socketWithoutASchedulerThrows() {
        #expect(Scheduler.current == nil)  // a test runs in Swift's pool, on no scheduler
        do {
            _ = try Socket(family: .ipv4)
            Issue.record("Socket(family:) without a scheduler did not throw")
        } catch {
            #expect(error.errno == EINVAL)
            #expect(error.description.contains("no scheduler"), "\(error)")
        }
    }

    @Test func serverWithoutThreadsThrows() {
        var configuration = Server.Configuration(address: .loopback())
        configuration.threads = 0
        let error = #expect(throws: RingSetupError.self) {
            _ = try Server(configuration: configuration) { _ in }
        }
        #expect(error?.errno == EINVAL)
        #expect(error.map { "\($0)".contains("threads must be at least 1, got 0") } == true, "\(String(describing: error))")
    }

    /// Receive-ring settings out of range are refused by `Scheduler.init`, whatever the
    /// backend, instead of trapping when the loop first runs.
    @Test(arguments: [Backend.ioUring, .epoll])
    func schedulerConfigurationOutOfRangeThrows(_ backend: Backend) {
        let cases: [(String, (inout Scheduler.Configuration) -> Void)] = [
            ("receiveBufferCount", { $0.receiveBufferCount = 1000 }),
            ("receiveBufferCount", { $0.receiveBufferCount = 65536 }),
            ("receiveBufferCount", { $0.receiveBufferCount = 0 }),
            ("receiveBufferSize", { $0.receiveBufferSize = 0 }),
            ("receiveBufferSize", { $0.receiveBufferSize = Int.max / 4 }),
            ("maxBuffersPerConnection", { $0.maxBuffersPerConnection = 0 }),
        ]
        for (name, change) in cases {
            var configuration = Scheduler.Configuration()
            configuration.backend = backend
            change(&configuration)
            do {
                _ = try Scheduler(configuration: configuration)
                Issue.record("\(name): no error")
            } catch {
                #expect(error.errno == EINVAL)
                #expect("\(error)".contains(name), "\(error)")
            }
        }
    }

    /// A documented misuse (a scheduler's object used from a thread that does not run it)
    /// is caught by one thread-local read and stops with a message naming the rule, in a
    /// child process.
    @Test func offLoopUseStopsWithAClearMessage() throws {
        let (status, output) = try runHelper("off-loop-use-stops")
        #expect(status != 0 && status != 1, "\(status): \(output)")
        #expect(output.contains("must be called on the scheduler's thread"), "\(output)")
    }

    /// A receive ring larger than the address space (32768 × 4 GiB) is no crash: the
    /// scheduler goes without the pool (the 5.x receive path) and still echoes.
    @Test(arguments: allBackends)
    func receiveRingTooLargeForMemoryFallsBack(_ backend: Engine) async throws {
        let echoed = Box<[UInt8]>([])
        try await runScheduler(backend, configure: {
            $0.receiveBufferCount = 32768
            $0.receiveBufferSize = Int(UInt32.max)
        }) { scheduler in
            let listener = try Socket.listening(on: .loopback(), on: scheduler)
            let address = try listener.localAddress
            scheduler.spawn {
                let server = try await listener.accept()
                try await server.sendAll(try await server.receive(exactly: 5))
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
    }

    /// Sizes out of range throw `SocketError` `EINVAL` into the coroutine, on every
    /// engine; a huge `maxLength` (say a length read from the network) bounds one receive
    /// and allocates no more than the bytes that are there.
    @Test(arguments: allBackends)
    func socketSizesOutOfRangeThrow(_ backend: Engine) async throws {
        let log = Log([])
        let received = Box<[UInt8]>([])
        try await runScheduler(backend) { scheduler in
            let listener = try Socket.listening(on: .loopback(), on: scheduler)
            let address = try listener.localAddress
            scheduler.spawn {
                let server = try await listener.accept()
                func attempt(_ name: String, _ body: () async throws -> Void) async {
                    do {
                        try await body()
                        log.value.append("\(name): no error")
                    } catch let error as SocketError where error.errno == EINVAL && error.message != nil {
                        log.value.append("\(name): EINVAL")
                    } catch {
                        log.value.append("\(name): \(error)")
                    }
                }
                await attempt("receive 0") { _ = try await server.receive(maxLength: 0) }
                var buffer: [UInt8] = []
                await attempt("receive into -1") { _ = try await server.receive(into: &buffer, maxLength: -1) }
                await attempt("exactly -1") { _ = try await server.receive(exactly: -1) }
                await attempt("line 0") { _ = try await server.receiveLine(limit: 0) }
                await attempt("file at -1") { _ = try await server.sendFile(0, offset: -1, count: 10) }
                await attempt("file chunks of 0") { _ = try await server.sendFile(0, count: 10, chunkSize: 0) }
                // The socket still works after each refusal.
                received.value = try await server.receive(maxLength: Int.max)
                try await server.close()
                try await listener.close()
            }
            scheduler.spawn {
                let client = try await Socket.connect(to: address)
                try await client.sendAll(Array("hello".utf8))
                #expect(try await client.receive().isEmpty)  // the server closes
                try await client.close()
            }
        }
        #expect(log.value == [
            "receive 0: EINVAL", "receive into -1: EINVAL", "exactly -1: EINVAL", "line 0: EINVAL",
            "file at -1: EINVAL", "file chunks of 0: EINVAL",
        ])
        #expect(!received.value.isEmpty && Array("hello".utf8).starts(with: received.value), "\(received.value)")
    }
}
