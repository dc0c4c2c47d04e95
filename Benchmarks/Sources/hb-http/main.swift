// hb-http: Hummingbird 2.28.1's hello world, the comparison of issue 14's `--http-full`.
//
//   hb-http [--port N] [--nio-executor]
//
//   GET /plaintext → "Hello, World!" (text/plain);  GET /json → {"message":"Hello, World!"}
//
// One NIO event-loop thread (`NIOSingletons.groupLoopCountSuggestion = 1` before the
// singleton group exists; the application uses that group). Two modes:
// - default: handlers run on Swift's global executor (its cooperative pool), so every
//   request hops from the NIO thread to the pool and back;
// - `--nio-executor`: NIO's singleton group is installed as Swift's global executor
//   (`NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor`),
//   which removes those hops: everything runs on the one event-loop thread.
// Prints "listening on 127.0.0.1:PORT" once the server runs; SIGTERM/SIGINT stop it
// (ServiceLifecycle's graceful shutdown, which `runService()` installs).
//
// Built only for `scripts/bench.sh --http-full` (`swift build --product hb-http`):
// Hummingbird takes minutes to build.
import Foundation
import Hummingbird
import NIOCore
import NIOPosix

struct Message: ResponseEncodable {
    let message: String
}

var port = 8080
var nioExecutor = false
var arguments = CommandLine.arguments.dropFirst()
while let argument = arguments.popFirst() {
    switch argument {
    case "--port":
        guard let value = arguments.popFirst().flatMap({ Int($0) }), (0...65535).contains(value) else {
            FileHandle.standardError.write("hb-http: --port needs a number\n".data(using: .utf8)!)
            exit(2)
        }
        port = value
    case "--nio-executor":
        nioExecutor = true
    default:
        FileHandle.standardError.write("usage: hb-http [--port N] [--nio-executor]\n".data(using: .utf8)!)
        exit(2)
    }
}

NIOSingletons.groupLoopCountSuggestion = 1
if nioExecutor {
    guard NIOSingletons.unsafeTryInstallSingletonPosixEventLoopGroupAsConcurrencyGlobalExecutor() else {
        FileHandle.standardError.write("hb-http: could not install NIO as the global executor\n".data(using: .utf8)!)
        exit(1)
    }
}

let router = Router()
router.get("plaintext") { _, _ -> Response in
    Response(
        status: .ok, headers: [.contentType: "text/plain"],
        body: .init(byteBuffer: ByteBuffer(string: "Hello, World!")))
}
router.get("json") { _, _ in
    Message(message: "Hello, World!")
}

let app = Application(
    router: router,
    configuration: .init(address: .hostname("127.0.0.1", port: port), serverName: "hb"),
    onServerRunning: { [port] channel in
        print("listening on 127.0.0.1:\(channel.localAddress?.port ?? port)")
        fflush(nil)  // all streams: `stdout` is a global var Swift 6 refuses
    },
    eventLoopGroupProvider: .shared(MultiThreadedEventLoopGroup.singleton)
)
try await app.runService()
