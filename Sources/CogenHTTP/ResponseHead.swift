internal import HTTPTypes

// Response heads, rendered once per shape.
//
// A head is the status line, the responder's header fields, `Server`, `Content-Type`
// (the fast path's), then the parts that change per response: `Date`, the framing
// (`Content-Length` or `Transfer-Encoding`), `Connection`, the empty line. The first part
// depends only on the response value the responder passes, and responders nearly always
// pass the same few (a `static let` response, a status code and content type), so each
// scheduler keeps the first part of the last few shapes as bytes: a response of a known
// shape costs one copy of them, no walk over `HTTPFields`, no `String` work.

/// The rendered first part of a response head and what the writer needs from it.
struct RenderedHead {
    /// The status code.
    var code = 0
    /// Status line, header fields, `Server`, `Content-Type`.
    var bytes: [UInt8] = []
    /// The responder set `Date` itself.
    var hasDate = false
    /// The responder's fields asked to close the connection (`Connection: close`).
    var closes = false
}

/// The heads of one scheduler's recent response shapes (confined to its thread).
///
/// Two kinds of keys: an `HTTPResponse` value, matched by the identity of its storage, and
/// a status code with an optional content type (``HTTPExchange/respond(status:contentType:body:)``).
/// Identity is a sound key for an `HTTPResponse`: the cache keeps a copy of the value, so
/// its storage (the pseudo-header object and the fields array) is shared and never mutated
/// in place (a change copies it first), and cannot be freed and reused for another value
/// while the entry lives. A response built anew for every request has new storage each
/// time: it misses, and is rendered as if there were no cache.
final class ResponseHeadCache {
    static let capacity = 8

    private struct ResponseEntry {
        var key: HTTPResponse
        var head: RenderedHead
    }
    private struct SimpleEntry {
        var code: Int
        var contentType: String?
        var head: RenderedHead
    }

    @exclusivity(unchecked) private var responses: [ResponseEntry] = []
    @exclusivity(unchecked) private var nextResponse = 0
    @exclusivity(unchecked) private var simples: [SimpleEntry] = []
    @exclusivity(unchecked) private var nextSimple = 0
    let serverLine: [UInt8]

    init(serverLine: [UInt8]) {
        self.serverLine = serverLine
        responses.reserveCapacity(Self.capacity)
        simples.reserveCapacity(Self.capacity)
    }

    /// Whether `a` and `b` share their storage (hence their contents): their bits are
    /// equal. Falls back to "no" if `HTTPResponse` is ever not two references wide.
    @inline(__always)
    private static func identical(_ a: HTTPResponse, _ b: HTTPResponse) -> Bool {
        guard MemoryLayout<HTTPResponse>.size == MemoryLayout<(UInt, UInt)>.size else { return false }
        let x = unsafeBitCast(a, to: (UInt, UInt).self)
        let y = unsafeBitCast(b, to: (UInt, UInt).self)
        return x.0 == y.0 && x.1 == y.1
    }

    /// Calls `body` with the rendered head of `response`, rendering it on a miss.
    @inline(__always)
    func withHead<R>(for response: HTTPResponse, _ body: (borrowing RenderedHead) -> R) -> R {
        for index in responses.indices where Self.identical(responses[index].key, response) {
            return body(responses[index].head)
        }
        return body(insert(response))
    }

    private func insert(_ response: HTTPResponse) -> RenderedHead {
        let status = response.status
        let head = Self.rendered(
            code: status.code, reason: status.reasonPhrase, fields: response.headerFields, contentType: nil,
            serverLine: serverLine)
        Self.store(ResponseEntry(key: response, head: head), in: &responses, next: &nextResponse)
        return head
    }

    /// Calls `body` with the rendered head of a response with `code` and `contentType`
    /// and no other fields, rendering it on a miss.
    @inline(__always)
    func withHead<R>(code: Int, contentType: String?, _ body: (borrowing RenderedHead) -> R) -> R {
        for index in simples.indices where simples[index].code == code && simples[index].contentType == contentType {
            return body(simples[index].head)
        }
        return body(insert(code: code, contentType: contentType))
    }

    private func insert(code: Int, contentType: String?) -> RenderedHead {
        let head = Self.rendered(code: code, reason: nil, fields: nil, contentType: contentType, serverLine: serverLine)
        Self.store(SimpleEntry(code: code, contentType: contentType, head: head), in: &simples, next: &nextSimple)
        return head
    }

    /// Adds `entry` while there is room, else replaces the oldest (round robin).
    private static func store<Entry>(_ entry: Entry, in entries: inout [Entry], next: inout Int) {
        if entries.count < capacity {
            entries.append(entry)
        } else {
            entries[next] = entry
            next = (next + 1) % capacity
        }
    }

    /// Renders the first part of a head into `out`: status line, the fields (without
    /// `Content-Length`, `Transfer-Encoding` and `Connection`, which the writer decides),
    /// `Server` unless the fields have one, `Content-Type` if given.
    /// - Returns: Whether the fields set `Date`, and whether they asked to close.
    static func render(
        code: Int, reason: String?, fields: HTTPFields?, contentType: String?, serverLine: [UInt8],
        into out: inout [UInt8]
    ) -> (hasDate: Bool, closes: Bool) {
        var hasDate = false
        var closes = false
        out.append(contentsOf: ResponseBytes.http11)
        let clamped = min(max(code, 0), 999)
        out.append(UInt8(0x30 + clamped / 100))
        out.append(UInt8(0x30 + clamped / 10 % 10))
        out.append(UInt8(0x30 + clamped % 10))
        out.append(32)
        if let reason, !reason.isEmpty {
            for byte in reason.utf8 { out.append(byte >= 0x20 && byte != 0x7F ? byte : 32) }
        } else {
            ResponseBytes.reason(code).withUTF8Buffer { out.append(contentsOf: $0) }
        }
        out.append(contentsOf: ResponseBytes.crlf)
        var hasServer = false
        if let fields {
            for field in fields {
                let name = field.name
                if name == .contentLength || name == .transferEncoding { continue }
                if name == .connection {
                    if field.value.utf8.count >= 5, field.value.lowercased().contains("close") { closes = true }
                    continue
                }
                if name == .server { hasServer = true }
                if name == .date { hasDate = true }
                out.append(contentsOf: name.rawName.utf8)
                out.append(contentsOf: ResponseBytes.colonSpace)
                field.withUnsafeBytesOfValue { out.append(contentsOf: $0) }
                out.append(contentsOf: ResponseBytes.crlf)
            }
        }
        if !hasServer { out.append(contentsOf: serverLine) }
        if let contentType {
            out.append(contentsOf: ResponseBytes.contentType)
            // No CR, LF or other control byte may split the header line.
            for byte in contentType.utf8 { out.append(byte >= 0x20 && byte != 0x7F ? byte : 32) }
            out.append(contentsOf: ResponseBytes.crlf)
        }
        return (hasDate, closes)
    }

    private static func rendered(
        code: Int, reason: String?, fields: HTTPFields?, contentType: String?, serverLine: [UInt8]
    ) -> RenderedHead {
        var head = RenderedHead()
        head.code = code
        head.bytes.reserveCapacity(128)
        (head.hasDate, head.closes) = render(
            code: code, reason: reason, fields: fields, contentType: contentType, serverLine: serverLine,
            into: &head.bytes)
        return head
    }
}

extension HTTPExchange {
    /// Appends the head's changing part: `Date` (unless the responder set it), the framing,
    /// `Connection`, the empty line; in one copy from a stack buffer.
    @inline(__always)
    func writeHeadTail(hasDate: Bool, framing: HeadFraming) {
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 160) { buffer in
            var count = 0
            @inline(__always) func put(_ text: StaticString) {
                text.withUTF8Buffer { source in
                    for byte in source {
                        buffer[count] = byte
                        count += 1
                    }
                }
            }
            if !hasDate {
                context.dateLine.withUnsafeBufferPointer { line in
                    for byte in line {
                        buffer[count] = byte
                        count += 1
                    }
                }
            }
            switch framing {
            case .length(let length):
                put("Content-Length: ")
                // Up to 19 digits.
                var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)
                var v = UInt64(max(length, 0))
                var n = 0
                withUnsafeMutableBytes(of: &digits) { scratch in
                    repeat {
                        scratch[23 - n] = UInt8(0x30 + v % 10)
                        v /= 10
                        n += 1
                    } while v > 0
                    for i in (24 - n)..<24 {
                        buffer[count] = scratch[i]
                        count += 1
                    }
                }
                put("\r\n")
            case .chunked:
                put("Transfer-Encoding: chunked\r\n")
            case .none, .omitted:
                break
            }
            if closeAfterResponse {
                put("Connection: close\r\n")
            } else if head.version == .http1_0 {
                put("Connection: keep-alive\r\n")
            }
            put("\r\n")
            output.append(contentsOf: UnsafeBufferPointer(rebasing: buffer[..<count]))
        }
    }
}
