internal import CogenUring
internal import HTTPTypes
internal import Logging

// The connection loop and the byte-level response writer of `HTTPExchange`: one exchange
// per connection, reused for every request on it.

extension RequestHead {
    /// The head of an exchange before its first request.
    static let empty = RequestHead(
        bytes: [], methodRange: 0..<0, targetRange: 0..<0, version: .http1_1, targetForm: .origin, fields: [],
        authorityRange: nil, pathRange: nil, schemeRange: nil, framing: .none, keepAlive: false,
        expectsContinue: false)
}

/// How a response head delimits its body.
enum HeadFraming {
    /// `Content-Length`.
    case length(Int64)
    /// `Transfer-Encoding: chunked`.
    case chunked
    /// Neither header, and no body: 1xx, 204.
    case none
    /// Neither header: 304 (no body by definition), or a close-delimited body (HTTP/1.0).
    case omitted
}

extension HTTPExchange {
    /// Whole bodies above this size are sent from the caller's array (a vectored send
    /// behind the coalesced bytes) rather than copied into `output`.
    static let largeBody = 16 << 10

    static func hasNoBody(_ code: Int) -> Bool { code < 200 || code == 204 || code == 304 }

    var counters: HTTPCounters { context.counters }

    // MARK: The connection loop

    /// Serves the connection until it ends: parses every complete request held, answers it,
    /// coalesces whole responses, and sends them when no complete request is left.
    func serve() async {
        HTTPCounters.add(counters.connectionsAccepted)
        HTTPCounters.add(counters.connectionsOpen)
        defer { HTTPCounters.add(counters.connectionsOpen, -1) }
        do {
            try await serveRequests()
        } catch {
            // The peer went away, a send failed or stalled, the grace period ended, or the
            // shutdown found the connection idle: the server closes the socket.
        }
    }

    private func serveRequests() async throws {
        guard let socket, let connection else { return }
        var headStarted = false
        var headDeadline = Deadline.after(.zero)
        while true {
            // Parse from the bytes held: a whole head, or all of them into the parser.
            // A complete head goes straight into `self.head` (no other copy keeps its
            // arrays, so the parser can take them back afterwards without copying).
            let complete: Bool
            var partial = false
            do {
                complete = try socket.withReceivedBytes { buffer -> (consumed: Int, result: Bool) in
                    if buffer.isEmpty { return (0, false) }
                    switch try parser.parse(buffer) {
                    case .needMoreBytes(let consumed):
                        partial = consumed > 0
                        return (consumed, false)
                    case .complete(let head, let consumed):
                        self.head = head
                        return (consumed, true)
                    }
                }
            } catch let error as RequestHeadError {
                HTTPCounters.add(counters.parseErrors)
                await reject(error.status)
                return
            }
            guard complete else {
                if !headStarted && partial {
                    headStarted = true
                    headDeadline = .after(setup.timeouts.requestHead)
                }
                // No complete request left: the batch's responses go out in one send.
                if try !flushNow() { try await sendOutput() }
                if headStarted {
                    let more: Bool
                    do {
                        more = try await socket.waitForBytes(beyond: 0, deadline: headDeadline)
                    } catch is TimeoutError {
                        HTTPCounters.add(counters.headTimeouts)
                        await reject(408)
                        return
                    }
                    if !more { return }  // the peer ended mid-head
                } else {
                    // Idle: the shutdown ends this wait at once.
                    let more: Bool
                    do {
                        more = try await connection.waitForBytes(
                            beyond: 0, deadline: .after(nanoseconds: setup.idleNanoseconds))
                    } catch is TimeoutError {
                        HTTPCounters.add(counters.idleTimeouts)
                        return
                    }
                    if !more { return }
                }
                continue
            }
            headStarted = false
            // During a shutdown, a request in flight ends its connection (served): the
            // next idle wait would only be ended at once.
            let goesOn = try await handle() && !connection.isShuttingDown
            parser.reuseStorage(of: &self.head)  // the next head is parsed into this one's arrays
            guard goesOn else {
                try await flush()
                await closeGracefully()
                return
            }
            if coalescedResponses >= setup.limits.maxPipelinedRequests || output.count >= setup.limits.maxCoalescedBytes {
                try await flush()
            }
        }
    }

    /// Answers one request; `false` when the connection ends after it (its response is in
    /// `output`, to be flushed), or was cut.
    @inline(__always)
    private func handle() async throws -> Bool {
        begin()
        HTTPCounters.add(counters.requests)
        var failure: (any Error)?
        do {
            try await setup.responder.respond(to: self)
        } catch {
            if Task.isCancelled { throw error }  // the grace period ended: cut
            failure = error
            // A body the client got wrong is counted as such (`parseErrors`, timeouts).
            if !bodyFailed { HTTPCounters.add(counters.handlerErrors) }
        }
        switch response {
        case .none:
            if bodyFailed {
                // 413, 400 or 408 for the body; no status: the peer is gone.
                if let status = bodyFailureStatus { await reject(status) }
                output.removeAll(keepingCapacity: true)
                return false
            }
            if let failure {
                logger.error("responder failed before responding: \(failure)", metadata: ["path": "\(path)"])
            } else {
                logger.error("responder returned without responding", metadata: ["path": "\(path)"])
            }
            try await respondWhole(
                code: 500, reason: nil, fields: nil, contentType: nil, body: [])
        case .streaming:
            if failure != nil || bodyFailed {
                // After the head: the client must see the failure, so no final chunk (or
                // short of Content-Length): cut.
                if let failure { logger.error("responder failed after the response head: \(failure)") }
                output.removeAll(keepingCapacity: true)
                return false
            }
            do {
                try await finishResponse()
            } catch {
                logger.error("responder returned without finishing its response: \(error)")
                output.removeAll(keepingCapacity: true)
                return false
            }
        case .complete:
            if let failure { logger.error("responder failed after responding: \(failure)") }
        }
        if bodyFailed || closeAfterResponse { return false }
        if !bodyIsComplete {
            return await drainBody()
        }
        return true
    }

    var bodyIsComplete: Bool {
        switch body {
        case .complete, .none: true
        case .length, .chunked: false
        }
    }

    /// Reads and drops an unread body, up to `maxDrainSize`; `false`: close instead.
    private func drainBody() async -> Bool {
        if head.expectsContinue && !continueSent { return false }
        if case .length(let remaining) = body, remaining > setup.limits.maxDrainSize { return false }
        var budget = setup.limits.maxDrainSize
        var nothing: [UInt8] = []
        do {
            while let count = try await nextBodyPiece(maxLength: 1 << 20, into: &nothing, discard: true) {
                budget -= Int64(count)
                if budget < 0 { return false }
            }
        } catch {
            return false
        }
        return true
    }

    /// Answers an error status (the request could not be read) with `Connection: close`,
    /// after the responses before it, then closes with a lingering close.
    func reject(_ status: Int) async {
        writeErrorResponse(status)
        do { try await flush() } catch { return }
        await lingeringClose()
    }

    private func writeErrorResponse(_ status: Int) {
        // The shared head writer: status line, Server, Date, `Content-Length: 0`, close.
        closeAfterResponse = true
        writeHead(code: status, reason: nil, fields: nil, contentType: nil, framing: .length(0))
    }

    /// The end of a connection after a response that closes it: bytes the client sent
    /// that were not read (pipelined requests, an unread body) would make our close a
    /// reset, which can destroy the response before the client reads it; then linger.
    private func closeGracefully() async {
        guard let socket else { return }
        let held = (try? socket.withReceivedBytes { (0, $0.count) }) ?? 0
        if held > 0 || !bodyIsComplete { await lingeringClose() }
    }

    /// RFC 9112 §9.6: half-close, then read and drop what the client still sends (bounded
    /// in bytes and time), so that our close does not reset the connection before the
    /// client read the response.
    func lingeringClose() async {
        guard let socket, !lingered else { return }
        lingered = true
        let deadline = Deadline.after(setup.timeouts.linger)
        do {
            // The response first: a half-close under a tracked send would cut it.
            try await socket.flushTrackedSends(deadline: deadline)
            try await socket.shutdown(.write)
        } catch {
            return
        }
        var drained = 0
        while drained < 1 << 20 {
            drained += (try? socket.withReceivedBytes { ($0.count, $0.count) }) ?? 0
            do {
                if !(try await socket.waitForBytes(beyond: 0, deadline: deadline)) { return }
            } catch {
                return
            }
        }
    }

    // MARK: Bodies

    /// Records a body failure (the connection ends) and returns the error to throw.
    func failBody(_ error: HTTPServerError, status: Int?) -> HTTPServerError {
        bodyFailed = true
        bodyFailureStatus = status
        closeAfterResponse = true
        if status != nil, status != 408 { HTTPCounters.add(counters.parseErrors) }
        return error
    }

    /// Appends (or, with `discard`, drops) the next piece of the body, at most `maxLength`
    /// bytes, reading in place from the socket and waiting when nothing is held; the count
    /// of bytes, or nil at the body's end.
    func nextBodyPiece(maxLength: Int, into destination: inout [UInt8], discard: Bool = false) async throws -> Int? {
        if bodyFailed { throw HTTPServerError.connectionClosed }
        guard let socket else { return nil }
        if bodyIsComplete { return nil }
        try await sendContinueIfNeeded()
        while true {
            let (count, leftover): (Int, Int)
            do {
                (count, leftover) = try socket.withReceivedBytes { buffer in
                    try takeBody(buffer, maxLength: maxLength, into: &destination, discard: discard)
                }
            } catch let error as ChunkedBodyError {
                throw failBody(.malformedBody("\(error)"), status: error.status)
            } catch let error as HTTPServerError {
                throw error
            } catch {
                throw failBody(.connectionClosed, status: nil)
            }
            if count > 0 { return count }
            if bodyIsComplete { return nil }
            // Nothing usable held: the responses waiting go out, then wait for more.
            try await flush()
            let more: Bool
            do {
                more = try await socket.waitForBytes(beyond: leftover, deadline: .after(setup.timeouts.bodyInactivity))
            } catch is TimeoutError {
                HTTPCounters.add(counters.bodyTimeouts)
                throw failBody(.bodyTimeout, status: 408)
            } catch is ReadAheadLimitError {
                throw failBody(.malformedBody("a chunk line exceeds the read-ahead limit"), status: 400)
            } catch is CancellationError {
                throw CancellationError()
            } catch {
                throw failBody(.connectionClosed, status: nil)
            }
            if !more { throw failBody(.connectionClosed, status: nil) }
        }
    }

    /// Takes body bytes from the front of `buffer`: (consumed, (bytes taken, bytes left
    /// unconsumed)).
    private func takeBody(
        _ buffer: UnsafeRawBufferPointer, maxLength: Int, into destination: inout [UInt8], discard: Bool
    ) throws -> (consumed: Int, result: (Int, Int)) {
        switch body {
        case .length(let remaining):
            let count = Int(min(Int64(min(buffer.count, maxLength)), remaining))
            if count == 0 { return (0, (0, buffer.count)) }
            if !discard { destination.append(contentsOf: UnsafeRawBufferPointer(rebasing: buffer[..<count])) }
            body = remaining == Int64(count) ? .complete : .length(remaining: remaining - Int64(count))
            return (count, (count, buffer.count - count))
        case .chunked(var decoder):
            var offset = 0
            var taken = 0
            var complete = false
            while offset < buffer.count && taken < maxLength {
                // At most the room left is offered, so the content run fits; if the
                // framing in front of it needs more, the whole rest is offered.
                var end = min(buffer.count, offset + (maxLength - taken))
                var out = try decoder.decode(UnsafeRawBufferPointer(rebasing: buffer[offset..<end]))
                if out.consumed == 0 && end < buffer.count {
                    end = buffer.count
                    out = try decoder.decode(UnsafeRawBufferPointer(rebasing: buffer[offset..<end]))
                }
                if !out.content.isEmpty {
                    if !discard {
                        destination.append(contentsOf: UnsafeRawBufferPointer(
                            rebasing: buffer[(offset + out.content.lowerBound)..<(offset + out.content.upperBound)]))
                    }
                    taken += out.content.count
                }
                offset += out.consumed
                if out.isComplete {
                    complete = true
                    break
                }
                if out.consumed == 0 { break }
            }
            body = complete ? .complete : .chunked(decoder)
            return (offset, (taken, buffer.count - offset))
        case .complete, .none:
            return (0, (0, buffer.count))
        }
    }

    /// `100 Continue`, once, when the client asked for it and no response was started.
    private func sendContinueIfNeeded() async throws {
        guard head.expectsContinue && !continueSent && response == .none else { return }
        continueSent = true
        output.append(contentsOf: ResponseBytes.continue100)
        try await flush()
    }

    // MARK: Responses

    /// A whole response: head and body into `output` (a large body is sent at once,
    /// behind what is coalesced, without a copy).
    func respondWhole(
        code: Int, reason: String?, fields: HTTPFields?, contentType: String?, body: [UInt8]
    ) async throws {
        try await finishWhole(
            beginWhole(code: code, reason: reason, fields: fields, contentType: contentType, body: body), body: body)
    }

    /// ``respondWhole(code:reason:fields:contentType:body:)`` up to its first wait.
    func beginWhole(
        code: Int, reason: String?, fields: HTTPFields?, contentType: String?, body: [UInt8]
    ) -> WholeRest {
        response = .complete
        writeHead(code: code, reason: reason, fields: fields, contentType: contentType, framing: Self.wholeFraming(code, body))
        coalescedResponses += 1
        return appendWhole(code: code, body: body)
    }

    /// A whole response from a cached head: the head, then the body when it fits.
    @inline(__always)
    func beginWhole(_ rendered: borrowing RenderedHead, body: [UInt8]) -> WholeRest {
        response = .complete
        writeHead(rendered, framing: Self.wholeFraming(rendered.code, body))
        coalescedResponses += 1
        return appendWhole(code: rendered.code, body: body)
    }

    /// The framing of a whole response: none for 1xx and 204, omitted for 304, else its length.
    @inline(__always)
    static func wholeFraming(_ code: Int, _ body: [UInt8]) -> HeadFraming {
        if code < 200 || code == 204 { return .none }
        if code == 304 { return .omitted }
        return .length(Int64(body.count))
    }

    /// What is left of a whole response once its head is written.
    @usableFromInline
    enum WholeRest {
        /// Nothing: the body is in `output` (or there is none) and there is room for more.
        case done
        /// The body is sent behind `output` (too large to copy, or no room).
        case sendBody
        /// `output` is full: it goes out now.
        case flush
    }

    /// After a whole response's head: its body into `output` when it is small and there is
    /// room (the usual case, no suspension); else what ``finishWhole(_:body:)`` must do.
    @inline(__always)
    func appendWhole(code: Int, body: [UInt8]) -> WholeRest {
        if !Self.hasNoBody(code) && !isHead && !body.isEmpty {
            if body.count >= Self.largeBody || output.count + body.count > setup.limits.maxCoalescedBytes {
                return .sendBody
            }
            output.append(contentsOf: body)
        }
        return output.count >= setup.limits.maxCoalescedBytes ? .flush : .done
    }

    /// Does what ``appendWhole(code:body:)`` left.
    @usableFromInline
    func finishWhole(_ rest: WholeRest, body: [UInt8]) async throws {
        switch rest {
        case .done: return
        case .sendBody: try await sendAfterOutput(body, trailer: nil)
        case .flush: try await flush()
        }
    }

    /// Decides whether the connection ends after this response and counts it; the first
    /// step of every head.
    @inline(__always)
    func beginHead(code: Int, closes: Bool) {
        if !closeAfterResponse {
            closeAfterResponse = closes || !head.keepAlive || bodyFailed || connection?.isShuttingDown == true
                || unreadBodyForcesClose
        }
        context.refreshDate()
        counters.countResponse(code)
    }

    /// Writes a response head into `output`.
    func writeHead(code: Int, reason: String?, fields: HTTPFields?, contentType: String?, framing: HeadFraming) {
        let (hasDate, closes) = ResponseHeadCache.render(
            code: code, reason: reason, fields: fields, contentType: contentType, serverLine: setup.serverLine,
            into: &output)
        beginHead(code: code, closes: closes)
        writeHeadTail(hasDate: hasDate, framing: framing)
    }

    /// Writes a response head from its rendered first part into `output`.
    @inline(__always)
    func writeHead(_ rendered: borrowing RenderedHead, framing: HeadFraming) {
        beginHead(code: rendered.code, closes: rendered.closes)
        output.append(contentsOf: rendered.bytes)
        writeHeadTail(hasDate: rendered.hasDate, framing: framing)
    }

    /// Whether the unread body rules out reading the next request: the client was not
    /// told to send it (no 100 sent), or it is longer than the server drains.
    private var unreadBodyForcesClose: Bool {
        switch body {
        case .complete, .none:
            return false
        case .length(let remaining):
            return (head.expectsContinue && !continueSent) || remaining > setup.limits.maxDrainSize
        case .chunked:
            return head.expectsContinue && !continueSent
        }
    }

    /// Sends `bytes` (and `trailer`) behind what `output` holds: copied into it when
    /// small, else one vectored send without a copy.
    func sendAfterOutput(_ bytes: [UInt8], trailer: [UInt8]?) async throws {
        if bytes.count < Self.largeBody {
            output.append(contentsOf: bytes)
            if let trailer { output.append(contentsOf: trailer) }
            try await flush()
            return
        }
        guard let socket else {
            output.append(contentsOf: bytes)
            if let trailer { output.append(contentsOf: trailer) }
            return
        }
        coalescedResponses = 0
        defer { output.removeAll(keepingCapacity: true) }
        if let trailer {
            try await socket.sendAll([output, bytes, trailer], timeout: .weak(setup.timeouts.sendInactivity), placement: .front)
        } else {
            try await socket.sendAll([output, bytes], timeout: .weak(setup.timeouts.sendInactivity), placement: .front)
        }
    }

    /// Sends what `output` holds, in one send (as many as the kernel needs), and empties
    /// it, keeping its capacity.
    ///
    /// Up to 4 KiB (a batch of small responses) it is a tracked send: the socket copies
    /// the bytes (on epoll it tries `send(2)` at once and copies only what the kernel did
    /// not take) and sends them on its own, so the coroutine goes straight on to its next
    /// wait instead of waiting for the send's completion (one trip through the run queue
    /// per request instead of two). Tracked bytes are bounded by the socket's
    /// `trackedSendLimit`; past it, this waits (under the send inactivity timeout) until
    /// they are sent. Larger batches use a plain `sendAll`, which keeps the order.
    func flush() async throws {
        if try flushNow() { return }
        try await sendOutput()
    }

    /// ``flush()`` once ``flushNow()`` could not: sends `output`, waiting as it must.
    private func sendOutput() async throws {
        guard !output.isEmpty, let socket else { return }
        coalescedResponses = 0
        defer { output.removeAll(keepingCapacity: true) }
        if output.count <= Self.trackedSendMax {
            if socket.trackedBytesPending + output.count > socket.trackedSendLimit {
                try await socket.flushTrackedSends(deadline: .after(setup.timeouts.sendInactivity))
            }
            try await socket.sendTracked(output)
        } else {
            try await socket.sendAll(output, timeout: .weak(setup.timeouts.sendInactivity), placement: .front)
        }
    }

    /// ``flush()``'s usual case without suspending: `output` is empty, or small enough for a
    /// tracked send that has room now (its storage handed to the socket, which gives back
    /// its spare, empty one: no copy). `false`: ``flush()`` must send it.
    @inline(__always)
    func flushNow() throws -> Bool {
        if output.isEmpty { return true }
        guard let socket, output.count <= Self.trackedSendMax, try socket.sendTrackedIfRoom(&output) else {
            return false
        }
        coalescedResponses = 0
        return true
    }

    /// The largest batch sent as a tracked send (copied by the socket).
    static let trackedSendMax = 4096
}
