// cogen-compat-echo: cogen's echo server, ported line by line to CogenCompat.
//
//   cogen-compat-echo [--port N] [--backend io_uring|epoll|auto] [--priority first|op|coro|last]
//                     [--no-multishot] [--stats]
//
// The Python original (cogen's examples/echoserver.py, bytes instead of lines):
//
//   @coroutine
//   def server():
//       srv = sockets.Socket()
//       srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
//       srv.bind(('127.0.0.1', port))
//       srv.listen(4096)
//       while 1:
//           conn, addr = yield srv.accept()
//           m.add(handler, args=(conn, addr))
//
//   @coroutine
//   def handler(sock, addr):
//       while 1:
//           data = yield sock.recv(65536)   # raises ConnectionClosed at end of stream
//           yield sock.sendall(data)
//
//   m = Scheduler(default_priority=priority.FIRST)
//   m.add(server)
//   m.run()
//
// One coroutine per connection, every socket operation a yielded cogen operation. Prints
// "listening on 127.0.0.1:PORT" once bound; SIGTERM or SIGINT shut the scheduler down and
// exit 0. It is the porting guide's example and the compat row of the echo benchmark
// (`echo-matrix --servers cogen-compat-echo,cogen-echo`).
import ArgumentParser
import CogenCompat
import CogenUring
import EchoBenchSupport
import Glibc

struct CompatEcho: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cogen-compat-echo", abstract: "cogen's echo server, written with CogenCompat.")

    @Option(help: "The port on 127.0.0.1 (0 picks a free one and prints it).")
    var port: UInt16 = 7000

    @Option(help: "The I/O engine: io_uring, epoll, or auto (io_uring where the kernel allows it).")
    var backend: String = "io_uring"

    @Option(help: "The scheduler's default priority: first, op, coro or last.")
    var priority: String = "first"

    @Flag(inversion: .prefixedNo, help: "io_uring: multishot accept and receive with provided buffers; --no-multishot runs the 5.x paths (one SQE per accept and receive).")
    var multishot = true

    @Flag(help: "On exit, print the scheduler's counters.")
    var stats = false

    func validate() throws {
        guard ["io_uring", "epoll", "auto"].contains(backend) else {
            throw ValidationError("unknown backend '\(backend)': io_uring, epoll or auto")
        }
        guard ["first", "op", "coro", "last"].contains(priority) else {
            throw ValidationError("unknown priority '\(priority)': first, op, coro or last")
        }
    }

    func run() throws {
        // Before any other thread exists: see TerminationSignals.
        let signals = TerminationSignals()
        raiseDescriptorLimit()
        keepFreedMemory()

        let engine: Backend = switch backend {
        case "epoll": .epoll
        case "auto": .automatic
        default: .ioUring
        }
        // FIRST (the default here): a completed socket operation resumes its coroutine at
        // once (cogen's OP bit), and a coroutine added by the server runs before the
        // server goes on (the CORO bit). cogen's own default is LAST.
        let defaultPriority = switch priority {
        case "op": CogenCompat.priority.OP
        case "coro": CogenCompat.priority.CORO
        case "last": CogenCompat.priority.LAST
        default: CogenCompat.priority.FIRST
        }
        let m: CogenCompat.Scheduler
        do {
            var configuration = CogenUring.Scheduler.Configuration()
            if !multishot {
                configuration.useMultishotAccept = false
                configuration.useProvidedBuffers = false
            }
            m = try CogenCompat.Scheduler(defaultPriority: defaultPriority, backend: engine, configuration: configuration)
        } catch {
            report("\(error)")
            throw ExitCode.failure
        }

        // Made before the loop starts so the port is known; plain socket/bind/listen calls.
        let srv = try sockets.Socket(on: m)
        try srv.setsockopt(SOL_SOCKET, SO_REUSEADDR, 1)
        try srv.bind("127.0.0.1", port)
        try srv.listen(4096)
        let bound = try srv.getsockname().port

        m.add("server") {
            while true {
                let (conn, addr) = try await yield(srv.accept())
                try conn.setOption(.noDelay(true))
                m.add("handler") { try await handler(conn, addr) }
            }
        }
        m.errorHandler = { failure in
            // Shutting down parks nothing more: every coroutine ends with this error.
            if failure.error is SchedulerShutdownError { return }
            report("\(failure.coroutine.name): \(failure.error)")
        }

        try m.core.start()
        print("listening on 127.0.0.1:\(bound)")
        fflush(nil)  // all streams: `stdout` is a global var Swift 6 refuses

        signals.wait()
        m.shutdown()
        if stats { print("scheduler: \(m.core.counters)") }
        fflush(nil)
    }
}

/// Echoes one connection until the peer closes it.
func handler(_ sock: sockets.Socket, _ addr: SocketAddress) async throws -> (any Sendable)? {
    do {
        while true {
            let data = try await yield(sock.recv(65536))
            _ = try await yield(sock.sendall(data))
        }
    } catch is sockets.ConnectionClosed {
        // End of stream, or a peer that reset the connection: this connection is done.
    }
    try await sock.close()
    return nil
}

func report(_ message: String) {
    let line = "cogen-compat-echo: \(message)\n"
    _ = line.withCString { write(2, $0, strlen($0)) }
}

CompatEcho.main()
