import CogenUring
import Foundation
import Testing

/// Which engine `.automatic` picks, and the fallback when io_uring is refused: in child
/// processes (environment variables, a seccomp filter).
@Suite struct BackendSelectionTests {
    @Test(arguments: [("", "io_uring"), ("auto", "io_uring"), ("epoll", "epoll"), ("io_uring", "io_uring")])
    func automaticFollowsTheKernelAndTheEnvironment(variable: String, expected: String) throws {
        try #require(KernelFeatures.current.isAvailable || ProcessInfo.processInfo.environment["CI"] == "true")
        let environment = variable.isEmpty ? [:] : ["COGEN_BACKEND": variable]
        let (status, output) = try runHelper("backend-selection", environment: environment)
        #expect(status == 0, "\(output)")
        #expect(output.contains("backend \(expected)"), "\(output)")
    }

    @Test func refusedIOUringFallsBackToEpollAndExplainsItself() throws {
        let (status, output) = try runHelper("refused-io-uring")
        #expect(status == 0, "\(output)")
        #expect(output.contains("io_uring: io_uring_setup failed: io_uring refused, e.g. by a seccomp profile or kernel.io_uring_disabled (errno 1)"), "\(output)")
        #expect(output.contains("automatic: epoll epoll, echoed hello"), "\(output)")
    }
}
