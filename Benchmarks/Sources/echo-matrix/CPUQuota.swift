// --server-cpu-quota: each server runs in a cgroup that caps its CPU time, so that the
// server, not the load generator, bounds the throughput. On a two-CPU machine the load
// generator's TCP work per message is about the server's, so without a cap both saturate
// together; with the server held to, say, 60 % of a CPU, the load generator has room to
// spare (its busiest thread well under 90 %) and msg/s compares the servers' work per
// message at one CPU budget. Latency then includes the throttling: compare msg/s.
import Foundation
import Glibc

/// A cgroup (v2 `cpu.max`, or v1 `cpu.cfs_quota_us`) holding one server process.
struct CPUQuotaGroup {
    let directory: String
    let percent: Double

    /// The scheduling period: short, so that a throttled server stalls for milliseconds,
    /// not for most of a 100 ms period.
    static let periodMicroseconds = 10_000

    enum Failure: Error, CustomStringConvertible {
        case unavailable(String)
        var description: String {
            switch self {
            case .unavailable(let why): "--server-cpu-quota needs a writable cgroup cpu controller (run as root): \(why)"
            }
        }
    }

    /// Creates an empty group capped at `percent` of one CPU.
    static func create(percent: Double, name: String) throws -> CPUQuotaGroup {
        let quota = max(1000, Int(Double(periodMicroseconds) * percent / 100))
        let manager = FileManager.default
        let unified = "/sys/fs/cgroup"
        if let controllers = try? String(contentsOfFile: "\(unified)/cgroup.controllers", encoding: .utf8),
           controllers.split(separator: " ").contains(where: { $0.trimmingCharacters(in: .whitespacesAndNewlines) == "cpu" })
        {
            _ = try? write("+cpu", to: "\(unified)/cgroup.subtree_control")
            let directory = "\(unified)/\(name)"
            do {
                try? manager.createDirectory(atPath: directory, withIntermediateDirectories: false)
                try write("\(quota) \(periodMicroseconds)", to: "\(directory)/cpu.max")
            } catch {
                throw Failure.unavailable("\(directory): \(error)")
            }
            return CPUQuotaGroup(directory: directory, percent: percent)
        }
        let v1 = "/sys/fs/cgroup/cpu"
        guard manager.fileExists(atPath: "\(v1)/cpu.cfs_quota_us") else {
            throw Failure.unavailable("no cpu controller in /sys/fs/cgroup (v2) or /sys/fs/cgroup/cpu (v1)")
        }
        let directory = "\(v1)/\(name)"
        do {
            try? manager.createDirectory(atPath: directory, withIntermediateDirectories: false)
            try write("\(periodMicroseconds)", to: "\(directory)/cpu.cfs_period_us")
            try write("\(quota)", to: "\(directory)/cpu.cfs_quota_us")
        } catch {
            throw Failure.unavailable("\(directory): \(error)")
        }
        return CPUQuotaGroup(directory: directory, percent: percent)
    }

    /// Moves the process (all its threads) into the group.
    func add(_ pid: pid_t) throws {
        try Self.write("\(pid)", to: "\(directory)/cgroup.procs")
    }

    /// Removes the group; its processes must have exited.
    func remove() {
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
