import Glibc

/// A kernel operation a coroutine waits for: the parked coroutine, the operation's
/// description, and the storage the kernel may touch, in one object that lives in the
/// in-flight table until its final completion.
///
/// A deadline or a task cancellation does not resume the coroutine: it asks the kernel to
/// cancel the operation (`IORING_OP_ASYNC_CANCEL`), and the coroutine resumes when the
/// operation's own final completion arrives: with the timeout or cancellation error if the
/// kernel cancelled it, with its real result if it had completed anyway.
class IOOperation<Value: Sendable>: Parked<Value>, KernelOperation, @unchecked Sendable {
    var userData: UInt64 = 0
    var cancelReason: CancelReason?
    var placement: Placement = .back

    func prepare(_ sqe: OpaquePointer, userData: UInt64) { fatalError("abstract") }

    /// Turns the final completion into the coroutine's outcome.
    func outcome(result: Int32, flags: UInt32) -> Result<Value, any Error> { fatalError("abstract") }

    final func complete(result: Int32, flags: UInt32) {
        let outcome: Result<Value, any Error>
        if result == -ECANCELED, let reason = cancelReason {
            switch reason {
            case .timeout: outcome = .failure(TimeoutError(operation: "\(label)"))
            case .cancelled: outcome = .failure(CancellationError())
            case .shutdown: outcome = .failure(SchedulerShutdownError())
            }
        } else {
            outcome = self.outcome(result: result, flags: flags)
        }
        switch outcome {
        case .success(let value): scheduler.resume(self, returning: value, placement: placement)
        case .failure(let error): scheduler.resume(self, throwing: error, placement: placement)
        }
    }

    override func expire() {
        scheduler.statistics.timeouts.increment()
        requestKernelCancel(.timeout)
    }

    override func cancel() { requestKernelCancel(.cancelled) }

    override func abortForShutdown() { requestKernelCancel(.shutdown) }

    private func requestKernelCancel(_ reason: CancelReason) {
        guard cancelReason == nil else { return }
        cancelReason = reason
        scheduler.cancelInKernel(userData: userData)
    }
}

extension Scheduler {
    /// Starts `operation` in the kernel and parks the coroutine until its final completion.
    func perform<Value: Sendable>(
        _ operation: IOOperation<Value>, deadline: Deadline?, placement: Placement
    ) async throws -> Value {
        operation.placement = placement
        return try await suspend(operation, deadline: deadline) { operation in
            let userData = inFlight.insert(operation)
            operation.userData = userData
            backend.submit(operation, userData: userData)
            statistics.submitted.increment()
        }
    }

    func cancelInKernel(userData: UInt64) {
        statistics.cancellations.increment()
        backend.cancel(userData: userData)
    }
}
