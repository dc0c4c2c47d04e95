// echo-hostile: misbehaving clients against an echo server on 127.0.0.1, phase by phase.
//
//   echo-hostile [--port N] [--clients C] [--wave W] [--server-pid P] [--phases a,b,…]
//
// Each phase runs C clients (2,000 by default), W at a time, all misbehaving the same way;
// then a well-behaved client checks that the server still serves: it connects and echoes
// 64 KiB in four 16 KiB round trips, every byte checked, each read within 10 s. The phase
// passes when that check passes (and, with --server-pid, the server process still runs).
// The phases run in the order below, against the same server process; the exit status is 0
// when every phase passed, 1 otherwise. Prints one line per phase and "N of 7 phases pass".
//
//   reset-before-accept  connect, then reset at once (SO_LINGER 0 and close: an RST, no
//                        data), before the server has accepted most of them
//   vanish               connect, then close at once (a FIN, no data)
//   reset-mid-write      send up to 256 KiB (what the socket takes without blocking), then
//                        reset without reading: the server is writing its echo
//   reset-after-read     send 64 KiB, read part of the echo, reset
//   close-unread         send 64 KiB, close (a FIN) without reading: the server's echo
//                        meets a closed socket (RST, then EPIPE)
//   half-close           send 16 KiB, shut the write side, read the whole echo, close
//   reset-storm          hold all C connections, one byte sent on each, then reset them
//                        all at once while the server waits on every one
//
// Only loopback. Client sockets have 2 s send and receive timeouts and each phase stops
// after 30 s, so a server that stopped serving makes phases fail, not hang.
import ArgumentParser
import EchoBenchSupport
import Glibc

struct EchoHostile: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "echo-hostile",
        abstract: "Runs phases of misbehaving clients against an echo server on 127.0.0.1; checks it still serves after each.")

    @Option(help: "The server's port on 127.0.0.1.")
    var port: Int = 7000
    @Option(help: "Hostile clients per phase.")
    var clients: Int = 2000
    @Option(help: "Hostile clients open at the same time (reset-storm holds all of them).")
    var wave: Int = 250
    @Option(name: .customLong("server-pid"), help: "The server's PID: a phase fails if the process is gone.")
    var serverPID: Int32?
    @Option(help: "Comma-separated phases to run (default: all seven, in order).")
    var phases: String?

    func validate() throws {
        guard (1...65535).contains(port) else { throw ValidationError("--port must be in 1...65535") }
        guard (1...100_000).contains(clients) else { throw ValidationError("--clients must be in 1...100000") }
        guard (1...clients).contains(wave) else { throw ValidationError("--wave must be in 1...clients") }
        if let phases {
            for name in phases.split(separator: ",") where Phase(rawValue: String(name)) == nil {
                throw ValidationError("unknown phase '\(name)': \(Phase.allCases.map(\.rawValue).joined(separator: ", "))")
            }
        }
    }

    func run() throws {
        signal(SIGPIPE, SIG_IGN)
        raiseDescriptorLimit()
        let selected = phases.map { $0.split(separator: ",").compactMap { Phase(rawValue: String($0)) } } ?? Phase.allCases
        let client = Client(port: UInt16(port))
        var passed = 0
        for phase in selected {
            let start = monotonicNanoseconds()
            let errors = phase.run(client, clients: clients, wave: wave, until: start + 30_000_000_000)
            let elapsed = Double(monotonicNanoseconds() - start) / 1e9
            let check = client.check()
            let alive = serverPID.map { kill($0, 0) == 0 } ?? true
            let ok = check == nil && alive
            if ok { passed += 1 }
            var line = "\(phase.rawValue): \(ok ? "pass" : "FAIL") (\(clients) clients in \((elapsed * 10).rounded() / 10) s"
            if errors > 0 { line += ", \(errors) client-side errors" }
            line += ")"
            if let check { line += "; check: \(check)" }
            if !alive { line += "; the server process is gone" }
            print(line)
            fflush(nil)
        }
        print("\(passed) of \(selected.count) phases pass")
        if passed != selected.count { throw ExitCode.failure }
    }
}

enum Phase: String, CaseIterable {
    case resetBeforeAccept = "reset-before-accept"
    case vanish
    case resetMidWrite = "reset-mid-write"
    case resetAfterRead = "reset-after-read"
    case closeUnread = "close-unread"
    case halfClose = "half-close"
    case resetStorm = "reset-storm"

    /// Runs the phase's clients, `wave` at a time, until done or `deadline`; returns how
    /// many client calls failed (connects refused or timed out, reads that got nothing…).
    func run(_ client: Client, clients: Int, wave: Int, until deadline: UInt64) -> Int {
        var errors = 0
        if self == .resetStorm {
            var held: [Int32] = []
            for _ in 0..<clients where monotonicNanoseconds() < deadline {
                guard let fd = client.connect() else { errors += 1; continue }
                if client.sendSome(fd, 1) == 0 { errors += 1 }
                held.append(fd)
            }
            for fd in held { client.reset(fd) }
            return errors
        }
        var done = 0
        while done < clients && monotonicNanoseconds() < deadline {
            let count = min(wave, clients - done)
            var open: [Int32] = []
            var sent: [Int32: Int] = [:]
            for _ in 0..<count where monotonicNanoseconds() < deadline {
                if let fd = client.connect() { open.append(fd) }
            }
            errors += count - open.count  // refused, timed out, or not tried (deadline)
            for fd in open {
                switch self {
                case .resetBeforeAccept:
                    client.reset(fd)
                case .vanish:
                    close(fd)
                case .resetMidWrite:
                    if client.sendSome(fd, 256 << 10) == 0 { errors += 1 }
                case .resetAfterRead, .closeUnread:
                    if client.sendSome(fd, 64 << 10) == 0 { errors += 1 }
                case .halfClose:
                    sent[fd] = client.sendSome(fd, 16 << 10)
                    shutdown(fd, Int32(SHUT_WR))
                case .resetStorm:
                    break
                }
            }
            for fd in open where self != .resetBeforeAccept && self != .vanish {  // those are closed
                if monotonicNanoseconds() >= deadline {  // a server that stopped serving: no more waits
                    client.reset(fd)
                    continue
                }
                switch self {
                case .resetBeforeAccept, .vanish, .resetStorm:
                    break
                case .resetMidWrite:
                    client.reset(fd)
                case .resetAfterRead:
                    if client.receive(fd, upTo: 4096) <= 0 { errors += 1 }
                    client.reset(fd)
                case .closeUnread:
                    close(fd)
                case .halfClose:
                    if sent[fd] == 0 || client.receiveToEnd(fd) != sent[fd] { errors += 1 }
                    close(fd)
                }
            }
            done += count
        }
        return errors + (clients - done)
    }
}

/// Blocking client sockets with short timeouts.
struct Client {
    let port: UInt16
    let pattern: [UInt8] = (0..<(256 << 10)).map { UInt8(truncatingIfNeeded: $0 &* 131 &+ ($0 >> 9)) }

    /// A connected socket, or nil when the connect failed (refused, timed out).
    func connect(timeoutSeconds: Int = 2) -> Int32? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return nil }
        var timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
        let status = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard status == 0 else {
            close(fd)
            return nil
        }
        return fd
    }

    /// Resets the connection: SO_LINGER 0, then close (an RST instead of a FIN).
    func reset(_ fd: Int32) {
        var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
        close(fd)
    }

    /// Sends up to `count` bytes without blocking; returns how many went.
    @discardableResult
    func sendSome(_ fd: Int32, _ count: Int) -> Int {
        var sent = 0
        while sent < count {
            let n = pattern.withUnsafeBytes {
                send(fd, $0.baseAddress! + sent % (128 << 10), min(count - sent, 64 << 10),
                     Int32(MSG_DONTWAIT) | Int32(MSG_NOSIGNAL))
            }
            if n <= 0 { break }
            sent += n
        }
        return sent
    }

    /// One receive of up to `count` bytes (waits up to the receive timeout).
    func receive(_ fd: Int32, upTo count: Int) -> Int {
        var buffer = [UInt8](repeating: 0, count: count)
        return recv(fd, &buffer, count, 0)
    }

    /// Receives until end of stream (or an error or timeout); returns the bytes received.
    func receiveToEnd(_ fd: Int32) -> Int {
        var total = 0
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = recv(fd, &buffer, buffer.count, 0)
            if n <= 0 { return total }
            total += n
        }
    }

    /// The well-behaved client: four 16 KiB round trips, every byte checked, 10 s per call.
    /// Returns nil when all came back, else what went wrong.
    func check() -> String? {
        guard let fd = connect(timeoutSeconds: 10) else { return "connect failed: errno \(errno)" }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 16 << 10)
        for round in 0..<4 {
            let chunk = Array(pattern[(round << 14)..<((round + 1) << 14)])
            var sent = 0
            while sent < chunk.count {
                let n = chunk.withUnsafeBytes { send(fd, $0.baseAddress! + sent, chunk.count - sent, Int32(MSG_NOSIGNAL)) }
                guard n > 0 else { return "send failed in round \(round): errno \(errno)" }
                sent += n
            }
            var received = 0
            while received < chunk.count {
                let n = buffer.withUnsafeMutableBytes {
                    recv(fd, $0.baseAddress! + received, chunk.count - received, 0)
                }
                guard n > 0 else {
                    return n == 0 ? "end of stream in round \(round)" : "no echo in round \(round) (errno \(errno))"
                }
                received += n
            }
            guard buffer == chunk else { return "wrong bytes echoed in round \(round)" }
        }
        return nil
    }
}

EchoHostile.main()
