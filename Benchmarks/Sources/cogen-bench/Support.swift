import Glibc

// MARK: Clocks

/// Wall time: CLOCK_MONOTONIC, in nanoseconds.
@inline(__always)
func wallNanoseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
}

/// CPU time of the calling thread: CLOCK_THREAD_CPUTIME_ID, in nanoseconds.
@inline(__always)
func threadCPUNanoseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts)
    return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
}

/// Voluntary and involuntary context switches of the calling thread (RUSAGE_THREAD).
func threadContextSwitches() -> (voluntary: Int, involuntary: Int) {
    var usage = rusage()
    // RUSAGE_THREAD (1) is a GNU extension the Glibc module does not export.
    getrusage(__rusage_who_t(1), &usage)
    return (usage.ru_nvcsw, usage.ru_nivcsw)
}

// MARK: Shared state

/// Loop-confined mutable state shared by the coroutines of one run: every coroutine of a
/// scheduler runs on that scheduler's thread, one at a time.
final class Box<State>: @unchecked Sendable {
    var state: State
    init(_ state: State) { self.state = state }
}

/// A deterministic pseudo-random sequence (Knuth's MMIX LCG).
struct LCG {
    private var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        return state >> 33
    }
    /// A value in `range`.
    mutating func next(in range: ClosedRange<Int>) -> Int {
        range.lowerBound + Int(next() % UInt64(range.count))
    }
}

// MARK: System information

func kernelRelease() -> String {
    var names = utsname()
    guard uname(&names) == 0 else { return "unknown" }
    return withUnsafeBytes(of: &names.release) { raw in
        String(cString: raw.baseAddress!.assumingMemoryBound(to: CChar.self))
    }
}

/// Reads a small file of /proc in one go.
func readProcFile(_ path: String) -> String? {
    let fd = open(path, O_RDONLY)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n <= 0 { break }
        bytes.append(contentsOf: chunk[0..<n])
    }
    return String(decoding: bytes, as: UTF8.self)
}

/// Resident set size in bytes: field 2 of /proc/self/statm times the page size.
func residentBytes() -> Int {
    guard let text = readProcFile("/proc/self/statm") else { return -1 }
    let fields = text.split(separator: " ")
    guard fields.count >= 2, let pages = Int(fields[1]) else { return -1 }
    return pages * sysconf(Int32(_SC_PAGESIZE))
}

func writeStandardError(_ text: String) {
    var text = text
    text.withUTF8 { buffer in
        var offset = 0
        while offset < buffer.count {
            let n = write(2, buffer.baseAddress! + offset, buffer.count - offset)
            if n <= 0 { break }
            offset += n
        }
    }
}

// MARK: Number formatting (no Foundation)

/// `value` with `decimals` digits after the point.
func formatNumber(_ value: Double, decimals: Int) -> String {
    guard value.isFinite else { return value.isNaN ? "nan" : (value < 0 ? "-inf" : "inf") }
    var scale = 1.0
    for _ in 0..<decimals { scale *= 10 }
    let scaled = (abs(value) * scale).rounded()
    guard scaled < 9.0e18 else { return "\(value)" }
    let whole = UInt64(scaled)
    let factor = UInt64(scale)
    var text = "\(whole / factor)"
    if decimals > 0 {
        var fraction = "\(whole % factor)"
        while fraction.count < decimals { fraction = "0" + fraction }
        text += "." + fraction
    }
    return (value < 0 && scaled != 0 ? "-" : "") + text
}

func pad(_ text: String, _ width: Int, right: Bool = false) -> String {
    let count = text.count
    guard count < width else { return text }
    let fill = String(repeating: " ", count: width - count)
    return right ? fill + text : text + fill
}

func jsonString(_ text: String) -> String {
    var out = "\""
    for scalar in text.unicodeScalars {
        switch scalar {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        default:
            if scalar.value < 0x20 {
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
    }
    return out + "\""
}

func jsonNumber(_ value: Double) -> String {
    guard value.isFinite else { return "null" }
    return formatNumber(value, decimals: 4)
}
