// http-matrix: the HTTP servers side by side under wrk (issue 14).
//
//   http-matrix [--full] [--hummingbird] [--servers a,b] [--modes m,…] [--turns N]
//               [--duration S] [--warmup S] [--json PATH] [--wrk PATH] [--nginx PATH]
//
// Servers: cogen-http (io_uring), cogen-http-epoll, nginx (Debian's, one process, `return
// 200`, generated config in a temp directory), floor (c-uring-http: the kernel's work
// alone), floor-epoll (c-epoll-http: the same on edge-triggered epoll), cogen-http-spin
// (cogen-http whose loop spins up to 100 µs before it sleeps), hb-http and
// hb-http-nio (Hummingbird 2.28.1 on one event-loop thread; without and with NIO as
// Swift's global executor; only when built).
//
// Load: wrk (one thread) pinned to CPU 1, the server pinned to CPU 0; both inherit this
// process's `nice -20` (setpriority; never a real-time class, whose throttling pauses a
// saturated server ~50 ms a second). TechEmpower's request headers; the pipelined shape
// uses TechEmpower's pipeline.lua (written to the temp directory), depth 16.
//
// Modes (shape @ quota): the server's process sits in a cgroup whose CPU quota is set per
// mode (40 % of a CPU pipelined, 60 % not; "none" lifts it), so that the server, not wrk,
// sets the rate:
//   pipelined@40 256@60 16@60          server-bound (the targets)
//   pipelined@none 256@none 16@none 1@none   unquota'd (1×1 carries the latency target)
// Default: pipelined@40 and 256@60, servers cogen-http, cogen-http-epoll, nginx, 3 turns of
// 3 s (the main job's short table). --full: every mode, with the floors and cogen-http-spin.
// --hummingbird: with hb-http and hb-http-nio.
//
// Method: the servers take turns (forwards, then backwards); within a turn each server
// process serves every mode (a warm-up run of wrk, then the measured one). Per row: req/s,
// p50/p99 (pipelined: the mean latency, connections × depth ÷ req/s, since wrk's
// percentiles are not valid with pipelining), the server's CPU per request (utime+stime
// from /proc/PID/stat over the measured run ÷ the requests wrk counted), wrk's CPU (wait4),
// other processes' CPU, errors (non-2xx/3xx responses + socket errors). The median turn is
// shown; each ratio is the median over the turns of that turn's ratio (paired runs).
import ArgumentParser
import CEchoLinux
import EchoBenchSupport
import Foundation  // JSONEncoder, String(format:)
import Glibc

// MARK: Modes and results

struct Mode: Codable, Hashable {
    var connections: Int
    var depth: Int
    /// Percent of one CPU; nil: no quota.
    var quota: Double?
    var shapeName: String { depth > 1 ? "pipelined" : "\(connections)" }
    var name: String { "\(shapeName)@\(quota.map { String(Int($0)) } ?? "none")" }
    var label: String {
        (depth > 1 ? "\(connections)×\(depth) pipelined" : "\(connections)×1") + ", "
            + (quota.map { "\(Int($0)) % quota" } ?? "no quota")
    }
}

struct WrkResult: Codable {
    var requests: Int
    var seconds: Double
    var requestsPerSecond: Double
    /// p50 and p99 (µs) from --latency; for pipelined runs both are the mean latency.
    var p50Micros: Double?
    var p99Micros: Double?
    var meanLatencyOnly: Bool
    var errors: Int
    var serverCPUMicrosPerRequest: Double?
    var serverCPUPercent: Double?
    var wrkCPUMicrosPerRequest: Double
    var wrkCPUPercent: Double
    var otherCPUPercent: Double?
}

struct Row: Codable {
    var server: String
    var mode: String
    /// One result per turn, in turn order (nil: that run failed).
    var turns: [WrkResult?]
    var errors: [String]
    /// The turn with the median req/s.
    var median: WrkResult? {
        let done = turns.compactMap { $0 }.sorted { $0.requestsPerSecond < $1.requestsPerSecond }
        return done.isEmpty ? nil : done[(done.count - 1) / 2]
    }
}

struct Report: Codable {
    var date: String
    var kernel: String
    var durationSeconds: Int
    var warmupSeconds: Int
    var turns: Int
    var rows: [Row]
    var ratios: [String: [String: Double]]
}

// MARK: The command

struct HTTPMatrix: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "http-matrix", abstract: "Runs the HTTP servers against wrk and compares them (issue 14).")

    static let allServers = [
        "cogen-http", "cogen-http-epoll", "cogen-http-spin", "nginx", "floor", "floor-epoll", "hb-http", "hb-http-nio",
    ]
    /// The order within a turn: each compared pair next to each other.
    static let turnOrder = [
        "hb-http", "hb-http-nio", "cogen-http-spin", "cogen-http", "nginx", "floor", "floor-epoll", "cogen-http-epoll",
    ]
    static let allModes = ["pipelined@40", "256@60", "16@60", "pipelined@none", "256@none", "16@none", "1@none"]

    @Flag(help: "Every mode (four shapes, server-bound and unquota'd), the floors included.")
    var full = false
    @Flag(help: "Add Hummingbird (hb-http, hb-http-nio); they must have been built.")
    var hummingbird = false
    @Option(help: "Comma-separated servers (default: cogen-http, cogen-http-epoll, nginx; --full adds floor, floor-epoll, cogen-http-spin).")
    var servers: String?
    @Option(help: "Comma-separated modes SHAPE@QUOTA: shape pipelined, 256, 16 or 1; quota a percent or none.")
    var modes: String?
    @Option(help: "Turns (each server runs every mode once per turn).")
    var turns = 3
    @Option(help: "Measured seconds per run (whole seconds: wrk's -d).")
    var duration = 3
    @Option(help: "Warm-up seconds before each measured run (0: none).")
    var warmup = 1
    @Option(help: "cogen-http-spin's --spin-microseconds (default: longer than one connection's round trip here, about 50 µs, so that its loop does not sleep between requests).")
    var spinMicroseconds = 100
    @Option(help: "Where to write the JSON results.")
    var json = "http-results.json"
    @Option(help: "The wrk executable.")
    var wrk = "/usr/bin/wrk"
    @Option(help: "The nginx executable.")
    var nginx = "/usr/sbin/nginx"

    var serverList: [String] {
        var list = servers.map { $0.split(separator: ",").map { String($0) } }
            ?? ["cogen-http", "cogen-http-epoll", "nginx"] + (full ? ["floor", "floor-epoll", "cogen-http-spin"] : [])
        if hummingbird { list += ["hb-http", "hb-http-nio"].filter { !list.contains($0) } }
        return list
    }

    var modeList: [Mode] {
        let names = modes.map { $0.split(separator: ",").map { String($0) } }
            ?? (full ? Self.allModes : ["pipelined@40", "256@60"])
        return names.compactMap(Self.parseMode)
    }

    static func parseMode(_ text: String) -> Mode? {
        let parts = text.split(separator: "@")
        guard parts.count == 2 else { return nil }
        let quota: Double? = parts[1] == "none" ? nil : Double(parts[1])
        if parts[1] != "none" {
            guard let quota, (5...100).contains(quota) else { return nil }
        }
        switch parts[0] {
        case "pipelined": return Mode(connections: 256, depth: 16, quota: quota)
        case "256", "16", "1": return Mode(connections: Int(parts[0])!, depth: 1, quota: quota)
        default: return nil
        }
    }

    func validate() throws {
        for server in serverList where !Self.allServers.contains(server) {
            throw ValidationError("unknown server '\(server)'; known: \(Self.allServers.joined(separator: ", "))")
        }
        if let modes {
            for mode in modes.split(separator: ",") where Self.parseMode(String(mode)) == nil {
                throw ValidationError("bad mode '\(mode)': SHAPE@QUOTA, shape pipelined|256|16|1, quota 5…100 or none")
            }
        }
        guard turns >= 1, duration >= 1, warmup >= 0 else {
            throw ValidationError("--turns and --duration must be ≥ 1, --warmup ≥ 0")
        }
    }

    func run() throws {
        let directory = executableDirectory()
        guard access(wrk, X_OK) == 0 else { throw ValidationError("no wrk at \(wrk) (apt-get install wrk)") }
        let cpus = Int(echo_usable_cpus())
        let (serverCPU, loadCPU): (Int32, Int32) = cpus >= 2 ? (0, 1) : (-1, -1)
        if cpus < 2 { warn("only \(cpus) usable CPU: server and wrk share it (no pinning)") }
        raiseDescriptorLimit()
        // nice -20 for this process and so for every child (servers and wrk); never chrt.
        if setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, -20) != 0 {
            warn("setpriority(-20) failed (not root?): running at the default priority")
        }
        var template = Array("/tmp/http-matrix.XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw ValidationError("mkdtemp failed") }
        let temporary = String(cString: made)
        defer { _ = try? FileManager.default.removeItem(atPath: temporary) }
        try Self.pipelineScript.write(toFile: "\(temporary)/pipeline.lua", atomically: true, encoding: .utf8)

        let servers = serverList.filter { server in
            guard let path = executablePath(server, directory: directory), access(path, X_OK) == 0 else {
                warn("\(server): not built or not installed, skipped")
                return false
            }
            return true
        }.sorted { Self.turnOrder.firstIndex(of: $0)! < Self.turnOrder.firstIndex(of: $1)! }
        let modes = modeList
        var results: [String: [String: [WrkResult?]]] = [:]
        var failures: [String: [String: [String]]] = [:]
        for turn in 0..<turns {
            warn("turn \(turn + 1) of \(turns)")
            for server in turn % 2 == 0 ? servers : servers.reversed() {
                let outcome = runServer(server, modes: modes, directory: directory, temporary: temporary,
                                        serverCPU: serverCPU, loadCPU: loadCPU)
                for mode in modes {
                    switch outcome[mode.name] ?? .failure(.failed("not run")) {
                    case .success(let result):
                        results[server, default: [:]][mode.name, default: []].append(result)
                    case .failure(let error):
                        results[server, default: [:]][mode.name, default: []].append(nil)
                        failures[server, default: [:]][mode.name, default: []].append("\(error)")
                    }
                }
            }
        }
        var rows: [Row] = []
        for mode in modes {
            for server in servers {
                rows.append(Row(server: server, mode: mode.name, turns: results[server]?[mode.name] ?? [],
                                errors: failures[server]?[mode.name] ?? []))
            }
        }
        let ratios = computeRatios(rows, modes: modes)
        printTables(rows, modes: modes, ratios: ratios)
        let report = Report(
            date: ISO8601DateFormatter().string(from: Date()), kernel: kernelRelease(), durationSeconds: duration,
            warmupSeconds: warmup, turns: turns, rows: rows, ratios: ratios)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(report).write(to: URL(fileURLWithPath: json))
        print("JSON: \(json)")
    }

    // MARK: One server, every mode

    enum RunError: Error, CustomStringConvertible {
        case failed(String)
        var description: String { if case .failed(let why) = self { why } else { "" } }
    }

    func executablePath(_ server: String, directory: String) -> String? {
        switch server {
        case "cogen-http", "cogen-http-epoll", "cogen-http-spin": "\(directory)/cogen-http"
        case "floor": "\(directory)/c-uring-http"
        case "floor-epoll": "\(directory)/c-epoll-http"
        case "hb-http", "hb-http-nio": "\(directory)/hb-http"
        case "nginx": nginx
        default: nil
        }
    }

    func runServer(_ server: String, modes: [Mode], directory: String, temporary: String,
                   serverCPU: Int32, loadCPU: Int32) -> [String: Result<WrkResult, RunError>]
    {
        var outcome: [String: Result<WrkResult, RunError>] = [:]
        func failAll(_ why: String) -> [String: Result<WrkResult, RunError>] {
            warn("\(server): \(why)")
            return Dictionary(uniqueKeysWithValues: modes.map { ($0.name, .failure(.failed(why))) })
        }
        let process: ServerProcess
        do {
            guard let path = executablePath(server, directory: directory) else { return failAll("unknown server") }
            switch server {
            case "nginx":
                guard let port = freePort() else { return failAll("no free port") }
                let prefix = "\(temporary)/nginx"
                mkdir(prefix, 0o755)
                try Self.nginxConfiguration(prefix: prefix, port: port)
                    .write(toFile: "\(prefix)/nginx.conf", atomically: true, encoding: .utf8)
                process = try ServerProcess.start(
                    path: path, arguments: ["-p", prefix, "-c", "\(prefix)/nginx.conf", "-e", "\(prefix)/error.log"],
                    cpu: serverCPU, port: port)
            case "cogen-http", "cogen-http-epoll", "cogen-http-spin":
                let backend = server == "cogen-http-epoll" ? "epoll" : "io_uring"
                // cogen-http-spin: the loop spins up to 100 µs before it sleeps
                // (`Scheduler.Configuration.spinBeforeWait`), trading CPU for wake-ups.
                let spin = server == "cogen-http-spin" ? ["--spin-microseconds", "\(spinMicroseconds)"] : []
                process = try ServerProcess.start(
                    path: path, arguments: ["--port", "0", "--threads", "1", "--backend", backend] + spin,
                    cpu: serverCPU)
            case "hb-http", "hb-http-nio":
                guard let port = freePort() else { return failAll("no free port") }
                process = try ServerProcess.start(
                    path: path, arguments: ["--port", "\(port)"] + (server == "hb-http-nio" ? ["--nio-executor"] : []),
                    cpu: serverCPU)
            default:
                process = try ServerProcess.start(path: path, arguments: ["--port", "0"], cpu: serverCPU)
            }
        } catch {
            return failAll("\(error)")
        }
        warn("\(server): pid \(process.pid), 127.0.0.1:\(process.port)")
        var group: CPUQuotaGroup?
        if modes.contains(where: { $0.quota != nil }) {
            do {
                group = try CPUQuotaGroup.create(percent: 100, name: "http-matrix-\(getpid())")
                try group!.add(process.pid)
            } catch {
                _ = process.stop()
                group?.remove()
                return failAll("\(error)")
            }
        }
        for mode in modes {
            guard process.isRunning else {
                outcome[mode.name] = .failure(.failed("the server exited"))
                continue
            }
            do {
                try group?.setQuota(percent: mode.quota)
            } catch {
                outcome[mode.name] = .failure(.failed("\(error)"))
                continue
            }
            if warmup > 0 {
                _ = runWrk(mode: mode, port: process.port, seconds: warmup, temporary: temporary, cpu: loadCPU)
            }
            let before = processCPUNanoseconds(pid: process.pid)
            let machineBefore = machineCPUNanoseconds().busy
            let start = monotonicNanoseconds()
            let run = runWrk(mode: mode, port: process.port, seconds: duration, temporary: temporary, cpu: loadCPU)
            let wall = Double(monotonicNanoseconds() - start)
            let machine = Double(machineCPUNanoseconds().busy - machineBefore)
            let after = processCPUNanoseconds(pid: process.pid)
            guard run.status == 0, var result = parseWrk(run.output, mode: mode) else {
                let why = "wrk exited \(run.status): \(run.output.split(separator: "\n").suffix(3).joined(separator: " | "))"
                warn("\(server) \(mode.name): \(why)")
                outcome[mode.name] = .failure(.failed(why))
                continue
            }
            let requests = Double(max(1, result.requests))
            result.wrkCPUMicrosPerRequest = Double(run.cpuNanoseconds) / 1000 / requests
            result.wrkCPUPercent = Double(run.cpuNanoseconds) / wall * 100
            if let before, let after {
                let server = Double(after - before)
                result.serverCPUMicrosPerRequest = server / 1000 / requests
                result.serverCPUPercent = server / wall * 100
                result.otherCPUPercent = max(0, machine - server - Double(run.cpuNanoseconds)) / wall * 100
            }
            outcome[mode.name] = .success(result)
        }
        let (status, _) = process.stop()
        if status != 0 { warn("\(server): exit status \(status) after SIGTERM") }
        group?.remove()
        return outcome
    }

    /// TechEmpower's request headers (their wrk command line).
    static let techEmpowerHeaders = [
        "Host: localhost",
        "Accept: text/plain,text/html;q=0.9,application/xhtml+xml;q=0.9,application/xml;q=0.8,*/*;q=0.7",
        "Connection: keep-alive",
    ]

    func runWrk(mode: Mode, port: Int, seconds: Int, temporary: String, cpu: Int32)
        -> (status: Int32, output: String, cpuNanoseconds: UInt64)
    {
        var arguments = ["-t1", "-c\(mode.connections)", "-d\(seconds)s", "--timeout", "8", "--latency"]
        for header in Self.techEmpowerHeaders { arguments += ["-H", header] }
        arguments.append("http://127.0.0.1:\(port)/plaintext")
        if mode.depth > 1 { arguments += ["-s", "\(temporary)/pipeline.lua", "--", "\(mode.depth)"] }
        return runMeasuringCPU(path: wrk, arguments: arguments, cpu: cpu)
    }

    /// Reads wrk 4.1's report.
    func parseWrk(_ output: String, mode: Mode) -> WrkResult? {
        func micros(_ text: Substring) -> Double? {
            let units: [(String, Double)] = [("us", 1), ("ms", 1000), ("s", 1_000_000), ("m", 60_000_000)]
            for (unit, factor) in units where text.hasSuffix(unit) {
                if let value = Double(text.dropLast(unit.count)) { return value * factor }
            }
            return nil
        }
        var requests: Int?, seconds: Double?, rate: Double?, p50: Double?, p99: Double?, errors = 0
        for line in output.split(separator: "\n") {
            let words = line.split(whereSeparator: { $0 == " " || $0 == "," })
            guard let first = words.first else { continue }
            if words.count >= 4, words[1] == "requests", words[2] == "in" {
                requests = Int(first)
                seconds = micros(words[3]).map { $0 / 1_000_000 }
            } else if first == "Requests/sec:", words.count >= 2 {
                rate = Double(words[1])
            } else if first == "50%", words.count >= 2 {
                p50 = micros(words[1])
            } else if first == "99%", words.count >= 2 {
                p99 = micros(words[1])
            } else if first == "Socket", words.count >= 10 {
                // Socket errors: connect A, read B, write C, timeout D
                errors += [3, 5, 7, 9].compactMap { Int(words[$0]) }.reduce(0, +)
            } else if line.contains("Non-2xx or 3xx responses:"), let last = words.last, let count = Int(last) {
                errors += count
            }
        }
        guard let requests, let rate else { return nil }
        var result = WrkResult(
            requests: requests, seconds: seconds ?? Double(duration), requestsPerSecond: rate, p50Micros: p50,
            p99Micros: p99, meanLatencyOnly: false, errors: errors, serverCPUMicrosPerRequest: nil,
            serverCPUPercent: nil, wrkCPUMicrosPerRequest: 0, wrkCPUPercent: 0, otherCPUPercent: nil)
        if mode.depth > 1 {
            // wrk's percentiles are not valid with pipelining: the mean latency instead.
            let mean = rate > 0 ? Double(mode.connections * mode.depth) / rate * 1_000_000 : nil
            result.p50Micros = mean
            result.p99Micros = mean
            result.meanLatencyOnly = true
        }
        return result
    }

    // MARK: Ratios and tables

    /// Per mode, named ratios: the median over the turns of each turn's ratio.
    func computeRatios(_ rows: [Row], modes: [Mode]) -> [String: [String: Double]] {
        var ratios: [String: [String: Double]] = [:]
        for mode in modes {
            func turns(_ server: String) -> [WrkResult?]? {
                rows.first { $0.server == server && $0.mode == mode.name }?.turns
            }
            func paired(_ a: String, _ b: String, _ value: (WrkResult) -> Double?) -> Double? {
                guard let x = turns(a), let y = turns(b) else { return nil }
                let values = zip(x, y).compactMap { pair -> Double? in
                    guard let p = pair.0.flatMap(value), let q = pair.1.flatMap(value), q > 0 else { return nil }
                    return p / q
                }
                return median(values)
            }
            let rate: (WrkResult) -> Double? = { $0.requestsPerSecond }
            let cpu: (WrkResult) -> Double? = { $0.serverCPUMicrosPerRequest }
            let p99: (WrkResult) -> Double? = { $0.p99Micros }
            var entry: [String: Double] = [:]
            entry["io_uring/nginx req/s"] = paired("cogen-http", "nginx", rate)
            entry["io_uring/nginx cpu"] = paired("cogen-http", "nginx", cpu)
            entry["io_uring/nginx p99"] = paired("cogen-http", "nginx", p99)
            entry["spin/nginx p99"] = paired("cogen-http-spin", "nginx", p99)
            entry["spin/nginx cpu"] = paired("cogen-http-spin", "nginx", cpu)
            entry["epoll/nginx req/s"] = paired("cogen-http-epoll", "nginx", rate)
            entry["epoll/nginx cpu"] = paired("cogen-http-epoll", "nginx", cpu)
            entry["epoll/io_uring req/s"] = paired("cogen-http-epoll", "cogen-http", rate)
            entry["epoll/io_uring cpu"] = paired("cogen-http-epoll", "cogen-http", cpu)
            entry["floor epoll/io_uring req/s"] = paired("floor-epoll", "floor", rate)
            entry["floor epoll/io_uring cpu"] = paired("floor-epoll", "floor", cpu)
            entry["io_uring/hb cpu"] = paired("cogen-http", "hb-http", cpu)
            entry["io_uring/hb-nio cpu"] = paired("cogen-http", "hb-http-nio", cpu)
            entry["hb-nio/nginx req/s"] = paired("hb-http-nio", "nginx", rate)
            entry["hb/nginx req/s"] = paired("hb-http", "nginx", rate)
            // (ours − floor) ÷ (nginx − floor) in CPU per request, per turn.
            for (server, key) in [("cogen-http", "io_uring above floor/nginx above floor"),
                                  ("cogen-http-epoll", "epoll above floor/nginx above floor")] {
                if let ours = turns(server), let floor = turns("floor"), let reference = turns("nginx") {
                    let values = (0..<min(ours.count, floor.count, reference.count)).compactMap { i -> Double? in
                        guard let o = ours[i]?.serverCPUMicrosPerRequest, let f = floor[i]?.serverCPUMicrosPerRequest,
                              let n = reference[i]?.serverCPUMicrosPerRequest, n - f > 0 else { return nil }
                        return (o - f) / (n - f)
                    }
                    entry[key] = median(values)
                }
            }
            ratios[mode.name] = entry.compactMapValues { $0 }
        }
        return ratios
    }

    func median(_ values: [Double]) -> Double? {
        let sorted = values.sorted()
        guard !sorted.isEmpty else { return nil }
        let middle = sorted.count / 2
        return sorted.count % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
    }

    func printTables(_ rows: [Row], modes: [Mode], ratios: [String: [String: Double]]) {
        func f(_ value: Double?, _ digits: Int = 1) -> String {
            guard let value else { return "-" }
            return String(format: "%.\(digits)f", value)
        }
        func pad(_ text: String, _ width: Int, left: Bool = false) -> String {
            let padding = String(repeating: " ", count: max(0, width - text.count))
            return left ? text + padding : padding + text
        }
        print("")
        print("HTTP: TechEmpower plaintext; server on CPU 0, wrk -t1 on CPU 1, both nice -20; \(turns) turn(s) of "
            + "\(duration) s after \(warmup) s warm-up; median turn shown; \(kernelRelease())")
        print([pad("mode", 15, left: true), pad("server", 16, left: true), pad("req/s", 9), pad("p50 µs", 8),
               pad("p99 µs", 8), pad("srv µs/req", 10), pad("srv CPU%", 8), pad("wrk µs/req", 10),
               pad("wrk CPU%", 8), pad("other%", 6), pad("errors", 6), pad("req/s spread", 12)].joined(separator: "  "))
        var anyPipelined = false, anyOther = false, anyUnbound = false
        for row in rows {
            let quota = modes.first { $0.name == row.mode }?.quota
            var cells = [pad(row.mode, 15, left: true), pad(row.server, 16, left: true)]
            guard let r = row.median else {
                print((cells + ["failed: \(row.errors.first ?? "?")"]).joined(separator: "  "))
                continue
            }
            anyPipelined = anyPipelined || r.meanLatencyOnly
            let noisy = (r.otherCPUPercent ?? 0) >= 10
            anyOther = anyOther || noisy
            // Server-bound only when the server used (most of) its quota.
            let unbound = quota.map { (r.serverCPUPercent ?? 0) < 0.85 * $0 } ?? false
            anyUnbound = anyUnbound || unbound
            let rates = row.turns.compactMap { $0?.requestsPerSecond }.sorted()
            let spread = rates.count > 1 && r.requestsPerSecond > 0
                ? "±" + f((rates.last! - rates.first!) / 2 / r.requestsPerSecond * 100, 0) + "%" : "-"
            cells += [pad(f(r.requestsPerSecond, 0), 9),
                      pad(f(r.p50Micros, 0) + (r.meanLatencyOnly ? "m" : " "), 8),
                      pad(f(r.p99Micros, 0) + (r.meanLatencyOnly ? "m" : " "), 8),
                      pad(f(r.serverCPUMicrosPerRequest, 2), 10), pad(f(r.serverCPUPercent, 0) + (unbound ? "~" : ""), 8),
                      pad(f(r.wrkCPUMicrosPerRequest, 2), 10), pad(f(r.wrkCPUPercent, 0), 8),
                      pad(f(r.otherCPUPercent, 0) + (noisy ? "!" : ""), 6), pad("\(r.errors)", 6), pad(spread, 12)]
            if !row.errors.isEmpty { cells.append("(\(row.errors.count) failed: \(row.errors[0]))") }
            print(cells.joined(separator: "  "))
        }
        if anyPipelined {
            print("m: mean latency (connections × depth ÷ req/s): wrk's percentiles are not valid with pipelining.")
        }
        if anyUnbound {
            print("~: the server used less than 85 % of its quota: that run was not server-bound (the machine's other")
            print("   load or wrk set the pace), so its req/s compares little; CPU per request still compares.")
        }
        if anyOther { print("!: other processes used ≥ 10 % of a CPU during that run: its figures are disturbed.") }
        print("srv µs/req: the server's utime+stime over the measured run ÷ the requests wrk counted; "
            + "quota: a cgroup cap on the server, so it sets the rate.")

        // The targets of issue 14.
        print("")
        print("ratios (median of the per-turn ratios) against issue 14's targets:")
        print([pad("mode", 15, left: true), pad("figure", 40, left: true), pad("value", 7), pad("target", 8),
               pad("met?", 4)].joined(separator: "  "))
        func line(_ mode: String, _ key: String, _ target: Double?, atMost: Bool) {
            guard let value = ratios[mode]?[key] else { return }
            var met = "-"
            if let target { met = (atMost ? value <= target : value >= target) ? "yes" : "NO" }
            print([pad(mode, 15, left: true), pad(key, 40, left: true), pad(f(value, 2), 7),
                   pad(target.map { (atMost ? "≤ " : "≥ ") + f($0, 2) } ?? "", 8), pad(met, 4)].joined(separator: "  "))
        }
        for mode in modes {
            let name = mode.name
            let serverBound = mode.quota != nil
            switch (mode.shapeName, serverBound) {
            case ("pipelined", true):
                line(name, "io_uring/nginx req/s", 2.0, atMost: false)
                line(name, "io_uring/nginx cpu", 0.5, atMost: true)
            case ("256", true), ("16", true):
                line(name, "io_uring/nginx req/s", 1.1, atMost: false)
                line(name, "io_uring/nginx cpu", 0.9, atMost: true)
            case ("1", false):
                line(name, "io_uring/nginx p99", 1.1, atMost: true)
                line(name, "spin/nginx p99", 1.1, atMost: true)
                line(name, "spin/nginx cpu", nil, atMost: true)
            default:
                line(name, "io_uring/nginx req/s", nil, atMost: false)
                line(name, "io_uring/nginx cpu", nil, atMost: true)
            }
            if mode.shapeName == "1" && serverBound { line(name, "io_uring/nginx p99", nil, atMost: true) }
            line(name, "epoll/io_uring req/s", serverBound ? 0.9 : nil, atMost: false)
            line(name, "epoll/io_uring cpu", nil, atMost: true)
            line(name, "floor epoll/io_uring req/s", nil, atMost: false)
            line(name, "floor epoll/io_uring cpu", nil, atMost: true)
            line(name, "epoll/nginx req/s", nil, atMost: false)
            line(name, "epoll/nginx cpu", nil, atMost: true)
            line(name, "io_uring above floor/nginx above floor", nil, atMost: true)
            line(name, "epoll above floor/nginx above floor", nil, atMost: true)
            line(name, "io_uring/hb-nio cpu", serverBound && mode.shapeName != "1" ? 0.3 : nil, atMost: true)
            line(name, "io_uring/hb cpu", nil, atMost: true)
            line(name, "hb-nio/nginx req/s", nil, atMost: false)
            line(name, "hb/nginx req/s", nil, atMost: false)
        }
        print("")
    }

    // MARK: Generated files

    /// TechEmpower's pipeline.lua: `depth` copies of the request in one write.
    static let pipelineScript = """
        init = function(args)
          local r = {}
          local depth = tonumber(args[1]) or 1
          for i = 1, depth do
            r[i] = wrk.format()
          end
          req = table.concat(r)
        end

        request = function()
          return req
        end

        """

    /// One nginx process (no master: its PID is the one whose CPU is read and capped),
    /// `return 200`, no access log, keep-alive requests without a practical limit.
    static func nginxConfiguration(prefix: String, port: Int) -> String {
        """
        daemon off;
        master_process off;
        worker_processes 1;
        worker_rlimit_nofile 65536;
        pid \(prefix)/nginx.pid;
        error_log \(prefix)/error.log warn;
        events {
            worker_connections 4096;
        }
        http {
            access_log off;
            keepalive_requests 1000000000;
            keepalive_timeout 75s;
            client_body_temp_path \(prefix)/body;
            proxy_temp_path \(prefix)/proxy;
            fastcgi_temp_path \(prefix)/fastcgi;
            uwsgi_temp_path \(prefix)/uwsgi;
            scgi_temp_path \(prefix)/scgi;
            server {
                listen 127.0.0.1:\(port);
                location / {
                    default_type text/plain;
                    return 200 "Hello, World!";
                }
            }
        }

        """
    }
}

func warn(_ message: String) {
    let line = "http-matrix: \(message)\n"
    _ = line.withCString { write(2, $0, strlen($0)) }
}

HTTPMatrix.main()
