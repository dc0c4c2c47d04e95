// nio-echo: the SwiftNIO echo server, as the baseline for a Swift event-loop server.
//
//   nio-echo [--port N]     prints "listening on 127.0.0.1:PORT"; SIGTERM/SIGINT stop it
//
// One event loop (MultiThreadedEventLoopGroup with one thread, epoll underneath); the
// handler writes each read back and flushes once per read burst (channelReadComplete),
// as NIO's own echo example does. Everything else is NIO's defaults.
import ArgumentParser
import EchoBenchSupport
import Glibc
import NIOCore
import NIOPosix

final class EchoHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.write(data, promise: nil)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.flush()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A reset peer: close this connection only.
        context.close(promise: nil)
    }
}

struct NIOEcho: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "nio-echo", abstract: "A SwiftNIO echo server.")

    @Option(help: "The port on 127.0.0.1 (0 picks a free one and prints it).")
    var port: Int = 7000

    func run() throws {
        // Before any other thread exists: see TerminationSignals.
        let signals = TerminationSignals()
        keepFreedMemory()  // the allocator settings of every Swift server here

        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 4096)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(EchoHandler())
                }
            }
        let channel = try bootstrap.bind(host: "127.0.0.1", port: port).wait()
        print("listening on 127.0.0.1:\(channel.localAddress?.port ?? port)")
        fflush(nil)  // all streams: `stdout` is a global var Swift 6 refuses

        signals.wait()
        try? channel.close().wait()
        try? group.syncShutdownGracefully()
    }
}

NIOEcho.main()
