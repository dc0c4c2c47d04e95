import CogenCompat
import CogenUring
import Foundation
import Glibc
import Testing

/// Bytes whose every position is checkable: `seed` shifts the sequence.
private func payload(_ count: Int, seed: Int = 0) -> [UInt8] {
    // Written through a pointer: `(0..<count).map` costs Swift runtime metadata lookups per
    // byte in a debug build; under ThreadSanitizer 8 MiB took minutes of the cooperative
    // pool's two threads.
    [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
        guard let bytes = buffer.baseAddress else { return }
        var i = 0
        while i < count {
            bytes[i] = UInt8(truncatingIfNeeded: (i &+ seed) &* 131 &+ (i >> 10))
            i &+= 1
        }
        initialized = count
    }
}

private func text(_ bytes: [UInt8]) -> String { String(decoding: bytes, as: UTF8.self) }

/// A listening compat socket on 127.0.0.1, port chosen by the kernel.
private func listening(
    _ sched: CogenCompat.Scheduler, receiveBuffer: Int32? = nil
) throws -> (sockets.Socket, SocketAddress) {
    let listener = try sockets.Socket(on: sched)
    try listener.setOption(.reuseAddress(true))
    // Accepted sockets inherit it, from before the handshake (window scaling included).
    if let receiveBuffer { try listener.setsockopt(SOL_SOCKET, SO_RCVBUF, receiveBuffer) }
    try listener.bind("127.0.0.1", 0)
    try listener.listen(64)
    return (listener, try listener.getsockname())
}

/// Runs a compat scheduler (see `runCompat`) whose `setup` gets a listener on 127.0.0.1
/// and its address; any error escaping a coroutine fails the test.
private func runWithListener(
    _ engine: Engine, defaultPriority: Priority = priority.LAST, defaultTimeout: CogenCompat.Timeout = .none,
    bound: Duration = .seconds(30), receiveBuffer: Int32? = nil,
    sourceLocation: SourceLocation = #_sourceLocation,
    _ setup: @escaping @Sendable (CogenCompat.Scheduler, sockets.Socket, SocketAddress) throws -> Void
) async throws {
    let errors = Log([])
    try await runCompat(
        engine, defaultPriority: defaultPriority, defaultTimeout: defaultTimeout, bound: bound,
        sourceLocation: sourceLocation
    ) { sched in
        sched.errorHandler = { errors.value.append("\($0.coroutine.name): \(type(of: $0.error)): \($0.error)") }
        let (listener, address) = try listening(sched, receiveBuffer: receiveBuffer)
        try setup(sched, listener, address)
    }
    #expect(errors.value == [], sourceLocation: sourceLocation)
}

/// One connection: `server` runs on the accepted socket, `client` on the connecting one,
/// each in its coroutine; both sockets and the listener are closed after.
private func withConnection(
    _ engine: Engine, defaultTimeout: CogenCompat.Timeout = .none, bound: Duration = .seconds(30),
    receiveBuffer: Int32? = nil, sourceLocation: SourceLocation = #_sourceLocation,
    server: @escaping @Sendable (sockets.Socket) async throws -> Void,
    client: @escaping @Sendable (sockets.Socket) async throws -> Void
) async throws {
    try await runWithListener(
        engine, defaultTimeout: defaultTimeout, bound: bound, receiveBuffer: receiveBuffer,
        sourceLocation: sourceLocation
    ) { sched, listener, address in
        sched.add("server") {
            let (conn, _) = try await yield(Accept(listener, timeout: .never))
            try await listener.close()
            try await server(conn)
            try await conn.close()
            return nil
        }
        sched.add("client") {
            let sock = try sockets.Socket(timeout: .never)
            _ = try await yield(sock.connect(address))
            sock.settimeout(nil)
            try await client(sock)
            try await sock.close()
            return nil
        }
    }
}

/// Connects a plain blocking socket to `address` (an IPv4 listener), then resets the
/// connection (`SO_LINGER` 0 and close: an RST, no FIN). Returns the client's port.
private func resetConnection(to address: SocketAddress) throws -> UInt16 {
    struct Failed: Error { let call: String, errno: Int32 }
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { throw Failed(call: "socket", errno: errno) }
    defer { Glibc.close(fd) }
    var peer = sockaddr_in()
    peer.sin_family = sa_family_t(AF_INET)
    peer.sin_port = address.port.bigEndian
    peer.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
    let size = socklen_t(MemoryLayout<sockaddr_in>.size)
    let status = withUnsafePointer(to: &peer) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, size) }
    }
    guard status == 0 else { throw Failed(call: "connect", errno: errno) }
    var local = sockaddr_in()
    var length = size
    _ = withUnsafeMutablePointer(to: &local) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
    }
    var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
    guard setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size)) == 0 else {
        throw Failed(call: "setsockopt", errno: errno)
    }
    return UInt16(bigEndian: local.sin_port)
}

/// Receives until end of stream with plain `Recv`s.
private func receiveAll(_ sock: sockets.Socket, bufsize: Int = 65536) async throws -> [UInt8] {
    var got: [UInt8] = []
    while true {
        do {
            got += try await yield(sock.recv(bufsize))
        } catch is ConnectionClosed {
            return got
        }
    }
}

@Suite("cogen sockets")
struct SocketTests {
    /// An echo server and clients written as cogen code: every byte checked.
    @Test("echo server and clients, every byte checked", arguments: allBackends)
    func echo(engine: Engine) async throws {
        let done = Log([])
        let clients = 4
        try await runWithListener(engine, bound: .seconds(60)) { sched, listener, address in
            sched.add("server") {
                for _ in 0..<clients {
                    let (conn, _) = try await yield(listener.accept())
                    _ = try await yield(AddCoro("handler") {
                        while true {
                            let data: [UInt8]
                            do {
                                data = try await yield(conn.recv(8192))
                            } catch is ConnectionClosed {
                                break
                            }
                            _ = try await yield(conn.sendall(data))
                        }
                        try await conn.close()
                        return nil
                    })
                }
                try await listener.close()
                return nil
            }
            for client in 0..<clients {
                sched.add("client") {
                    let sock = try sockets.Socket()
                    let connected = try await yield(sock.connect(address))
                    #expect(connected === sock)
                    for round in 0..<3 {
                        let message = payload(1000 + client * 9000 + round * 7, seed: client * 10 + round)
                        let sent = try await yield(sock.sendall(message))
                        #expect(sent == message.count)
                        let echoed = try await yield(RecvAll(sock, message.count))
                        if echoed == message { done.value.append("c\(client)r\(round)") }
                    }
                    try await sock.shutdown(.write)
                    do {
                        let extra = try await yield(sock.recv())
                        done.value.append("unexpected \(extra.count) bytes")
                    } catch is ConnectionClosed {
                        done.value.append("c\(client) closed")
                    }
                    try await sock.close()
                    return nil
                }
            }
        }
        #expect(done.value.count == 16, "\(done.value)")
        #expect(done.value.filter { $0.hasSuffix("closed") }.count == 4)
    }

    /// `recv(n)` returns 1…n bytes of what was sent; at end of stream it throws
    /// ConnectionClosed, which is a ConnectionError.
    @Test("recv returns partial data, then ConnectionClosed at EOF", arguments: allBackends)
    func recvPartialAndEOF(engine: Engine) async throws {
        let message = payload(10_000, seed: 3)
        let got = Shared<[UInt8]>([])
        let sizes = Shared<[Int]>([])
        let log = Log([])
        try await withConnection(engine) { conn in
            _ = try await yield(conn.sendall(message))
        } client: { sock in
            while true {
                do {
                    let part = try await yield(sock.recv(3000))
                    sizes.value.append(part.count)
                    got.value += part
                } catch let error as ConnectionError {
                    // cogen: catching SocketError catches ConnectionClosed too.
                    log.value.append("\(type(of: error)) errno \(error.errno)")
                    break
                }
            }
        }
        #expect(mismatch(got.value, message) == nil)
        #expect(sizes.value.allSatisfy { (1...3000).contains($0) })
        #expect(sizes.value.count >= 4)
        #expect(log.value == ["ConnectionClosed errno 0"])
    }

    /// 8 MiB in one sendall, to a reader that sleeps between receives.
    @Test("sendall of 8 MiB against a slow reader", arguments: allBackends)
    func sendAllLarge(engine: Engine) async throws {
        let message = payload(8 << 20, seed: 11)
        let result = Shared<Int>(0)
        let got = Shared<[UInt8]>([])
        try await withConnection(engine, bound: .seconds(120)) { conn in
            result.value = try await yield(conn.sendall(message))
        } client: { sock in
            var received: [UInt8] = []
            received.reserveCapacity(message.count)
            var reads = 0
            while true {
                do {
                    received += try await yield(sock.recv(65536))
                } catch is ConnectionClosed {
                    break
                }
                reads += 1
                if reads % 8 == 0 { try await yield(Sleep(0.001)) }
            }
            got.value = received
        }
        #expect(result.value == message.count)
        #expect(got.value.count == message.count)
        #expect(mismatch(got.value, message) == nil)
    }

    /// accept returns a connected Socket and the peer's address; connect returns the
    /// socket itself; the addresses agree on both ends.
    @Test("accept and connect", arguments: allBackends)
    func acceptAndConnect(engine: Engine) async throws {
        let log = Log([])
        try await runWithListener(engine) { sched, listener, address in
            let clientName = Shared<SocketAddress?>(nil)
            sched.add("server") {
                let (conn, peer) = try await yield(listener.accept())
                // Let the client record its address first.
                _ = try await yield(conn.recv(1))
                log.value.append("peer matches: \(peer == clientName.value)")
                log.value.append("local matches: \(try conn.getsockname() == address)")
                log.value.append("fd: \(conn.fileno() >= 0)")
                _ = try await yield(conn.send(Array("ok".utf8)))
                try await conn.close()
                try await listener.close()
                return nil
            }
            sched.add("client") {
                let sock = try sockets.Socket()
                let same = try await yield(sock.connect("127.0.0.1", address.port))
                log.value.append("connect returns the socket: \(same === sock)")
                clientName.value = try sock.getsockname()
                log.value.append("peer is the listener: \(try sock.getpeername() == address)")
                // Connecting again: already connected, returns at once (cogen's EISCONN).
                _ = try await yield(sock.connect(address))
                _ = try await yield(sock.send([0x2a]))
                log.value.append(text(try await yield(RecvAll(sock, 2))))
                try await sock.close()
                return nil
            }
        }
        #expect(Set(log.value) == [
            "connect returns the socket: true", "peer is the listener: true", "peer matches: true",
            "local matches: true", "fd: true", "ok",
        ], "\(log.value)")
    }

    /// Issue 11: connections whose peer reset them (SO_LINGER 0, then close) before the
    /// server accepted them do not fail the accept. Each is returned with its peer's
    /// address (the accept's sockaddr, or SO_PEERNAME after the multishot accept), though
    /// getpeername fails on it; setting an option on it works; its first recv and a
    /// sendall report the reset as ConnectionClosed (cogen's epoll backend: 'Hang up.').
    /// The accept loop then serves a normal client.
    @Test("a peer that resets before the accept does not fail it", arguments: allBackends)
    func resetBeforeAccept(engine: Engine) async throws {
        let resets = 8
        let log = Log([])
        try await runWithListener(engine) { sched, listener, address in
            // Connected and reset before the scheduler runs: they wait in the backlog.
            var clientPorts: [UInt16] = []
            for _ in 0..<resets { clientPorts.append(try resetConnection(to: address)) }
            sched.add("server") {
                for index in 0...resets {
                    let (conn, addr) = try await yield(listener.accept())
                    if index == resets {
                        // The normal client: served as usual.
                        let data = try await yield(conn.recv(100))
                        _ = try await yield(conn.sendall(data))
                        try await conn.close()
                        break
                    }
                    if addr.description != "127.0.0.1:\(clientPorts[index])" || conn.core.peerAddress != addr {
                        log.value.append("reset \(index): address \(addr), core \(conn.core.peerAddress as Any)")
                    }
                    // getpeername fails on it, as in Python.
                    if (try? conn.getpeername()) != nil { log.value.append("reset \(index): getpeername answered") }
                    do {
                        try conn.setOption(.noDelay(true))
                    } catch {
                        log.value.append("reset \(index): setOption threw \(error)")
                    }
                    do {
                        let data = try await yield(conn.recv(100))
                        log.value.append("reset \(index): recv returned \(data.count) bytes")
                    } catch is ConnectionClosed {
                    } catch {
                        log.value.append("reset \(index): recv threw \(type(of: error)) \(error)")
                    }
                    do {
                        _ = try await yield(conn.sendall(Array("late".utf8)))
                        log.value.append("reset \(index): sendall succeeded")
                    } catch is ConnectionClosed {
                    } catch {
                        log.value.append("reset \(index): sendall threw \(type(of: error)) \(error)")
                    }
                    try await conn.close()
                }
                try await listener.close()
                log.value.append("server done")
                return nil
            }
            sched.add("client") {
                let sock = try sockets.Socket()
                _ = try await yield(sock.connect(address))
                _ = try await yield(sock.sendall(Array("hello".utf8)))
                log.value.append(text(try await yield(RecvAll(sock, 5))))
                try await sock.close()
                return nil
            }
        }
        #expect(Set(log.value) == ["hello", "server done"], "\(log.value)")
    }

    /// A refused connect is a ConnectionError with ECONNREFUSED (not ConnectionClosed).
    @Test("connect to a closed port: ConnectionError ECONNREFUSED", arguments: allBackends)
    func connectRefused(engine: Engine) async throws {
        let log = Log([])
        try await runWithListener(engine) { sched, listener, address in
            sched.add("client") {
                // The port was free a moment ago; nobody listens on it once this is closed.
                try await listener.close()
                let sock = try sockets.Socket()
                do {
                    _ = try await yield(sock.connect(address))
                    log.value.append("connected?")
                } catch let error as sockets.SocketError {
                    log.value.append("\(error is ConnectionClosed ? "closed" : "error") \(error.errno == ECONNREFUSED)")
                }
                try await sock.close()
                return nil
            }
        }
        #expect(log.value == ["error true"])
    }

    /// Weak: a sendall that keeps making progress outlives its timeout. Strong: it fails
    /// at the deadline, reporting the bytes sent, which are exactly what the peer gets.
    @Test("sendall: weak timeout survives progress, strong fires", arguments: allBackends, [true, false])
    func sendAllTimeouts(engine: Engine, weak: Bool) async throws {
        let message = payload(1 << 20, seed: 5)
        let outcome = Log([])
        let transferred = Shared<Int>(-1)
        let got = Shared<[UInt8]>([])
        let elapsed = Shared<Duration>(.zero)
        // The accepted socket reads slowly, from a small receive buffer.
        try await withConnection(engine, bound: .seconds(90), receiveBuffer: 16384) { conn in
            var received: [UInt8] = []
            while true {
                try await yield(Sleep(0.05))
                do {
                    received += try await yield(conn.recv(16384))
                } catch is ConnectionClosed {
                    break
                }
            }
            got.value = received
        } client: { sock in
            try sock.setsockopt(SOL_SOCKET, SO_SNDBUF, 16384)
            sock.settimeout(weak ? 2.0 : 0.5)
            let start = ContinuousClock.now
            do {
                let sent = try await yield(sock.sendall(message, weakTimeout: weak))
                outcome.value.append("sent \(sent)")
            } catch let timeout as OperationTimeout {
                outcome.value.append("timeout \(timeout.operation is SendAll)")
                transferred.value = timeout.bytesTransferred
            }
            elapsed.value = ContinuousClock.now - start
        }
        if weak {
            #expect(outcome.value == ["sent \(message.count)"])
            // At least 50 ms per 16 KiB read (3.2 s): longer than the 2 s inactivity timeout,
            // which a loaded machine's late wake-up still cannot reach between two reads.
            #expect(elapsed.value > .seconds(2))
            #expect(mismatch(got.value, message) == nil)
        } else {
            #expect(outcome.value == ["timeout true"])
            #expect(elapsed.value >= .milliseconds(490))
            #expect(transferred.value > 0 && transferred.value < message.count)
            #expect(got.value.count == transferred.value)
            #expect(mismatch(got.value, Array(message.prefix(got.value.count))) == nil)
        }
    }

    /// Weak: an exact read fed slowly outlives its timeout. Strong: it fails at the
    /// deadline with the bytes received so far, which the next read returns (nothing lost).
    @Test("exact read: weak timeout survives progress, strong fires and keeps the data", arguments: allBackends, [true, false])
    func readTimeouts(engine: Engine, weak: Bool) async throws {
        let message = payload(3000, seed: 9)
        let outcome = Log([])
        try await withConnection(engine, bound: .seconds(60)) { conn in
            for start in stride(from: 0, to: message.count, by: 100) {
                _ = try await yield(conn.sendall(message[start..<(start + 100)]))
                try await yield(Sleep(0.05))
            }
        } client: { sock in
            sock.settimeout(weak ? 1.0 : 0.5)
            let file = sock.makefile()
            do {
                let all = try await file.read(message.count, weakTimeout: weak)
                outcome.value.append("read \(all == message)")
            } catch let timeout as OperationTimeout {
                outcome.value.append("timeout \(timeout.bytesTransferred > 0 && timeout.bytesTransferred < message.count)")
                sock.settimeout(.never)
                let all = try await file.read(message.count)
                outcome.value.append("then read \(all == message)")
            }
        }
        #expect(outcome.value == (weak ? ["read true"] : ["timeout true", "then read true"]))
    }

    /// A line read times out with a partial line, which stays buffered; the same holds for
    /// `read()` to end of stream.
    @Test("readline and read() keep the data received before a timeout", arguments: allBackends)
    func lineTimeoutKeepsData(engine: Engine) async throws {
        let log = Log([])
        try await withConnection(engine) { conn in
            _ = try await yield(conn.sendall("hello ".utf8))
            try await yield(Sleep(1.0))
            _ = try await yield(conn.sendall("world\nrest".utf8))
            try await yield(Sleep(1.0))
            _ = try await yield(conn.sendall(" of it".utf8))
        } client: { sock in
            sock.settimeout(0.2)
            let file = sock.makefile()
            do {
                _ = try await file.readline()
            } catch let timeout as OperationTimeout {
                log.value.append("timeout after \(timeout.bytesTransferred)")
            }
            sock.settimeout(5)
            log.value.append(text(try await file.readline()))
            sock.settimeout(0.2)
            do {
                _ = try await file.read()
            } catch let timeout as OperationTimeout {
                log.value.append("read() timeout after \(timeout.bytesTransferred)")
            }
            sock.settimeout(5)
            log.value.append(text(try await file.read()))
        }
        #expect(log.value == ["timeout after 6", "hello world\n", "read() timeout after 4", "rest of it"])
    }

    /// §7.4 with decision 22: the verified readline(size) example, a partial line at end of
    /// stream, then ConnectionClosed; data split in odd pieces on the way.
    @Test("makefile: readline(size), read(size), partial line at EOF", arguments: allBackends)
    func makefileReadline(engine: Engine) async throws {
        let log = Log([])
        try await withConnection(engine) { conn in
            for piece in ["01", "23456", "789\nab", "c", "def\n", "last line", " no newline"] {
                _ = try await yield(conn.sendall(piece.utf8))
                try await yield(Sleep(0.02))
            }
        } client: { sock in
            let file = sock.makefile()
            // Wait for "0123456789\nabc" to be there, as in the verified example.
            try await yield(Sleep(0.2))
            log.value.append(text(try await file.readline(4)))
            log.value.append(text(try await file.readline(100)))
            log.value.append(text(try await file.read(2)))
            log.value.append(text(try await file.readline()))
            log.value.append("\(try await file.read(0).count)")
            log.value.append(text(try await file.readline()))
            do {
                _ = try await file.readline()
            } catch let closed as ConnectionClosed {
                log.value.append("closed \(closed.errno)")
            }
            try await file.close()
            log.value.append("file closed: \(file.closed), socket open: \(sock.fileno() >= 0)")
        }
        #expect(log.value == [
            "0123", "456789\n", "ab", "cdef\n", "0", "last line no newline", "closed 0",
            "file closed: true, socket open: true",
        ])
    }

    /// read() returns everything up to end of stream (cogen lost it); read(size) at end of
    /// stream returns the rest; readlines collects lines; a read with no byte left throws.
    @Test("makefile: read() to EOF, read(size) short at EOF, readlines", arguments: allBackends)
    func makefileReadToEOF(engine: Engine) async throws {
        let big = payload(300_000, seed: 21)
        let sent: [[UInt8]] = [big, Array("abcdefgh".utf8), Array("a\nbb\n\nccc".utf8)]
        let log = Log([])
        let whole = Shared<[UInt8]>([])
        for round in 0..<3 {
            try await withConnection(engine) { conn in
                _ = try await yield(conn.sendall(sent[round]))
            } client: { sock in
                let file = sock.makefile(bufsize: round == 0 ? 1000 : -1)
                switch round {
                case 0:
                    whole.value = try await file.read()
                case 1:
                    log.value.append(text(try await file.read(3)))
                    log.value.append(text(try await file.read(100)))
                default:
                    log.value.append(contentsOf: try await file.readlines().map(text))
                }
                do {
                    _ = try await file.read()
                    log.value.append("more?")
                } catch is ConnectionClosed {
                    log.value.append("closed")
                }
            }
        }
        #expect(mismatch(whole.value, big) == nil)
        #expect(log.value == ["closed", "abc", "defgh", "closed", "a\n", "bb\n", "\n", "ccc", "closed"])
    }

    /// write buffers until flush (or the limit); flush sends it in one sendall.
    @Test("makefile: write buffers until flush", arguments: allBackends)
    func makefileWrite(engine: Engine) async throws {
        let log = Log([])
        try await withConnection(engine) { conn in
            do {
                _ = try await yield(Recv(conn, 100, timeout: 0.3))
                log.value.append("sent before flush?")
            } catch is OperationTimeout {
                log.value.append("nothing before flush")
            }
            log.value.append(text(try await yield(RecvAll(conn, 11))))
            // An unbuffered file sends each write at once.
            log.value.append(text(try await yield(RecvAll(conn, 3))))
        } client: { sock in
            let file = sock.makefile("w")
            try await file.write("hello ".utf8)
            try await file.writelines(["wor".utf8, "ld".utf8])
            try await yield(Sleep(1.5))
            try await file.flush()
            try await file.close()
            let unbuffered = sock.makefile("w", bufsize: 0)
            try await unbuffered.write("now".utf8)
            // Until the peer has read it all and closed.
            _ = try? await yield(sock.recv())
        }
        #expect(log.value == ["nothing before flush", "hello world", "now"])
    }

    /// sendfile of a region of a temporary file, and of the rest from the current position.
    @Test("sendfile of a file region", arguments: allBackends)
    func sendFile(engine: Engine) async throws {
        let contents = payload(200_000, seed: 17)
        let path = NSTemporaryDirectory() + "cogen-compat-sendfile-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try #require(FileManager.default.createFile(atPath: path, contents: Data(contents)))
        defer { unlink(path) }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        try #require(fd >= 0)
        defer { Glibc.close(fd) }
        let results = Shared<[Int]>([])
        let got = Shared<[UInt8]>([])
        try await withConnection(engine) { conn in
            results.value.append(try await yield(conn.sendfile(fd, offset: 1000, length: 100_000, blocksize: 8192)))
            lseek(fd, 150_000, SEEK_SET)
            results.value.append(try await yield(SendFile(fd, conn, timeout: 10)))
        } client: { sock in
            got.value = try await receiveAll(sock)
        }
        #expect(results.value == [100_000, 50_000])
        #expect(mismatch(got.value, Array(contents[1000..<101_000]) + Array(contents[150_000...])) == nil)
    }

    /// One pending receive per socket: a second concurrent one is refused (EBUSY) while
    /// the first keeps waiting and gets the data; a send may run alongside.
    @Test("a second concurrent recv is rejected", arguments: allBackends)
    func secondRecvRejected(engine: Engine) async throws {
        let log = Log([])
        try await withConnection(engine) { conn in
            log.value.append("server got \(text(try await yield(RecvAll(conn, 4))))")
            _ = try await yield(conn.sendall("data".utf8))
            _ = try? await yield(conn.recv())
        } client: { sock in
            _ = try await yield(AddCoro("first reader") {
                log.value.append("first got \(text(try await yield(RecvAll(sock, 4))))")
                return nil
            })
            // Let the first reader park on its receive.
            try await yield(Sleep(0.1))
            do {
                _ = try await yield(sock.recv())
                log.value.append("second recv accepted?")
            } catch let error as ConnectionError {
                log.value.append("second refused \(error.errno == EBUSY) \(error is ConnectionClosed)")
            }
            // A send while the receive is pending is fine.
            _ = try await yield(sock.sendall("ping".utf8))
            try await yield(Sleep(0.3))
        }
        #expect(log.value == ["second refused true false", "server got ping", "first got data"])
    }

    /// Decision 24: a completed socket operation resumes its coroutine at the front of the
    /// run queue with the OP bit, at the back without. Three spinners keep the queue full;
    /// each entry records the loop pass it ran in. A completion is dispatched at the end
    /// of a pass, so in the next pass the waiting coroutine runs first (front) or after
    /// the spinners queued before it (back), whichever pass that is. Checked for a receive
    /// whose data is already there and for an accept whose connection is already queued.
    @Test("socket completions: OP bit to the front, else to the back", arguments: backendsAndPriorities, ["recv", "accept"])
    func completionPlacement(_ setting: (Engine, Priority), operation: String) async throws {
        let (engine, prio) = setting
        let log = Shared<[(String, Int)]>([])
        try await runWithListener(engine, defaultPriority: prio) { sched, listener, address in
            let finished = Shared(false)
            sched.add("peer") {
                let conn: sockets.Socket
                if operation == "recv" {
                    (conn, _) = try await yield(listener.accept())
                    _ = try await yield(conn.sendall("ready".utf8))
                } else {
                    conn = try sockets.Socket()
                    _ = try await yield(conn.connect(address))
                }
                // Keep the connection open until the waiting side closes it.
                _ = try? await yield(conn.recv())
                try await conn.close()
                return nil
            }
            sched.add("waiting") {
                let sock: sockets.Socket
                if operation == "recv" {
                    sock = try sockets.Socket()
                    _ = try await yield(sock.connect(address))
                    // The data is (or soon will be) there; the spinners are running.
                    for _ in 0..<5 { await yield() }
                    _ = try await yield(sock.recv())
                } else {
                    for _ in 0..<5 { await yield() }
                    (sock, _) = try await yield(listener.accept())
                }
                log.value.append(("R", sched.core.counters.passes))
                finished.value = true
                try await sock.close()
                try await listener.close()
                return nil
            }
            for name in ["S1", "S2", "S3"] {
                sched.add(name) {
                    // Each turn is logged before the loop may end, so the spinners'
                    // turns in the reader's pass are all there.
                    for steps in 0..<100_000 {
                        log.value.append((name, sched.core.counters.passes))
                        if finished.value && steps > 10 { break }
                        await yield()
                    }
                    return nil
                }
            }
        }
        let entries = log.value
        guard let index = entries.firstIndex(where: { $0.0 == "R" }) else {
            Issue.record("the waiting coroutine did not resume: \(entries.suffix(20))")
            return
        }
        let readerPass = entries[index].1
        let samePass = entries.filter { $0.1 == readerPass }.map(\.0)
        // All three spinners ran in that pass too.
        #expect(samePass.count == 4, "\(samePass)")
        if prio.favoursOperation {
            #expect(samePass.first == "R", "\(samePass)")
        } else {
            #expect(samePass.last == "R", "\(samePass)")
        }
    }
}

/// The module default timeout is process-wide: its test's cases run one at a time.
@Suite("cogen sockets: module default timeout", .serialized)
struct SocketDefaultTimeoutTests {
    /// settimeout/gettimeout, the module default for new and accepted sockets, the
    /// scheduler's default timeout, and `Timeout.never` blocking that default.
    @Test("socket timeout, module default and scheduler default", arguments: allBackends)
    func timeoutSettings(engine: Engine) async throws {
        let log = Log([])
        // Far longer than any test runs: sockets other tests create meanwhile are not
        // affected in practice.
        let moduleDefault: CogenCompat.Timeout = 250
        try await runWithListener(engine, defaultTimeout: 0.2) { sched, listener, address in
            listener.settimeout(7)
            sched.add("server") {
                sockets.setdefaulttimeout(moduleDefault)
                let fresh = try sockets.Socket()
                let (conn, _) = try await yield(listener.accept())
                sockets.setdefaulttimeout(nil)
                log.value.append("new socket gets the module default: \(fresh.gettimeout() == moduleDefault)")
                log.value.append("accepted socket too, not the listener's: \(conn.gettimeout() == moduleDefault)")
                try await fresh.close()
                _ = try await yield(WaitForSignal("go", timeout: -1))
                // The client's receive with Timeout.never outlives the scheduler's 0.2 s.
                try await yield(Sleep(0.5))
                _ = try await yield(conn.send("x".utf8))
                _ = try? await yield(conn.recv(1))
                try await conn.close()
                try await listener.close()
                return nil
            }
            sched.add("client") {
                let sock = try sockets.Socket(timeout: 5)
                _ = try await yield(sock.connect(address))
                sock.settimeout(0.1)
                log.value.append("settimeout: \(sock.gettimeout() == .after(.milliseconds(100)))")
                let op = sock.recv()
                do {
                    _ = try await yield(op)
                } catch let timeout as OperationTimeout {
                    log.value.append("socket timeout: \(timeout.operation === op)")
                }
                sock.settimeout(nil)
                do {
                    _ = try await yield(sock.recv())
                } catch is OperationTimeout {
                    log.value.append("scheduler default applies")
                }
                do {
                    _ = try await yield(Recv(sock, 10, timeout: 0.05))
                } catch is OperationTimeout {
                    log.value.append("own timeout")
                }
                sock.settimeout(.never)
                _ = try await yield(Signal("go", recipients: 1))
                log.value.append(text(try await yield(sock.recv())))
                do {
                    try sock.setblocking(true)
                } catch is UnsupportedSocketMode {
                    log.value.append("setblocking(true) refused")
                }
                try sock.setblocking(false)
                try await sock.close()
                return nil
            }
        }
        #expect(Set(log.value) == [
            "new socket gets the module default: true", "accepted socket too, not the listener's: true",
            "settimeout: true", "socket timeout: true", "scheduler default applies", "own timeout", "x",
            "setblocking(true) refused",
        ], "\(log.value)")
        #expect(log.value.count == 8)
    }
}
