// cogen-echo: an echo server on CogenUring, one coroutine per connection.
//
//   cogen-echo [--port N] [--backend io_uring|epoll|auto] [--threads N] [--placement back|front] [--stats]
//              [--ring-entries N] [--buffer-count N] [--buffer-size B] [--buffers-per-connection N]
//              [--read-ahead-limit B] [--receive-size B] [--send auto|plain|tracked]
//
// Each of the N schedulers runs on its own thread with its own listener on the same port
// (SO_REUSEPORT: the kernel spreads connections over them). Prints
// "listening on 127.0.0.1:PORT" once every listener is bound; SIGTERM or SIGINT shut the
// schedulers down and exit 0.
import ArgumentParser
import CogenUring
import EchoBenchSupport
import Glibc

struct CogenEcho: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cogen-echo", abstract: "An echo server on CogenUring, one coroutine per connection.")

    @Option(help: "The port on 127.0.0.1 (0 picks a free one and prints it).")
    var port: UInt16 = 7000

    @Option(help: "The I/O engine: io_uring, epoll, or auto (io_uring where the kernel allows it).")
    var backend: String = "io_uring"

    @Option(help: "Schedulers, each on its own thread with its own SO_REUSEPORT listener.")
    var threads: Int = 1

    @Option(help: "Where a connection's coroutine goes when its receive or send completes: back (the default) or front.")
    var placement: String = "back"

    @Option(help: "How a connection sends its echo: plain (sendAll: the coroutine waits for the send's completion), tracked (sendTracked: the socket completes it, the coroutine goes straight to its next receive), or auto (tracked on io_uring, plain on epoll). Plain by default: saturated, tracked sends cost 1.04-1.17x the CPU per message (BENCHMARKS.md, issue 12 part 4).")
    var send: String = "plain"

    @Flag(help: "On exit, print each scheduler's counters, ring setup and the kernel's features.")
    var stats = false

    // Tuning, for experiments; each defaults to Scheduler.Configuration's own default.
    @Option(name: .customLong("ring-entries"), help: "SQ entries per ring.")
    var ringEntries: UInt32?
    @Option(name: .customLong("buffer-count"), help: "Buffers in the shared receive ring (a power of two).")
    var bufferCount: Int?
    @Option(name: .customLong("buffer-size"), help: "Bytes per receive-ring buffer.")
    var bufferSize: Int?
    @Option(name: .customLong("buffers-per-connection"), help: "Ring buffers a connection may hold before its chunks are copied out.")
    var buffersPerConnection: Int?
    @Option(name: .customLong("read-ahead-limit"), help: "Bytes a connection may read ahead of its coroutine.")
    var readAheadLimit: Int?
    @Option(name: .customLong("receive-size"), help: "The most bytes one receive takes (the size a connection's echo array can grow to).")
    var receiveSize = 65536

    func validate() throws {
        guard ["io_uring", "epoll", "auto"].contains(backend) else {
            throw ValidationError("unknown backend '\(backend)': io_uring, epoll or auto")
        }
        guard threads >= 1 else { throw ValidationError("--threads must be at least 1") }
        guard receiveSize >= 1 else { throw ValidationError("--receive-size must be at least 1") }
        guard ["plain", "tracked", "auto"].contains(send) else {
            throw ValidationError("unknown send '\(send)': plain, tracked or auto")
        }
        guard ["front", "back"].contains(placement) else {
            throw ValidationError("unknown placement '\(placement)': front or back")
        }
    }

    func run() throws {
        // Before any other thread exists: see TerminationSignals.
        let signals = TerminationSignals()
        raiseDescriptorLimit()
        keepFreedMemory()

        var schedulers: [Scheduler] = []
        var boundPort = port
        for index in 0..<threads {
            var configuration = Scheduler.Configuration()
            configuration.name = "echo-\(index)"
            configuration.backend = switch backend {
            case "epoll": .epoll
            case "auto": .automatic
            default: .ioUring
            }
            if let ringEntries { configuration.ringEntries = ringEntries }
            if let bufferCount { configuration.receiveBufferCount = bufferCount }
            if let bufferSize { configuration.receiveBufferSize = bufferSize }
            if let buffersPerConnection { configuration.maxBuffersPerConnection = buffersPerConnection }
            if let readAheadLimit { configuration.readAheadLimit = readAheadLimit }
            // The receive ring is resident from the start: memory growth under load is
            // what connections hold, not the ring's first touch.
            configuration.prefaultReceiveBuffers = true
            let scheduler: Scheduler
            do {
                scheduler = try Scheduler(configuration: configuration)
            } catch {
                // `--backend io_uring` where the kernel refuses it: say why, exit non-zero.
                report("\(error)")
                throw ExitCode.failure
            }
            // Made here, before start(), so that with --port 0 the first listener's port
            // is known for the others. Plain socket/bind/listen calls: safe off the loop.
            let listener = try Socket.listening(
                on: try SocketAddress(ipv4: "127.0.0.1", port: boundPort), backlog: 4096,
                options: [.reuseAddress(true), .reusePort(true)], on: scheduler)
            boundPort = try listener.localAddress.port
            let placement: Placement = placement == "front" ? .front : .back
            let receiveSize = receiveSize
            // auto: tracked on io_uring (one trip fewer per message); plain on epoll, where
            // the trip after a send lets the peer answer before the next receive, which
            // then finds bytes instead of failing with EAGAIN and waiting for readiness.
            let tracked = send == "tracked" || (send == "auto" && scheduler.backendKind == .ioUring)
            scheduler.spawn("acceptor") {
                await acceptConnections(on: listener, placement: placement, receiveSize: receiveSize, tracked: tracked)
            }
            schedulers.append(scheduler)
        }
        for scheduler in schedulers { try scheduler.start() }
        print("listening on 127.0.0.1:\(boundPort)")
        fflush(nil)  // all streams: `stdout` is a global var Swift 6 refuses

        signals.wait()
        for scheduler in schedulers { scheduler.shutdown() }
        if stats {
            print("kernel features: \(KernelFeatures.current)")
            for (index, scheduler) in schedulers.enumerated() {
                print("scheduler \(index): \(scheduler.setupDescription)")
                print("scheduler \(index): \(scheduler.counters)")
            }
        }
        fflush(nil)  // all streams: `stdout` is a global var Swift 6 refuses
    }
}

/// Accepts until the scheduler shuts down, one echo coroutine per connection.
func acceptConnections(on listener: Socket, placement: Placement, receiveSize: Int, tracked: Bool) async {
    let scheduler = listener.scheduler
    while true {
        do {
            let connection = try await listener.accept(placement: .front)
            try? connection.setOption(.noDelay(true))
            scheduler.spawn { await echo(connection, placement: placement, receiveSize: receiveSize, tracked: tracked) }
        } catch is SchedulerShutdownError {
            return
        } catch let error as SocketError where error.errno == EMFILE || error.errno == ENFILE {
            // Out of descriptors: back off instead of spinning on the failing accept.
            report("accept: \(error)")
            try? await scheduler.sleep(for: .milliseconds(10))
        } catch {
            report("accept: \(error)")
        }
    }
}

/// Echoes one connection until end of stream. Errors end only this connection.
func echo(_ connection: Socket, placement: Placement, receiveSize: Int, tracked: Bool) async {
    do {
        // One array, reused: received into, sent from (nothing allocated per message once
        // it has grown to the largest receive; an idle connection allocates nothing).
        var buffer: [UInt8] = []
        while true {
            let count = try await connection.receive(into: &buffer, maxLength: receiveSize, placement: placement)
            if count == 0 { break }
            if tracked && count <= trackedSendMaximum {
                // The socket sends it (copied: the array is free for the next receive);
                // no trip back through the run queue for the send's completion.
                try await connection.sendTracked(buffer)
            } else {
                // (Larger echoes wait for their send, after any tracked ones: a slow
                // reader's connection then holds one array, not the one in flight plus the
                // next receive's; issue 11's memory bound.)
                try await connection.sendAll(buffer, placement: placement)
            }
        }
        try await connection.close()
    } catch is SchedulerShutdownError {
        // Not close(): during a shutdown it cannot park, and it would give up the
        // descriptor first. The socket's deinit closes it.
    } catch {
        // A reset peer (ECONNRESET, EPIPE): drop the connection.
        try? await connection.close()
    }
}

/// Echoes up to this size go out as tracked sends (`--send tracked`).
let trackedSendMaximum = 4096

func report(_ message: String) {
    let line = "cogen-echo: \(message)\n"
    _ = line.withCString { write(2, $0, strlen($0)) }
}

CogenEcho.main()
