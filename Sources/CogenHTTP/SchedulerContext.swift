internal import CogenUring
internal import Glibc
internal import Synchronization

/// The counters of one scheduler: relaxed atomics with one writer (the scheduler's thread),
/// so an increment is a load and a store, no locked instruction; any thread may read them.
final class HTTPCounters: Sendable {
    let connectionsAccepted = Atomic<Int>(0)
    let connectionsOpen = Atomic<Int>(0)
    let requests = Atomic<Int>(0)
    let informational = Atomic<Int>(0)
    let successful = Atomic<Int>(0)
    let redirection = Atomic<Int>(0)
    let clientError = Atomic<Int>(0)
    let serverError = Atomic<Int>(0)
    let parseErrors = Atomic<Int>(0)
    let headTimeouts = Atomic<Int>(0)
    let idleTimeouts = Atomic<Int>(0)
    let bodyTimeouts = Atomic<Int>(0)
    let handlerErrors = Atomic<Int>(0)

    /// Adds `delta` (only from the scheduler's thread: one writer per counter).
    @inline(__always)
    static func add(_ counter: borrowing Atomic<Int>, _ delta: Int = 1) {
        counter.store(counter.load(ordering: .relaxed) &+ delta, ordering: .relaxed)
    }

    /// Counts a response by its status class (100 Continue is not counted).
    @inline(__always)
    func countResponse(_ code: Int) {
        switch code {
        case 100..<200: Self.add(informational)
        case 200..<300: Self.add(successful)
        case 300..<400: Self.add(redirection)
        case 400..<500: Self.add(clientError)
        default: Self.add(serverError)
        }
    }

    /// Adds this scheduler's counts to `total`.
    func add(to total: inout HTTPServer.Statistics) {
        total.connectionsAccepted += connectionsAccepted.load(ordering: .relaxed)
        total.connectionsOpen += connectionsOpen.load(ordering: .relaxed)
        total.requests += requests.load(ordering: .relaxed)
        total.responsesByClass[0] += informational.load(ordering: .relaxed)
        total.responsesByClass[1] += successful.load(ordering: .relaxed)
        total.responsesByClass[2] += redirection.load(ordering: .relaxed)
        total.responsesByClass[3] += clientError.load(ordering: .relaxed)
        total.responsesByClass[4] += serverError.load(ordering: .relaxed)
        total.parseErrors += parseErrors.load(ordering: .relaxed)
        total.headTimeouts += headTimeouts.load(ordering: .relaxed)
        total.idleTimeouts += idleTimeouts.load(ordering: .relaxed)
        total.bodyTimeouts += bodyTimeouts.load(ordering: .relaxed)
        total.handlerErrors += handlerErrors.load(ordering: .relaxed)
    }
}

/// What the connections of one scheduler share: the counters and the `Date` value,
/// formatted at most once a second (lazily: a response checks the coarse realtime clock,
/// a vDSO read, and formats only when the second changed). Everything but the counters is
/// confined to the scheduler's thread.
final class SchedulerContext: @unchecked Sendable {
    // @unchecked Sendable: `date` and `dateSecond` are touched only on the scheduler's
    // thread; `counters` are atomics.
    let counters = HTTPCounters()
    /// The heads of recent response shapes.
    let heads: ResponseHeadCache

    init(serverLine: [UInt8]) {
        heads = ResponseHeadCache(serverLine: serverLine)
    }
    /// `Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n` (RFC 9110 §5.6.7 IMF-fixdate), 37 bytes.
    @exclusivity(unchecked) private(set) var dateLine: [UInt8] = Array("Date: Thu, 01 Jan 1970 00:00:00 GMT\r\n".utf8)
    @exclusivity(unchecked) private var dateSecond = -1

    /// Formats `dateLine` again if the second changed since the last call.
    @inline(__always)
    func refreshDate() {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME_COARSE, &now)
        if now.tv_sec != dateSecond { formatDate(now.tv_sec) }
    }

    private static let days: [StaticString] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
    private static let months: [StaticString] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]

    private func formatDate(_ seconds: Int) {
        dateSecond = seconds
        var time = time_t(seconds)
        var parts = tm()
        gmtime_r(&time, &parts)
        dateLine.withUnsafeMutableBufferPointer { line in
            func put(_ text: StaticString, at offset: Int) {
                text.withUTF8Buffer { for (i, byte) in $0.enumerated() { line[offset + i] = byte } }
            }
            func two(_ value: Int32, at offset: Int) {
                line[offset] = UInt8(0x30 + (value / 10) % 10)
                line[offset + 1] = UInt8(0x30 + value % 10)
            }
            // "Date: Thu, 01 Jan 1970 00:00:00 GMT\r\n"
            //  0     6    11 14  18   23 26 29
            put(Self.days[Int(parts.tm_wday) % 7], at: 6)
            two(parts.tm_mday, at: 11)
            put(Self.months[Int(parts.tm_mon) % 12], at: 14)
            let year = parts.tm_year + 1900
            two(year / 100, at: 18)
            two(year % 100, at: 20)
            two(parts.tm_hour, at: 23)
            two(parts.tm_min, at: 26)
            two(parts.tm_sec, at: 29)
        }
    }
}

/// The schedulers' contexts, made on a scheduler's first connection (the server's
/// connection handler runs before `HTTPServer.init` could learn the schedulers).
final class SchedulerContexts: Sendable {
    private let entries = PthreadLock<[(scheduler: ObjectIdentifier, context: SchedulerContext)]>([])
    private let serverLine: [UInt8]

    init(serverLine: [UInt8]) {
        self.serverLine = serverLine
    }

    /// The context of `scheduler` (made on first use). Once per connection: one
    /// uncontended mutex.
    func context(for scheduler: Scheduler) -> SchedulerContext {
        let key = ObjectIdentifier(scheduler)
        return entries.withLock { entries in
            if let found = entries.first(where: { $0.scheduler == key }) { return found.context }
            let context = SchedulerContext(serverLine: serverLine)
            entries.append((key, context))
            return context
        }
    }

    /// The counters summed over the schedulers.
    var statistics: HTTPServer.Statistics {
        var total = HTTPServer.Statistics()
        for context in entries.withLock({ $0.map(\.context) }) { context.counters.add(to: &total) }
        return total
    }
}

/// Byte-level response writing: no `String` is made per response.
enum ResponseBytes {
    static let http11 = Array("HTTP/1.1 ".utf8)
    static let crlf: [UInt8] = [13, 10]
    static let contentType = Array("Content-Type: ".utf8)
    static let continue100 = Array("HTTP/1.1 100 Continue\r\n\r\n".utf8)
    static let lastChunk = Array("0\r\n\r\n".utf8)
    static let colonSpace: [UInt8] = [58, 32]

    /// Appends `value` in hexadecimal (a chunk size).
    static func appendHex(_ value: Int, to output: inout [UInt8]) {
        var shift = (Int.bitWidth - value.leadingZeroBitCount + 3) / 4 * 4 - 4
        if shift < 0 { shift = 0 }
        while shift >= 0 {
            let nibble = (value >> shift) & 0xF
            output.append(nibble < 10 ? UInt8(0x30 + nibble) : UInt8(0x61 + nibble - 10))
            shift -= 4
        }
    }

    /// The reason phrase of the statuses the server sends itself, when a status carries none.
    static func reason(_ code: Int) -> StaticString {
        switch code {
        case 100: "Continue"
        case 200: "OK"
        case 201: "Created"
        case 204: "No Content"
        case 304: "Not Modified"
        case 400: "Bad Request"
        case 404: "Not Found"
        case 405: "Method Not Allowed"
        case 408: "Request Timeout"
        case 413: "Content Too Large"
        case 414: "URI Too Long"
        case 417: "Expectation Failed"
        case 431: "Request Header Fields Too Large"
        case 500: "Internal Server Error"
        case 501: "Not Implemented"
        case 503: "Service Unavailable"
        case 505: "HTTP Version Not Supported"
        default: ""
        }
    }
}
