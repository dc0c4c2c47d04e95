import CogenUring
import Glibc

/// A socket operation failed (cogen's `ConnectionError`, later named `SocketError`): the
/// base class of every socket failure, so catching it catches ``ConnectionClosed`` too.
open class ConnectionError: Error, @unchecked Sendable, CustomStringConvertible {
    // @unchecked Sendable: immutable after init.
    /// The errno, or 0 when the failure has none (end of stream).
    public let errno: Int32
    /// What was being done (`recv`, `connect`…).
    public let operation: String
    /// A readable explanation.
    public let message: String

    /// Creates the error.
    /// - Parameters:
    ///   - errno: The errno, 0 when there is none.
    ///   - operation: What was being done.
    ///   - message: A readable explanation; by default the errno's text.
    public init(errno: Int32, operation: String, message: String? = nil) {
        self.errno = errno
        self.operation = operation
        self.message = message ?? "\(operation): \(String(cString: strerror(errno))) (errno \(errno))"
    }

    public var description: String { message }
}

/// The peer is gone: a receive found the end of the stream, or a send or receive failed
/// with `EPIPE`, `ECONNRESET` or `ECONNABORTED`.
open class ConnectionClosed: ConnectionError, @unchecked Sendable {}

/// An operation's deadline passed (cogen's `OperationTimeout`); the operation was cancelled
/// first (in the kernel for socket operations).
public final class OperationTimeout: Error, @unchecked Sendable, CustomStringConvertible {
    // @unchecked Sendable: immutable; the operation is read on the scheduler's thread.
    /// The operation that timed out (cogen: `e.args[0]`).
    public let operation: AnyOperation
    /// Bytes a socket operation had moved before it timed out (they stay readable for a
    /// receive).
    public let bytesTransferred: Int

    /// Creates the error.
    /// - Parameters:
    ///   - operation: What timed out.
    ///   - bytesTransferred: Bytes already moved.
    public init(_ operation: AnyOperation, bytesTransferred: Int = 0) {
        self.operation = operation
        self.bytesTransferred = bytesTransferred
    }

    public var description: String {
        "OperationTimeout: \(operation)" + (bytesTransferred > 0 ? " after \(bytesTransferred) bytes" : "")
    }
}

/// An error that escaped a coroutine, with the coroutine it escaped (cogen's
/// `CoroutineException`). ``CoroutineInstance/exception`` holds it and the scheduler's
/// error hook receives it.
public final class CoroutineException: Error, @unchecked Sendable, CustomStringConvertible {
    // @unchecked Sendable: immutable.
    /// The error itself.
    public let error: any Error
    /// The coroutine it escaped from.
    public let coroutine: CoroutineInstance

    /// Creates the carrier.
    /// - Parameters:
    ///   - error: The error.
    ///   - coroutine: Where it happened.
    public init(_ error: any Error, in coroutine: CoroutineInstance) {
        self.error = error
        self.coroutine = coroutine
    }

    public var description: String { "\(type(of: error)): \(error)" }
}

/// Turns a core error into cogen's: socket failures into ``ConnectionError`` or
/// ``ConnectionClosed``, a deadline into ``OperationTimeout`` (when the operation is
/// given); others pass unchanged.
func cogenError(_ error: any Error, for operation: AnyOperation? = nil) -> any Error {
    switch error {
    case let error as CogenUring.SocketError:
        let message = error.message.map { "\(error.operation): \($0)" }
        return error.isConnectionClosed
            ? ConnectionClosed(errno: error.errno, operation: error.operation, message: message)
            : ConnectionError(errno: error.errno, operation: error.operation, message: message)
    case let error as TimeoutError:
        guard let operation else { return error }
        return OperationTimeout(operation, bytesTransferred: error.bytesTransferred)
    case let error as EndOfStreamError:
        return ConnectionClosed(errno: 0, operation: "recv", message: "Empty recv. (\(error))")
    default:
        return error
    }
}
