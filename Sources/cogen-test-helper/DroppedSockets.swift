import CogenUring
import Glibc
import Synchronization

/// How a socket is let go of without `close()`.
enum DropMode: String, CaseIterable {
    /// Between operations, after a receive that waited (so epoll had registered it).
    case idle
    /// Its coroutine gave up a receive (a deadline) and dropped it.
    case midReceive = "mid-receive"
    /// Its coroutine gave up a send into a peer that does not read, and dropped it.
    case midSend = "mid-send"
    /// A listener with its accept armed (the multishot stream on io_uring), and a
    /// connection with its receive stream armed.
    case streamsArmed = "streams-armed"
    /// Dropped by another thread.
    case offTheLoop = "off-the-loop"
}

/// One socket whose last reference goes away on another thread.
final class Holder: @unchecked Sendable {
    // @unchecked: handed to one thread, which drops it; the loop only waits for the flag.
    var socket: Socket?
    init(_ socket: Socket) { self.socket = socket }
    var descriptor: Int32 { socket?.descriptor ?? -1 }
    func take() -> Socket? {
        defer { socket = nil }
        return socket
    }
}

struct ScenarioFailure: Error, CustomStringConvertible {
    let description: String
}

/// Runs `body` on a new thread and waits for it (never on a scheduler's thread).
func onAnotherThread(_ body: @escaping () -> Void) {
    final class Body { let run: () -> Void; init(_ run: @escaping () -> Void) { self.run = run } }
    var thread = pthread_t()
    let context = Unmanaged.passRetained(Body(body)).toOpaque()
    let status = pthread_create(&thread, nil, { context in
        guard let context else { return nil }
        Unmanaged<Body>.fromOpaque(context).takeRetainedValue().run()
        return nil
    }, context)
    guard status == 0 else {
        Unmanaged<Body>.fromOpaque(context).release()
        body()
        return
    }
    pthread_join(thread, nil)
}

/// Sockets dropped without `close()` (idle, mid-receive, mid-send, with streams armed, off
/// the loop) free their descriptor numbers for good: the next accepted or connected socket
/// gets the same number (asserted) and moves data both ways, on the engine named by
/// `engine` (`io_uring`, `io_uring-5.x`, `epoll`). On epoll this is the registration left
/// behind by a descriptor closed in `deinit`: the new socket must not inherit it.
func droppedSocketsFreeTheirNumbers(engine: String) -> Int32 {
    var configuration = Scheduler.Configuration()
    switch engine {
    case "io_uring": configuration.backend = .ioUring
    case "io_uring-5.x":
        configuration.backend = .ioUring
        configuration.useMultishotAccept = false
        configuration.useProvidedBuffers = false
    case "epoll": configuration.backend = .epoll
    default:
        print("unknown engine \(engine)")
        return 2
    }
    let lines = Box<[String]>([])
    let failures = Box<[String]>([])
    do {
        let scheduler = try Scheduler(configuration: configuration)
        scheduler.spawn {
            let listener = try Socket.listening(on: .loopback())
            let address = try listener.localAddress
            for mode in DropMode.allCases {
                for reuse in ["accept", "connect"] {
                    do {
                        let number = try await dropAndReuse(mode, by: reuse, listener: listener, address: address, scheduler)
                        let line = "\(mode.rawValue)/\(reuse): number \(number) reused, data moved"
                        lines.value.append(line)
                        print(line)
                    } catch {
                        let line = "\(mode.rawValue)/\(reuse): \(error)"
                        failures.value.append(line)
                        print("FAILED \(line)")
                    }
                    fflush(nil)
                }
            }
            try await listener.close()
        }
        // The test kills this process after its bound: no watchdog needed here.
        scheduler.run()
        scheduler.shutdown()
    } catch {
        failures.value.append("scheduler: \(error)")
    }
    if let failure = failures.value.last, failure.hasPrefix("scheduler") { print("FAILED \(failure)") }
    return failures.value.isEmpty && lines.value.count == DropMode.allCases.count * 2 ? 0 : 1
}

/// Drops a socket as `mode` says, then makes a new socket (`accept` or `connect`) that must
/// get its descriptor number, and moves data on it with a receive that has to wait.
/// Returns the number.
private func dropAndReuse(
    _ mode: DropMode, by reuse: String, listener: Socket, address: SocketAddress, _ scheduler: Scheduler
) async throws -> Int32 {
    let client = try await Socket.connect(to: address)
    // The only reference to the accepted socket: each mode drops it its own way.
    let holder = Holder(try await listener.accept())
    // A receive that has to wait: epoll registers the descriptor, io_uring arms its stream.
    scheduler.spawn {
        try await scheduler.sleep(for: .milliseconds(5))
        try await client.sendAll([1])
    }
    _ = try await holder.socket?.receive(deadline: .after(.seconds(5)))
    // For an accept to get the freed number, the client that will connect must already
    // have its descriptor: a raw one, connected with a plain blocking connect(2) (loopback
    // completes it from the backlog, before any accept).
    let rawClient = reuse == "accept" ? Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0) : -1
    defer { if rawClient >= 0 { Glibc.close(rawClient) } }
    let number: Int32
    switch mode {
    case .idle:
        number = holder.descriptor
        holder.socket = nil
    case .midReceive:
        guard let socket = holder.take() else { throw ScenarioFailure(description: "no socket") }
        number = socket.descriptor
        do { _ = try await socket.receive(deadline: .after(.milliseconds(20))) } catch is TimeoutError {}
    case .midSend:
        guard let socket = holder.take() else { throw ScenarioFailure(description: "no socket") }
        number = socket.descriptor
        do {
            try await socket.sendAll([UInt8](repeating: 9, count: 16 << 20), timeout: .strong(.milliseconds(50)))
            throw ScenarioFailure(description: "16 MiB went into a peer that does not read")
        } catch is TimeoutError {}
    case .streamsArmed:
        // The connection's receive stream is armed by the receive above; a listener of its
        // own gets an armed accept that times out.
        holder.socket = nil
        let second = try Socket.listening(on: .loopback())
        number = second.descriptor
        do { _ = try await second.accept(deadline: .after(.milliseconds(20))) } catch is TimeoutError {}
    case .offTheLoop:
        number = holder.descriptor
        // Blocks the loop for a moment, which a test may do: the other thread only drops.
        onAnotherThread { holder.socket = nil }
    }
    // Whatever is left of the old socket, its deinit has run by now (the frames that held
    // it have returned); give a cancelled stream's final CQE a pass to arrive.
    await scheduler.yield()

    if rawClient >= 0 {
        guard rawConnect(rawClient, to: address) == 0 else {
            throw ScenarioFailure(description: "raw connect failed: errno \(errno)")
        }
        let accepted = try await listener.accept()
        guard accepted.descriptor == number else {
            throw ScenarioFailure(description: "the accepted socket got \(accepted.descriptor), not \(number)")
        }
        // The accepted socket waits to receive; then the raw peer waits (a poll) for its answer.
        scheduler.spawn {
            try await scheduler.sleep(for: .milliseconds(5))
            _ = Glibc.send(rawClient, "ping", 4, Int32(MSG_NOSIGNAL))
        }
        let got = try await accepted.receive(exactly: 4, timeout: .strong(.seconds(5)))
        guard got == Array("ping".utf8) else { throw ScenarioFailure(description: "received \(got)") }
        scheduler.spawn {
            try await scheduler.sleep(for: .milliseconds(5))
            try await accepted.sendAll(Array("pong".utf8))
        }
        _ = try await scheduler.poll(rawClient, events: UInt32(POLLIN), deadline: .after(.seconds(5)))
        var back = [UInt8](repeating: 0, count: 4)
        guard Glibc.recv(rawClient, &back, 4, Int32(MSG_DONTWAIT)) == 4, back == Array("pong".utf8) else {
            throw ScenarioFailure(description: "the raw peer did not get pong")
        }
        try await accepted.close()
    } else {
        let connected = try await Socket.connect(to: address)
        let accepted = try await listener.accept()
        guard connected.descriptor == number else {
            throw ScenarioFailure(description: "the connected socket got \(connected.descriptor), not \(number)")
        }
        scheduler.spawn {
            try await scheduler.sleep(for: .milliseconds(5))
            try await accepted.sendAll(Array("ping".utf8))
        }
        let got = try await connected.receive(exactly: 4, timeout: .strong(.seconds(5)))
        guard got == Array("ping".utf8) else { throw ScenarioFailure(description: "received \(got)") }
        scheduler.spawn {
            try await scheduler.sleep(for: .milliseconds(5))
            try await connected.sendAll(Array("pong".utf8))
        }
        let back = try await accepted.receive(exactly: 4, timeout: .strong(.seconds(5)))
        guard back == Array("pong".utf8) else { throw ScenarioFailure(description: "sent back \(back)") }
        try await connected.close()
        try await accepted.close()
    }
    try await client.close()
    return number
}

/// A plain blocking connect(2) to an IPv4 address.
private func rawConnect(_ descriptor: Int32, to address: SocketAddress) -> Int32 {
    var storage = sockaddr_in()
    storage.sin_family = sa_family_t(AF_INET)
    storage.sin_port = address.port.bigEndian
    storage.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
    return withUnsafePointer(to: &storage) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            Glibc.connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
        }
    }
}
