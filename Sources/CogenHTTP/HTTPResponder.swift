/// What answers requests: the server calls ``respond(to:)`` once per request, on the
/// connection's scheduler thread, in the connection's coroutine.
///
/// ``Router`` is one; a closure is another (``HTTPServer/init(configuration:handler:)``).
public protocol HTTPResponder: Sendable {
    /// Answers one request through `exchange`: read its body (optional), then send one
    /// response, whole (``HTTPExchange/respond(_:body:)``) or streamed
    /// (``HTTPExchange/startResponse(_:contentLength:)``).
    ///
    /// Throwing before the response head was sent makes the server answer 500 (and log
    /// the error); after it, the connection is closed without finishing the body, so the
    /// client sees the failure. Returning without any response also answers 500.
    func respond(to exchange: HTTPExchange) async throws
}

/// A closure as a responder.
public struct ClosureResponder: HTTPResponder {
    /// The closure.
    public let body: @Sendable (HTTPExchange) async throws -> Void

    /// Wraps `body`.
    public init(_ body: @escaping @Sendable (HTTPExchange) async throws -> Void) { self.body = body }

    public func respond(to exchange: HTTPExchange) async throws { try await body(exchange) }
}
