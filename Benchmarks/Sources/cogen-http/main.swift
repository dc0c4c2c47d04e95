// cogen-http: TechEmpower's plaintext and json tests on CogenHTTP.
//
//   cogen-http [--port N] [--threads N] [--backend io_uring|epoll|auto] [--router] [--spin-microseconds N] [--stats]
//
//   GET /plaintext → "Hello, World!" (text/plain)
//   GET /json      → {"message":"Hello, World!"} (application/json), serialized per request
//
// The responder is a plain `HTTPResponder` that compares the request's path bytes with the
// two routes (no `String` made from the target); `--router` serves the same two routes
// through CogenHTTP's `Router` instead, to measure what the router costs. Both answer HEAD
// like GET (the server leaves the body out), 405 with `Allow` for other methods, 404 for
// other paths. Every limit and timeout is the server's default (the robustness standard is
// the server's own). The json body is serialized for every request by a small hand-written
// serializer (`JSONMessage.serialized()`: the string escaped per RFC 8259 into a fresh byte
// array), not JSONEncoder, whose Foundation machinery would dominate the measurement
// without telling anything about the server.
//
// Prints "listening on 127.0.0.1:PORT" once bound; SIGTERM or SIGINT shut the server down
// gracefully (1 s grace) and exit 0.
import ArgumentParser
import CogenHTTP
import CogenUring
import EchoBenchSupport
import Glibc
import HTTPTypes

// MARK: The responses

/// The json test's object, serialized per request.
struct JSONMessage {
    var message: String

    /// `{"message":"…"}` with the string escaped (quote, backslash, control characters).
    func serialized() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(14 + message.utf8.count)
        out.append(contentsOf: #"{"message":""#.utf8)
        for byte in message.utf8 {
            switch byte {
            case UInt8(ascii: "\""): out.append(contentsOf: #"\""#.utf8)
            case UInt8(ascii: "\\"): out.append(contentsOf: #"\\"#.utf8)
            case 0x0A: out.append(contentsOf: #"\n"#.utf8)
            case 0x0D: out.append(contentsOf: #"\r"#.utf8)
            case 0x09: out.append(contentsOf: #"\t"#.utf8)
            case 0..<0x20:
                let hex = Array("0123456789abcdef".utf8)
                out.append(contentsOf: #"\u00"#.utf8)
                out.append(hex[Int(byte >> 4)])
                out.append(hex[Int(byte & 0xF)])
            default: out.append(byte)
            }
        }
        out.append(contentsOf: #""}"#.utf8)
        return out
    }
}

/// Built once: the responses' heads (HTTPResponse is a value; sending it copies nothing
/// per request) and the plaintext body.
enum Responses {
    static let plaintextBody = Array("Hello, World!".utf8)
    static let plaintext = HTTPResponse(status: .ok, headerFields: [.contentType: "text/plain"])
    static let json = HTTPResponse(status: .ok, headerFields: [.contentType: "application/json"])
    static let notFound = HTTPResponse(status: .notFound)
    static let notAllowed = HTTPResponse(status: .methodNotAllowed, headerFields: [.allow: "GET, HEAD"])
}

/// Answers the two routes by comparing the target's path bytes: no `String`, no
/// `HTTPRequest` built per request.
struct TechEmpowerResponder: HTTPResponder {
    private static let plaintextPath = Array("/plaintext".utf8)
    private static let jsonPath = Array("/json".utf8)

    func respond(to exchange: HTTPExchange) async throws {
        // The exchange's byte comparisons first (no copy of the head); a target with a
        // query goes the long way.
        let route: Int
        if exchange.pathIs("/plaintext") {
            route = 1
        } else if exchange.pathIs("/json") {
            route = 2
        } else if let range = exchange.head.pathRange {
            let path = exchange.head.bytes[range].prefix { $0 != UInt8(ascii: "?") }
            route = path.elementsEqual(Self.plaintextPath) ? 1 : path.elementsEqual(Self.jsonPath) ? 2 : 0
        } else {
            route = 0
        }
        guard route != 0 else { return try await exchange.respond(Responses.notFound) }
        guard exchange.methodIs("GET") || exchange.methodIs("HEAD") else {
            return try await exchange.respond(Responses.notAllowed)
        }
        if route == 1 {
            try await exchange.respond(Responses.plaintext, body: Responses.plaintextBody)
        } else {
            try await exchange.respond(Responses.json, body: JSONMessage(message: "Hello, World!").serialized())
        }
    }
}

/// The same routes through CogenHTTP's `Router` (`--router`).
func makeRouter() -> Router {
    var router = Router()
    router.add(.get, "/plaintext") { exchange in
        try await exchange.respond(Responses.plaintext, body: Responses.plaintextBody)
    }
    router.add(.get, "/json") { exchange in
        try await exchange.respond(Responses.json, body: JSONMessage(message: "Hello, World!").serialized())
    }
    return router
}

// MARK: The command

struct CogenHTTPBenchmarkServer: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cogen-http", abstract: "TechEmpower's plaintext and json tests on CogenHTTP.")

    @Option(help: "The port on 127.0.0.1 (0 picks a free one and prints it).")
    var port: UInt16 = 8080

    @Option(help: "Schedulers, one thread each (default: the CPUs this process may use).")
    var threads: Int?

    @Option(help: "The I/O engine: io_uring, epoll, or auto (io_uring where the kernel allows it).")
    var backend: String = "io_uring"

    @Flag(help: "Route through CogenHTTP's Router instead of the plain byte-comparing responder.")
    var router = false

    @Option(help: "Spin this many microseconds before the loop sleeps (Scheduler.Configuration.spinBeforeWait; 0: never).")
    var spinMicroseconds = 0

    @Flag(help: "On exit, print the server's counters and its shutdown report.")
    var stats = false

    func validate() throws {
        guard ["io_uring", "epoll", "auto"].contains(backend) else {
            throw ValidationError("unknown backend '\(backend)': io_uring, epoll or auto")
        }
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1") }
        if spinMicroseconds < 0 { throw ValidationError("--spin-microseconds must not be negative") }
    }

    func run() throws {
        // Before any other thread exists: see TerminationSignals.
        let signals = TerminationSignals()
        raiseDescriptorLimit()
        keepFreedMemory()

        var configuration = HTTPServer.Configuration(address: try SocketAddress(ipv4: "127.0.0.1", port: port))
        if let threads { configuration.threads = threads }
        configuration.backend = switch backend {
        case "epoll": .epoll
        case "auto": .automatic
        default: .ioUring
        }
        configuration.scheduler.spinBeforeWait = .microseconds(spinMicroseconds)
        let server: HTTPServer
        do {
            server = router
                ? try HTTPServer(configuration: configuration, responder: makeRouter())
                : try HTTPServer(configuration: configuration, responder: TechEmpowerResponder())
        } catch {
            // `--backend io_uring` where the kernel refuses it, a port in use: say why.
            let line = "cogen-http: \(error)\n"
            _ = line.withCString { write(2, $0, strlen($0)) }
            throw ExitCode.failure
        }
        print("listening on 127.0.0.1:\(server.address.port)")
        fflush(nil)  // all streams: `stdout` is a global var Swift 6 refuses

        signals.wait()
        let report = server.shutdown(gracePeriod: .seconds(1))
        if stats { print(report) }
        fflush(nil)
    }
}

CogenHTTPBenchmarkServer.main()
