@testable import CogenHTTP
import Foundation
import PropertyTestSupport
import Testing

// A differential test of the request parser and the chunked decoder against Python's h11
// (Debian's python3-h11 0.14, `scripts/ensure-deps.sh` installs it): seeded requests, valid
// ones built from grammar pieces, then mutated; both sides judge each one. Either both
// accept with the same method, target, fields, framing, body and length consumed, or both
// reject (or both need more bytes). A disagreement must fall under one of the rules listed in
// `AllowedDisagreement` (where h11 is knowingly more lenient or stricter than the RFC 9112
// rules issue 13 demands); any other disagreement fails the test.

// MARK: - Running h11

/// Where `scripts/h11-oracle.py` is (the package root, from this file's path).
let h11OracleScript: String = {
    URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("scripts/h11-oracle.py").path
}()

/// A Python that can import h11, or nil. Debian's /usr/bin/python3 first: the one on PATH
/// may be another (pyenv) without Debian's packages.
let pythonWithH11: String? = {
    var candidates = ["/usr/bin/python3", "/usr/local/bin/python3", "/bin/python3"]
    for directory in (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":") {
        candidates.append("\(directory)/python3")
    }
    for candidate in candidates where FileManager.default.isExecutableFile(atPath: candidate) {
        if let run = try? runProcess(candidate, [h11OracleScript, "--check"], timeout: .seconds(30)), run.status == 0 {
            return candidate
        }
    }
    return nil
}()

/// Whether the h11 tests must run: `false` (after printing why) when h11 is missing outside
/// CI; an issue is recorded when it is missing and CI=true.
func h11IsAvailable(_ test: String) -> Bool {
    if pythonWithH11 != nil { return true }
    if ProcessInfo.processInfo.environment["CI"] == "true" {
        Issue.record("h11 is missing (CI=true): run scripts/ensure-deps.sh (apt-get install python3-h11)")
    } else {
        print("SKIPPED \(test): Python's h11 is missing (scripts/ensure-deps.sh installs python3-h11)")
    }
    return false
}

struct ProcessRunError: Error, CustomStringConvertible {
    let description: String
}

/// Runs `executable` with `arguments` (`runChildProcess`), stdout read until end of file or
/// `timeout`, stderr to a temporary file; returns the exit status (128 + signal) and both
/// outputs. Throws when it timed out.
func runProcess(
    _ executable: String, _ arguments: [String], timeout: Duration
) throws -> (status: Int32, output: [UInt8], errors: String) {
    let errorPath = NSTemporaryDirectory() + "h11-stderr-\(getpid())-\(UInt64.random(in: 0...UInt64.max))"
    defer { unlink(errorPath) }
    let run = try runChildProcess(
        executable, arguments: arguments, environment: ["PYTHONDONTWRITEBYTECODE": "1"],
        standardErrorPath: errorPath, standardInputFromNull: true, timeout: timeout)
    let errors = (try? String(contentsOfFile: errorPath, encoding: .utf8)) ?? ""
    if run.timedOut {
        throw ProcessRunError(description: "\(executable) timed out after \(timeout); stderr: \(errors)")
    }
    return (run.status, run.output, errors)
}

/// Runs the oracle in `mode` over `cases` (one run for all), returning one JSON object per case.
func runH11Oracle(mode: String, cases: [String]) throws -> [[String: Any]] {
    guard let python = pythonWithH11 else { throw ProcessRunError(description: "no Python with h11") }
    let path = NSTemporaryDirectory() + "h11-cases-\(getpid())-\(UInt64.random(in: 0...UInt64.max)).txt"
    defer { unlink(path) }
    try Data((cases.joined(separator: "\n") + "\n").utf8).write(to: URL(fileURLWithPath: path))
    let run = try runProcess(python, [h11OracleScript, mode, path], timeout: .seconds(300))
    guard run.status == 0 else {
        throw ProcessRunError(description: "h11 oracle exited \(run.status): \(run.errors.suffix(2000))")
    }
    var results: [[String: Any]] = []
    for line in run.output.split(separator: UInt8(ascii: "\n")) {
        guard let object = try JSONSerialization.jsonObject(with: Data(line)) as? [String: Any] else {
            throw ProcessRunError(description: "oracle printed a line that is not an object")
        }
        results.append(object)
    }
    guard results.count == cases.count else {
        throw ProcessRunError(description: "oracle answered \(results.count) of \(cases.count) cases: \(run.errors.suffix(2000))")
    }
    return results
}

func hexString(_ bytes: some Sequence<UInt8>) -> String {
    let digits = Array("0123456789abcdef".utf8)
    var out: [UInt8] = []
    for byte in bytes {
        out.append(digits[Int(byte >> 4)])
        out.append(digits[Int(byte & 15)])
    }
    return String(decoding: out, as: UTF8.self)
}

func bytesFromHex(_ text: String) -> [UInt8] {
    var out: [UInt8] = []
    out.reserveCapacity(text.utf8.count / 2)
    var high: UInt8?
    for c in text.utf8 {
        let v: UInt8 =
            switch c {
            case 0x30...0x39: c - 0x30
            case 0x61...0x66: c - 0x61 + 10
            case 0x41...0x46: c - 0x41 + 10
            default: 0
            }
        if let h = high {
            out.append(h << 4 | v)
            high = nil
        } else {
            high = v
        }
    }
    return out
}

/// Bytes shown as a Swift-like string literal (for failure messages).
func escaped(_ bytes: some Sequence<UInt8>) -> String {
    var out = ""
    for byte in bytes {
        switch byte {
        case 0x0D: out += "\\r"
        case 0x0A: out += "\\n"
        case 0x09: out += "\\t"
        case 0x5C: out += "\\\\"
        case 0x22: out += "\\\""
        case 0x20...0x7E: out.unicodeScalars.append(Unicode.Scalar(byte))
        default: out += "\\x" + (byte < 16 ? "0" : "") + String(byte, radix: 16)
        }
    }
    return "\"" + out + "\""
}

// MARK: - Verdicts

/// One accepted request, as both sides report it.
struct AcceptedRequest: Equatable, CustomStringConvertible {
    struct Field: Equatable {
        var name: [UInt8]
        var value: [UInt8]
    }

    var method: [UInt8]
    var target: [UInt8]
    var version: String  // "1.0" or "1.1" (1.x, x ≥ 1, is 1.1)
    var fields: [Field]
    var chunked: Bool
    var length: Int64  // for Content-Length framing (no framing: 0)
    var body: [UInt8]
    var consumed: Int

    var description: String {
        "\(escaped(method)) \(escaped(target)) \(version), \(fields.map { escaped($0.name) + ": " + escaped($0.value) }.joined(separator: ", ")), \(chunked ? "chunked" : "length \(length)"), body \(body.count) bytes, consumed \(consumed)"
    }
}

enum Verdict: CustomStringConvertible {
    case accept(AcceptedRequest)
    case reject(String)
    case incomplete

    var description: String {
        switch self {
        case .accept(let request): "accept(\(request))"
        case .reject(let why): "reject(\(why))"
        case .incomplete: "incomplete"
        }
    }

    var kind: String {
        switch self {
        case .accept: "accept"
        case .reject: "reject"
        case .incomplete: "incomplete"
        }
    }
}

/// What our parser and decoder say about `bytes`, and our error if any.
func ourVerdict(_ bytes: [UInt8]) -> (Verdict, RequestHeadError?, ChunkedBodyError?) {
    var parser = RequestHeadParser()
    let head: RequestHead
    let headLength: Int
    do {
        let result = try bytes.withUnsafeBytes { try parser.parse($0) }
        guard case .complete(let h, let consumed) = result else { return (.incomplete, nil, nil) }
        head = h
        headLength = consumed
    } catch let error as RequestHeadError {
        return (.reject("\(error)"), error, nil)
    } catch {
        return (.reject("\(error)"), nil, nil)
    }
    var fields = head.fields.map {
        AcceptedRequest.Field(name: Array(head.bytes[$0.name]), value: Array(head.bytes[$0.value]))
    }
    // h11's normalization, applied to ours: one Content-Length field (the first), its value the
    // list's one element; the Transfer-Encoding value lowercased.
    var sawContentLength = false
    fields = fields.compactMap { field in
        var field = field
        if RefToken.equalsLowercased(field.name[...], RefToken.contentLength) {
            if sawContentLength { return nil }
            sawContentLength = true
            if let first = refListElements(field.value, in: 0..<field.value.count).first(where: { _ in true }) {
                field.value = Array(field.value[first])
            }
        } else if RefToken.equalsLowercased(field.name[...], RefToken.transferEncoding) {
            field.value = field.value.map(ASCII.lower)
        }
        return field
    }
    var request = AcceptedRequest(
        method: Array(head.bytes[head.methodRange]), target: Array(head.bytes[head.targetRange]),
        version: head.version == .http1_0 ? "1.0" : "1.1", fields: fields, chunked: false, length: 0, body: [],
        consumed: headLength)
    switch head.framing {
    case .none:
        break
    case .contentLength(let length):
        request.length = length
        guard Int64(bytes.count - headLength) >= length else { return (.incomplete, nil, nil) }
        request.body = Array(bytes[headLength..<(headLength + Int(length))])
        request.consumed += Int(length)
    case .chunked:
        request.chunked = true
        let outcome = decodeChunked([Array(bytes[headLength...])], limits: ChunkedLimits())
        switch outcome.end {
        case .complete(let consumed):
            request.body = outcome.content
            request.consumed += consumed
        case .error(let error):
            return (.reject("\(error)"), nil, error)
        case .incomplete:
            return (.incomplete, nil, nil)
        case .stuck:
            return (.reject("decoder stuck"), nil, nil)
        }
    }
    return (.accept(request), nil, nil)
}

/// h11's verdict from the oracle's JSON, and, for an incomplete case, h11's verdict on the
/// case with CRLF CRLF appended (`completed`).
func h11Verdict(_ object: [String: Any]) -> (Verdict, completed: Verdict?) {
    switch object["r"] as? String {
    case "accept":
        let headers = (object["headers"] as? [[String]]) ?? []
        var version = (object["version"] as? String) ?? "?"
        if version.hasPrefix("1."), version != "1.0" { version = "1.1" }
        let request = AcceptedRequest(
            method: bytesFromHex(object["method"] as? String ?? ""),
            target: bytesFromHex(object["target"] as? String ?? ""),
            version: version,
            fields: headers.map { .init(name: bytesFromHex($0.first ?? ""), value: bytesFromHex($0.last ?? "")) },
            chunked: (object["framing"] as? String) == "chunked",
            length: (object["length"] as? NSNumber)?.int64Value ?? -1,
            body: bytesFromHex(object["body"] as? String ?? ""),
            consumed: (object["consumed"] as? Int) ?? -1)
        return (.accept(request), nil)
    case "reject":
        return (.reject((object["error"] as? String) ?? "?"), nil)
    case "incomplete":
        let completed: Verdict? =
            switch object["completed"] as? String {
            case "reject": .reject((object["completed_error"] as? String) ?? "?")
            case "incomplete": .incomplete
            case "accept": .accept(AcceptedRequest(method: [], target: [], version: "", fields: [], chunked: false, length: 0, body: [], consumed: 0))
            default: nil
            }
        return (.incomplete, completed)
    default:
        return (.reject("oracle: \(object)"), nil)
    }
}

// MARK: - Allowed disagreements

/// Where h11 0.14 knowingly differs from the rules issue 13 demands (RFC 9112 / RFC 9110).
/// Each case names the rule; `classify` puts a disagreement in one, or in none (a failure).
enum AllowedDisagreement: String, CaseIterable {
    // h11 more lenient than the issue's rules (we reject, h11 accepts or waits for more):
    /// RFC 9112 §5.2: obs-fold → 400 (the issue: "obsolete line folding"); h11 unfolds it,
    /// in the head and in trailers.
    case obsFold = "obs-fold rejected (RFC 9112 §5.2); h11 unfolds"
    /// RFC 9112 §2.2: a bare LF in the head or a trailer → 400 (the issue); h11 takes LF as
    /// a line end.
    case bareLF = "bare LF line end rejected (RFC 9112 §2.2); h11 accepts LF"
    /// RFC 9112 §2.3 + issue: a major version other than 1 → 505; h11 parses any D.D.
    case majorVersion = "major version != 1 gets 505; h11 accepts any digit.digit"
    /// Issue: HTTP/1.x, x > 1, is handled as 1.1, so it needs Host (RFC 9112 §3.2); h11
    /// requires Host only for the literal 1.1.
    case hostForHTTP1x = "HTTP/1.x (x>1) without Host rejected as 1.1; h11 checks only 1.1"
    /// RFC 9110 §7.2 / RFC 9112 §3.2: an invalid Host value → 400; h11 does not check it.
    case hostSyntax = "invalid Host value rejected (RFC 9110 §7.2); h11 does not validate Host"
    /// RFC 9112 §3.2: authority form only with CONNECT, asterisk only with OPTIONS, a valid
    /// authority in absolute form; h11 takes any visible-ASCII target.
    case targetForm = "target form / absolute-form authority (RFC 9112 §3.2); h11 does not check"
    /// RFC 9110 §10.1.1: an expectation other than 100-continue → 417; h11 leaves Expect alone.
    case expectation = "Expect other than 100-continue gets 417 (RFC 9110 §10.1.1); h11 ignores Expect"
    /// RFC 9112 §6.3 (smuggling): Content-Length with Transfer-Encoding → 400; h11 lets
    /// Transfer-Encoding win.
    case contentLengthWithTransferEncoding = "CL with TE rejected (RFC 9112 §6.3); h11 lets TE win"
    /// RFC 9112 §6.1: Transfer-Encoding in an HTTP/1.0 request → 400; h11 accepts it.
    case transferEncodingInHTTP10 = "TE in HTTP/1.0 rejected (RFC 9112 §6.1); h11 accepts"
    /// RFC 9110 §5.5: a control character (other than HTAB) in a field value → 400; h11's
    /// field-vchar is [^\x00\s], so it accepts \x01–\x08, \x0E–\x1F and \x7F (trailers too).
    case controlInFieldValue = "CTL in a field value rejected (RFC 9110 §5.5); h11 accepts CTLs but NUL/\\s"
    /// RFC 9110 §8.6: Content-Length past 2⁶³−1 → 400; h11 has Python's unbounded ints.
    case contentLengthOverflow = "Content-Length past 2^63-1 rejected; h11 waits for the body"
    /// RFC 9112 §7.1.1: chunk-ext = *( BWS ";" BWS name [ BWS "=" BWS value ] ) with token /
    /// quoted-string, no whitespace before CRLF; h11 accepts anything after ";", and OWS
    /// before the CRLF.
    case chunkExtensionSyntax = "chunk extension / junk after size rejected (RFC 9112 §7.1.1); h11 takes ';.*' and OWS"
    /// RFC 9112 §7.1: a chunk size past 2⁶³−1 → 400; h11 (≤ 20 hex digits) waits for the data.
    case chunkSizeOverflow = "chunk size past 2^63-1 rejected; h11 waits for the data"
    // h11 stricter than the issue's rules (we accept, h11 rejects):
    /// RFC 9112 §2.2: a server SHOULD ignore at least one empty line before the request line;
    /// h11 rejects it ("no request line received").
    case leadingEmptyLine = "empty line(s) before the request line accepted (RFC 9112 §2.2 SHOULD); h11 rejects"
    /// RFC 9112 §6.1, §7 / RFC 9110 §5.6.1: Transfer-Encoding is a list (empty elements
    /// allowed) of codings with parameters; h11 accepts only the exact value "chunked".
    case transferEncodingList = "TE list with empty elements / parameters accepted; h11 wants exactly 'chunked'"
    /// RFC 9112 §7.1.1: BWS before ";" in a chunk extension is allowed; h11's chunk_header
    /// regex wants ";" right after the size.
    case chunkExtensionBWS = "BWS before ';' in a chunk line accepted (RFC 9112 §7.1.1); h11 rejects"
    /// RFC 9112 §7.1: chunk-size = 1*HEXDIG; we take up to 32 digits (leading zeros), h11 20.
    case chunkSizeDigits = "chunk size of 21-32 hex digits accepted; h11 takes at most 20"
    /// Trailers are discarded (RFC 9112 §7.1.2 lets a recipient ignore them); h11 applies its
    /// Content-Length / Transfer-Encoding checks to trailer fields too.
    case framingFieldsInTrailers = "CL/TE fields in trailers ignored; h11 validates them"
    // Different timing, the same verdict once complete (we reject at the first bad byte):
    /// h11 parses a head only once its empty line arrived, a chunk line once its CRLF arrived,
    /// trailers once their empty line arrived; we reject at the first bad byte. Counted when
    /// h11, given the case plus CRLF CRLF, rejects too (for a head error: not because of the
    /// body those bytes then start).
    case earlyRejection = "we reject at the first bad byte; h11 waits for the end of the line or head, then rejects"
    /// h11 rejects a head whose first byte is below 0x21 before the line ends; we wait for
    /// the line (and reject it then, unless it is an allowed empty line).
    case h11EarlyRejection = "h11 rejects a first byte < 0x21 at once; we wait for the line"
}

/// The allowed rule a disagreement falls under, or nil.
func classify(
    _ bytes: [UInt8], ours: Verdict, headError: RequestHeadError?, chunkedError: ChunkedBodyError?,
    theirs: Verdict, completed: Verdict?
) -> AllowedDisagreement? {
    let text = String(decoding: bytes.map { $0 >= 0x80 ? UInt8(ascii: "?") : $0 }, as: UTF8.self)
    let head = text.components(separatedBy: "\r\n\r\n").first ?? text
    let lowerHead = head.lowercased()
    let headEnd = RequestGenerator.find(bytes, [0x0D, 0x0A, 0x0D, 0x0A]) ?? bytes.count
    // Control characters h11's field-vchar ([^\x00\s]) lets through.
    func hasH11Control(_ part: ArraySlice<UInt8>) -> Bool {
        part.contains { ($0 < 0x20 && ![0x00, 0x09, 0x0A, 0x0B, 0x0C, 0x0D].contains($0)) || $0 == 0x7F }
    }
    switch (ours, theirs) {
    case (.reject, .accept), (.reject, .incomplete):
        if let rule = ruleForOurRejection() { return rule }
        // h11 would reject the head too once it is complete (not its body: a body error is
        // a different verdict reached for a different reason).
        if case .incomplete = theirs, case .reject(let why)? = completed, chunkedError != nil || !why.contains("chunk") {
            return .earlyRejection
        }
        return nil
    case (.accept, .reject), (.incomplete, .reject):
        if let first = bytes.first, first < 0x21, case .incomplete = ours { return .h11EarlyRejection }
        if bytes.starts(with: [0x0D, 0x0A]) { return .leadingEmptyLine }
        if case .reject(let why) = theirs, why.contains("Transfer-Encoding"), lowerHead.contains("transfer-encoding"),
            lowerHead.range(of: #"(^|\r\n)transfer-encoding:[ \t]*chunked[ \t]*(\r\n|$)"#, options: .regularExpression) == nil
        {
            return .transferEncodingList
        }
        if case .reject(let why) = theirs, why.contains("illegal chunk header") {
            // The chunk line h11 quotes: BWS before ";", or more than 20 digits.
            if why.range(of: #"b'[0-9A-Fa-f]+[ \t]+;"#, options: .regularExpression) != nil { return .chunkExtensionBWS }
            if why.range(of: #"b'[0-9A-Fa-f]{21,}"#, options: .regularExpression) != nil { return .chunkSizeDigits }
        }
        let trailerPart = String(decoding: bytes[headEnd...], as: UTF8.self).lowercased()
        if case .reject(let why) = theirs, why.contains("Content-Length") || why.contains("Transfer-Encoding"),
            case .accept(let request) = ours, request.chunked,
            trailerPart.contains("content-length") || trailerPart.contains("transfer-encoding")
        {
            return .framingFieldsInTrailers
        }
        return nil
    default:
        return nil
    }

    func ruleForOurRejection() -> AllowedDisagreement? {
        if let headError {
            switch headError {
            case .obsoleteLineFolding: return .obsFold
            case .bareLF: return .bareLF
            case .unsupportedVersion: return .majorVersion
            case .missingHost:
                if let line = head.split(separator: "\r\n").first(where: { !$0.isEmpty }),
                    line.hasSuffix("HTTP/1.1") == false, line.range(of: #"HTTP/1\.[1-9]$"#, options: .regularExpression) != nil
                {
                    return .hostForHTTP1x
                }
            case .invalidHost: return .hostSyntax
            case .invalidTargetForm: return .targetForm
            case .invalidTarget:
                // A bad authority in an absolute-form target (visible ASCII otherwise: h11's rule).
                if let line = head.split(separator: "\r\n").first(where: { !$0.isEmpty }) {
                    let parts = line.split(separator: " ", omittingEmptySubsequences: false)
                    if parts.count == 3, parts[1].contains("://"),
                        parts[1].utf8.allSatisfy({ ASCII.isVisible($0) })
                    {
                        return .targetForm
                    }
                }
            case .unsupportedExpectation: return .expectation
            case .contentLengthWithTransferEncoding: return .contentLengthWithTransferEncoding
            case .transferEncodingInHTTP10: return .transferEncodingInHTTP10
            case .invalidFieldValue:
                if hasH11Control(bytes[..<headEnd]) { return .controlInFieldValue }
            case .invalidContentLength:
                if lowerHead.range(of: #"content-length:[ \t]*[0-9]{19,}"#, options: .regularExpression) != nil {
                    return .contentLengthOverflow
                }
            default:
                break
            }
        }
        if let chunkedError {
            switch chunkedError {
            case .obsoleteLineFoldingInTrailer: return .obsFold
            case .bareLF:
                // In a trailer line h11 takes LF as a line end.
                return .bareLF
            case .invalidChunkExtension, .junkAfterChunkSize: return .chunkExtensionSyntax
            case .bareCR:
                // A bare CR after ";" on a chunk line: h11's ";.*" takes it.
                let body = String(decoding: bytes[headEnd...].map { $0 >= 0x80 ? UInt8(ascii: "?") : $0 }, as: UTF8.self)
                if body.range(of: #"(^|\n)[0-9A-Fa-f]+;[^\r\n]*\r[^\n]"#, options: .regularExpression) != nil {
                    return .chunkExtensionSyntax
                }
            case .chunkSizeOverflow: return .chunkSizeOverflow
            case .invalidTrailerField:
                if hasH11Control(bytes[headEnd...]) { return .controlInFieldValue }
            default:
                break
            }
        }
        return nil
    }
}

// MARK: - Generating requests

/// Seeded requests: valid ones from grammar pieces, then structured and byte-level mutations.
struct RequestGenerator {
    var random: SplitMix64
    /// The origin-form paths requests use (the fuzz test uses its handler's).
    var paths = RequestGenerator.paths

    /// A request as lines (without CRLF) and a body; serialized with CRLF unless mutated.
    struct Request {
        var leading: [UInt8] = []
        var requestLine: [UInt8]
        var fields: [[UInt8]]
        var body: [UInt8]
        var after: [UInt8] = []  // a pipelined request after this one
        var raw: [UInt8]?  // the whole case, when a mutation wrote it out itself

        var bytes: [UInt8] {
            if let raw { return raw }
            var out = leading + requestLine + [0x0D, 0x0A]
            for field in fields { out += field + [0x0D, 0x0A] }
            return out + [0x0D, 0x0A] + body + after
        }
    }

    static let methods = ["GET", "GET", "GET", "POST", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "TRACE", "PROPFIND", "X-Custom_1!"]
    static let paths = [
        "/", "/index.html", "/a/b/c", "/search?q=swift&lang=en", "/%7Euser/", "/p;params", "/a?b=c#frag",
        "/api/v1/items/42", "/x?y=%20z", "/~!$&'()*+,;=:@", "/plaintext", "/json",
    ]
    static let absolute = [
        "http://example.com/", "http://example.com:8080/x?y", "https://[::1]:443/p", "http://a", "http://a.b-c.d/e",
    ]
    static let hosts = ["example.com", "example.com:8080", "127.0.0.1", "[::1]:80", "a", "", "localhost:1"]
    static let fieldNames = [
        "Accept", "User-Agent", "X-Request-Id", "Cache-Control", "Cookie", "accept-encoding", "X_underscore",
        "!#$%&'*+-.^_`|~0", "Authorization", "If-None-Match", "Referer", "DNT",
    ]
    static let fieldValues = [
        "*/*", "text/html, application/json;q=0.9", "curl/8.0", "no-cache", "a=b; c=d", "gzip, deflate",
        "Bearer abc.def", "\"etag\"", "v1.2 (x) [y] {z}", "1", "",
    ]
    static let extensions = [";a", ";name=value", ";q=\"quoted \\\" str\"", ";a=1;b", ";ext=\"\"", ";A_B=c!d"]
    static let trailerNames = ["X-Checksum", "Expires", "X-T", "Server-Timing"]

    static func find(_ haystack: [UInt8], _ needle: [UInt8]) -> Int? {
        guard haystack.count >= needle.count else { return nil }
        for i in 0...(haystack.count - needle.count) where haystack[i..<(i + needle.count)].elementsEqual(needle) {
            return i
        }
        return nil
    }

    mutating func below(_ bound: Int) -> Int { random.below(bound) }
    mutating func chance(_ percent: Int) -> Bool { random.below(100) < percent }
    mutating func pick<T>(_ items: [T]) -> T { items[random.below(items.count)] }

    mutating func fieldValueBytes() -> [UInt8] {
        if chance(70) { return Array(pick(Self.fieldValues).utf8) }
        var out: [UInt8] = []
        for _ in 0..<below(20) {
            switch below(10) {
            case 0: out.append(0x80 + UInt8(below(128)))  // obs-text
            case 1: out.append(chance(50) ? 0x20 : 0x09)
            default: out.append(0x21 + UInt8(below(94)))
            }
        }
        // No whitespace at the ends: both sides strip OWS, but then the inner value differs only
        // in what both agree on.
        return out
    }

    mutating func ows() -> [UInt8] {
        switch below(6) {
        case 0: []
        case 1: [0x20, 0x20]
        case 2: [0x09]
        default: [0x20]
        }
    }

    mutating func chunkedBody() -> [UInt8] {
        var out: [UInt8] = []
        for _ in 0..<below(5) {
            let size = 1 + below(40)
            var digits = String(size, radix: 16)
            if chance(30) { digits = digits.uppercased() }
            if chance(15) { digits = String(repeating: "0", count: 1 + below(4)) + digits }
            out += Array(digits.utf8)
            if chance(20) { out += Array(pick(Self.extensions).utf8) }
            out += [0x0D, 0x0A]
            for _ in 0..<size { out.append(UInt8(truncatingIfNeeded: random.next())) }
            out += [0x0D, 0x0A]
        }
        out += Array("0".utf8)
        if chance(10) { out += Array(pick(Self.extensions).utf8) }
        out += [0x0D, 0x0A]
        if chance(25) {
            for _ in 0..<(1 + below(3)) {
                out += Array(pick(Self.trailerNames).utf8) + [UInt8(ascii: ":")] + ows() + fieldValueBytes() + [0x0D, 0x0A]
            }
        }
        return out + [0x0D, 0x0A]
    }

    mutating func valid() -> Request {
        let method = pick(Self.methods)
        var target = pick(paths)
        switch below(20) {
        case 0: target = pick(Self.absolute)
        case 1 where method == "OPTIONS": target = "*"
        default: break
        }
        var finalMethod = method
        if chance(3) {
            finalMethod = "CONNECT"
            target = "example.com:443"
        }
        let version = chance(85) ? "HTTP/1.1" : "HTTP/1.0"
        var fields: [[UInt8]] = []
        if version == "HTTP/1.1" || chance(50) {
            fields.append(Array("Host:".utf8) + ows() + Array(pick(Self.hosts).utf8))
        }
        for _ in 0..<below(5) {
            fields.insert(Array(pick(Self.fieldNames).utf8) + [UInt8(ascii: ":")] + ows() + fieldValueBytes() + ows(), at: below(fields.count + 1))
        }
        if chance(15) { fields.append(Array("Connection: \(pick(["close", "keep-alive", "Upgrade, close", "Keep-Alive"]))".utf8)) }
        var body: [UInt8] = []
        switch below(4) {
        case 0:
            let length = below(40)
            for _ in 0..<length { body.append(UInt8(truncatingIfNeeded: random.next())) }
            fields.append(Array("Content-Length:".utf8) + ows() + Array(String(length).utf8))
        case 1 where version == "HTTP/1.1":
            body = chunkedBody()
            fields.append(Array("\(pick(["Transfer-Encoding", "transfer-encoding"])): \(pick(["chunked", "Chunked", "CHUNKED"]))".utf8))
        default:
            break
        }
        if !body.isEmpty, version == "HTTP/1.1", chance(10) { fields.append(Array("Expect: 100-continue".utf8)) }
        var request = Request(requestLine: Array("\(finalMethod) \(target) \(version)".utf8), fields: fields, body: body)
        if chance(10) { request.after = Array("GET /next HTTP/1.1\r\nHost: a\r\n\r\n".utf8) }
        return request
    }

    /// One structured mutation: the rules of issue 13's Protocol and Hostile-clients lists.
    mutating func mutate(_ request: inout Request) {
        switch below(22) {
        case 0 where !request.fields.isEmpty:  // duplicate a field line
            let i = below(request.fields.count)
            request.fields.insert(request.fields[i], at: below(request.fields.count + 1))
        case 1 where !request.fields.isEmpty:  // remove a field line (Host too)
            request.fields.remove(at: below(request.fields.count))
        case 2 where !request.fields.isEmpty:  // obs-fold
            request.fields.insert(Array("\(pick([" ", "\t", "  "]))folded".utf8), at: 1 + below(request.fields.count))
        case 3 where !request.fields.isEmpty:  // whitespace before the colon
            let i = below(request.fields.count)
            if let colon = request.fields[i].firstIndex(of: UInt8(ascii: ":")) {
                request.fields[i].insert(pick([0x20, 0x09]), at: colon)
            }
        case 4:  // a whitespace-led line right after the request line
            request.fields.insert(Array(" X: y".utf8), at: 0)
        case 5:  // Content-Length variants
            let value = pick(["+5", "-1", "5, 5", "5, 6", "0x5", "99999999999999999999", "9223372036854775808", " 3 ", "1 2", ""])
            request.fields.append(Array("Content-Length: \(value)".utf8))
        case 6:  // Transfer-Encoding variants
            let value = pick([
                "chunked", "gzip, chunked", "chunked, gzip", "chunked, chunked", "chunked;q=1", " , chunked", "identity",
                "CHUNKED", "xchunked", "chunked,", "chu nked",
            ])
            request.fields.append(Array("Transfer-Encoding: \(value)".utf8))
            if chance(50) { request.body = chunkedBody() }
        case 7:  // CL and TE together
            request.fields.append(Array("Content-Length: \(request.body.count)".utf8))
            request.fields.append(Array("Transfer-Encoding: chunked".utf8))
        case 8:  // versions
            let version = pick(["HTTP/1.2", "HTTP/2.0", "HTTP/0.9", "HTTP/1.10", "http/1.1", "HTTP/1", "HTTP/3.0", "HTTP/1.0", "HTTP/1.9", "HTTP/11"])
            if let space = request.requestLine.lastIndex(of: 0x20) {
                request.requestLine = Array(request.requestLine[...space]) + Array(version.utf8)
            }
        case 9:  // targets
            let target = pick([
                "*", "example.com:80", "http:///x", "http://exa@mple/", "http://[::1/", "//a", "a/b", "/a\u{7F}b", "/\u{1}",
                "http://a:b/", "/%", "http://a:80:90/",
            ])
            let parts = request.requestLine.split(separator: 0x20, omittingEmptySubsequences: false)
            if parts.count == 3 { request.requestLine = Array(parts[0]) + [0x20] + Array(target.utf8) + [0x20] + Array(parts[2]) }
        case 10:  // methods
            let method = pick(["CONNECT", "OPTIONS", "G@T", "GET\u{0}", "", "get"])
            if let space = request.requestLine.firstIndex(of: 0x20) {
                request.requestLine = Array(method.utf8) + Array(request.requestLine[space...])
            }
        case 11:  // Host variants
            let value = pick(["a b", "a/b", "user@a", "[::1", "a:80:90", ":80", "a:x", "b", "[::1]", "a:"])
            request.fields.append(Array("Host: \(value)".utf8))
        case 12:  // Expect
            request.fields.append(Array("Expect: \(pick(["100-continue", "200-ok", "100-continue, x", "", "100-CONTINUE"]))".utf8))
        case 13:  // chunked body with odd sizes
            request.fields.removeAll { String(decoding: $0, as: UTF8.self).lowercased().hasPrefix("content-length") }
            request.fields.append(Array("Transfer-Encoding: chunked".utf8))
            let size = pick(["5", "4", "6", "ffffffffffffffffffff", "8000000000000000", "00000000000000000000005", "000000000000000000005", " 5", "5 ", "5\t", "-5", "0x5", "g"])
            request.body = Array("\(size)\r\nhello\r\n0\r\n\r\n".utf8)
        case 14:  // chunked body with odd extensions
            request.fields.removeAll { String(decoding: $0, as: UTF8.self).lowercased().hasPrefix("content-length") }
            request.fields.append(Array("Transfer-Encoding: chunked".utf8))
            let ext = pick([";", ";=", ";a=", "; a", " ;a", ";a b", ";a=\"b", ";a=b c", ";a=\"\u{1}\"", ";a=b;", ";a@b", ";\u{7F}"])
            request.body = Array("5\(ext)\r\nhello\r\n0\r\n\r\n".utf8)
        case 15:  // chunked body with odd trailers
            request.fields.removeAll { String(decoding: $0, as: UTF8.self).lowercased().hasPrefix("content-length") }
            request.fields.append(Array("Transfer-Encoding: chunked".utf8))
            let trailer = pick(["X: a\r\n b", "NoColon", "X : a", ": a", "X: a\u{1}", "X: a\u{0}", "Content-Length: x", "X:", "X-\u{80}: a", "X: \u{80}"])
            request.body = Array("5\r\nhello\r\n0\r\n\(trailer)\r\n\r\n".utf8)
        case 16:  // bare LF / CR in the chunked framing
            request.fields.removeAll { String(decoding: $0, as: UTF8.self).lowercased().hasPrefix("content-length") }
            request.fields.append(Array("Transfer-Encoding: chunked".utf8))
            request.body = Array(pick(["5\nhello\r\n0\r\n\r\n", "5\r\nhello\n0\r\n\r\n", "5\r\nhello\r\n0\n\r\n", "5\r\nhello\r\n0\r\n\n", "5\rhello\r\n0\r\n\r\n", "5\r\nhelloXX0\r\n\r\n", "5\r\nhello\r\n0\r\nX: a\n\r\n"]).utf8)
        case 17:  // leading empty lines
            request.leading = Array(pick(["\r\n", "\r\n\r\n", "\n", " \r\n"]).utf8)
        case 18:  // bare LF line ends in the head
            var bytes = request.leading + request.requestLine + [0x0A]
            for field in request.fields { bytes += field + [0x0A] }
            request.raw = bytes + [0x0A] + request.body + request.after
        case 19:  // control characters in a field value
            request.fields.append(Array("X-Ctl: a".utf8) + [pick([0x01, 0x08, 0x0B, 0x0C, 0x1F, 0x7F, 0x00, 0x0D])] + Array("b".utf8))
        case 20:  // Content-Length that does not match the body
            request.fields.removeAll { String(decoding: $0, as: UTF8.self).lowercased().hasPrefix("transfer-encoding") }
            request.fields.removeAll { String(decoding: $0, as: UTF8.self).lowercased().hasPrefix("content-length") }
            request.fields.append(Array("Content-Length: \(max(0, request.body.count + below(7) - 3))".utf8))
        default:  // TE in HTTP/1.0
            request.requestLine = Array(String(decoding: request.requestLine, as: UTF8.self).replacingOccurrences(of: "HTTP/1.1", with: "HTTP/1.0").utf8)
            request.fields.append(Array("Transfer-Encoding: chunked".utf8))
            request.body = Array("3\r\nabc\r\n0\r\n\r\n".utf8)
        }
    }

    /// One byte-level mutation: a flipped byte, an inserted CR/LF/NUL/space/tab, a deletion.
    mutating func mutateBytes(_ bytes: inout [UInt8]) {
        guard !bytes.isEmpty else { return }
        let position = below(bytes.count)
        let interesting: [UInt8] = [0x0D, 0x0A, 0x00, 0x20, 0x09, 0x3A, 0x7F, 0x80, 0x2C, 0x3B]
        switch below(3) {
        case 0: bytes[position] = chance(50) ? pick(interesting) : UInt8(truncatingIfNeeded: random.next())
        case 1: bytes.insert(pick([0x0D, 0x0A, 0x00, 0x20, 0x09]), at: position)
        default: bytes.remove(at: position)
        }
    }

    /// The next case: valid (40 %), structurally mutated (40 %), byte-mutated (20 %).
    mutating func next() -> [UInt8] {
        var request = valid()
        let roll = below(10)
        if roll >= 4 && roll < 8 {
            for _ in 0..<(1 + below(2)) { mutate(&request) }
        }
        var bytes = request.bytes
        if roll >= 8 {
            for _ in 0..<(1 + below(3)) { mutateBytes(&bytes) }
        }
        return bytes
    }
}

// MARK: - The test

@Suite("H11 differential")
struct H11DifferentialTests {
    @Test func parserAndChunkedDecoderAgreeWithH11() throws {
        guard h11IsAvailable("H11 differential") else { return }
        // H11_DIFF_SEED=<n> runs another seed (for exploring); the default is fixed.
        let seed = ProcessInfo.processInfo.environment["H11_DIFF_SEED"].flatMap { UInt64($0) } ?? 0x1_3_11_2026
        var generator = RequestGenerator(random: SplitMix64(seed: seed))
        let count = 1500
        var cases: [[UInt8]] = []
        // Hand-picked cases first: one per allowed rule and the plain ones.
        let fixed = [
            "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b\r\nhello\r\n0\r\nX: y\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabcGET",
            "\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
        ]
        cases += fixed.map { Array($0.utf8) }
        while cases.count < count { cases.append(generator.next()) }

        let answers = try runH11Oracle(mode: "requests", cases: cases.map { hexString($0) })
        var agreements: [String: Int] = [:]
        var allowed: [AllowedDisagreement: Int] = [:]
        var examples: [AllowedDisagreement: String] = [:]
        var failures = 0
        for (bytes, answer) in zip(cases, answers) {
            let (ours, headError, chunkedError) = ourVerdict(bytes)
            let (theirs, completed) = h11Verdict(answer)
            switch (ours, theirs) {
            case (.accept(let a), .accept(let b)):
                if a == b {
                    agreements["both accept", default: 0] += 1
                    continue
                }
                failures += 1
                if failures <= 10 { Issue.record("both accept, differently: \(escaped(bytes))\n ours: \(a)\n h11:  \(b)") }
                continue
            case (.reject, .reject):
                agreements["both reject", default: 0] += 1
                continue
            case (.incomplete, .incomplete):
                agreements["both incomplete", default: 0] += 1
                continue
            default:
                break
            }
            if let rule = classify(
                bytes, ours: ours, headError: headError, chunkedError: chunkedError, theirs: theirs, completed: completed)
            {
                allowed[rule, default: 0] += 1
                if examples[rule] == nil { examples[rule] = "\(escaped(bytes.prefix(120))): ours \(ours.kind), h11 \(theirs)" }
                continue
            }
            failures += 1
            if failures <= 10 {
                Issue.record("disagreement outside the allowed list: \(escaped(bytes))\n ours: \(ours)\n h11:  \(theirs)")
            }
        }
        print("H11 differential, seed \(hex(seed)), \(cases.count) cases: \(agreements.sorted { $0.key < $1.key })")
        print("H11 differential, allowed disagreements (\(allowed.values.reduce(0, +)) cases):")
        for rule in AllowedDisagreement.allCases where allowed[rule] != nil {
            print("  \(allowed[rule] ?? 0) × \(rule.rawValue)\n      e.g. \(examples[rule] ?? "")")
        }
        #expect(failures == 0, "\(failures) disagreements outside the allowed list")
        #expect(cases.count >= 1000)
        // Most cases are decided the same way (a bound that catches a generator gone wrong).
        let agreed = agreements.values.reduce(0, +)
        #expect(agreed * 2 > cases.count, "only \(agreed) of \(cases.count) agree")
        #expect((agreements["both accept"] ?? 0) > 200)
        #expect((agreements["both reject"] ?? 0) > 100)
    }
}
