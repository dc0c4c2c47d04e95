// Scenarios the tests run in a child process, because they touch process-wide state
// (counting open descriptors, setrlimit). Each prints one result line and exits 0 when
// the scenario held, 1 when it did not, 2 on a usage error.
import CTestSupport
import CogenUring
import Glibc
import Synchronization

/// Open descriptors of this process.
func openDescriptors() -> Int {
    guard let dir = opendir("/proc/self/fd") else { return -1 }
    defer { closedir(dir) }
    var count = 0
    while let entry = readdir(dir) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        if name != "." && name != ".." { count += 1 }
    }
    return count - 1  // the directory stream itself
}

final class Box<T>: @unchecked Sendable {
    // @unchecked: used on the scheduler's thread only.
    var value: T
    init(_ value: T) { self.value = value }
}

func dropWithoutClosing(_ address: SocketAddress, _ listener: Socket) async throws {
    let client = try await Socket.connect(to: address)
    let server = try await listener.accept()
    try await client.sendAll([1, 2, 3])
    _ = try await server.receive()  // arms the receive stream on the provided-buffer path
}

/// Every blocked socket operation cancelled (by task cancellation, by a deadline, by
/// close): afterwards no descriptor is left open.
func cancelledOperationsLeakNothing() -> Int32 {
    let before = openDescriptors()
    let outcomes = Box<[String]>([])
    do {
        let scheduler = try Scheduler()
        scheduler.spawn {
            let listener = try Socket.listening(on: .loopback())
            let address = try listener.localAddress
            // accept, cancelled by task cancellation
            let accepting = scheduler.spawn {
                do { _ = try await listener.accept() } catch is CancellationError { outcomes.value.append("accept cancelled") }
            }
            await scheduler.yield()
            accepting.cancel()
            _ = try? await accepting.join()
            // receive, cancelled; send into a peer that never reads, cancelled by deadline
            let client = try await Socket.connect(to: address)
            let server = try await listener.accept()
            let receiving = scheduler.spawn {
                do { _ = try await server.receive() } catch is CancellationError { outcomes.value.append("receive cancelled") }
            }
            await scheduler.yield()
            receiving.cancel()
            _ = try? await receiving.join()
            do {
                try await client.sendAll([UInt8](repeating: 7, count: 64 << 20), timeout: .strong(.milliseconds(100)))
            } catch let error as TimeoutError {
                outcomes.value.append("send timed out after \(error.bytesTransferred > 0 ? "some" : "no") bytes")
            }
            try await client.close()
            try await server.close()
            // Sockets dropped without close(), one with its multishot receive armed: their
            // deinit closes the descriptors and cancels the stream.
            let inLoop = openDescriptors()
            try await dropWithoutClosing(address, listener)
            try await scheduler.sleep(for: .milliseconds(50))
            let afterDrop = openDescriptors()
            outcomes.value.append(afterDrop == inLoop ? "dropped sockets closed" : "dropped sockets leaked \(afterDrop - inLoop)")
            // A cancelled coroutine closing its sockets: close() cannot park any more, and
            // still closes the descriptors.
            let cancelled = scheduler.spawn {
                let socket = try await Socket.connect(to: address)
                do { _ = try await scheduler.wait(forSignal: "never") } catch {}
                do { try await socket.close() } catch is CancellationError {
                    outcomes.value.append("close refused to park")
                }
            }
            let peer = try await listener.accept()
            await scheduler.yield()
            cancelled.cancel()
            _ = try? await cancelled.join()
            try await peer.close()
            try await listener.close()
        }
        let report = scheduler.run()
        scheduler.shutdown()
        outcomes.value.append("run \(report.reason)")
    } catch {
        print("error: \(error)")
        return 1
    }
    let after = openDescriptors()
    print("descriptors before \(before) after \(after); \(outcomes.value.joined(separator: ", "))")
    return before == after ? 0 : 1
}

/// A server under a descriptor limit: the accepts that fail with EMFILE are counted, and
/// accepting resumes when connections end, without spinning, until every client is served.
func acceptUnderDescriptorLimit() -> Int32 {
    do {
        _ = KernelFeatures.current  // probed before descriptors run out
        // A descriptor to free later, thirty client sockets (descriptors the server cannot
        // have), every hole below them filled, and sixteen on top for the server.
        let spare = open("/dev/null", O_RDONLY | O_CLOEXEC)
        var clients: [Int32] = []
        for _ in 0..<30 {
            clients.append(socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0))
        }
        var highest: Int32 = 0
        for fd in clients { highest = max(highest, fd) }
        var fillers: [Int32] = []
        while true {
            let fd = open("/dev/null", O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { print("open /dev/null failed: \(errno)"); return 1 }
            if fd > highest { fillers.append(fd); break }
            fillers.append(fd)
        }
        var reserve: [Int32] = []
        for _ in 0..<15 { reserve.append(open("/dev/null", O_RDONLY | O_CLOEXEC)) }
        defer { for fd in fillers { close(fd) } }
        // The limit must be in force before the server arms its accept: io_uring takes
        // the limit when it prepares the accept, not when it accepts.
        var limit = rlimit(rlim_cur: rlim_t((reserve.last ?? highest) + 1), rlim_max: rlim_t(20000))
        guard setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { print("setrlimit failed"); return 1 }
        for fd in reserve { close(fd) }
        let server = try Server(configuration: Server.Configuration(address: .loopback())) { connection in
            let bytes = try await connection.receive(exactly: 4)
            try await connection.sendAll(bytes)
        }
        let port = server.address.port
        // Whatever the server left free is taken now: no accept can succeed until the
        // spare is closed.
        while true {
            let fd = open("/dev/null", O_RDONLY | O_CLOEXEC)
            if fd < 0 { break }
            fillers.append(fd)
        }
        for fd in clients {
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = port.bigEndian
            address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
            let status = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            guard status == 0 else { print("connect failed: \(errno)"); return 1 }
        }
        // Accepting fails for a while (EMFILE, with a backoff), then one descriptor frees.
        usleep(300_000)
        close(spare)
        // Each client in turn: send 4 bytes, read them back, close (which frees a slot).
        var echoed = 0
        for fd in clients {
            var message: [UInt8] = [1, 2, 3, 4]
            guard write(fd, &message, 4) == 4 else { continue }
            var reply = [UInt8](repeating: 0, count: 4)
            var got = 0
            while got < 4 {
                // invariant: a 4-byte array has storage.
                let n = reply.withUnsafeMutableBytes { read(fd, $0.baseAddress! + got, 4 - got) }
                if n <= 0 { break }
                got += n
            }
            if got == 4 && reply == message { echoed += 1 }
            close(fd)
        }
        let report = server.shutdown(gracePeriod: .seconds(5))
        print("echoed \(echoed) of 30; \(report)")
        // Exhaustion happened and was survived; 300 ms of 50 ms backoffs is a handful of
        // retries (plus the ones between connections), a spin would be many thousands.
        return echoed == 30 && report.served == 30 && report.descriptorExhaustions > 0
            && report.descriptorExhaustions < 500 ? 0 : 1
    } catch {
        print("error: \(error)")
        return 1
    }
}

/// Resident memory of this process, in bytes.
func residentBytes() -> Int {
    guard let file = fopen("/proc/self/statm", "r") else { return -1 }
    defer { fclose(file) }
    var size = 0, resident = 0
    guard withUnsafeMutablePointer(to: &size, { s in
        withUnsafeMutablePointer(to: &resident) { r in cogenScanStatm(file, s, r) }
    }) else { return -1 }
    return resident * Int(sysconf(Int32(_SC_PAGESIZE)))
}

func cogenScanStatm(_ file: UnsafeMutablePointer<FILE>, _ size: UnsafeMutablePointer<Int>, _ resident: UnsafeMutablePointer<Int>) -> Bool {
    var line = [CChar](repeating: 0, count: 256)
    guard fgets(&line, 256, file) != nil else { return false }
    let fields = String(cString: line).split(separator: " ")
    guard fields.count >= 2, let s = Int(fields[0]), let r = Int(fields[1]) else { return false }
    size.pointee = s
    resident.pointee = r
    return true
}

/// 100 peers that never read, each sent 4 MiB: the senders wait (the library buffers
/// nothing on their behalf, so memory stays flat) while another connection's ping-pong
/// goes on undisturbed.
func slowReadersKeepMemoryFlat() -> Int32 {
    let result = Box("")
    do {
        let scheduler = try Scheduler()
        scheduler.spawn {
            let listener = try Socket.listening(on: .loopback())
            let address = try listener.localAddress
            let payload = [UInt8](repeating: 42, count: 4 << 20)  // shared by every send
            // Warm up one connection first, so that growth measures the slow readers only.
            let pingClient = try await Socket.connect(to: address)
            let pingServer = try await listener.accept()
            try await pingClient.sendAll([1])
            _ = try await pingServer.receive()
            let before = residentBytes()
            var slowClients: [Socket] = []
            var senders: [Coroutine<Void>] = []
            for _ in 0..<100 {
                slowClients.append(try await Socket.connect(to: address))
                let server = try await listener.accept()
                senders.append(scheduler.spawn { try await server.sendAll(payload) })
            }
            try await scheduler.sleep(for: .milliseconds(300))  // every sender is blocked now
            let after = residentBytes()
            // The other connection keeps its latency: 200 round trips, each bounded.
            var worst = Duration.zero
            for round in 0..<200 {
                let started = ContinuousClock.now
                try await pingClient.sendAll([UInt8(truncatingIfNeeded: round)])
                let echo = try await pingServer.receive(deadline: .after(.seconds(2)))
                try await pingServer.sendAll(echo)
                _ = try await pingClient.receive(deadline: .after(.seconds(2)))
                worst = max(worst, ContinuousClock.now - started)
            }
            let perConnection = (after - before) / 100
            result.value = "RSS growth per slow reader \(perConnection) B; worst round trip \(worst)"
            for sender in senders { sender.cancel() }
            for client in slowClients { try await client.close() }
            try await pingClient.close()
            try await pingServer.close()
            try await listener.close()
            if perConnection > 64 << 10 { result.value += " (too much)" }
        }
        scheduler.errorHandler = { _, _ in }
        scheduler.run()
        scheduler.shutdown()
    } catch {
        print("error: \(error)")
        return 1
    }
    print(result.value)
    return result.value.hasPrefix("RSS") && !result.value.hasSuffix("(too much)") ? 0 : 1
}

/// Which engine `.automatic` picks here (COGEN_BACKEND comes from the test).
func backendSelection() -> Int32 {
    do {
        let scheduler = try Scheduler()
        print("backend \(scheduler.backendKind)")
        scheduler.shutdown()
        return 0
    } catch {
        print("error: \(error)")
        return 1
    }
}

/// With io_uring refused by a seccomp filter (as Docker's default profile does):
/// `.automatic` serves traffic on epoll, and asking for `.ioUring` fails with the EPERM
/// explanation.
func refusedIOUring() -> Int32 {
    let status = cogen_test_refuse_io_uring()
    guard status == 0 else { print("seccomp: errno \(-status)"); return 1 }
    var lines: [String] = []
    var configuration = Scheduler.Configuration()
    configuration.backend = .ioUring
    do {
        _ = try Scheduler(configuration: configuration)
        lines.append("io_uring: no error")
    } catch {
        lines.append("io_uring: \(error)")
    }
    do {
        let server = try Server(configuration: Server.Configuration(address: .loopback())) { connection in
            let bytes = try await connection.receive(exactly: 5)
            try await connection.sendAll(bytes)
        }
        let address = server.address
        let client = try Scheduler()
        let echoed = Box([UInt8]())
        client.spawn {
            let socket = try await Socket.connect(to: address)
            try await socket.sendAll(Array("hello".utf8))
            echoed.value = try await socket.receive(exactly: 5)
            try await socket.close()
        }
        client.run()
        client.shutdown()
        _ = server.shutdown()
        lines.append("automatic: \(server.schedulers[0].backendKind) \(client.backendKind), echoed \(String(decoding: echoed.value, as: UTF8.self))")
    } catch {
        lines.append("automatic: \(error)")
    }
    print(lines.joined(separator: "\n"))
    return 0
}

/// A documented misuse, a scheduler's object touched from a thread that does not run it,
/// stops the program with a message saying so (in release builds too): never silent
/// corruption. The test expects a crash and the message.
func offLoopUseStops() -> Int32 {
    do {
        let scheduler = try Scheduler(configuration: { var c = Scheduler.Configuration(); c.backend = .epoll; return c }())
        _ = scheduler.signal("anything")  // this thread does not run the scheduler
        print("off-loop use: no stop")
        return 1
    } catch {
        print("off-loop use: \(error)")
        return 1
    }
}

/// A `kB` field of /proc/self/status, in bytes.
func statusBytes(_ name: String) -> Int {
    guard let file = fopen("/proc/self/status", "r") else { return -1 }
    defer { fclose(file) }
    var line = [CChar](repeating: 0, count: 512)
    while fgets(&line, Int32(line.count), file) != nil {
        let text = String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        if text.hasPrefix(name) { return (Int(text.dropFirst(name.count).filter(\.isNumber)) ?? -1) * 1024 }
    }
    return -1
}

/// Read-ahead bounded under readers that never read (issue 11): `connections` clients
/// with a 16 KiB SO_RCVBUF each queue `perClient` bytes at the server, then its handlers
/// (exact 4 KiB reads, each echoed) start; every handler's send blocks on its client. The
/// server's growth (peak RSS once every send has been pending for 200 ms, minus RSS with
/// the connections accepted and idle, before any byte) is what the sockets read ahead
/// plus the handlers' own buffers. Arguments: the engine (io_uring, io_uring-5x, epoll)
/// and the read-ahead limit. Prints "growth B pending-ms M connections N handler-buffer H".
func readAheadBound(_ arguments: [String]) -> Int32 {
    guard arguments.count == 2, let limit = Int(arguments[1]) else { print("usage: read-ahead-bound ENGINE LIMIT"); return 2 }
    let connections = 200
    let handlerBuffer = 4096
    let perClient = 384 << 10  // the limit, a handler's read, and what its blocked send took
    // Buffers of 16 KiB and more straight from mmap, given back when freed: the peak then
    // counts what the sockets hold, not how the heap fragments around them.
    _ = cogen_test_mmap_threshold(16 << 10)
    var configuration = Scheduler.Configuration()
    switch arguments[0] {
    case "epoll": configuration.backend = .epoll
    case "io_uring-5x":
        configuration.backend = .ioUring
        configuration.useProvidedBuffers = false
        configuration.useMultishotAccept = false
    default: configuration.backend = .ioUring
    }
    configuration.readAheadLimit = limit
    configuration.prefaultReceiveBuffers = true
    // Two ring buffers per connection: chunks move to the connection's own memory early,
    // so 200 connections reading ahead 256 KiB each never find the shared ring empty.
    configuration.maxBuffersPerConnection = 2
    let scheduler: Scheduler
    let listener: Socket
    do {
        scheduler = try Scheduler(configuration: configuration)
        listener = try Socket.listening(on: .loopback(), backlog: 1024, on: scheduler)
    } catch {
        print("error: \(error)")
        return 1
    }
    // Room for what the clients queue before the handlers read; little room to send, so
    // each handler blocks soon after it starts.
    var receiveRoom: Int32 = 1 << 20
    setsockopt(listener.descriptor, SOL_SOCKET, SO_RCVBUF, &receiveRoom, socklen_t(MemoryLayout<Int32>.size))
    var sendRoom: Int32 = 8192
    setsockopt(listener.descriptor, SOL_SOCKET, SO_SNDBUF, &sendRoom, socklen_t(MemoryLayout<Int32>.size))
    let port: UInt16
    do { port = try listener.localAddress.port } catch { print("error: \(error)"); return 1 }

    let shared = ReadAheadRun()
    scheduler.errorHandler = { _, _ in }
    scheduler.spawn("server") {
        let sendingSince = Box([ContinuousClock.Instant?](repeating: nil, count: connections))
        for index in 0..<connections {
            let connection = try await listener.accept()
            scheduler.spawn {
                shared.parked.add(1, ordering: .releasing)
                while !shared.go.load(ordering: .acquiring) { try await scheduler.sleep(for: .milliseconds(5)) }
                while true {
                    let bytes = try await connection.receive(exactly: handlerBuffer)
                    sendingSince.value[index] = .now
                    try await connection.sendAll(bytes)
                    sendingSince.value[index] = nil
                }
            }
        }
        // Every handler's send pending for 200 ms (bounded: 60 s).
        let started = ContinuousClock.now
        while ContinuousClock.now - started < .seconds(60) {
            try await scheduler.sleep(for: .milliseconds(10))
            let since = sendingSince.value
            if since.allSatisfy({ $0 != nil }), let last = since.compactMap({ $0 }).max(),
               ContinuousClock.now - last >= .milliseconds(200)
            {
                let pending = (ContinuousClock.now - last).components
                // The peak since the baseline; where the peak could not be reset, the
                // resident set now.
                let peak = statusBytes(shared.peakReset.load(ordering: .acquiring) ? "VmHWM:" : "VmRSS:")
                let growth = peak - shared.before.load(ordering: .acquiring)
                shared.result.withLock {
                    $0 = "growth \(growth) pending-ms \(pending.seconds * 1000 + pending.attoseconds / 1_000_000_000_000_000)"
                        + " connections \(connections) handler-buffer \(handlerBuffer)"
                }
                return
            }
        }
        let blocked = sendingSince.value.filter { $0 != nil }.count
        shared.result.withLock { $0 = "error: only \(blocked) of \(connections) sends blocked within 60 s" }
    }
    do { try scheduler.start() } catch { print("error: \(error)"); return 1 }
    // The clients: SO_RCVBUF 16 KiB, never read.
    var clients: [Int32] = []
    for _ in 0..<connections {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var size: Int32 = 16384
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(port.bigEndian)
        address.sin_addr.s_addr = in_addr_t(UInt32(0x7f00_0001).bigEndian)
        let status = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard fd >= 0 && status == 0 else { print("error: connect: errno \(errno)"); return 1 }
        clients.append(fd)
    }
    let payload = [UInt8](repeating: 0x5a, count: perClient)
    var sent = [Int](repeating: 0, count: connections)
    // Every connection accepted, its handler parked: the baseline (the ring made and
    // touched). The peak is counted from here.
    let acceptDeadline = ContinuousClock.now + .seconds(30)
    while shared.parked.load(ordering: .acquiring) < connections && ContinuousClock.now < acceptDeadline { usleep(1000) }
    usleep(20_000)  // the handlers' first sleeps begun
    shared.before.store(statusBytes("VmRSS:"), ordering: .releasing)
    let clearRefs = open("/proc/self/clear_refs", O_WRONLY | O_CLOEXEC)
    if clearRefs >= 0 {
        shared.peakReset.store(write(clearRefs, "5", 1) == 1, ordering: .releasing)
        close(clearRefs)
    }
    // Each client queues `perClient` bytes before the handlers read.
    let deadline = ContinuousClock.now + .seconds(30)
    while sent.contains(where: { $0 < perClient }) && ContinuousClock.now < deadline {
        for index in 0..<connections where sent[index] < perClient {
            let n = payload.withUnsafeBytes {
                // invariant: payload is not empty (perClient > 0), so it has a base address.
                Glibc.send(clients[index], $0.baseAddress! + sent[index], perClient - sent[index],
                           Int32(MSG_DONTWAIT | MSG_NOSIGNAL))
            }
            if n > 0 { sent[index] += n }
        }
        usleep(1000)
    }
    shared.go.store(true, ordering: .releasing)
    let waitUntil = ContinuousClock.now + .seconds(90)
    while shared.result.withLock({ $0 }) == nil && ContinuousClock.now < waitUntil { usleep(10_000) }
    let line = shared.result.withLock { $0 } ?? "error: no result within 90 s"
    print(line + " queued \(sent.reduce(0, +) / connections)")
    fflush(nil)
    exit(line.hasPrefix("growth") ? 0 : 1)
}

/// What the read-ahead scenario's threads share.
final class ReadAheadRun: Sendable {
    let go = Atomic<Bool>(false)
    let parked = Atomic<Int>(0)
    let before = Atomic<Int>(0)
    let peakReset = Atomic<Bool>(false)
    let result = Mutex<String?>(nil)
}

let arguments = CommandLine.arguments.dropFirst()
switch arguments.first {
case "cancelled-operations-leak-nothing":
    exit(cancelledOperationsLeakNothing())
case "accept-under-descriptor-limit":
    exit(acceptUnderDescriptorLimit())
case "slow-readers-keep-memory-flat":
    exit(slowReadersKeepMemoryFlat())
case "backend-selection":
    exit(backendSelection())
case "read-ahead-bound":
    exit(readAheadBound(Array(arguments.dropFirst())))
case "refused-io-uring":
    exit(refusedIOUring())
case "off-loop-use-stops":
    exit(offLoopUseStops())
case "dropped-sockets-free-their-numbers":
    exit(droppedSocketsFreeTheirNumbers(engine: getenv("COGEN_TEST_ENGINE").map { String(cString: $0) } ?? ""))
case "http-service-sigterm":
    exit(httpServiceStopsOnSIGTERM(Array(arguments.dropFirst())))
default:
    print("usage: cogen-test-helper cancelled-operations-leak-nothing")
    exit(2)
}
