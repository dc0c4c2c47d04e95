import CURing
import Glibc

/// Why an io_uring ring could not be set up or used.
///
/// Thrown by ``Scheduler/init(configuration:)`` when the ``Backend/ioUring`` backend is
/// asked for and the kernel refuses it. The corresponding C call is `io_uring_setup(2)`.
public struct RingSetupError: Error, Sendable, CustomStringConvertible {
    /// The errno the kernel returned (`EPERM`, `ENOMEM`, `ENOSYS`, `EINVAL`…).
    public let errno: Int32
    /// What was being attempted, e.g. "io_uring_setup".
    public let operation: String
    /// What was wrong, when the kernel was not asked: a configuration value out of range
    /// (then ``errno`` is `EINVAL`).
    public internal(set) var message: String? = nil

    public var description: String {
        if let message { return "\(operation) failed: \(message)" }
        let reason: String
        switch errno {
        case EPERM:
            reason = "io_uring refused, e.g. by a seccomp profile or kernel.io_uring_disabled"
        case ENOMEM:
            reason = "not enough locked memory for the ring; raise RLIMIT_MEMLOCK (ulimit -l) on kernels before 5.12, or use fewer entries"
        case ENOSYS:
            reason = "kernel too old: io_uring needs Linux 5.1, this backend 5.7"
        case EINVAL:
            reason = "the kernel rejected the ring parameters"
        default:
            reason = String(cString: strerror(errno))
        }
        return "\(operation) failed: \(reason) (errno \(errno))"
    }
}

/// An operation did not finish before its deadline.
///
/// The operation was cancelled in the kernel (`IORING_OP_ASYNC_CANCEL`) and the coroutine
/// resumed only after the operation's own final completion arrived.
public struct TimeoutError: Error, Sendable, CustomStringConvertible {
    /// What timed out, e.g. "wait for signal", "join", "poll".
    public let operation: String
    /// Bytes that had already moved when a multi-step socket operation timed out (sent by
    /// a send-all, received by an exact or line read: those stay readable); 0 otherwise.
    public let bytesTransferred: Int

    init(operation: String, bytesTransferred: Int = 0) {
        self.operation = operation
        self.bytesTransferred = bytesTransferred
    }

    public var description: String {
        bytesTransferred > 0
            ? "\(operation) timed out after \(bytesTransferred) bytes" : "\(operation) timed out"
    }
}

/// The scheduler is being shut down; thrown into every coroutine still parked, and into any
/// coroutine that tries to park while ``Scheduler/shutdown()`` runs.
public struct SchedulerShutdownError: Error, Sendable, CustomStringConvertible {
    public var description: String { "the scheduler is shutting down" }
}

/// A kernel operation failed.
public struct IOError: Error, Sendable, CustomStringConvertible {
    /// The errno carried by the completion (`-cqe.res`) or returned by the syscall.
    public let errno: Int32
    /// The operation that failed, e.g. "poll".
    public let operation: String

    public var description: String {
        "\(operation) failed: \(String(cString: strerror(errno))) (errno \(errno))"
    }
}

/// A socket operation failed.
///
/// End of stream is not an error: a receive returns an empty result. A peer that reset
/// the connection or is gone when sending (`ECONNRESET`, `EPIPE`) is
/// ``isConnectionClosed``; refused and unreachable connects and every other errno carry
/// the errno and the operation.
public struct SocketError: Error, Sendable, CustomStringConvertible {
    /// The errno (`-cqe.res`, or from the syscall).
    public let errno: Int32
    /// What was being done, e.g. "connect to 127.0.0.1:80".
    public let operation: String
    /// What was wrong, when the error comes from a check of the call rather than from the
    /// kernel (then ``errno`` is `EINVAL`): e.g. "maxLength must be at least 1, got 0".
    public internal(set) var message: String? = nil

    /// The peer is gone: `ECONNRESET`, `EPIPE`, `ECONNABORTED`.
    public var isConnectionClosed: Bool {
        errno == ECONNRESET || errno == EPIPE || errno == ECONNABORTED
    }

    public var description: String {
        if let message { return "\(operation) failed: \(message)" }
        let reason = isConnectionClosed ? "connection closed" : String(cString: strerror(errno))
        return "\(operation) failed: \(reason) (errno \(errno))"
    }
}
