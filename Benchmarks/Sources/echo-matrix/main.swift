// echo-matrix: runs every echo server against echo-load over a matrix of loads.
//
//   echo-matrix [--full] [--servers a,b] [--json PATH] [--duration S] [--warmup S]
//               [--load-threads N] [--repeat N] [--retries N] [--configs CxIxS,…]
//               [--server-cpu-quota PERCENT]
//   echo-matrix --idle-memory [--idle-connections N] [--servers a,b] [--json PATH]
//
// The servers and echo-load are found next to this executable (the build directory).
// With --repeat N the servers take turns (A, B, C, C, B, A, A, B, C…; the two servers of
// each ratio next to each other), the median run is shown, and each ratio is the median of
// the ratios taken within one turn (paired runs).
// Each server starts on a free port pinned to CPU 0; echo-load runs pinned to CPU 1 with
// --json once per configuration, against the same server process; then the server gets
// SIGTERM. The pinning keeps the two from competing for a CPU; on this two-CPU machine it
// also means the load generator has one CPU, and its TCP work per message is about the
// server's (loopback send and receive cost the same on both sides), so its CPU use is
// printed beside every result: near 100% it paces the run as much as the server does,
// and server CPU per message is the figure to compare.
//
// --idle-memory measures memory instead: per server, its RSS after startup and one
// warm-up connection, then with N idle connections held by echo-load (--idle N; one
// active connection opened after them echoes through the warm-up, which shows the server
// has accepted every idle one), and the growth per idle connection. RLIMIT_NOFILE is
// raised to its hard limit here, before any child is spawned, so that the servers and
// echo-load (which raise it again themselves) inherit it.
import ArgumentParser
import CEchoLinux
import EchoBenchSupport
import Foundation  // JSONEncoder/JSONDecoder, String(format:)
import Glibc

struct LoadConfiguration: Codable, Sendable {
    var connections: Int
    var inflight: Int
    var size: Int
    var name: String { "\(connections)c×\(inflight)×\(size)B" }
}

struct RunRecord: Codable {
    var server: String
    var configuration: String
    var connections: Int
    var inflight: Int
    var size: Int
    var result: LoadResult?
    var error: String?
    /// msg/s of every repetition (--repeat); `result` is the median one.
    var repetitions: [Double] = []
    /// p99 µs of every repetition, sorted; its median is the p99 the ratios use.
    var repetitionsP99: [Double] = []
    /// Each repetition's msg/s, server ns/msg and p99 µs in the order of the turns (nil:
    /// that run failed), for the paired ratios.
    var turnMessagesPerSecond: [Double?] = []
    var turnServerCPU: [Double?] = []
    var turnP99: [Double?] = []
    var medianP99: Double? {
        repetitionsP99.isEmpty ? result?.p99Micros : repetitionsP99[repetitionsP99.count / 2]
    }
}

struct RatioRecord: Codable {
    var configuration: String
    var cogenOverCUringThroughput: Double?
    var cogenOverNIOThroughput: Double?
    var cogenOverCUringP99: Double?
    var cogenOverCUringServerCPU: Double?
    /// The library on epoll against the C epoll server, and its io_uring engine against its
    /// epoll engine.
    var cogenEpollOverCEpollThroughput: Double?
    var cogenEpollOverCEpollServerCPU: Double?
    var ioUringOverEpollThroughput: Double?
    /// cogen's API (CogenCompat) against the native API, both on io_uring.
    var compatOverNativeThroughput: Double?
    var compatOverNativeServerCPU: Double?
}

/// One server's RSS with idle connections (--idle-memory).
struct IdleMemoryRecord: Codable {
    var server: String
    var idleConnectionsRequested: Int
    var idleConnectionsEstablished: Int?
    /// VmRSS right after startup, and after one warm-up connection (it has closed).
    var rssAfterStartupBytes: Int?
    var rssAfterWarmupBytes: Int?
    /// VmRSS sampled by echo-load just before it opened the idle connections, and at the
    /// end of its measured window with all of them held.
    var rssBeforeIdleBytes: Int?
    var rssWithIdleBytes: Int?
    /// The server's open descriptors with the idle connections held.
    var serverOpenDescriptors: Int?
    /// VmRSS after echo-load closed everything and exited.
    var rssAfterCloseBytes: Int?
    /// (rssWithIdle - rssBeforeIdle) / idle connections established.
    var bytesPerIdleConnection: Double?
    var error: String?
}

struct Report: Codable {
    var date: String
    var kernel: String
    var usableCPUs: Int
    var durationSeconds: Double
    var warmupSeconds: Double
    var loadThreads: Int
    /// --server-cpu-quota: each server's cap, percent of one CPU.
    var serverCPUQuotaPercent: Double? = nil
    var runs: [RunRecord]
    var ratios: [RatioRecord]
    /// What each server printed after its "listening on" line (cogen-echo: --stats).
    var serverOutput: [String: String]
    /// --idle-memory only (then `runs` and `ratios` are empty).
    var idleMemory: [IdleMemoryRecord]?
}

struct EchoMatrix: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "echo-matrix", abstract: "Runs the echo servers against echo-load and compares them.")

    static let allServers = ["cogen-echo", "cogen-echo-epoll", "c-uring-echo", "c-epoll-echo", "nio-echo"]
    /// Servers run only when named in `--servers`.
    /// (`-tracked`/`-plain`: cogen-echo with `--send tracked`/`--send plain`.)
    static let extraServers = [
        "cogen-compat-echo", "cogen-echo-tracked", "cogen-echo-plain", "cogen-echo-epoll-tracked", "cogen-echo-epoll-plain",
    ]

    @Flag(help: "The full matrix: connections {1,16,256,1000} × sizes {64,4096} × in flight {1,16}.")
    var full = false
    @Option(help: "Comma-separated servers to run (default: the five above; cogen-compat-echo only when named).")
    var servers: String = allServers.joined(separator: ",")
    @Option(help: "Where to write the JSON results.")
    var json: String = "echo-results.json"
    @Option(help: "Measured seconds per configuration.")
    var duration: Double = 3
    @Option(help: "Warm-up seconds per configuration.")
    var warmup: Double = 1
    @Option(name: .customLong("load-threads"), help: "echo-load --threads.")
    var loadThreads: Int = 1
    @Option(help: "Times to re-run a configuration that other processes disturbed (used ≥ 10% of a CPU).")
    var retries: Int = 2
    @Option(name: .customLong("repeat"), help: "Runs per configuration, going round the servers in turn; the one with the median msg/s is reported.")
    var repetitions: Int = 1
    @Flag(name: .customLong("idle-memory"), help: "Measure server RSS per idle connection instead of the matrix.")
    var idleMemory = false
    @Option(name: .customLong("idle-connections"), help: "Idle connections for --idle-memory.")
    var idleConnections: Int = 10_000
    @Option(help: "Comma-separated configurations CONNECTIONSxINFLIGHTxSIZE (e.g. 16x16x64) instead of the quick or full matrix.")
    var configs: String?
    @Option(name: .customLong("server-cpu-quota"), help: "Cap each server at this percent of one CPU (a cgroup; needs root), so that the server, not the load generator, bounds msg/s.")
    var serverCPUQuota: Double?

    /// Other processes' CPU use (percent of one CPU) above which a run counts as disturbed.
    static let disturbedPercent = 10.0

    func validate() throws {
        for server in serverList where !(Self.allServers + Self.extraServers).contains(server) {
            throw ValidationError(
                "unknown server '\(server)'; known: \((Self.allServers + Self.extraServers).joined(separator: ", "))")
        }
        guard !serverList.isEmpty else { throw ValidationError("--servers names no server") }
        guard repetitions >= 1, retries >= 0 else { throw ValidationError("--repeat must be ≥ 1, --retries ≥ 0") }
        guard idleConnections >= 1 else { throw ValidationError("--idle-connections must be ≥ 1") }
        if let serverCPUQuota, !(5...100).contains(serverCPUQuota) {
            throw ValidationError("--server-cpu-quota must be between 5 and 100 (percent of one CPU)")
        }
        if let configs {
            for item in configs.split(separator: ",") where Self.parseConfiguration(item) == nil {
                throw ValidationError("bad configuration '\(item)': CONNECTIONSxINFLIGHTxSIZE, e.g. 16x16x64")
            }
        }
    }

    var serverList: [String] { servers.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) } }

    /// The order servers run in within a turn: each pair the ratios compare side by side
    /// (NIO and cogen, cogen and C liburing, C epoll and cogen on epoll), so the two runs
    /// of a pair are seconds apart.
    static let turnOrder = [
        "nio-echo", "cogen-echo-plain", "cogen-echo", "cogen-echo-tracked", "c-uring-echo", "c-epoll-echo",
        "cogen-echo-epoll-tracked", "cogen-echo-epoll", "cogen-echo-epoll-plain", "cogen-compat-echo",
    ]
    var turn: [String] {
        serverList.sorted { Self.turnOrder.firstIndex(of: $0)! < Self.turnOrder.firstIndex(of: $1)! }
    }

    static func parseConfiguration(_ text: Substring) -> LoadConfiguration? {
        let numbers = text.split(separator: "x").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard numbers.count == 3, numbers.allSatisfy({ $0 >= 1 }), numbers[2] >= 8 else { return nil }
        return LoadConfiguration(connections: numbers[0], inflight: numbers[1], size: numbers[2])
    }

    var configurations: [LoadConfiguration] {
        if let configs { return configs.split(separator: ",").compactMap(Self.parseConfiguration) }
        guard full else {
            return [
                LoadConfiguration(connections: 16, inflight: 16, size: 64),
                LoadConfiguration(connections: 256, inflight: 1, size: 64),
                LoadConfiguration(connections: 1, inflight: 1, size: 64),
            ]
        }
        var all: [LoadConfiguration] = []
        for connections in [1, 16, 256, 1000] {
            for size in [64, 4096] {
                for inflight in [1, 16] {
                    all.append(LoadConfiguration(connections: connections, inflight: inflight, size: size))
                }
            }
        }
        return all
    }

    func run() throws {
        let directory = executableDirectory()
        let cpus = Int(echo_usable_cpus())
        // Server on CPU 0, load on CPU 1; with a single CPU there is nothing to separate.
        let (serverCPU, loadCPU): (Int32, Int32) = cpus >= 2 ? (0, 1) : (-1, -1)
        if cpus < 2 { warn("only \(cpus) usable CPU: server and load generator share it (no pinning)") }
        // Inherited by every child: 10,000 connections need 10,000 descriptors a side.
        raiseDescriptorLimit()
        if idleMemory {
            try runIdleMemory(directory: directory, serverCPU: serverCPU, loadCPU: loadCPU, cpus: cpus)
            return
        }

        // Repetitions go round all the servers in turn, forwards then backwards (A, B, C,
        // then C, B, A…), so a slow phase of the machine lands on every server rather than
        // on one, and a steady drift favours none; the ratios compare servers within each
        // turn (see `pairedRatio`).
        var repeated: [String: [String: [RunRecord]]] = [:]
        var serverOutput: [String: String] = [:]
        for repetition in 0..<repetitions {
            if repetitions > 1 { warn("repetition \(repetition + 1) of \(repetitions)") }
            for server in repetition % 2 == 0 ? turn : turn.reversed() {
                // cogen-echo-epoll: the same server on the library's epoll engine.
                // -tracked / -plain: cogen-echo's `--send` (issue 12 part 4).
                let executable = server.hasPrefix("cogen-echo") ? "cogen-echo" : server
                let arguments = ["--port", "0"] + (executable.hasPrefix("cogen-") ? ["--stats"] : [])
                    + (server.hasPrefix("cogen-echo-epoll") ? ["--backend", "epoll"] : [])
                    + (server.hasSuffix("-tracked") ? ["--send", "tracked"] : [])
                    + (server.hasSuffix("-plain") ? ["--send", "plain"] : [])
                let process: ServerProcess
                do {
                    process = try ServerProcess.start(path: "\(directory)/\(executable)", arguments: arguments, cpu: serverCPU)
                } catch {
                    warn("\(server): \(error)")
                    for configuration in configurations {
                        repeated[server, default: [:]][configuration.name, default: []]
                            .append(record(server, configuration, nil, "\(error)"))
                    }
                    continue
                }
                warn("\(server): pid \(process.pid), 127.0.0.1:\(process.port)")
                var group: CPUQuotaGroup?
                if let serverCPUQuota {
                    do {
                        group = try CPUQuotaGroup.create(percent: serverCPUQuota, name: "echo-matrix-\(getpid())")
                        try group!.add(process.pid)
                    } catch {
                        _ = process.stop()
                        group?.remove()
                        throw error
                    }
                }
                defer { group?.remove() }
                for configuration in configurations {
                    guard process.isRunning else {
                        repeated[server, default: [:]][configuration.name, default: []]
                            .append(record(server, configuration, nil, "the server exited"))
                        continue
                    }
                    let load = [
                        "--port", "\(process.port)", "--connections", "\(configuration.connections)",
                        "--size", "\(configuration.size)", "--inflight", "\(configuration.inflight)",
                        "--duration", "\(duration)", "--warmup", "\(warmup)", "--threads", "\(loadThreads)",
                        "--server-pid", "\(process.pid)", "--json",
                    ]
                    repeated[server, default: [:]][configuration.name, default: []]
                        .append(measure(server, configuration, load: "\(directory)/echo-load", arguments: load, cpu: loadCPU))
                }
                let (status, rest) = process.stop()
                serverOutput[server] = rest
                if status != 0 { warn("\(server): exit status \(status) after SIGTERM") }
            }
        }
        var runs: [RunRecord] = []
        for server in serverList {
            for configuration in configurations {
                if let records = repeated[server]?[configuration.name], !records.isEmpty {
                    runs.append(median(of: records))
                }
            }
        }

        let ratios = configurations.map { ratio(for: $0, in: runs) }
        printTable(runs, ratios: ratios)

        let report = Report(
            date: ISO8601DateFormatter().string(from: Date()), kernel: kernelRelease(), usableCPUs: cpus,
            durationSeconds: duration, warmupSeconds: warmup, loadThreads: loadThreads, serverCPUQuotaPercent: serverCPUQuota, runs: runs,
            ratios: ratios, serverOutput: serverOutput)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(report).write(to: URL(fileURLWithPath: json))
        print("JSON written to \(json)")
    }

    /// --idle-memory: per server, RSS after startup, after a warm-up connection, and with
    /// `idleConnections` idle connections held; prints a table and writes the JSON.
    private func runIdleMemory(directory: String, serverCPU: Int32, loadCPU: Int32, cpus: Int) throws {
        var limit = rlimit()
        getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit)
        if Int(limit.rlim_cur) < idleConnections + 64 {
            warn("RLIMIT_NOFILE is \(limit.rlim_cur): too low for \(idleConnections) connections a side")
        }
        var records: [IdleMemoryRecord] = []
        var serverOutput: [String: String] = [:]
        let load = "\(directory)/echo-load"
        for server in serverList {
            var record = IdleMemoryRecord(server: server, idleConnectionsRequested: idleConnections)
            let process: ServerProcess
            do {
                process = try ServerProcess.start(path: "\(directory)/\(server)", arguments: ["--port", "0"], cpu: serverCPU)
            } catch {
                warn("\(server): \(error)")
                record.error = "\(error)"
                records.append(record)
                continue
            }
            warn("\(server): pid \(process.pid), 127.0.0.1:\(process.port)")
            usleep(200_000)
            record.rssAfterStartupBytes = processRSSBytes(pid: process.pid)
            // One warm-up connection (ping-pong, then closed): first-use allocations.
            let common = ["--port", "\(process.port)", "--connections", "1", "--inflight", "1", "--size", "64"]
            let (warmStatus, _) = runToCompletion(
                path: load, arguments: common + ["--warmup", "0", "--duration", "0.5", "--json"], cpu: loadCPU)
            if warmStatus != 0 { warn("\(server): warm-up connection: echo-load exit status \(warmStatus)") }
            usleep(200_000)
            record.rssAfterWarmupBytes = processRSSBytes(pid: process.pid)
            // The idle connections, then one active connection whose echoes (1 s of
            // warm-up) show the server has accepted all of them; RSS sampled 1 s later.
            let (status, output) = runToCompletion(
                path: load,
                arguments: common + ["--idle", "\(idleConnections)", "--warmup", "1", "--duration", "1",
                                     "--server-pid", "\(process.pid)", "--json"],
                cpu: loadCPU)
            if let data = output.data(using: .utf8), let result = try? JSONDecoder().decode(LoadResult.self, from: data) {
                record.idleConnectionsEstablished = result.idleConnectionsEstablished
                record.rssBeforeIdleBytes = result.serverRSSBeforeIdleBytes
                record.rssWithIdleBytes = result.serverRSSBytes
                record.serverOpenDescriptors = result.serverOpenDescriptors
                if let before = result.serverRSSBeforeIdleBytes, let with = result.serverRSSBytes,
                   result.idleConnectionsEstablished > 0
                {
                    record.bytesPerIdleConnection = Double(with - before) / Double(result.idleConnectionsEstablished)
                }
                var problems: [String] = []
                if status != 0 { problems.append("echo-load exit status \(status)") }
                if result.idleConnectionsEstablished < idleConnections {
                    problems.append("only \(result.idleConnectionsEstablished) idle connections established")
                }
                if result.messages == 0 { problems.append("the active connection echoed nothing") }
                if let fds = result.serverOpenDescriptors, fds < result.idleConnectionsEstablished {
                    problems.append("the server holds only \(fds) descriptors")
                }
                if !problems.isEmpty { record.error = problems.joined(separator: "; ") }
            } else {
                record.error = "echo-load exit status \(status), no result"
            }
            usleep(500_000)  // the server sees the connections close
            record.rssAfterCloseBytes = processRSSBytes(pid: process.pid)
            let (stopStatus, rest) = process.stop()
            serverOutput[server] = rest
            if stopStatus != 0 { warn("\(server): exit status \(stopStatus) after SIGTERM") }
            records.append(record)
        }
        printIdleTable(records)
        let report = Report(
            date: ISO8601DateFormatter().string(from: Date()), kernel: kernelRelease(), usableCPUs: cpus,
            durationSeconds: 1, warmupSeconds: 1, loadThreads: 1, runs: [], ratios: [],
            serverOutput: serverOutput, idleMemory: records)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(report).write(to: URL(fileURLWithPath: json))
        print("JSON written to \(json)")
    }

    private func printIdleTable(_ records: [IdleMemoryRecord]) {
        func kib(_ bytes: Int?) -> String { bytes.map { "\($0 / 1024)" } ?? "-" }
        func pad(_ text: String, _ width: Int, left: Bool = false) -> String {
            let padding = String(repeating: " ", count: max(0, width - text.count))
            return left ? text + padding : padding + text
        }
        print("")
        print("server RSS (VmRSS) with \(idleConnections) idle connections held by echo-load; "
            + "server on CPU 0, echo-load on CPU 1; \(kernelRelease())")
        print([pad("server", 13, left: true), pad("start KiB", 9), pad("warm KiB", 9), pad("before KiB", 10),
               pad("idle KiB", 9), pad("after KiB", 9), pad("idle conns", 10), pad("srv fds", 7),
               pad("B/idle conn", 11)].joined(separator: "  "))
        for r in records {
            var cells = [pad(r.server, 13, left: true), pad(kib(r.rssAfterStartupBytes), 9),
                         pad(kib(r.rssAfterWarmupBytes), 9), pad(kib(r.rssBeforeIdleBytes), 10),
                         pad(kib(r.rssWithIdleBytes), 9), pad(kib(r.rssAfterCloseBytes), 9),
                         pad(r.idleConnectionsEstablished.map { "\($0)" } ?? "-", 10),
                         pad(r.serverOpenDescriptors.map { "\($0)" } ?? "-", 7),
                         pad(r.bytesPerIdleConnection.map { String(format: "%.0f", $0) } ?? "-", 11)]
            if let error = r.error { cells.append(error) }
            print(cells.joined(separator: "  "))
        }
        print("start: after startup; warm: after one warm-up connection (closed); before: just before the idle")
        print("connections opened; idle: with them all held (and accepted: an active connection opened after")
        print("them has echoed for 1 s); after: once echo-load closed them and exited. B/idle conn = (idle -")
        print("before) / idle conns. User-space memory only: the kernel's socket buffers are not in RSS.")
        print("")
    }

    /// One echo-load run. This machine is shared: a run during which other processes took
    /// CPU is repeated (up to --retries times), and the least disturbed one kept.
    private func measure(
        _ server: String, _ configuration: LoadConfiguration, load: String, arguments: [String], cpu: Int32
    ) -> RunRecord {
        var best: RunRecord?
        for attempt in 0...retries {
            let (status, output) = runToCompletion(path: load, arguments: arguments, cpu: cpu)
            guard let data = output.data(using: .utf8),
                  let result = try? JSONDecoder().decode(LoadResult.self, from: data)
            else {
                warn("  \(configuration.name): failed (echo-load exit status \(status))")
                return best ?? record(server, configuration, nil, "echo-load exit status \(status), no result")
            }
            let other = result.otherCPUPercent ?? 0
            warn("  \(configuration.name): \(Int(result.messagesPerSecond)) msg/s"
                + (other >= Self.disturbedPercent ? " (others used \(Int(other))% of a CPU: disturbed)" : ""))
            if best?.result == nil || other < (best?.result?.otherCPUPercent ?? .infinity) {
                best = record(server, configuration, result, status == 0 ? nil : "echo-load exit status \(status)")
            }
            if other < Self.disturbedPercent || attempt == retries { break }
            sleep(5)  // give whatever disturbed it a moment to finish
        }
        return best!
    }

    /// The repetition with the median msg/s, carrying every repetition's msg/s.
    private func median(of repeated: [RunRecord]) -> RunRecord {
        let measured = repeated.filter { $0.result != nil }
            .sorted { $0.result!.messagesPerSecond < $1.result!.messagesPerSecond }
        guard !measured.isEmpty else { return repeated[0] }
        var chosen = measured[measured.count / 2]
        chosen.repetitions = measured.map { $0.result!.messagesPerSecond }
        chosen.repetitionsP99 = measured.map { $0.result!.p99Micros }.sorted()
        chosen.turnMessagesPerSecond = repeated.map { $0.result?.messagesPerSecond }
        chosen.turnServerCPU = repeated.map { $0.result?.serverCPUNanosPerMessage }
        chosen.turnP99 = repeated.map { $0.result?.p99Micros }
        return chosen
    }

    private func record(_ server: String, _ c: LoadConfiguration, _ result: LoadResult?, _ error: String?) -> RunRecord {
        RunRecord(server: server, configuration: c.name, connections: c.connections, inflight: c.inflight,
                  size: c.size, result: result, error: error)
    }

    private func ratio(for configuration: LoadConfiguration, in runs: [RunRecord]) -> RatioRecord {
        func run(_ server: String) -> RunRecord? {
            runs.first { $0.server == server && $0.configuration == configuration.name }
        }
        /// a/b within each turn where both ran, then the median of those ratios: servers of
        /// one turn ran seconds apart, so a slow phase of the machine divides out (a ratio
        /// of the two medians would compare one server's good phase with another's bad one).
        func ratio(_ a: String, _ b: String, _ value: KeyPath<RunRecord, [Double?]>) -> Double? {
            guard let x = run(a)?[keyPath: value], let y = run(b)?[keyPath: value] else { return nil }
            let ratios = zip(x, y).compactMap { pair -> Double? in
                guard let p = pair.0, let q = pair.1, q > 0 else { return nil }
                return p / q
            }.sorted()
            guard !ratios.isEmpty else { return nil }
            let middle = ratios.count / 2
            return ratios.count % 2 == 1 ? ratios[middle] : (ratios[middle - 1] + ratios[middle]) / 2
        }
        let throughput = \RunRecord.turnMessagesPerSecond, cpu = \RunRecord.turnServerCPU
        return RatioRecord(
            configuration: configuration.name,
            cogenOverCUringThroughput: ratio("cogen-echo", "c-uring-echo", throughput),
            cogenOverNIOThroughput: ratio("cogen-echo", "nio-echo", throughput),
            cogenOverCUringP99: ratio("cogen-echo", "c-uring-echo", \.turnP99),
            cogenOverCUringServerCPU: ratio("cogen-echo", "c-uring-echo", cpu),
            cogenEpollOverCEpollThroughput: ratio("cogen-echo-epoll", "c-epoll-echo", throughput),
            cogenEpollOverCEpollServerCPU: ratio("cogen-echo-epoll", "c-epoll-echo", cpu),
            ioUringOverEpollThroughput: ratio("cogen-echo", "cogen-echo-epoll", throughput),
            compatOverNativeThroughput: ratio("cogen-compat-echo", "cogen-echo", throughput),
            compatOverNativeServerCPU: ratio("cogen-compat-echo", "cogen-echo", cpu))
    }

    private func printTable(_ runs: [RunRecord], ratios: [RatioRecord]) {
        func f(_ value: Double?, _ digits: Int = 1) -> String {
            guard let value else { return "-" }
            return String(format: "%.\(digits)f", value)
        }
        func pad(_ text: String, _ width: Int, left: Bool = false) -> String {
            let padding = String(repeating: " ", count: max(0, width - text.count))
            return left ? text + padding : padding + text
        }
        print("")
        print("echo servers on CPU 0, echo-load on CPU 1; \(f(duration)) s measured after \(f(warmup)) s warm-up; "
            + "latency per message, send to full echo; \(kernelRelease())")
        if let serverCPUQuota {
            print("each server capped at \(f(serverCPUQuota, 0))% of a CPU (cgroup, \(CPUQuotaGroup.periodMicroseconds / 1000) ms period): "
                + "msg/s compares work per message at one CPU budget; latency includes the throttling")
        }
        let header = [pad("server", 17, left: true), pad("config", 15, left: true), pad("msg/s", 10),
                      pad("p50 µs", 8), pad("p99 µs", 8), pad("p999 µs", 8), pad("srv ns/msg", 10),
                      pad("srv CPU%", 8), pad("LG ns/msg", 9), pad("LG CPU%", 8), pad("other%", 7), pad("errors", 6)]
            + (repetitions > 1 ? [pad("msg/s spread", 12)] : [])
        print(header.joined(separator: "  "))
        var saturated = false, disturbed = false
        for run in runs {
            var cells = [pad(run.server, 17, left: true), pad(run.configuration, 15, left: true)]
            if let r = run.result {
                let loadBound = r.loadgenBusiestThreadPercent >= 90
                let noisy = (r.otherCPUPercent ?? 0) >= Self.disturbedPercent
                saturated = saturated || loadBound
                disturbed = disturbed || noisy
                cells += [pad(f(r.messagesPerSecond, 0), 10), pad(f(r.p50Micros), 8), pad(f(r.p99Micros), 8),
                          pad(f(r.p999Micros), 8), pad(f(r.serverCPUNanosPerMessage, 0), 10),
                          pad(f(r.serverCPUPercent, 0), 8), pad(f(r.loadgenCPUNanosPerMessage, 0), 9),
                          pad(f(r.loadgenBusiestThreadPercent, 0) + (loadBound ? "*" : " "), 8),
                          pad(f(r.otherCPUPercent, 0) + (noisy ? "!" : " "), 7),
                          pad("\(r.byteErrors + r.connectionErrors)", 6)]
                if repetitions > 1, let low = run.repetitions.first, let high = run.repetitions.last,
                   r.messagesPerSecond > 0
                {
                    cells.append(pad("±" + f((high - low) / 2 / r.messagesPerSecond * 100, 0) + "%", 12))
                }
                if let error = run.error { cells.append(error) }
            } else {
                cells.append("failed: \(run.error ?? "?")")
            }
            print(cells.joined(separator: "  "))
        }
        if saturated {
            print("* the load generator's thread was ≥ 90% busy: it may have paced that run as much as the server")
            print("  did; compare servers there by srv ns/msg (CPU per message), not by msg/s. Where srv CPU% is")
            print("  ≥ 95 too, both sides were saturated: on loopback each side's kernel work per message mirrors")
            print("  the other's (its own send plus the peer's receive processing, run in the sender's context).")
        }
        if disturbed {
            print("! other processes used ≥ \(Int(Self.disturbedPercent))% of a CPU during that run (after \(retries) retries):")
            print("  its figures are disturbed.")
        }
        print("LG ns/msg: the load generator's CPU per message (all threads); LG CPU%: its busiest thread.")
        print("other%: machine CPU used by neither side.")
        print("errors: byte errors + connection errors seen by echo-load."
            + (repetitions > 1 ? " msg/s spread: half the range of \(repetitions) runs; the median run is shown.\n"
                + "ratios: the median over the \(repetitions) turns of each turn's ratio (the servers of a turn ran seconds apart,\n"
                + "  so a slow phase of the machine divides out); servers go round forwards, then backwards."  : ""))
        print("")
        print([pad("config", 15, left: true), pad("cogen/c-uring msg/s", 19), pad("cogen/nio msg/s", 15),
               pad("p99 cogen/c-uring", 17), pad("srv ns/msg cogen/c-uring", 24)].joined(separator: "  "))
        for r in ratios {
            print([pad(r.configuration, 15, left: true), pad(f(r.cogenOverCUringThroughput, 2), 19),
                   pad(f(r.cogenOverNIOThroughput, 2), 15), pad(f(r.cogenOverCUringP99, 2), 17),
                   pad(f(r.cogenOverCUringServerCPU, 2), 24)].joined(separator: "  "))
        }
        print("")
        if ratios.contains(where: { $0.cogenEpollOverCEpollThroughput != nil || $0.ioUringOverEpollThroughput != nil }) {
            print([pad("config", 15, left: true), pad("cogen epoll/c-epoll msg/s", 25),
                   pad("srv ns/msg cogen epoll/c-epoll", 30), pad("cogen io_uring/epoll msg/s", 26)]
                .joined(separator: "  "))
            for r in ratios {
                print([pad(r.configuration, 15, left: true), pad(f(r.cogenEpollOverCEpollThroughput, 2), 25),
                       pad(f(r.cogenEpollOverCEpollServerCPU, 2), 30), pad(f(r.ioUringOverEpollThroughput, 2), 26)]
                    .joined(separator: "  "))
            }
            print("")
        }
        if ratios.contains(where: { $0.compatOverNativeThroughput != nil }) {
            print([pad("config", 15, left: true), pad("compat/native msg/s", 19),
                   pad("srv ns/msg compat/native", 24)].joined(separator: "  "))
            for r in ratios {
                print([pad(r.configuration, 15, left: true), pad(f(r.compatOverNativeThroughput, 2), 19),
                       pad(f(r.compatOverNativeServerCPU, 2), 24)].joined(separator: "  "))
            }
            print("")
        }
    }
}

func warn(_ message: String) {
    let line = "echo-matrix: \(message)\n"
    _ = line.withCString { write(2, $0, strlen($0)) }
}

EchoMatrix.main()
