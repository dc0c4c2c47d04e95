// parse-bench: parses request heads in a loop, as the server does (one receive buffer holding
// pipelined copies, each head's storage handed back to the parser), for instruction counts
// under callgrind. Wall-clock figures from it mean little on a shared machine.
//
//   swift build -c release --package-path Benchmarks --product parse-bench
//   strip --strip-debug -o /tmp/parse-bench Benchmarks/.build/release/parse-bench
//   valgrind --tool=callgrind --callgrind-out-file=/dev/null /tmp/parse-bench te 0
//   valgrind --tool=callgrind --callgrind-out-file=/dev/null /tmp/parse-bench te 100000
//   (instructions per parse = difference of the two totals ("Collected") / 100000; the copy
//   without debug info because valgrind 3.19 cannot read the DWARF Swift 6.3 writes). The
//   figure covers the whole loop: parse, reuseStorage, and the loop's own few instructions.
//
// Arguments: `te` (TechEmpower's plaintext request) or `large` (21 field lines, ~1 KB), then
// the number of parses (rounded up to whole buffers of 16 pipelined heads).
@_spi(Benchmarks) import CogenHTTP

let techEmpower =
    "GET /plaintext HTTP/1.1\r\nHost: localhost:8080\r\n"
    + "Accept: text/plain,text/html;q=0.9,application/xhtml+xml;q=0.9,application/xml;q=0.8,*/*;q=0.7\r\n"
    + "Connection: keep-alive\r\n\r\n"

let large =
    "GET /api/v1/users/12345/profile?include=settings,preferences&format=json HTTP/1.1\r\n"
    + "Host: www.example.com\r\n"
    + "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0\r\n"
    + "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8\r\n"
    + "Accept-Language: en-US,en;q=0.5\r\n"
    + "Accept-Encoding: gzip, deflate, br\r\n"
    + "Referer: https://www.example.com/dashboard/overview?tab=activity&range=30d\r\n"
    + "Connection: keep-alive\r\n"
    + "Cookie: session=7f3a9c2e4b1d8f6a0e5c3b2a1d9f8e7c; theme=dark; lang=en; _ga=GA1.2.1234567890.1700000000\r\n"
    + "Upgrade-Insecure-Requests: 1\r\n"
    + "Sec-Fetch-Dest: document\r\n"
    + "Sec-Fetch-Mode: navigate\r\n"
    + "Sec-Fetch-Site: same-origin\r\n"
    + "Sec-Fetch-User: ?1\r\n"
    + "Cache-Control: max-age=0\r\n"
    + "If-None-Match: \"33a64df551425fcc55e4d42a148795d9f25f89d4\"\r\n"
    + "If-Modified-Since: Wed, 21 Oct 2026 07:28:00 GMT\r\n"
    + "X-Requested-With: XMLHttpRequest\r\n"
    + "X-Forwarded-For: 203.0.113.195, 70.41.3.18, 150.172.238.178\r\n"
    + "DNT: 1\r\n"
    + "Priority: u=0, i\r\n"
    + "\r\n"

let arguments = CommandLine.arguments
let text = arguments.count > 1 && arguments[1] == "large" ? large : techEmpower
let parses = arguments.count > 2 ? Int(arguments[2]) ?? 0 : 100_000
let depth = 16
let buffer = Array(repeating: Array(text.utf8), count: depth).flatMap { $0 }

/// The loop, in a function: its parser is a local (a global would add exclusivity checks the
/// server's parser does not have).
func run(parses: Int) -> (done: Int, checksum: Int, failures: Int) {
  var parser = RequestHeadParser()
  var done = 0
  var checksum = 0
  var failures = 0
  buffer.withUnsafeBytes { bytes in
    while done < parses {
        var offset = 0
        while offset < bytes.count {
            do {
                switch try parser.parse(UnsafeRawBufferPointer(rebasing: bytes[offset...])) {
                case .needMoreBytes:
                    failures += 1
                    offset = bytes.count
                case .complete(var head, let consumed):
                    checksum &+= head.fields.count &+ head.targetRange.count
                    parser.reuseStorage(of: &head)
                    offset += consumed
                    done += 1
                }
            } catch {
                failures += 1
                parser.reset()
                offset = bytes.count
            }
        }
    }
  }
  return (done, checksum, failures)
}

let (done, checksum, failures) = run(parses: parses)
print("parses \(done) bytes/head \(text.utf8.count) checksum \(checksum) failures \(failures)")
