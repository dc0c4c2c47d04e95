import CogenUring
import Glibc

struct Options {
    var quick = false
    var reps: Int? = nil
    var filter: String? = nil
    var jsonPath = "bench-results.json"
    var memoryChild: Int? = nil
    var memoryFloor = false

    static func parse(_ arguments: [String]) -> Options {
        var options = Options()
        var i = 0
        func value(_ flag: String) -> String {
            i += 1
            guard i < arguments.count else { usage("\(flag) needs a value") }
            return arguments[i]
        }
        while i < arguments.count {
            let argument = arguments[i]
            switch argument {
            case "--quick": options.quick = true
            case "--reps":
                guard let n = Int(value(argument)), n > 0 else { usage("--reps needs a positive integer") }
                options.reps = n
            case "--filter": options.filter = value(argument)
            case "--json": options.jsonPath = value(argument)
            case "--memory-child":
                guard let n = Int(value(argument)), n > 0 else { usage("--memory-child needs a count") }
                options.memoryChild = n
            case "--floor": options.memoryFloor = true  // with --memory-child
            case "-h", "--help": usage(nil)
            default: usage("unknown argument \(argument)")
            }
            i += 1
        }
        return options
    }
}

func usage(_ problem: String?) -> Never {
    if let problem { writeStandardError("cogen-bench: \(problem)\n") }
    writeStandardError("""
        usage: cogen-bench [--quick] [--reps N] [--filter SUBSTRING] [--json PATH]
          --quick            fewer repetitions and smaller workloads (smoke test)
          --reps N           repetitions per benchmark (default 7; 2 with --quick)
          --filter SUBSTRING only the benchmarks whose name contains SUBSTRING
          --json PATH        where to write the results (default bench-results.json)

        """)
    exit(problem == nil ? 0 : 64)
}

/// One measured quantity: a name, how to take one repetition, and its target.
struct Benchmark {
    var name: String
    var unit: String
    var target: Double? = nil
    var decimals = 1
    /// One repetition at a workload scale (1 normally, 0.1 for --quick and the warm-up).
    var measure: (Double) -> Double
}

/// A row computed from two measured rows, repetition by repetition.
struct Derived {
    var name: String
    var unit: String
    var target: Double? = nil
    /// The target is a minimum (`>=`) rather than a maximum.
    var atLeast = false
    var decimals = 1
    var inputs: (String, String)
    var combine: (Double, Double) -> Double
    var note: String? = nil
}

struct Row {
    var name: String
    var unit: String
    var target: Double?
    var decimals: Int
    var values: [Double]
    var note: String? = nil
    var atLeast = false

    var sorted: [Double] { values.sorted() }
    var median: Double {
        let s = sorted
        guard !s.isEmpty else { return .nan }
        return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
    }
    var minimum: Double { values.min() ?? .nan }
    var maximum: Double { values.max() ?? .nan }
    var passed: Bool? { target.map { atLeast ? median >= $0 : median <= $0 } }
    var targetText: String { target.map { (atLeast ? ">= " : "<= ") + formatNumber($0, decimals: $0 < 10 ? 2 : 0) } ?? "-" }
    var passText: String { passed.map { $0 ? "pass" : "FAIL" } ?? "-" }
}

func scaled(_ n: Int, _ scale: Double) -> Int { max(Int(Double(n) * scale), 64) }

func allBenchmarks() -> [Benchmark] { [
    Benchmark(name: "floor ping-pong", unit: "ns/switch") { measureFloorPingPong(switches: scaled(1_000_000, $0)) },
    Benchmark(name: "switch (park/resume)", unit: "ns/switch") { measureParkResume(switches: scaled(300_000, $0)) },
    Benchmark(name: "yield", unit: "ns/yield") { measureYield(total: scaled(600_000, $0), coroutines: 1) },
    Benchmark(name: "yield (2 coroutines)", unit: "ns/yield") { measureYield(total: scaled(600_000, $0), coroutines: 2) },
    Benchmark(name: "direct call", unit: "ns/call", target: 15) { measureDirectCall(calls: scaled(10_000_000, $0)) },
    Benchmark(name: "floor spawn-and-join (Task + value)", unit: "ns/op") { measureFloorSpawnAndJoin(count: scaled(200_000, $0)) },
    Benchmark(name: "spawn-and-join", unit: "ns/op", target: 450) { measureSpawnAndJoin(count: scaled(200_000, $0)) },
    Benchmark(name: "spawn + join()", unit: "ns/op") { measureSpawnThenJoin(count: scaled(200_000, $0)) },
    Benchmark(name: "nop x1", unit: "ns/op") { measureNop(total: scaled(150_000, $0), coroutines: 1) },
    Benchmark(name: "nop x64", unit: "ns/op") { measureNop(total: scaled(300_000, $0), coroutines: 64) },
    // The same on the epoll engine (a NOP completes at once there: the loop's own cost).
    Benchmark(name: "switch (park/resume), epoll", unit: "ns/switch") { measureParkResume(switches: scaled(300_000, $0), backend: .epoll) },
    Benchmark(name: "nop x1, epoll", unit: "ns/op") { measureNop(total: scaled(150_000, $0), coroutines: 1, backend: .epoll) },
    Benchmark(name: "nop x64, epoll", unit: "ns/op") { measureNop(total: scaled(300_000, $0), coroutines: 64, backend: .epoll) },
    Benchmark(name: "100k sleepers", unit: "cpu ns/coro") { measureTimers(count: scaled(100_000, $0), workload: .sleep) },
    Benchmark(name: "100k parked, resumed in deadline order (baseline)", unit: "cpu ns/coro") { measureTimers(count: scaled(100_000, $0), workload: .parkResumedInDeadlineOrder) },
    Benchmark(name: "100k spawn only", unit: "cpu ns/coro") { measureTimers(count: scaled(100_000, $0), workload: .none) },
] + compatBenchmarks() }

func allDerivedRows() -> [Derived] { [
    Derived(name: "switch / floor", unit: "ratio", target: 1.15, decimals: 3,
            inputs: ("switch (park/resume)", "floor ping-pong"), combine: { $0 / $1 }),
    Derived(name: "spawn-and-join / floor", unit: "ratio", decimals: 3,
            inputs: ("spawn-and-join", "floor spawn-and-join (Task + value)"), combine: { $0 / $1 }),
    Derived(name: "timer cost (sleepers - baseline)", unit: "cpu ns/timer", target: 1000,
            inputs: ("100k sleepers", "100k parked, resumed in deadline order (baseline)"), combine: { $0 - $1 }),
] + compatDerivedRows() }

func memoryRows() -> [(name: String, count: Int, floor: Bool)] { [
    ("memory floor: bare parked Task (100k)", 100_000, true),
    ("memory per parked coroutine (100k)", 100_000, false),
    ("memory per parked coroutine (1M)", 1_000_000, false),
] }

func matches(_ name: String, _ filter: String?) -> Bool {
    guard let filter, !filter.isEmpty else { return true }
    return name.contains(filter)
}

func runBenchmarks(_ options: Options) -> Int32 {
    let benchmarks = allBenchmarks()
    let derivedRows = allDerivedRows()
    let reps = options.reps ?? (options.quick ? 2 : 7)
    let scale = options.quick ? 0.1 : 1.0

    // Header: kernel and ring.
    let probe = makeScheduler()
    let setup = probe.setupDescription
    probe.shutdown()
    let release = kernelRelease()
    let features = KernelFeatures.current.description
    print("cogen-bench: \(reps) reps\(options.quick ? ", quick" : "")\(options.filter.map { ", filter '\($0)'" } ?? "")")
    print("uname -r: \(release)")
    print("setup:    \(setup)")
    print("kernel:   \(features)")
    print("")
    fflush(nil)  // all output streams: the header comes before the progress lines

    // Selection: a derived row matching the filter pulls in its inputs.
    var selectedNames = Set(benchmarks.map(\.name).filter { matches($0, options.filter) })
    for derived in derivedRows where matches(derived.name, options.filter) {
        selectedNames.insert(derived.inputs.0)
        selectedNames.insert(derived.inputs.1)
    }
    let selected = benchmarks.filter { selectedNames.contains($0.name) }

    // Warm-up (discarded), then the repetitions in rep-major order, so that drift on a
    // noisy machine hits every benchmark alike and paired rows (switch / floor) are
    // measured side by side.
    var values: [String: [Double]] = [:]
    if !selected.isEmpty {
        writeStandardError("warm-up\n")
        for benchmark in selected { _ = benchmark.measure(options.quick ? 0.02 : 0.1) }
        for rep in 0..<reps {
            writeStandardError("rep \(rep + 1)/\(reps):")
            let switchesBefore = threadContextSwitches()
            for benchmark in selected {
                let value = benchmark.measure(scale)
                values[benchmark.name, default: []].append(value)
                writeStandardError(" \(benchmark.name) \(formatNumber(value, decimals: 1));")
            }
            // Involuntary context switches of this thread during the rep: a noise gauge.
            let preempted = threadContextSwitches().involuntary - switchesBefore.involuntary
            writeStandardError(" [\(preempted) involuntary context switches]\n")
        }
    }

    var rows: [Row] = []
    for benchmark in selected {
        rows.append(Row(name: benchmark.name, unit: benchmark.unit, target: benchmark.target,
                        decimals: benchmark.decimals, values: values[benchmark.name] ?? []))
        // A derived row goes right after the later of its two inputs.
        for derived in derivedRows where derived.inputs.0 == benchmark.name || derived.inputs.1 == benchmark.name {
            let present = Set(rows.map(\.name))
            guard present.contains(derived.inputs.0), present.contains(derived.inputs.1),
                !present.contains(derived.name),
                let a = values[derived.inputs.0], let b = values[derived.inputs.1]
            else { continue }
            rows.append(Row(name: derived.name, unit: derived.unit, target: derived.target,
                            decimals: derived.decimals, values: zip(a, b).map(derived.combine),
                            note: derived.note ?? "per-rep \(derived.inputs.0) vs \(derived.inputs.1)",
                            atLeast: derived.atLeast))
        }
    }

    // Memory: a fresh child process per measurement, so the heap left by the other
    // benchmarks does not count.
    let memoryReps = options.quick ? 1 : min(reps, 3)
    var failedChildren = false
    for (name, count, floor) in memoryRows() where matches(name, options.filter) {
        var samples: [Double] = []
        for rep in 0..<memoryReps {
            writeStandardError("\(name): child \(rep + 1)/\(memoryReps)\n")
            do {
                samples.append(try measureMemoryInChild(count: count, floor: floor))
            } catch {
                writeStandardError("cogen-bench: \(name): \(error)\n")
                failedChildren = true
            }
        }
        rows.append(Row(name: name, unit: floor ? "B/task" : "B/coroutine", target: floor ? nil : 2048,
                        decimals: 0, values: samples,
                        note: "RSS delta in a child process, \(memoryReps) rep(s)"))
    }

    printTable(rows)
    writeJSON(rows, to: options.jsonPath, reps: reps, quick: options.quick,
              release: release, setup: setup, features: features)
    return failedChildren ? 1 : 0
}

func printTable(_ rows: [Row]) {
    let header = ["name", "median", "min", "max", "unit", "target", "pass/fail"]
    var cells: [[String]] = [header]
    for row in rows {
        cells.append([
            row.name,
            formatNumber(row.median, decimals: row.decimals),
            formatNumber(row.minimum, decimals: row.decimals),
            formatNumber(row.maximum, decimals: row.decimals),
            row.unit, row.targetText, row.passText,
        ])
    }
    var widths = [Int](repeating: 0, count: header.count)
    for line in cells { for (i, cell) in line.enumerated() { widths[i] = max(widths[i], cell.count) } }
    func render(_ line: [String]) -> String {
        line.enumerated().map { i, cell in
            pad(cell, widths[i], right: i >= 1 && i <= 3)
        }.joined(separator: " | ")
    }
    print(render(header))
    print(widths.map { String(repeating: "-", count: $0) }.joined(separator: "-|-"))
    for line in cells.dropFirst() { print(render(line)) }
}

func writeJSON(_ rows: [Row], to path: String, reps: Int, quick: Bool,
               release: String, setup: String, features: String) {
    var out = "{\n"
    out += "  \"uname\": \(jsonString(release)),\n"
    out += "  \"setup\": \(jsonString(setup)),\n"
    out += "  \"kernelFeatures\": \(jsonString(features)),\n"
    out += "  \"reps\": \(reps),\n"
    out += "  \"quick\": \(quick),\n"
    out += "  \"results\": [\n"
    out += rows.map { row in
        var fields: [String] = []
        fields.append("\"name\": \(jsonString(row.name))")
        fields.append("\"median\": \(jsonNumber(row.median))")
        fields.append("\"min\": \(jsonNumber(row.minimum))")
        fields.append("\"max\": \(jsonNumber(row.maximum))")
        fields.append("\"unit\": \(jsonString(row.unit))")
        fields.append("\"target\": \(row.target.map { jsonNumber($0) } ?? "null")")
        fields.append("\"pass\": \(row.passed.map { "\($0)" } ?? "null")")
        fields.append("\"values\": [\(row.values.map(jsonNumber).joined(separator: ", "))]")
        if let note = row.note { fields.append("\"note\": \(jsonString(note))") }
        return "    {" + fields.joined(separator: ", ") + "}"
    }.joined(separator: ",\n")
    out += "\n  ]\n}\n"
    guard let file = fopen(path, "w") else {
        writeStandardError("cogen-bench: cannot write \(path): errno \(errno)\n")
        return
    }
    fputs(out, file)
    fclose(file)
    print("\nwrote \(path)")
}
