// Scenarios the tests run in a child process, because they touch process-wide state
// (counting open descriptors, setrlimit). Each prints one result line and exits 0 when
// the scenario held, 1 when it did not, 2 on a usage error.
import CogenUring
import Glibc

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
            // connect, cancelled (a listener whose backlog is full keeps connects pending)
            try await client.close()
            try await server.close()
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

let arguments = CommandLine.arguments.dropFirst()
switch arguments.first {
case "cancelled-operations-leak-nothing":
    exit(cancelledOperationsLeakNothing())
default:
    print("usage: cogen-test-helper cancelled-operations-leak-nothing")
    exit(2)
}
