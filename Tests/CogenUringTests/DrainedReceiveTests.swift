@testable import CogenUring
import Foundation
import PropertyTestSupport
import Testing

/// On epoll a receive that returned fewer bytes than it asked for emptied the socket's
/// queue, so the next receive waits for the edge new bytes raise instead of trying
/// `recv(2)` and getting `EAGAIN` (as nginx's `ngx_unix_recv`). These show that no byte,
/// end of stream or reset is missed for it: bytes that come while the receive waits, bytes
/// that come between the short read and the wait (the coroutine busy elsewhere), an end
/// of stream or a reset after a drained read, and a read smaller than what is queued
/// (not drained: the next receive takes the rest at once). Every engine runs them; on
/// epoll they also check the mark itself.
@Suite struct DrainedReceiveTests {
    enum Transport: String, CaseIterable, CustomTestStringConvertible {
        case unix, tcp
        var testDescription: String { rawValue }
    }

    /// A connected pair: the socket under test and the peer's raw descriptor (written with
    /// plain blocking system calls, from the loop thread or another one).
    static func pair(_ transport: Transport, _ scheduler: Scheduler) async throws -> (Socket, Int32) {
        switch transport {
        case .unix:
            var fds: [Int32] = [0, 0]
            let status = socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds)
            #expect(status == 0)
            return (Socket(descriptor: fds[1], family: .unix, scheduler: scheduler), fds[0])
        case .tcp:
            let listener = try Socket.listening(on: .loopback(), on: scheduler)
            let port = try listener.localAddress.port
            let fd = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            let status = connectToLoopback(fd, port: port)
            #expect(status == 0)  // loopback: completed from the backlog, before the accept
            let socket = try await listener.accept()
            try await listener.close()
            return (socket, fd)
        }
    }

    /// The epoll mark (nil on io_uring, which has none).
    static func knownDrained(_ socket: Socket) -> Bool? {
        socket.scheduler.readiness?.isKnownDrained(socket.descriptor, owner: socket.serial)
    }

    static func send(_ fd: Int32, _ bytes: [UInt8]) {
        let sent = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        #expect(sent == bytes.count)
    }

    /// Sends from a thread of its own and sets `done` (the loop thread never blocks on it).
    static func sendFromAnotherThread(_ fd: Int32, _ bytes: [UInt8], done: Flag) {
        let thread = Thread {
            send(fd, bytes)
            done.set()
        }
        thread.start()
    }

    /// Sleeps on the scheduler (the loop then waits in the kernel and gathers what epoll
    /// reports) until `condition` holds; at most about 10 s.
    static func sleep(until condition: () -> Bool, _ scheduler: Scheduler) async throws {
        for _ in 0..<10_000 where !condition() { try await scheduler.sleep(for: .milliseconds(1)) }
        #expect(condition())
    }

    /// Receives with the socket known drained (after a receive that waited and read less
    /// than it asked for), for bytes another thread sends while the receive waits.
    @Test(arguments: allBackends, Transport.allCases)
    func bytesSentWhileTheReceiveWaits(_ engine: Engine, _ transport: Transport) async throws {
        guard engine.backend == .epoll || ioUringUsable else { return }
        let got = Box<[String]>([])
        try await runScheduler(engine) { scheduler in
            scheduler.spawn {
                let (socket, peer) = try await Self.pair(transport, scheduler)
                for round in 0..<3 {
                    let done = Flag()
                    // Spawned behind this coroutine, which parks in its receive first.
                    scheduler.spawn { Self.sendFromAnotherThread(peer, Array("round \(round)".utf8), done: done) }
                    let bytes = try await socket.receive(maxLength: 64)
                    got.value.append(String(decoding: bytes, as: UTF8.self))
                    // A short read from a registered socket: known drained on epoll.
                    #expect(Self.knownDrained(socket) ?? true)
                    try await Self.sleep(until: { done.isSet }, scheduler)
                }
                try await socket.close()
                Glibc.close(peer)
            }
        }
        #expect(got.value == ["round 0", "round 1", "round 2"])
    }

    /// Where the bytes that come between a drained read and the next receive are sent from.
    enum WhileBusy: String, CaseIterable, CustomTestStringConvertible {
        /// From the loop thread, and the receive follows at once: the edge is still
        /// unreported when the receive (known drained) starts to wait for it.
        case loopThreadThenReceive
        /// From the loop thread, then the loop waits in the kernel before the receive:
        /// epoll reports the edge while nothing waits on the socket.
        case loopThreadThenIdle
        /// From another thread, while the coroutine sleeps.
        case otherThreadThenIdle
        var testDescription: String { rawValue }
    }

    @Test(arguments: allBackends, WhileBusy.allCases)
    func bytesSentBetweenTheDrainedReadAndTheWait(_ engine: Engine, _ busy: WhileBusy) async throws {
        guard engine.backend == .epoll || ioUringUsable else { return }
        let got = Box<[String]>([])
        try await runScheduler(engine) { scheduler in
            scheduler.spawn {
                let (socket, peer) = try await Self.pair(.tcp, scheduler)
                scheduler.spawn { Self.send(peer, Array("first".utf8)) }
                got.value.append(String(decoding: try await socket.receive(maxLength: 64), as: UTF8.self))
                #expect(Self.knownDrained(socket) ?? true)
                switch busy {
                case .loopThreadThenReceive:
                    Self.send(peer, Array("second".utf8))
                    #expect(Self.knownDrained(socket) ?? true)  // nothing gathered yet
                case .loopThreadThenIdle:
                    Self.send(peer, Array("second".utf8))
                    try await Self.sleep(until: { Self.knownDrained(socket) != true }, scheduler)
                case .otherThreadThenIdle:
                    let done = Flag()
                    Self.sendFromAnotherThread(peer, Array("second".utf8), done: done)
                    try await Self.sleep(until: { done.isSet && Self.knownDrained(socket) != true }, scheduler)
                }
                got.value.append(String(decoding: try await socket.receive(maxLength: 64), as: UTF8.self))
                try await socket.close()
                Glibc.close(peer)
            }
        }
        #expect(got.value == ["first", "second"])
    }

    /// How the peer ends the stream after a drained read. `bytesThenFin…`: bytes and the
    /// FIN come together, so the read of the bytes stops short at the FIN (whose edge was
    /// reported already) without emptying the queue: the end of stream is still to read.
    enum Ending: String, CaseIterable, CustomTestStringConvertible {
        case finWhileWaiting, finWhileBusy, bytesThenFinWhileWaiting, bytesThenFinWhileBusy
        case resetWhileWaiting, resetWhileBusy
        var testDescription: String { rawValue }
        var isReset: Bool { self == .resetWhileWaiting || self == .resetWhileBusy }
        var sendsBytes: Bool { self == .bytesThenFinWhileWaiting || self == .bytesThenFinWhileBusy }
        var whileWaiting: Bool {
            self == .finWhileWaiting || self == .resetWhileWaiting || self == .bytesThenFinWhileWaiting
        }

        func end(_ fd: Int32) {
            if sendsBytes { DrainedReceiveTests.send(fd, Array("more".utf8)) }
            if isReset {
                var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
                _ = setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
                Glibc.close(fd)
            } else {
                Glibc.shutdown(fd, Int32(SHUT_WR))
            }
        }
    }

    @Test(arguments: allBackends, Ending.allCases)
    func theEndOfStreamAfterADrainedReadIsSeen(_ engine: Engine, _ ending: Ending) async throws {
        guard engine.backend == .epoll || ioUringUsable else { return }
        let outcome = Box<[String]>([])
        try await runScheduler(engine) { scheduler in
            scheduler.spawn {
                let (socket, peer) = try await Self.pair(.tcp, scheduler)
                scheduler.spawn { Self.send(peer, Array("hello".utf8)) }
                outcome.value.append(String(decoding: try await socket.receive(maxLength: 64), as: UTF8.self))
                #expect(Self.knownDrained(socket) ?? true)
                if ending.whileWaiting {
                    scheduler.spawn { ending.end(peer) }
                } else {
                    ending.end(peer)
                    try await scheduler.sleep(for: .milliseconds(2))  // reported while nothing waits
                }
                do {
                    var bytes = try await socket.receive(maxLength: 64)
                    if !bytes.isEmpty {
                        outcome.value.append(String(decoding: bytes, as: UTF8.self))
                        bytes = try await socket.receive(maxLength: 64)
                    }
                    outcome.value.append(bytes.isEmpty ? "end of stream" : "bytes")
                } catch let error as SocketError where error.isConnectionClosed {
                    outcome.value.append("reset")
                }
                try await socket.close()
                if !ending.isReset { Glibc.close(peer) }
            }
        }
        #expect(outcome.value == ["hello"] + (ending.sendsBytes ? ["more"] : []) + [ending.isReset ? "reset" : "end of stream"])
    }

    /// A receive whose buffer was filled (fewer bytes asked for than were queued) did not
    /// drain the socket: the next one takes the rest at once, without waiting. The one that
    /// then reads less than it asked for drains it.
    @Test(arguments: allBackends, Transport.allCases)
    func aFullReadIsFollowedByAnImmediateOne(_ engine: Engine, _ transport: Transport) async throws {
        guard engine.backend == .epoll || ioUringUsable else { return }
        let got = Box<[Int]>([])
        let waits = Box<[Int]>([])
        let payload = pattern(100, seed: 3)
        try await runScheduler(engine) { scheduler in
            scheduler.spawn {
                let (socket, peer) = try await Self.pair(transport, scheduler)
                // The first receive waits (and registers the socket on epoll).
                scheduler.spawn { Self.send(peer, payload) }
                var received = try await socket.receive(maxLength: 10)
                got.value.append(received.count)
                #expect(Self.knownDrained(socket) != true)
                let submitted = scheduler.counters.operationsSubmitted
                received += try await socket.receive(maxLength: 10)
                got.value.append(received.count - 10)
                #expect(Self.knownDrained(socket) != true)
                received += try await socket.receive(maxLength: 1000)
                got.value.append(received.count - 20)
                #expect(Self.knownDrained(socket) ?? true)
                // On epoll both went on inline; io_uring without provided buffers submits.
                waits.value.append(scheduler.counters.operationsSubmitted - submitted)
                #expect(received == payload, "bytes differ")
                try await socket.close()
                Glibc.close(peer)
            }
        }
        #expect(got.value == [10, 10, 80])
        if engine.backend == .epoll { #expect(waits.value == [0]) }
    }

    #if DEBUG
    /// Fault injection's short transfers ask the kernel for fewer bytes: a receive that got
    /// all it asked for then did not drain the queue, and must not be taken for one that
    /// did. (Injected `EAGAIN`s make no call, and owe an edge.)
    @Test(arguments: [Fault.shortTransfer, .wouldBlock])
    func injectedFaultsDoNotMarkTheSocketDrained(_ fault: Fault) async throws {
        let got = Box(0)
        let payload = pattern(4000, seed: 5)
        try await runScheduler(Engine(backend: .epoll, modern: false), configure: {
            $0.faultInjection = FaultInjection(seed: 7, probabilities: [fault: 0.5])
        }) { scheduler in
            scheduler.spawn {
                let (socket, peer) = try await Self.pair(.unix, scheduler)
                var received: [UInt8] = []
                for round in 0..<40 {
                    let chunk = Array(payload[(round * 100)..<(round * 100 + 100)])
                    scheduler.spawn { Self.send(peer, chunk) }
                    var count = 0
                    while count < 100 {
                        let bytes = try await socket.receive(maxLength: 100 - count)
                        if bytes.isEmpty { break }
                        count += bytes.count
                        received += bytes
                    }
                }
                got.value = received.count
                #expect(received == payload, "bytes differ")
                try await socket.close()
                Glibc.close(peer)
            }
        }
        #expect(got.value == 4000)
    }
    #endif
}
