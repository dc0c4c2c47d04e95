import Glibc
public import HTTPTypes

/// A small router: method and path patterns with `:name` segments. It answers 404 when no
/// pattern matches the path and 405 (with `Allow`) when patterns match but not for this
/// method; HEAD is served by the GET route, without the body.
///
/// A ``HTTPResponder`` like any other: replace it with your own type when you need more.
///
/// ```swift
/// var router = Router()
/// router.get("/hello") { exchange in
///     try await exchange.respond(HTTPResponse(status: .ok), body: Array("Hello\n".utf8))
/// }
/// router.get("/users/:id") { exchange in
///     let id = exchange.parameters["id"] ?? ""
///     try await exchange.respond(HTTPResponse(status: .ok), body: Array("user \(id)\n".utf8))
/// }
/// let server = try HTTPServer(configuration: .init(address: .loopback(port: 8080)), responder: router)
/// ```
///
/// **Matching** works on the bytes of the request's path (``RequestHead/pathRange``, the
/// query and any fragment left out): a path of literal segments is looked up whole in a
/// hash table, any other is matched one `/`-separated segment at a time down a tree, both
/// built by ``add(_:_:_:)``. A literal route costs no allocation and no `String` per
/// request.
/// The rules:
/// - A literal segment matches the same bytes, after percent-decoding (`/caf%C3%A9` matches
///   the pattern `/café`; `%2F` decodes to a `/` inside the segment and never splits it).
///   Paths are case-sensitive.
/// - A `:name` segment matches any one non-empty segment except `.` and `..` (also
///   percent-encoded); its percent-decoded text is put in ``HTTPExchange/parameters``
///   under `name` (invalid UTF-8 repaired with U+FFFD, `+` left as is).
/// - A literal segment wins over a `:name` segment at the same place; when the rest of the
///   path then matches no route, the `:name` alternative is tried (backtracking).
/// - A segment with a malformed percent escape (`%zz`, or a `%` near its end) matches
///   nothing.
/// - Trailing slashes and empty segments are significant: `/users/` is not `/users`, and
///   `//users` is not `/users`. Register `/users/` too if both should be served. A `:name`
///   segment never matches an empty segment.
/// - An absolute-form target (`http://host/path`) is routed by its path (empty: `/`); the
///   authority is not matched. An authority-form target (CONNECT) has no path: 404.
///
/// **Answers without a route:**
/// - no route matches the path: 404;
/// - routes match the path but none for this method: 405 with `Allow`, listing their
///   methods, HEAD when GET is there, and OPTIONS;
/// - HEAD with no HEAD route: the GET route answers (the server leaves out the body,
///   ``HTTPExchange/isHeadRequest``);
/// - OPTIONS with no OPTIONS route: 204 with `Allow` when routes match the path (404
///   otherwise); `OPTIONS *` gets 204 with every method the router serves.
///
/// 404, 405 and OPTIONS answers carry no body. Each answer goes through
/// ``HTTPExchange/respond(_:body:)`` (`IORING_OP_SEND`; epoll: `send(2)`).
public struct Router: HTTPResponder {
    /// A route's handler.
    public typealias Handler = @Sendable (HTTPExchange) async throws -> Void

    /// One handler for one method at one node of the tree.
    struct Route: Sendable {
        var method: HTTPRequest.Method
        /// The pattern as added (for tests and debugging).
        var pattern: String
        /// The method's bytes, compared with the request's method bytes.
        var methodBytes: [UInt8]
        /// The names of the pattern's `:name` segments, in order.
        var parameterNames: [String]
        var handler: Handler
    }

    /// A literal segment leading from a node to `node`.
    struct LiteralEdge: Sendable {
        var segment: [UInt8]
        var node: Int
    }

    /// A node: the place after some segments. Its routes answer paths that end here.
    struct Node: Sendable {
        var literals: [LiteralEdge] = []
        /// The node after a `:name` segment.
        var parameter: Int?
        var routes: [Route] = []
    }

    /// Where a request was routed: a node, the route's index in it, and the ranges (in the
    /// head's bytes) of the segments its `:name` segments matched, in order.
    struct Resolution: Equatable {
        var node: Int
        var route: Int
        var captures: [Range<Int>]
    }

    /// The tree; node 0 is the root (before the first segment). Flat, so that the router
    /// stays a value type and a lookup follows indices.
    var nodes: [Node] = [Node()]

    /// The same tree in plain integers and bytes, rebuilt by every `add`: what matching
    /// reads, with no reference counting on the way.
    var compiled = CompiledTree(nodes: [Node()])

    /// An empty router (every request gets 404).
    public init() {}

    /// Routes the request to the handler of the matching route, or answers 404, 405 or
    /// OPTIONS itself (see above); runs on the connection's scheduler thread, with no hop.
    /// - Parameter exchange: The request and its response.
    /// - Throws: What the handler throws (the server then answers 500, or cuts the
    ///   connection after a response head); socket errors of the router's own answers.
    ///
    /// Its own answers: `IORING_OP_SEND` (epoll: `send(2)`), coalesced with other responses.
    public func respond(to exchange: HTTPExchange) async throws {
        let found = exchange.head.bytes.withUnsafeBufferPointer { bytes in
            resolve(bytes, method: exchange.head.methodRange, path: exchange.head.pathRange)
        }
        if let found {
            let route = nodes[found.node].routes[found.route]
            if found.captures.isEmpty {
                if !exchange.parameters.isEmpty { exchange.parameters = [:] }
            } else {
                exchange.parameters = parameters(of: route, captures: found.captures, in: exchange.head.bytes)
            }
            try await route.handler(exchange)
            return
        }
        if !exchange.parameters.isEmpty { exchange.parameters = [:] }
        try await answerUnrouted(exchange)
    }
}

extension Router {
    /// Adds a route.
    /// - Parameters:
    ///   - method: The method (a GET route also answers HEAD, without the body).
    ///   - pattern: `/users/:id/posts`: literal segments and `:name` segments, which match
    ///     any one non-empty segment and are passed in ``HTTPExchange/parameters``.
    ///     Literal segments are plain text, not percent-encoded (`/café`, `/a b`); one
    ///     cannot begin with `:`, and a `?` in it can only match a `%3F` in the request.
    ///     A pattern without a leading `/` gets one. A route added again for the same
    ///     method and pattern replaces the first. Each `add` rebuilds the lookup tables
    ///     (linear in the routes so far): build the router once, before serving.
    ///   - handler: Answers the matching requests.
    public mutating func add(_ method: HTTPRequest.Method, _ pattern: String, _ handler: @escaping Handler) {
        var node = 0
        var names: [String] = []
        for segment in Self.segments(of: pattern) {
            if segment.first == UInt8(ascii: ":") {
                names.append(String(decoding: segment.dropFirst(), as: UTF8.self))
                if let next = nodes[node].parameter {
                    node = next
                } else {
                    nodes.append(Node())
                    nodes[node].parameter = nodes.count - 1
                    node = nodes.count - 1
                }
            } else if let edge = nodes[node].literals.first(where: { $0.segment == segment }) {
                node = edge.node
            } else {
                nodes.append(Node())
                nodes[node].literals.append(LiteralEdge(segment: segment, node: nodes.count - 1))
                node = nodes.count - 1
            }
        }
        let route = Route(
            method: method, pattern: pattern, methodBytes: Array(method.rawValue.utf8), parameterNames: names, handler: handler)
        if let index = nodes[node].routes.firstIndex(where: { $0.method == method }) {
            nodes[node].routes[index] = route
        } else {
            nodes[node].routes.append(route)
        }
        compiled = CompiledTree(nodes: nodes)
    }

    /// Adds a GET route (which also answers HEAD, without the body).
    /// - Parameters:
    ///   - pattern: The path pattern, as in ``add(_:_:_:)``.
    ///   - handler: Answers the matching requests.
    public mutating func get(_ pattern: String, _ handler: @escaping Handler) { add(.get, pattern, handler) }

    /// Adds a POST route.
    /// - Parameters:
    ///   - pattern: The path pattern, as in ``add(_:_:_:)``.
    ///   - handler: Answers the matching requests.
    public mutating func post(_ pattern: String, _ handler: @escaping Handler) { add(.post, pattern, handler) }

    /// Adds a PUT route.
    /// - Parameters:
    ///   - pattern: The path pattern, as in ``add(_:_:_:)``.
    ///   - handler: Answers the matching requests.
    public mutating func put(_ pattern: String, _ handler: @escaping Handler) { add(.put, pattern, handler) }

    /// Adds a DELETE route.
    /// - Parameters:
    ///   - pattern: The path pattern, as in ``add(_:_:_:)``.
    ///   - handler: Answers the matching requests.
    public mutating func delete(_ pattern: String, _ handler: @escaping Handler) { add(.delete, pattern, handler) }

    /// Adds a PATCH route.
    /// - Parameters:
    ///   - pattern: The path pattern, as in ``add(_:_:_:)``.
    ///   - handler: Answers the matching requests.
    public mutating func patch(_ pattern: String, _ handler: @escaping Handler) { add(.patch, pattern, handler) }

    /// The segments of a pattern, as bytes: what follows the leading `/`, split at every
    /// `/`, empty segments kept (`/` is one empty segment, `/a/` is `a` and an empty one).
    static func segments(of pattern: String) -> [[UInt8]] {
        var bytes = Array(pattern.utf8)
        if bytes.first == Byte.slash { bytes.removeFirst() }
        return bytes.split(separator: Byte.slash, omittingEmptySubsequences: false).map(Array.init)
    }
}

// MARK: Matching

extension Router {
    /// Bytes the router compares.
    enum Byte {
        static let slash = UInt8(ascii: "/")
        static let percent = UInt8(ascii: "%")
        static let question = UInt8(ascii: "?")
        static let hash = UInt8(ascii: "#")
        static let dot = UInt8(ascii: ".")
        static let get: [UInt8] = Array("GET".utf8)
        static let head: [UInt8] = Array("HEAD".utf8)
        static let options: [UInt8] = Array("OPTIONS".utf8)
    }
}

extension Router {
    /// Finds the route for the request whose head bytes are `bytes`: its method at
    /// `method`, its path (query and fragment included) at `path`. `nil`: no route for
    /// this method (404, 405 or an automatic OPTIONS answer; see ``unroutedAnswer(_:method:path:)``).
    ///
    /// Allocates nothing unless a `:name` segment matched or a segment holds a `%`.
    func resolve(_ bytes: UnsafeBufferPointer<UInt8>, method: Range<Int>, path: Range<Int>?) -> Resolution? {
        guard let (start, end) = Self.pathBounds(bytes, path) else { return nil }
        let method = UnsafeBufferPointer(rebasing: bytes[method])
        return compiled.withView { tree in
            // A path made of literal segments only, with no `%`: one hash lookup of the
            // whole path finds the node the walk below would reach first (literal edges
            // are tried first), so the two agree. Without a route for this method there,
            // the walk decides (a `:name` route may have it).
            if start == (path?.lowerBound ?? start) + 1,  // not an absolute form's empty path
                let node = tree.literalNode(path: UnsafeBufferPointer(rebasing: bytes[(start - 1)..<end])),
                let route = tree.routeIndex(in: node, method: method)
            {
                return Resolution(node: node, route: route, captures: [])
            }
            var captures: [Range<Int>] = []
            guard let (node, route) = tree.descend(0, from: start, to: end, in: bytes, method: method, captures: &captures)
            else { return nil }
            // Captures were appended while unwinding, deepest first.
            captures.reverse()
            return Resolution(node: node, route: route, captures: captures)
        }
    }

    /// Where the path's first segment starts and where the path ends (before `?` or `#`),
    /// in `bytes`; `nil` when there is no path (authority form) or it does not begin with
    /// `/` (asterisk form). An absolute-form target's empty path is `/`: its one segment is
    /// empty, so `start == end`.
    static func pathBounds(_ bytes: UnsafeBufferPointer<UInt8>, _ path: Range<Int>?) -> (Int, Int)? {
        guard let path else { return nil }
        var end = path.lowerBound
        while end < path.upperBound && bytes[end] != Byte.question && bytes[end] != Byte.hash { end += 1 }
        if end == path.lowerBound { return (end, end) }  // absolute form, empty path: "/"
        guard bytes[path.lowerBound] == Byte.slash else { return nil }
        return (path.lowerBound + 1, end)
    }

    static func equal(_ a: [UInt8], _ b: UnsafeBufferPointer<UInt8>) -> Bool {
        a.withUnsafeBufferPointer { equal($0, b) }
    }

    static func equal(_ a: UnsafeBufferPointer<UInt8>, _ b: UnsafeBufferPointer<UInt8>) -> Bool {
        guard a.count == b.count else { return false }
        guard let first = a.baseAddress, let second = b.baseAddress else { return true }  // both empty
        return memcmp(first, second, a.count) == 0
    }

    /// Whether a (decoded) segment may be a `:name` value: not empty, not `.` or `..`.
    static func isParameterValue<Segment: BidirectionalCollection<UInt8>>(_ segment: Segment) -> Bool {
        switch segment.count {
        case 0: false
        case 1: segment.first != Byte.dot
        case 2: !(segment.first == Byte.dot && segment.last == Byte.dot)
        default: true
        }
    }

    /// `segment` with its `%XX` escapes decoded; `nil` when one is malformed.
    static func percentDecoded(_ segment: UnsafeBufferPointer<UInt8>) -> [UInt8]? {
        var result: [UInt8] = []
        result.reserveCapacity(segment.count)
        var i = 0
        while i < segment.count {
            let byte = segment[i]
            if byte == Byte.percent {
                guard i + 2 < segment.count, let high = hexValue(segment[i + 1]), let low = hexValue(segment[i + 2])
                else { return nil }
                result.append(high << 4 | low)
                i += 3
            } else {
                result.append(byte)
                i += 1
            }
        }
        return result
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    /// The parameters of `route`: each name with its captured segment, percent-decoded.
    func parameters(of route: Route, captures: [Range<Int>], in bytes: [UInt8]) -> [String: String] {
        var result: [String: String] = [:]
        result.reserveCapacity(captures.count)
        bytes.withUnsafeBufferPointer { bytes in
            for (name, range) in zip(route.parameterNames, captures) {
                let raw = UnsafeBufferPointer(rebasing: bytes[range])
                let value = Self.percentDecoded(raw) ?? Array(raw)  // matched, so well-formed
                result[name] = String(decoding: value, as: UTF8.self)
            }
        }
        return result
    }
}

// MARK: Answers without a route

extension Router {
    /// What the router answers a request no route takes.
    enum UnroutedAnswer: Equatable {
        /// 404.
        case notFound
        /// 405 with this `Allow` value.
        case methodNotAllowed(allow: String)
        /// 204 with this `Allow` value (an OPTIONS request).
        case options(allow: String)
    }

    /// The answer to a request that ``resolve(_:method:path:)`` found no route for.
    func unroutedAnswer(_ bytes: UnsafeBufferPointer<UInt8>, method: Range<Int>, path: Range<Int>?) -> UnroutedAnswer {
        let isOptions = Self.equal(Byte.options, UnsafeBufferPointer(rebasing: bytes[method]))
        var methods: [HTTPRequest.Method] = []
        if let path, path.count == 1, bytes[path.lowerBound] == UInt8(ascii: "*") {
            // Asterisk form (the parser allows it only with OPTIONS): the whole server.
            for node in nodes { for route in node.routes { methods.append(route.method) } }
        } else if let (start, end) = Self.pathBounds(bytes, path) {
            collectMethods(0, from: start, to: end, in: bytes, into: &methods)
        }
        guard !methods.isEmpty else { return .notFound }
        let allow = Self.allowValue(methods)
        return isOptions ? .options(allow: allow) : .methodNotAllowed(allow: allow)
    }

    /// The methods of every route whose pattern matches the path (all alternatives).
    private func collectMethods(
        _ index: Int, from start: Int, to end: Int, in bytes: UnsafeBufferPointer<UInt8>,
        into methods: inout [HTTPRequest.Method]
    ) {
        var segmentEnd = start
        while segmentEnd < end && bytes[segmentEnd] != Byte.slash { segmentEnd += 1 }
        let segment = UnsafeBufferPointer(rebasing: bytes[start..<segmentEnd])
        guard let decoded = Self.percentDecoded(segment) else { return }
        let isLast = segmentEnd == end
        var next: [Int] = []
        if let edge = nodes[index].literals.first(where: { $0.segment == decoded }) { next.append(edge.node) }
        if let child = nodes[index].parameter, Self.isParameterValue(decoded) { next.append(child) }
        for child in next {
            if isLast {
                methods += nodes[child].routes.map(\.method)
            } else {
                collectMethods(child, from: segmentEnd + 1, to: end, in: bytes, into: &methods)
            }
        }
    }

    /// `Allow`'s value: the methods once each, in the order found, HEAD after GET when
    /// there is no HEAD route, OPTIONS last.
    static func allowValue(_ methods: [HTTPRequest.Method]) -> String {
        var list: [HTTPRequest.Method] = []
        for method in methods where !list.contains(method) { list.append(method) }
        if let get = list.firstIndex(of: .get), !list.contains(.head) { list.insert(.head, at: get + 1) }
        if !list.contains(.options) { list.append(.options) }
        return list.map(\.rawValue).joined(separator: ", ")
    }

    private func answerUnrouted(_ exchange: HTTPExchange) async throws {
        let answer = exchange.head.bytes.withUnsafeBufferPointer { bytes in
            unroutedAnswer(bytes, method: exchange.head.methodRange, path: exchange.head.pathRange)
        }
        switch answer {
        case .notFound:
            try await exchange.respond(HTTPResponse(status: .notFound))
        case .methodNotAllowed(let allow):
            var fields = HTTPFields()
            fields[.allow] = allow
            try await exchange.respond(HTTPResponse(status: .methodNotAllowed, headerFields: fields))
        case .options(let allow):
            var fields = HTTPFields()
            fields[.allow] = allow
            try await exchange.respond(HTTPResponse(status: .noContent, headerFields: fields))
        }
    }
}

// MARK: The compiled tree

/// The router's tree as plain integers and one byte array: nodes, literal edges and routes
/// are ranges into each other, so a lookup reads memory and compares bytes, without
/// retaining anything. Built from ``Router/nodes`` (same node and route indices).
struct CompiledTree: Sendable {
    struct NodeEntry: Sendable {
        /// The node's literal edges: `edges[firstEdge ..< firstEdge + edgeCount]`.
        var firstEdge: Int
        var edgeCount: Int
        /// The node after the `:name` edge, or -1.
        var parameter: Int
        /// The node's routes, in ``Router/Node/routes`` order: `routes[firstRoute ..< firstRoute + routeCount]`.
        var firstRoute: Int
        var routeCount: Int
    }

    /// A literal edge: its segment is `bytes[start ..< start + count]`.
    struct EdgeEntry: Sendable {
        var start: Int
        var count: Int
        var node: Int
    }

    /// A route's method: `bytes[start ..< start + count]`.
    struct RouteEntry: Sendable {
        var start: Int
        var count: Int
    }

    /// A node reached from the root by literal edges only, with routes: its whole path
    /// (`/a/b`) is `bytes[start ..< start + count]`.
    struct LiteralPath: Sendable {
        var hash: UInt64
        var start: Int
        var count: Int
        var node: Int
    }

    var nodes: [NodeEntry] = []
    var edges: [EdgeEntry] = []
    var routes: [RouteEntry] = []
    var bytes: [UInt8] = []
    var literalPaths: [LiteralPath] = []
    /// Open addressing over `literalPaths` (index + 1; 0 is empty), a power of two at least
    /// twice their count; empty when there are none.
    var literalTable: [Int] = []

    /// FNV-1a over `bytes`: a few instructions a byte, and no allocation.
    static func hash(_ bytes: UnsafeBufferPointer<UInt8>) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in bytes { hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01b3 }
        return hash
    }

    init(nodes tree: [Router.Node]) {
        defer { buildLiteralTable(tree) }
        for node in tree {
            nodes.append(
                NodeEntry(
                    firstEdge: edges.count, edgeCount: node.literals.count, parameter: node.parameter ?? -1,
                    firstRoute: routes.count, routeCount: node.routes.count))
            for edge in node.literals {
                edges.append(EdgeEntry(start: bytes.count, count: edge.segment.count, node: edge.node))
                bytes += edge.segment
            }
            for route in node.routes {
                routes.append(RouteEntry(start: bytes.count, count: route.methodBytes.count))
                bytes += route.methodBytes
            }
        }
    }

    /// Fills `literalPaths` and `literalTable`: every node with routes that the root
    /// reaches by literal edges only (a walk from the root that stops at `:name` edges).
    private mutating func buildLiteralTable(_ tree: [Router.Node]) {
        var pending: [(node: Int, path: [UInt8])] = [(0, [])]
        while let (index, path) = pending.popLast() {
            if !tree[index].routes.isEmpty && index != 0 {
                let hash = path.withUnsafeBufferPointer(Self.hash)
                literalPaths.append(LiteralPath(hash: hash, start: bytes.count, count: path.count, node: index))
                bytes += path
            }
            for edge in tree[index].literals { pending.append((edge.node, path + [Router.Byte.slash] + edge.segment)) }
        }
        guard !literalPaths.isEmpty else { return }
        var size = 8
        while size < 2 * literalPaths.count { size *= 2 }
        literalTable = [Int](repeating: 0, count: size)
        for (index, entry) in literalPaths.enumerated() {
            var slot = Int(truncatingIfNeeded: entry.hash) & (size - 1)
            while literalTable[slot] != 0 { slot = (slot + 1) & (size - 1) }
            literalTable[slot] = index + 1
        }
    }

    /// Calls `body` with a view of the arrays' storage.
    func withView<R>(_ body: (View) -> R) -> R {
        nodes.withUnsafeBufferPointer { nodes in
            edges.withUnsafeBufferPointer { edges in
                routes.withUnsafeBufferPointer { routes in
                    bytes.withUnsafeBufferPointer { bytes in
                        literalPaths.withUnsafeBufferPointer { literalPaths in
                            literalTable.withUnsafeBufferPointer { literalTable in
                                body(
                                    View(
                                        nodes: nodes, edges: edges, routes: routes, bytes: bytes,
                                        literalPaths: literalPaths, literalTable: literalTable))
                            }
                        }
                    }
                }
            }
        }
    }

    /// The tree's storage, valid inside ``withView(_:)``.
    struct View {
        let nodes: UnsafeBufferPointer<NodeEntry>
        let edges: UnsafeBufferPointer<EdgeEntry>
        let routes: UnsafeBufferPointer<RouteEntry>
        let bytes: UnsafeBufferPointer<UInt8>
        let literalPaths: UnsafeBufferPointer<LiteralPath>
        let literalTable: UnsafeBufferPointer<Int>

        /// The node whose whole literal path is `path` (from its leading `/`, without the
        /// query); `nil` when there is none, or `path` holds a `%` (the walk decodes it).
        func literalNode(path: UnsafeBufferPointer<UInt8>) -> Int? {
            guard !literalTable.isEmpty else { return nil }
            var hash: UInt64 = 0xcbf2_9ce4_8422_2325
            for byte in path {
                if byte == Router.Byte.percent { return nil }
                hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01b3
            }
            let mask = literalTable.count - 1
            var slot = Int(truncatingIfNeeded: hash) & mask
            // The table is at most half full: an empty slot ends every probe sequence.
            while case let entry = literalTable[slot], entry != 0 {
                let candidate = literalPaths[entry - 1]
                if candidate.hash == hash && candidate.count == path.count
                    && Router.equal(
                        UnsafeBufferPointer(rebasing: bytes[candidate.start..<(candidate.start + candidate.count)]), path)
                {
                    return candidate.node
                }
                slot = (slot + 1) & mask
            }
            return nil
        }

        /// The route for `method` among the routes of paths that go from node `index`
        /// through the segments from `start` (just after a `/`) to `end`: the literal edge
        /// first, then the `:name` edge. Appends the ranges a `:name` matched on the way back.
        func descend(
            _ index: Int, from start: Int, to end: Int, in path: UnsafeBufferPointer<UInt8>,
            method: UnsafeBufferPointer<UInt8>, captures: inout [Range<Int>]
        ) -> (node: Int, route: Int)? {
            var segmentEnd = start
            var escaped = false
            while segmentEnd < end {
                let byte = path[segmentEnd]
                if byte == Router.Byte.slash { break }
                if byte == Router.Byte.percent { escaped = true }
                segmentEnd += 1
            }
            let raw = UnsafeBufferPointer(rebasing: path[start..<segmentEnd])
            let isLast = segmentEnd == end
            let decoded: [UInt8]? = escaped ? Router.percentDecoded(raw) : nil
            if escaped && decoded == nil { return nil }  // a malformed escape matches nothing

            let node = nodes[index]
            for edgeIndex in node.firstEdge..<(node.firstEdge + node.edgeCount) {
                let edge = edges[edgeIndex]
                guard edge.count == (decoded?.count ?? raw.count) else { continue }
                let literal = UnsafeBufferPointer(rebasing: bytes[edge.start..<(edge.start + edge.count)])
                let matches = if let decoded { Router.equal(decoded, literal) } else { Router.equal(literal, raw) }
                guard matches else { continue }
                if isLast {
                    if let route = routeIndex(in: edge.node, method: method) { return (edge.node, route) }
                } else if let found = descend(
                    edge.node, from: segmentEnd + 1, to: end, in: path, method: method, captures: &captures)
                {
                    return found
                }
                break  // no other literal edge has these bytes
            }
            let child = node.parameter
            if child >= 0, decoded.map(Router.isParameterValue) ?? Router.isParameterValue(raw) {
                if isLast {
                    if let route = routeIndex(in: child, method: method) {
                        Self.capture(start..<segmentEnd, in: &captures)
                        return (child, route)
                    }
                } else if let found = descend(
                    child, from: segmentEnd + 1, to: end, in: path, method: method, captures: &captures)
                {
                    Self.capture(start..<segmentEnd, in: &captures)
                    return found
                }
            }
            return nil
        }

        /// Appends a captured segment; the first one makes room for several (one allocation
        /// for a route's captures, not one per capture).
        static func capture(_ range: Range<Int>, in captures: inout [Range<Int>]) {
            if captures.capacity == 0 { captures.reserveCapacity(8) }
            captures.append(range)
        }

        /// The route of node `index` for `method` (its index among the node's routes); for
        /// HEAD without a HEAD route, the GET route.
        func routeIndex(in index: Int, method: UnsafeBufferPointer<UInt8>) -> Int? {
            let node = nodes[index]
            for i in 0..<node.routeCount where Router.equal(methodBytes(node.firstRoute + i), method) { return i }
            if method.count == 4 && Router.equal(Router.Byte.head, method) {
                for i in 0..<node.routeCount where Router.equal(Router.Byte.get, methodBytes(node.firstRoute + i)) {
                    return i
                }
            }
            return nil
        }

        private func methodBytes(_ route: Int) -> UnsafeBufferPointer<UInt8> {
            let entry = routes[route]
            return UnsafeBufferPointer(rebasing: bytes[entry.start..<(entry.start + entry.count)])
        }
    }
}
