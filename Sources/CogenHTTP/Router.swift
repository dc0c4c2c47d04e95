public import HTTPTypes

/// A small router: method and path patterns with `:name` segments. It answers 404 when no
/// pattern matches the path and 405 (with `Allow`) when patterns match but not for this
/// method; HEAD is served by the GET route, without the body.
///
/// A ``HTTPResponder`` like any other: replace it with your own type when you need more.
public struct Router: HTTPResponder {
    /// A route's handler.
    public typealias Handler = @Sendable (HTTPExchange) async throws -> Void

    /// An empty router (every request gets 404).
    public init() {}

    public func respond(to exchange: HTTPExchange) async throws {}
}

extension Router {
    /// Adds a route.
    /// - Parameters:
    ///   - method: The method (a GET route also answers HEAD, without the body).
    ///   - pattern: `/users/:id/posts`: literal segments and `:name` segments, which match
    ///     any one non-empty segment and are passed in ``HTTPExchange/parameters``.
    ///   - handler: Answers the matching requests.
    public mutating func add(_ method: HTTPRequest.Method, _ pattern: String, _ handler: @escaping Handler) {}
}
