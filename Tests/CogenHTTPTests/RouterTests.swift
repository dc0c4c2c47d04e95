@testable import CogenHTTP
import CogenUring
import HTTPTypes
import PropertyTestSupport
import Testing

/// What `router` makes of a request `method target`, without a server: the route's method
/// and pattern with its parameters (`GET /users/:id id=7`), or `404`, `405 <Allow>`, or
/// `204 <Allow>` (an automatic OPTIONS answer).
func routing(_ router: Router, _ method: String, _ target: String) throws -> String {
    let head = try head("\(method) \(target) HTTP/1.1\r\nHost: a\r\n\r\n")
    return head.bytes.withUnsafeBufferPointer { bytes in
        if let found = router.resolve(bytes, method: head.methodRange, path: head.pathRange) {
            let route = router.nodes[found.node].routes[found.route]
            let parameters = router.parameters(of: route, captures: found.captures, in: head.bytes)
            let text = route.parameterNames.map { "\($0)=\(parameters[$0] ?? "?")" }
            return ([route.method.rawValue, route.pattern] + text).joined(separator: " ")
        }
        switch router.unroutedAnswer(bytes, method: head.methodRange, path: head.pathRange) {
        case .notFound: return "404"
        case .methodNotAllowed(let allow): return "405 \(allow)"
        case .options(let allow): return "204 \(allow)"
        }
    }
}

/// A router with the given routes (method, pattern), each handler answering 200.
func router(_ routes: [(HTTPRequest.Method, String)]) -> Router {
    var router = Router()
    for (method, pattern) in routes {
        router.add(method, pattern) { try await $0.respond(HTTPResponse(status: .ok)) }
    }
    return router
}

@Suite("Router matching (no server)")
struct RouterMatchingTests {
    @Test func emptyRouterAnswers404() throws {
        #expect(try routing(Router(), "GET", "/") == "404")
        #expect(try routing(Router(), "OPTIONS", "*") == "404")
    }

    @Test func matchesLiteralRoutesSegmentBySegment() throws {
        let r = router([(.get, "/"), (.get, "/plaintext"), (.get, "/a/b/c"), (.get, "/a/b")])
        #expect(try routing(r, "GET", "/") == "GET /")
        #expect(try routing(r, "GET", "/plaintext") == "GET /plaintext")
        #expect(try routing(r, "GET", "/a/b") == "GET /a/b")
        #expect(try routing(r, "GET", "/a/b/c") == "GET /a/b/c")
        #expect(try routing(r, "GET", "/a") == "404")
        #expect(try routing(r, "GET", "/a/b/c/d") == "404")
        #expect(try routing(r, "GET", "/plain") == "404")
        #expect(try routing(r, "GET", "/plaintexts") == "404")
        #expect(try routing(r, "GET", "/PlainText") == "404")  // case-sensitive
    }

    @Test func capturesNamedSegments() throws {
        let r = router([(.get, "/users/:id"), (.get, "/users/:id/posts/:post")])
        #expect(try routing(r, "GET", "/users/7") == "GET /users/:id id=7")
        #expect(try routing(r, "GET", "/users/7/posts/x-1") == "GET /users/:id/posts/:post id=7 post=x-1")
        #expect(try routing(r, "GET", "/users") == "404")
        #expect(try routing(r, "GET", "/users/7/posts") == "404")
    }

    @Test func routesDifferentNamesAtTheSamePlace() throws {
        let r = router([(.get, "/u/:id"), (.get, "/u/:name/posts")])
        #expect(try routing(r, "GET", "/u/7") == "GET /u/:id id=7")
        #expect(try routing(r, "GET", "/u/bob/posts") == "GET /u/:name/posts name=bob")
    }

    @Test func leavesOutTheQueryAndFragment() throws {
        let r = router([(.get, "/"), (.get, "/users/:id")])
        #expect(try routing(r, "GET", "/users/7?x=1&y=/2") == "GET /users/:id id=7")
        #expect(try routing(r, "GET", "/?q") == "GET /")
        #expect(try routing(r, "GET", "/users/7#top") == "GET /users/:id id=7")
    }

    @Test func percentDecodesLiteralsAndParameters() throws {
        let r = router([(.get, "/café"), (.get, "/a b"), (.get, "/p/:value")])
        #expect(try routing(r, "GET", "/caf%C3%A9") == "GET /café")
        #expect(try routing(r, "GET", "/caf%c3%a9") == "GET /café")
        #expect(try routing(r, "GET", "/a%20b") == "GET /a b")
        #expect(try routing(r, "GET", "/p/a%20b") == "GET /p/:value value=a b")
        // An encoded slash stays inside its segment.
        #expect(try routing(r, "GET", "/p/a%2Fb") == "GET /p/:value value=a/b")
        #expect(try routing(r, "GET", "/p%2Fx") == "404")
        // `+` is not a space in a path; invalid UTF-8 is repaired.
        #expect(try routing(r, "GET", "/p/a+b") == "GET /p/:value value=a+b")
        #expect(try routing(r, "GET", "/p/%FF") == "GET /p/:value value=\u{FFFD}")
    }

    @Test func malformedEscapesMatchNothing() throws {
        let r = router([(.get, "/p/:value"), (.get, "/x")])
        for target in ["/p/%zz", "/p/%2", "/p/%", "/p/a%", "/x%"] {
            #expect(try routing(r, "GET", target) == "404", "\(target)")
        }
    }

    @Test func literalWinsAndBacktracksToParameter() throws {
        let r = router([(.get, "/a/b/c"), (.get, "/a/:x/d"), (.get, "/a/b")])
        #expect(try routing(r, "GET", "/a/b/c") == "GET /a/b/c")
        #expect(try routing(r, "GET", "/a/b/d") == "GET /a/:x/d x=b")
        #expect(try routing(r, "GET", "/a/z/d") == "GET /a/:x/d x=z")
        #expect(try routing(r, "GET", "/a/b") == "GET /a/b")
        // The literal node has no POST route; the parameter node has none either.
        #expect(try routing(r, "POST", "/a/b/d") == "405 GET, HEAD, OPTIONS")
    }

    @Test func trailingSlashesAndEmptySegmentsAreSignificant() throws {
        let r = router([(.get, "/users"), (.get, "/users/:id/posts"), (.get, "/dir/")])
        #expect(try routing(r, "GET", "/users/") == "404")
        #expect(try routing(r, "GET", "//users") == "404")
        #expect(try routing(r, "GET", "/users//posts") == "404")  // `:id` never matches an empty segment
        #expect(try routing(r, "GET", "/dir/") == "GET /dir/")
        #expect(try routing(r, "GET", "/dir") == "404")
    }

    @Test func parametersNeverMatchDotSegments() throws {
        let r = router([(.get, "/files/:name"), (.get, "/files/:name/meta")])
        #expect(try routing(r, "GET", "/files/..") == "404")
        #expect(try routing(r, "GET", "/files/.") == "404")
        #expect(try routing(r, "GET", "/files/%2E%2E") == "404")
        #expect(try routing(r, "GET", "/files/../meta") == "404")
        #expect(try routing(r, "GET", "/files/...") == "GET /files/:name name=...")
        #expect(try routing(r, "GET", "/files/.env") == "GET /files/:name name=.env")
    }

    @Test func answers405WithAllow() throws {
        let r = router([(.get, "/users/:id"), (.delete, "/users/:id"), (.put, "/users/me")])
        #expect(try routing(r, "POST", "/users/7") == "405 GET, HEAD, DELETE, OPTIONS")
        // The literal and the parameter node both match: their methods together.
        #expect(try routing(r, "POST", "/users/me") == "405 PUT, GET, HEAD, DELETE, OPTIONS")
        #expect(try routing(r, "BREW", "/users/7") == "405 GET, HEAD, DELETE, OPTIONS")
        #expect(try routing(r, "PUT", "/users/me") == "PUT /users/me")
        #expect(try routing(r, "DELETE", "/users/me") == "DELETE /users/:id id=me")
        let postOnly = router([(.post, "/form")])
        #expect(try routing(postOnly, "GET", "/form") == "405 POST, OPTIONS")
        #expect(try routing(postOnly, "HEAD", "/form") == "405 POST, OPTIONS")
    }

    @Test func headUsesTheGetRouteUnlessThereIsAHeadRoute() throws {
        let r = router([(.get, "/a"), (.get, "/b"), (.head, "/b")])
        #expect(try routing(r, "HEAD", "/a") == "GET /a")
        #expect(try routing(r, "HEAD", "/b") == "HEAD /b")
        #expect(try routing(r, "POST", "/b") == "405 GET, HEAD, OPTIONS")
    }

    @Test func answersOptionsWithAllow() throws {
        let r = router([(.get, "/a"), (.post, "/a"), (.put, "/b/:x"), (.options, "/c"), (.get, "/c")])
        #expect(try routing(r, "OPTIONS", "/a") == "204 GET, HEAD, POST, OPTIONS")
        #expect(try routing(r, "OPTIONS", "/b/1") == "204 PUT, OPTIONS")
        #expect(try routing(r, "OPTIONS", "/c") == "OPTIONS /c")
        #expect(try routing(r, "OPTIONS", "/nothing") == "404")
        #expect(try routing(r, "OPTIONS", "*") == "204 GET, HEAD, POST, PUT, OPTIONS")
    }

    @Test func routesAbsoluteFormByItsPath() throws {
        let r = router([(.get, "/"), (.get, "/users/:id")])
        #expect(try routing(r, "GET", "http://example.com/users/7?x") == "GET /users/:id id=7")
        #expect(try routing(r, "GET", "http://example.com") == "GET /")
        #expect(try routing(r, "GET", "http://example.com?x=1") == "GET /")
        #expect(try routing(r, "GET", "http://example.com:8080/") == "GET /")
    }

    @Test func authorityFormHasNoRoute() throws {
        let r = router([(.get, "/"), (.connect, "/")])
        #expect(try routing(r, "CONNECT", "example.com:443") == "404")
    }

    @Test func addingAgainReplacesAndPatternsGetALeadingSlash() throws {
        var r = Router()
        r.get("users/:id") { _ in }
        #expect(try routing(r, "GET", "/users/1") == "GET users/:id id=1")
        r.get("/users/:user") { _ in }
        #expect(try routing(r, "GET", "/users/1") == "GET /users/:user user=1")
        #expect(r.nodes.count == 3)  // root, "users", ":"
        #expect(r.nodes[2].routes.count == 1)
    }

    @Test func conveniencesAddTheirMethod() throws {
        var r = Router()
        r.get("/x") { _ in }
        r.post("/x") { _ in }
        r.put("/x") { _ in }
        r.delete("/x") { _ in }
        r.patch("/x") { _ in }
        #expect(try routing(r, "TRACE", "/x") == "405 GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS")
        for method in ["GET", "POST", "PUT", "DELETE", "PATCH"] {
            #expect(try routing(r, method, "/x") == "\(method) /x")
        }
    }

    @Test func wholePathLookupAgreesWithTheTreeWalk() throws {
        // Random routers over a small alphabet of segments, random requests: the router
        // with its whole-literal-path table must answer exactly as the same router
        // matching by the tree walk alone.
        var random = SplitMix64(seed: 0x5EED_0013)
        let segments = ["a", "b", "ab", "", ":x", ":y", "caf\u{E9}"]
        let requestSegments = ["a", "b", "ab", "", "z", "caf%C3%A9", "%61", "..", "a?q=1"]
        let methods: [HTTPRequest.Method] = [.get, .head, .post, .put]
        var compared = 0
        for _ in 0..<200 {
            var router = Router()
            for _ in 0..<random.int(in: 1...12) {
                let pattern = "/" + (0..<random.int(in: 1...3)).map { _ in segments[random.below(segments.count)] }
                    .joined(separator: "/")
                router.add(methods[random.below(methods.count)], pattern) { _ in }
            }
            var walkOnly = router
            walkOnly.compiled.literalTable = []
            for _ in 0..<30 {
                let target = "/" + (0..<random.int(in: 1...3)).map { _ in requestSegments[random.below(requestSegments.count)] }
                    .joined(separator: "/")
                let method = ["GET", "HEAD", "POST", "DELETE"][random.below(4)]
                let expected = try routing(walkOnly, method, target)
                let actual = try routing(router, method, target)
                if actual != expected {
                    Issue.record("\(method) \(target): \(actual), the walk says \(expected)")
                    return
                }
                compared += 1
            }
        }
        #expect(compared == 6000)
    }

    @Test func manyLiteralRoutesResolveWithoutConfusion() throws {
        var r = Router()
        for i in 0..<200 { r.get("/items/\(i)/detail") { _ in } }
        r.get("/items/:id") { _ in }
        for i in stride(from: 0, to: 200, by: 37) {
            #expect(try routing(r, "GET", "/items/\(i)/detail") == "GET /items/\(i)/detail")
            #expect(try routing(r, "GET", "/items/\(i)") == "GET /items/:id id=\(i)")
        }
        #expect(try routing(r, "GET", "/items/200/detail") == "404")
    }
}

/// The router the end-to-end tests serve.
func demoRouter(parametersSeenEmpty: PthreadLock<[Bool]>? = nil) -> Router {
    var router = Router()
    router.get("/hello") { exchange in
        parametersSeenEmpty?.withLock { $0.append(exchange.parameters.isEmpty) }
        try await exchange.respond(HTTPResponse(status: .ok), body: Array("hello".utf8))
    }
    router.get("/users/:id") { exchange in
        try await exchange.respond(HTTPResponse(status: .ok), body: Array("user \(exchange.parameters["id"] ?? "?")".utf8))
    }
    router.delete("/users/:id") { exchange in
        try await exchange.respond(HTTPResponse(status: .noContent))
    }
    router.post("/echo") { exchange in
        let body = try await exchange.readBody()
        try await exchange.respond(HTTPResponse(status: .ok), body: body)
    }
    return router
}

@Suite("Router through a server")
struct RouterServerTests {
    @Test(arguments: allBackends)
    func routesAndAnswers404And405OnOneConnection(engine: Engine) async throws {
        try await withHTTPServer(engine, responder: demoRouter()) { server in
            try await withClient(server) { client in
                try client.send(get("/hello"))
                let hello = try client.readResponse()
                #expect(hello.status == 200 && hello.bodyText == "hello")

                try client.send(get("/users/a%20b?x=1"))
                #expect(try client.readResponse().bodyText == "user a b")

                try client.send(get("/nope"))
                let notFound = try client.readResponse()
                #expect(notFound.status == 404)
                #expect(notFound.field("Content-Length") == "0")

                // 405 for a request with a body: the body is drained, the connection goes on.
                try client.send("POST /hello HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nxyz")
                let notAllowed = try client.readResponse()
                #expect(notAllowed.status == 405)
                #expect(notAllowed.field("Allow") == "GET, HEAD, OPTIONS")

                try client.send("DELETE /users/7 HTTP/1.1\r\nHost: t\r\n\r\n")
                let deleted = try client.readResponse()
                #expect(deleted.status == 204)
                #expect(deleted.field("Content-Length") == nil)

                try client.send("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nabcde")
                #expect(try client.readResponse().bodyText == "abcde")

                try client.send("PUT /users/7 HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n")
                let put = try client.readResponse()
                #expect(put.status == 405)
                #expect(put.field("Allow") == "GET, HEAD, DELETE, OPTIONS")
            }
        }
    }

    @Test(arguments: allBackends)
    func headIsServedByTheGetRouteWithoutItsBody(engine: Engine) async throws {
        try await withHTTPServer(engine, responder: demoRouter()) { server in
            try await withClient(server) { client in
                try client.send("HEAD /hello HTTP/1.1\r\nHost: t\r\n\r\n")
                let head = try client.readResponse(forHEAD: true)
                #expect(head.status == 200)
                #expect(head.field("Content-Length") == "5")
                // Had the body been sent, it would be read as the start of this response.
                try client.send(get("/users/9"))
                let next = try client.readResponse()
                #expect(next.status == 200 && next.bodyText == "user 9")
            }
        }
    }

    @Test(arguments: allBackends)
    func answersOptionsWithAllow(engine: Engine) async throws {
        try await withHTTPServer(engine, responder: demoRouter()) { server in
            try await withClient(server) { client in
                try client.send("OPTIONS /users/7 HTTP/1.1\r\nHost: t\r\n\r\n")
                let options = try client.readResponse()
                #expect(options.status == 204)
                #expect(options.field("Allow") == "GET, HEAD, DELETE, OPTIONS")
                try client.send("OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n")
                let all = try client.readResponse()
                #expect(all.status == 204)
                #expect(all.field("Allow") == "GET, HEAD, DELETE, POST, OPTIONS")
                try client.send("OPTIONS /nope HTTP/1.1\r\nHost: t\r\n\r\n")
                #expect(try client.readResponse().status == 404)
            }
        }
    }

    @Test(arguments: allBackends)
    func pipelinedRequestsAreRoutedInOrderAndParametersDoNotLeak(engine: Engine) async throws {
        let seen = PthreadLock<[Bool]>([])
        try await withHTTPServer(engine, responder: demoRouter(parametersSeenEmpty: seen)) { server in
            let statuses = try await withClient(server) { client -> [String] in
                let targets = ["/users/1", "/hello", "/nope", "/users/2", "/hello"]
                try client.send(targets.map { get($0) }.joined())
                return try targets.map { _ in
                    let response = try client.readResponse()
                    return "\(response.status) \(response.bodyText)"
                }
            }
            #expect(statuses == ["200 user 1", "200 hello", "404 ", "200 user 2", "200 hello"])
        }
        #expect(seen.withLock { $0 } == [true, true])
    }

    @Test(arguments: allBackends)
    func absoluteFormIsRoutedByItsPath(engine: Engine) async throws {
        try await withHTTPServer(engine, responder: demoRouter()) { server in
            try await withClient(server) { client in
                try client.send("GET http://example.com/users/5 HTTP/1.1\r\nHost: t\r\n\r\n")
                #expect(try client.readResponse().bodyText == "user 5")
            }
        }
    }
}
