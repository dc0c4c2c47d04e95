@testable import CogenUring
import Foundation
import Synchronization
import Testing

/// A fresh Unix socket path under /tmp (at most 107 bytes).
private func temporarySocketPath() -> String {
    "/tmp/cogen-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).sock"
}

private func fileExists(_ path: String) -> Bool {
    var status = stat()
    return lstat(path, &status) == 0
}

/// A plain socket bound to `path`, listening or not; returns its descriptor.
private func bindUnix(_ path: String, listen: Bool) throws -> Int32 {
    let address = try SocketAddress(unixPath: path)
    let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    var storage = address.storage
    let status = withUnsafePointer(to: &storage) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, address.length) }
    }
    #expect(status == 0)
    if listen { #expect(Glibc.listen(fd, 16) == 0) }
    return fd
}

/// The connections waiting in a TCP listener's accept queue (`TCP_INFO`: a listener's
/// `tcpi_unacked`).
private func acceptQueueLength(_ listener: Int32) -> Int {
    var info = tcp_info()
    var length = socklen_t(MemoryLayout<tcp_info>.size)
    guard getsockopt(listener, Int32(IPPROTO_TCP), TCP_INFO, &info, &length) == 0 else { return -1 }
    return Int(info.tcpi_unacked)
}

/// Waits (bounded by the scheduler's watchdog) until `condition` holds, looking every 5 ms.
private func waitUntil(_ scheduler: Scheduler, _ condition: () -> Bool) async throws {
    while !condition() { try await scheduler.sleep(for: .milliseconds(5)) }
}

@Suite(.enabled(if: ioUringUsable, "io_uring is refused by this kernel (on CI these tests run and fail instead)"))
struct ServerGrownTests {
    final class Counter: Sendable {
        let value = Atomic<Int>(0)
        var current: Int { value.load(ordering: .sequentiallyConsistent) }
        @discardableResult func add(_ n: Int = 1) -> Int { value.add(n, ordering: .sequentiallyConsistent).newValue }
        func raise(to n: Int) {
            var seen = current
            while seen < n {
                let (exchanged, now) = value.compareExchange(expected: seen, desired: n, ordering: .sequentiallyConsistent)
                if exchanged { return }
                seen = now
            }
        }
    }

    // MARK: Unix listeners

    @Test(arguments: allBackends, [1, 2])
    func unixListenerServedBySeveralSchedulers(_ backend: Engine, threads: Int) async throws {
        let path = temporarySocketPath()
        // A stale socket file (bound, never listening, not removed): the server replaces it.
        close(try bindUnix(path, listen: false))
        #expect(fileExists(path))
        var configuration = Server.Configuration(address: try SocketAddress(unixPath: path))
        configuration.threads = threads
        backend.configure(&configuration.scheduler)
        let server = try Server(configuration: configuration) { connection in
            while true {
                let bytes = try await connection.receive()
                if bytes.isEmpty { return }
                try await connection.sendAll(bytes)
            }
        }
        #expect(server.address.family == .unix)
        #expect(server.connectionCounts.count == threads)
        let address = server.address
        let echoed = Box(0)
        try await runScheduler(backend) { scheduler in
            for client in 0..<30 {
                scheduler.spawn {
                    let socket = try await Socket.connect(to: address)
                    let message = pattern(300, seed: client)
                    try await socket.sendAll(message)
                    if try await socket.receive(exactly: 300) == message { echoed.value += 1 }
                    try await socket.close()
                }
            }
        }
        let report = await offThePool { server.shutdown(gracePeriod: .seconds(5)) }
        #expect(echoed.value == 30)
        #expect(report.served == 30 && report.cut == 0)
        // The file this server bound goes with it.
        #expect(!fileExists(path))
    }

    @Test func aLiveUnixListenerIsLeftAlone() throws {
        let path = temporarySocketPath()
        let live = try bindUnix(path, listen: true)
        defer {
            close(live)
            unlink(path)
        }
        var configuration = Server.Configuration(address: try SocketAddress(unixPath: path))
        configuration.threads = 2
        #expect {
            try Server(configuration: configuration) { _ in }
        } throws: { error in
            (error as? SocketError)?.errno == EADDRINUSE
        }
        #expect(fileExists(path))
    }

    // MARK: Async shutdown

    /// More servers shut down at once, each from a task of the cooperative pool, than the
    /// pool has threads; a ticking task still runs while every one of them is in its grace
    /// period. Were the shutdowns blocking, they would hold every pool thread until the
    /// first one ended.
    @Test func asyncShutdownLeavesThePoolFree() async throws {
        let count = min(max(2, ProcessInfo.processInfo.activeProcessorCount), 7) + 1
        let entered = Counter()
        var servers: [Server] = []
        for _ in 0..<count {
            // A handler in the middle of a request (not idle): it holds on until it is cut.
            servers.append(try Server(configuration: Server.Configuration(address: .loopback())) { connection in
                entered.add()
                try await connection.scheduler.sleep(for: .seconds(60))
            })
        }
        let addresses = servers.map(\.address)
        try await runScheduler(Engine(backend: .automatic, modern: true)) { scheduler in
            scheduler.spawn {
                var sockets: [Socket] = []
                for address in addresses { sockets.append(try await Socket.connect(to: address)) }
                try await waitUntil(scheduler) { entered.current == count }
                for socket in sockets { try await socket.close() }
            }
        }
        let started = Counter()
        let finished = Counter()
        let ticksDuringGrace = Counter()
        let reports = await withTaskGroup(of: Server.Report?.self) { group in
            for server in servers {
                let server = server
                group.addTask {
                    started.add()
                    let report = await server.gracefulShutdown(gracePeriod: .seconds(1))
                    finished.add()
                    return report
                }
            }
            group.addTask {
                let limit = ContinuousClock.now + .seconds(60)
                while finished.current < count && ContinuousClock.now < limit {
                    try? await Task.sleep(for: .milliseconds(5))
                    if started.current == count && finished.current == 0 { ticksDuringGrace.add() }
                }
                return nil
            }
            var reports: [Server.Report] = []
            for await report in group { if let report { reports.append(report) } }
            return reports
        }
        #expect(reports.count == count)
        #expect(reports.allSatisfy { $0 == Server.Report(served: 0, cut: 1, descriptorExhaustions: 0) })
        #expect(ticksDuringGrace.current > 0, "no task of the pool ran while the shutdowns waited")
    }

    // MARK: Per-connection shutdown signal

    /// One keep-alive connection idle between requests (closed at once), one in the middle
    /// of a request that it finishes within the grace period (then closes, as the server is
    /// shutting down), one in the middle of a request that outlives the grace period (cut).
    @Test(arguments: allBackends)
    func idleConnectionsCloseAtOnceAndBusyOnesFinish(_ backend: Engine) async throws {
        var configuration = Server.Configuration(address: .loopback())
        backend.configure(&configuration.scheduler)
        let requests = Counter()
        let idleWaits = Counter()
        let server = try Server(configuration: configuration) { (connection: Server.Connection) in
            while true {
                idleWaits.add()
                let first = try await connection.receive(maxLength: 1)  // idle: the next request
                if first.isEmpty { return }
                requests.add()
                // In the middle of a request: a plain receive, which the shutdown lets finish.
                let rest = try await connection.socket.receive(exactly: 1)
                try await connection.socket.sendAll(first + rest)
                if connection.isShuttingDown { return }  // no keep-alive while shutting down
            }
        }
        let address = server.address
        let shutdown = Box<Task<Server.Report, Never>?>(nil)
        let seen = Box<[String]>([])
        try await runScheduler(backend) { scheduler in
            scheduler.spawn {
                // A: one whole request, then idle.
                let idle = try await Socket.connect(to: address)
                try await idle.sendAll(Array("ax".utf8))
                #expect(try await idle.receive(exactly: 2) == Array("ax".utf8))
                // B and C: half a request each.
                let finishing = try await Socket.connect(to: address)
                try await finishing.sendAll(Array("b".utf8))
                let outliving = try await Socket.connect(to: address)
                try await outliving.sendAll(Array("c".utf8))
                try await waitUntil(scheduler) { requests.current == 3 && idleWaits.current >= 4 }
                #expect(server.connectionCount == 3)

                shutdown.value = Task.detached { await server.gracefulShutdown(gracePeriod: .seconds(5)) }
                // A is closed at once: end of stream (or a reset), long before the grace ends.
                let endOfIdle = try? await idle.receive()
                seen.value.append("idle closed (\(endOfIdle?.count ?? 0) bytes)")
                // B finishes its request within the grace period, then the server closes it.
                try await finishing.sendAll(Array("y".utf8))
                #expect(try await finishing.receive(exactly: 2) == Array("by".utf8))
                let endOfFinished = try? await finishing.receive()
                seen.value.append("finished closed (\(endOfFinished?.count ?? 0) bytes)")
                // C never completes its request: it is cut when the grace period ends.
                let endOfCut = try? await outliving.receive()
                seen.value.append("cut closed (\(endOfCut?.count ?? 0) bytes)")
                for socket in [idle, finishing, outliving] { try await socket.close() }
            }
        }
        let report = await shutdown.value?.value
        #expect(seen.value == ["idle closed (0 bytes)", "finished closed (0 bytes)", "cut closed (0 bytes)"])
        #expect(report == Server.Report(served: 1, cut: 1, descriptorExhaustions: 0, closedWhileIdle: 1))
        #expect(server.connectionCount == 0)
    }

    /// A handler that asks for idle time after the shutdown began gets the error at once.
    @Test(arguments: allBackends)
    func waitingForShutdownAndIdleAfterIt(_ backend: Engine) async throws {
        var configuration = Server.Configuration(address: .loopback())
        backend.configure(&configuration.scheduler)
        let waiting = Counter()
        let outcomes = PthreadLock<[String]>([])
        let server = try Server(configuration: configuration) { (connection: Server.Connection) in
            waiting.add()
            try await connection.waitForShutdown()
            outcomes.withLock { $0.append("shutdown seen: \(connection.isShuttingDown)") }
            do {
                _ = try await connection.untilShutdown { try await $0.receive() }
            } catch is ServerShutdownRequestedError {
                outcomes.withLock { $0.append("idle refused") }
                throw ServerShutdownRequestedError()
            }
        }
        let address = server.address
        let shutdown = Box<Task<Server.Report, Never>?>(nil)
        try await runScheduler(backend) { scheduler in
            scheduler.spawn {
                let client = try await Socket.connect(to: address)
                try await waitUntil(scheduler) { waiting.current == 1 }
                shutdown.value = Task.detached { await server.gracefulShutdown(gracePeriod: .seconds(5)) }
                _ = try? await client.receive()
                try await client.close()
            }
        }
        let report = await shutdown.value?.value
        #expect(outcomes.withLock { $0 } == ["shutdown seen: true", "idle refused"])
        #expect(report == Server.Report(served: 0, cut: 0, descriptorExhaustions: 0, closedWhileIdle: 1))
    }

    // MARK: Connection cap

    /// Cap 3, six clients: three are served at once; the other three wait in the kernel's
    /// backlog (not accepted: the multishot accept was cancelled at the cap) and are
    /// served as the first ones leave.
    @Test(arguments: allBackends)
    func acceptPausesAtTheConnectionCap(_ backend: Engine) async throws {
        var configuration = Server.Configuration(address: .loopback())
        configuration.maxConnectionsPerScheduler = 3
        backend.configure(&configuration.scheduler)
        let active = Counter()
        let mostActive = Counter()
        let server = try Server(configuration: configuration) { connection in
            mostActive.raise(to: active.add())
            defer { active.add(-1) }
            let request = try await connection.receive(exactly: 1)
            try await connection.sendAll(request)
            _ = try await connection.receive()  // until the client leaves
        }
        let address = server.address
        let listener = server.listenerDescriptors[0]
        let sent = Box(0)
        let served = Box<[Int]>([])
        let countAtCap = Box(-1)
        let servedWhileFull = Box(-1)
        let backlogWhileFull = Box(-1)
        try await runScheduler(backend) { scheduler in
            let release = Signal<Void>()
            func client(_ index: Int) {
                scheduler.spawn {
                    let socket = try await Socket.connect(to: address)
                    try await socket.sendAll([UInt8(index)])
                    sent.value += 1
                    _ = try await socket.receive(exactly: 1)
                    served.value.append(index)
                    try await release.wait()
                    try await socket.close()
                }
            }
            scheduler.spawn {
                for index in 0..<3 { client(index) }
                try await waitUntil(scheduler) { served.value.count == 3 }
                countAtCap.value = server.connectionCount
                for index in 3..<6 { client(index) }
                try await waitUntil(scheduler) { sent.value == 6 }
                // The other three stay unserved while the first three hold on (a look
                // after a while: nothing here waits for it to happen).
                try await scheduler.sleep(for: .milliseconds(200))
                servedWhileFull.value = served.value.count
                backlogWhileFull.value = acceptQueueLength(listener)
                release.signal(())  // the first three leave
                try await waitUntil(scheduler) { served.value.count == 6 }
                release.signal(())
            }
        }
        let report = await server.gracefulShutdown(gracePeriod: .seconds(5))
        #expect(countAtCap.value == 3)
        #expect(servedWhileFull.value == 3)
        #expect(backlogWhileFull.value == 3, "the connections beyond the cap wait in the kernel's backlog")
        #expect(Set(served.value.prefix(3)) == [0, 1, 2])
        #expect(mostActive.current == 3)
        #expect(report.served == 6 && report.cut == 0)
        #expect(server.connectionCount == 0)
    }

    @Test func aCapBelowOneIsRefused() {
        var configuration = Server.Configuration(address: .loopback())
        configuration.maxConnectionsPerScheduler = 0
        #expect {
            try Server(configuration: configuration) { _ in }
        } throws: { error in
            (error as? RingSetupError)?.errno == EINVAL
        }
    }
}
