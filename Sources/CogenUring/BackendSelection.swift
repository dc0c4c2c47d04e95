import CURing
import Glibc
import Logging

/// `Backend.automatic`: io_uring where the kernel allows it, epoll otherwise, one log line.
enum BackendSelection {
    /// The opcodes the io_uring backend submits.
    static let requiredOpcodes: [(Int, String)] = [
        (Int(COGEN_OP_NOP), "NOP"), (Int(COGEN_OP_POLL_ADD), "POLL_ADD"), (Int(COGEN_OP_ACCEPT), "ACCEPT"),
        (Int(COGEN_OP_ASYNC_CANCEL), "ASYNC_CANCEL"), (Int(COGEN_OP_CONNECT), "CONNECT"),
        (Int(COGEN_OP_CLOSE), "CLOSE"), (Int(COGEN_OP_READ), "READ"), (Int(COGEN_OP_SEND), "SEND"),
        (Int(COGEN_OP_RECV), "RECV"), (Int(COGEN_OP_SHUTDOWN), "SHUTDOWN"),
    ]

    /// Why io_uring cannot be used here, or nil when it can.
    static func ioUringRefusal(_ kernel: KernelFeatures = .current) -> String? {
        guard kernel.isAvailable else {
            return RingSetupError(errno: kernel.setupErrno, operation: "io_uring_setup").description
        }
        guard kernel.fastPoll else { return "the kernel lacks IORING_FEAT_FAST_POLL (Linux 5.7)" }
        let missing = requiredOpcodes.filter { !kernel.supportsOpcode($0.0) }.map(\.1)
        guard missing.isEmpty else {
            return "the kernel lacks io_uring opcodes: " + missing.joined(separator: ", ")
        }
        return nil
    }

    private static let logger = Logger(label: "cogen")
    private static let logged = LogOnce()

    static func make(configuration: Scheduler.Configuration, counters: StatisticsCounters) throws(RingSetupError)
        -> any IOBackend
    {
        let override = ProcessInfoLite.environment("COGEN_BACKEND")
        switch override {
        case "io_uring":
            logged.once { logger.info("backend io_uring (COGEN_BACKEND=io_uring)") }
            return try IOUringBackend(configuration: configuration, counters: counters)
        case "epoll":
            logged.once { logger.info("backend epoll (COGEN_BACKEND=epoll)") }
            return try EpollBackend()
        default:
            break
        }
        if let refusal = ioUringRefusal() {
            logged.once { logger.info("backend epoll, because io_uring cannot be used: \(refusal)") }
            return try EpollBackend()
        }
        do {
            let backend = try IOUringBackend(configuration: configuration, counters: counters)
            logged.once {
                logger.info("backend io_uring (\(backend.setup); kernel: \(KernelFeatures.current))")
            }
            return backend
        } catch {
            logged.once { logger.info("backend epoll, because \(error)") }
            return try EpollBackend()
        }
    }
}

/// Runs a closure once per process (the selection is logged once, not per scheduler).
private final class LogOnce: Sendable {
    private let done = PthreadLock(false)
    func once(_ body: () -> Void) {
        let first = done.withLock { done -> Bool in
            defer { done = true }
            return !done
        }
        if first { body() }
    }
}

/// `getenv`, without Foundation.
enum ProcessInfoLite {
    static func environment(_ name: String) -> String? {
        guard let value = getenv(name) else { return nil }
        return String(cString: value)
    }
}
