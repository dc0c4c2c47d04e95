// A real SIGTERM to a process whose HTTPServer runs in a ServiceGroup: it needs a process
// of its own (the signal, and ServiceLifecycle's handler for it, are process-wide).
import CogenHTTP
import CogenUring
import Dispatch
import Glibc
import HTTPTypes
import Logging
import ServiceLifecycle
import UnixSignals

/// A blocking loopback client with a receive timeout.
final class ScenarioClient {
    let descriptor: Int32
    var received: [UInt8] = []

    init?(port: UInt16) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return nil }
        descriptor = fd
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let status = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        // deinit closes the descriptor: it runs for a failed init too, once `descriptor` is set.
        guard status == 0 else { return nil }
    }

    deinit { Glibc.close(descriptor) }

    func send(_ text: String) -> Bool {
        let bytes = Array(text.utf8)
        return bytes.withUnsafeBytes { Glibc.send(descriptor, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) } == bytes.count
    }

    /// Receives once within `milliseconds`: the bytes count, 0 at end of stream (or a
    /// reset), -1 when nothing came.
    func receive(within milliseconds: Int32) -> Int {
        var poller = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
        guard poll(&poller, 1, milliseconds) > 0 else { return -1 }
        var buffer = [UInt8](repeating: 0, count: 4096)
        let count = recv(descriptor, &buffer, buffer.count, 0)
        if count > 0 { received += buffer[..<count] }
        return count > 0 ? count : count == 0 || errno == ECONNRESET ? 0 : -1
    }

    /// Reads until a whole response with a `Content-Length` body is in `received` (or the
    /// end of stream, or 10 s); returns its text.
    func readResponse() -> String {
        for _ in 0..<100 {
            if let headEnd = headEnd() {
                let head = String(decoding: received[..<headEnd], as: UTF8.self)
                let length = head.split(separator: "\r\n")
                    .first { $0.lowercased().hasPrefix("content-length:") }
                    .flatMap { Int($0.dropFirst("content-length:".count).trimmingCharacters()) } ?? 0
                if received.count - (headEnd + 4) >= length {
                    defer { received = [] }
                    return String(decoding: received, as: UTF8.self)
                }
            }
            if receive(within: 100) == 0 { return String(decoding: received, as: UTF8.self) }
        }
        return String(decoding: received, as: UTF8.self)
    }

    /// Where the first `CRLF CRLF` of `received` starts.
    private func headEnd() -> Int? {
        guard received.count >= 4 else { return nil }
        for i in 0...(received.count - 4)
        where received[i] == 13 && received[i + 1] == 10 && received[i + 2] == 13 && received[i + 3] == 10 {
            return i
        }
        return nil
    }
}

extension Substring {
    fileprivate func trimmingCharacters() -> Substring {
        var text = self
        while text.first == " " { text = text.dropFirst() }
        while text.last == " " { text = text.dropLast() }
        return text
    }
}

/// SIGTERM stops an `HTTPServer` that a `ServiceGroup` runs (issue 13): an idle keep-alive
/// connection is closed at once, a request in flight finishes, the group returns, new
/// connections are refused. Argument: the engine (io_uring, epoll). Prints one line.
///
/// SIGTERM is ignored until ServiceLifecycle listens for it (it installs its own handling
/// when the group starts): the scenario sends it every 100 ms until the idle connection
/// closes, so a signal sent too early is dropped instead of killing the process.
func httpServiceStopsOnSIGTERM(_ arguments: [String]) -> Int32 {
    signal(SIGTERM, SIG_IGN)
    var configuration = HTTPServer.Configuration(address: .loopback())
    configuration.threads = 1
    configuration.backend = arguments.first == "epoll" ? .epoll : .ioUring
    configuration.shutdownGracePeriod = .seconds(10)
    var logger = Logger(label: "sigterm-scenario")
    logger.logLevel = .info
    configuration.logger = logger
    let enteredSlow = PthreadLock(false)
    let shutdownSeen = PthreadLock(false)
    let server: HTTPServer
    do {
        server = try HTTPServer(configuration: configuration) { exchange in
            if exchange.path == "/slow" {
                enteredSlow.withLock { $0 = true }
                // Answer only once the shutdown is under way (bounded: 10 s).
                for _ in 0..<1000 where !shutdownSeen.withLock({ $0 }) {
                    try await Scheduler.current?.sleep(for: .milliseconds(10))
                }
            }
            try await exchange.respond(HTTPResponse(status: .ok), body: Array("done".utf8))
        }
    } catch {
        print("error: \(error)")
        return 1
    }
    let port = server.address.port
    let group = ServiceGroup(
        configuration: .init(services: [server], gracefulShutdownSignals: [.sigterm], logger: logger))
    let finished = DispatchSemaphore(value: 0)
    let groupError = PthreadLock<String?>(nil)
    Task {
        do { try await group.run() } catch { groupError.withLock { $0 = "\(error)" } }
        finished.signal()
    }

    guard let idle = ScenarioClient(port: port), let slow = ScenarioClient(port: port) else {
        print("error: connect failed")
        return 1
    }
    guard idle.send("GET / HTTP/1.1\r\nHost: t\r\n\r\n"), idle.readResponse().hasPrefix("HTTP/1.1 200") else {
        print("error: the idle connection's first request failed")
        return 1
    }
    guard slow.send("GET /slow HTTP/1.1\r\nHost: t\r\n\r\n") else { print("error: send"); return 1 }
    for _ in 0..<1000 where !enteredSlow.withLock({ $0 }) { usleep(10_000) }
    guard enteredSlow.withLock({ $0 }) else { print("error: the slow handler never ran"); return 1 }

    var signals = 0
    var idleClosed = false
    while signals < 100 && !idleClosed {
        kill(getpid(), SIGTERM)
        signals += 1
        idleClosed = idle.receive(within: 100) == 0
    }
    shutdownSeen.withLock { $0 = true }
    guard idleClosed else { print("error: the idle connection stayed open after \(signals) SIGTERMs"); return 1 }
    let response = slow.readResponse()
    guard response.hasPrefix("HTTP/1.1 200"), response.hasSuffix("done") else {
        print("error: the request in flight got \(response.prefix(200))")
        return 1
    }
    guard finished.wait(timeout: .now() + .seconds(20)) == .success else {
        print("error: the service group did not return")
        return 1
    }
    if let error = groupError.withLock({ $0 }) { print("error: the group threw \(error)"); return 1 }
    let refused = ScenarioClient(port: port) == nil
    print("stopped by SIGTERM: idle closed, in-flight 200, group returned, new connections \(refused ? "refused" : "ACCEPTED") (\(signals) signals sent)")
    return refused ? 0 : 1
}
