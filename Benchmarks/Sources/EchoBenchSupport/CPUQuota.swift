// --server-cpu-quota: each server runs in a cgroup that caps its CPU time, so that the
// server, not the load generator, bounds the throughput. On a two-CPU machine the load
// generator's TCP work per message is about the server's, so without a cap both saturate
// together; with the server held to, say, 60 % of a CPU, the load generator has room to
// spare (its busiest thread well under 90 %) and msg/s compares the servers' work per
// message at one CPU budget. Latency then includes the throttling: compare msg/s.
import Glibc

/// A cgroup (v2 `cpu.max`, or v1 `cpu.cfs_quota_us`) holding one server process.
public struct CPUQuotaGroup {
    public let directory: String
    public let percent: Double

    /// The scheduling period: short, so that a throttled server stalls for milliseconds,
    /// not for most of a 100 ms period.
    public static let periodMicroseconds = 10_000

    public enum Failure: Error, CustomStringConvertible {
        case unavailable(String)
        public var description: String {
            switch self {
            case .unavailable(let why): "--server-cpu-quota needs a writable cgroup cpu controller (run as root): \(why)"
            }
        }
    }

    /// Creates an empty group capped at `percent` of one CPU, with the largest CPU weight
    /// (`cpu.shares` 262144 on v1, `cpu.weight` 10000 on v2). A group competes with the
    /// other processes of its parent as one entity: at the default weight (1024, like one
    /// nice-0 process) a server in it got a tenth of a CPU while a machine's other
    /// processes (builds, tests) ran, whatever its own nice value. With the largest weight
    /// it gets its quota as a `nice -20` process would.
    public static func create(percent: Double, name: String) throws -> CPUQuotaGroup {
        let unified = "/sys/fs/cgroup"
        if let controllers = readText("\(unified)/cgroup.controllers"),
           controllers.split(whereSeparator: { $0 == " " || $0 == "\n" }).contains("cpu")
        {
            _ = try? write("+cpu", to: "\(unified)/cgroup.subtree_control")
            let group = CPUQuotaGroup(directory: "\(unified)/\(name)", percent: percent, unified: true)
            mkdir(group.directory, 0o755)
            try group.setQuota(percent: percent)
            _ = try? write("10000", to: "\(group.directory)/cpu.weight")
            return group
        }
        let v1 = "/sys/fs/cgroup/cpu"
        guard access("\(v1)/cpu.cfs_quota_us", F_OK) == 0 else {
            throw Failure.unavailable("no cpu controller in /sys/fs/cgroup (v2) or /sys/fs/cgroup/cpu (v1)")
        }
        let group = CPUQuotaGroup(directory: "\(v1)/\(name)", percent: percent, unified: false)
        mkdir(group.directory, 0o755)
        try group.setQuota(percent: percent)
        _ = try? write("262144", to: "\(group.directory)/cpu.shares")
        return group
    }

    /// Whether this is a cgroup v2 group (`cpu.max`) rather than v1 (`cpu.cfs_quota_us`).
    public let unified: Bool

    /// Changes the cap of the group (and of the processes in it): `percent` of one CPU, or
    /// no cap for `nil`.
    public func setQuota(percent: Double?) throws {
        let quota = percent.map { max(1000, Int(Double(Self.periodMicroseconds) * $0 / 100)) }
        do {
            if unified {
                try Self.write("\(quota.map(String.init) ?? "max") \(Self.periodMicroseconds)", to: "\(directory)/cpu.max")
            } else {
                try Self.write("\(Self.periodMicroseconds)", to: "\(directory)/cpu.cfs_period_us")
                try Self.write("\(quota ?? -1)", to: "\(directory)/cpu.cfs_quota_us")
            }
        } catch {
            throw Failure.unavailable("\(directory): \(error)")
        }
    }

    private static func readText(_ path: String) -> String? {
        guard let file = fopen(path, "r") else { return nil }
        defer { fclose(file) }
        var buffer = [CChar](repeating: 0, count: 4096)
        let count = fread(&buffer, 1, buffer.count - 1, file)
        return String(decoding: buffer[..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Moves the process (all its threads) into the group.
    public func add(_ pid: pid_t) throws {
        try Self.write("\(pid)", to: "\(directory)/cgroup.procs")
    }

    /// Removes the group; its processes must have exited.
    public func remove() {
        rmdir(directory)
    }

    private static func write(_ text: String, to path: String) throws {
        let fd = open(path, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { throw Failure.unavailable("\(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let written = text.withCString { Glibc.write(fd, $0, strlen($0)) }
        guard written >= 0 else { throw Failure.unavailable("\(path): \(String(cString: strerror(errno)))") }
    }
}
