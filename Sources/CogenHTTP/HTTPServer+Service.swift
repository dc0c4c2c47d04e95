import CogenUring
import Synchronization
import Logging
public import ServiceLifecycle

extension HTTPServer: Service {
    /// Serves until ServiceLifecycle's graceful shutdown (SIGTERM in a `ServiceGroup`) or
    /// the task's cancellation, then shuts down without blocking a cooperative-pool thread.
    ///
    /// The server serves from its initializer on; `run()` only waits for the signal (a
    /// suspended continuation, no thread), then calls ``gracefulShutdown(gracePeriod:)``:
    /// - on graceful shutdown, with ``Configuration/shutdownGracePeriod``: accepting stops,
    ///   idle keep-alive connections close at once, requests in flight may finish within
    ///   the grace period, the rest are cut;
    /// - on cancellation (the `ServiceGroup` is cancelled, another service failed, or the
    ///   group's own shutdown timeout escalated), with no grace period: requests in flight
    ///   are cut at once. A cancellation that comes while a graceful shutdown is already
    ///   under way does not shorten its grace period.
    ///
    /// A shutdown signalled before `run()` was called, or before it suspended, is not
    /// missed: `run()` then shuts the server down at once. A server stopped directly
    /// (``shutdown(gracePeriod:)``) does not end `run()`: stop it through the group, or
    /// cancel the task that runs it. The shutdown's ``Report`` is
    /// logged through ``Configuration/logger`` at `info` level.
    ///
    /// Waiting uses no kernel operation; the shutdown is the server's (its schedulers'
    /// `IORING_OP_ASYNC_CANCEL` and `IORING_OP_CLOSE`; epoll: `close(2)`).
    public func run() async throws {
        let signal = ServiceStopSignal()
        // Either handler runs at once when its condition already holds; `wait()` returns
        // at once when a handler ran before it (the lock orders the two).
        serviceWaiters.add(1, ordering: .relaxed)
        await withTaskCancellationHandler {
            await withGracefulShutdownHandler {
                await signal.wait()
            } onGracefulShutdown: {
                signal.fire(.gracefulShutdown)
            }
        } onCancel: {
            signal.fire(.cancellation)
        }
        serviceWaiters.subtract(1, ordering: .relaxed)
        let gracePeriod: Duration =
            switch signal.reason {
            case .gracefulShutdown, nil: serviceGracePeriod
            case .cancellation: .zero
            }
        let report = await gracefulShutdown(gracePeriod: gracePeriod)
        serviceLogger.info(
            "HTTP server stopped",
            metadata: [
                "reason": "\(signal.reason.map { "\($0)" } ?? "unknown")", "served": "\(report.served)",
                "closedWhileIdle": "\(report.closedWhileIdle)", "cut": "\(report.cut)",
            ])
    }
}

/// The one-shot signal `run()` waits for: set once by the first of graceful shutdown and
/// cancellation, from any thread; the waiter is resumed once, outside the lock.
final class ServiceStopSignal: Sendable {
    enum Reason: Sendable, CustomStringConvertible {
        case gracefulShutdown
        case cancellation

        var description: String { self == .gracefulShutdown ? "graceful shutdown" : "cancellation" }
    }

    private struct State {
        var reason: Reason?
        var waiter: CheckedContinuation<Void, Never>?
    }

    private let state = PthreadLock(State())

    /// Why the signal fired; `nil` before.
    var reason: Reason? { state.withLock { $0.reason } }

    /// Fires the signal (the first reason stays) and resumes the waiter, if any.
    func fire(_ reason: Reason) {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            if state.reason == nil { state.reason = reason }
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume()
    }

    /// Returns once the signal has fired (at once if it already has). One waiter at a time.
    func wait() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let fired = state.withLock { state -> Bool in
                if state.reason != nil { return true }
                state.waiter = continuation
                return false
            }
            if fired { continuation.resume() }
        }
    }
}

extension HTTPServer {
    /// Whether a `run()` is waiting for its stop signal (for tests).
    var isServiceWaiting: Bool { serviceWaiters.load(ordering: .relaxed) > 0 }
    /// The grace period of a shutdown `run()` starts.
    var serviceGracePeriod: Duration { configuration.shutdownGracePeriod }
    /// Where `run()` logs the shutdown's report.
    var serviceLogger: Logger { configuration.logger }
}
