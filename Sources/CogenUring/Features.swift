import CURing

/// What the running kernel's io_uring offers, probed once per process, and what a
/// scheduler's ring actually uses.
///
/// Opcodes come from `IORING_REGISTER_PROBE`. Setup flags and registrations are not listed
/// by the probe, so each is found by trying it once on a throw-away ring.
public struct KernelFeatures: Sendable, CustomStringConvertible {
    /// `0` when io_uring is available; otherwise the errno `io_uring_setup` returned.
    public let setupErrno: Int32
    /// The `IORING_FEAT_*` bits a plain ring reports.
    public let featureBits: UInt32
    /// `IORING_SETUP_SINGLE_ISSUER` (6.0).
    public let singleIssuer: Bool
    /// `IORING_SETUP_DEFER_TASKRUN` (6.1).
    public let deferTaskrun: Bool
    /// `IORING_SETUP_COOP_TASKRUN` (5.19).
    public let coopTaskrun: Bool
    /// `IORING_SETUP_TASKRUN_FLAG` (5.19).
    public let taskrunFlag: Bool
    /// `IORING_SETUP_R_DISABLED` with `IORING_REGISTER_ENABLE_RINGS` (5.10).
    public let ringDisabled: Bool
    /// `IORING_SETUP_SUBMIT_ALL` (5.18).
    public let submitAll: Bool
    /// Provided-buffer rings, `IORING_REGISTER_PBUF_RING` (5.19).
    public let bufferRings: Bool
    /// Multishot accept, `IORING_ACCEPT_MULTISHOT` (5.19).
    public let multishotAccept: Bool
    /// Multishot receive, `IORING_RECV_MULTISHOT` (6.0).
    public let multishotReceive: Bool
    private let opcodes: [Bool]

    /// Whether io_uring can be used at all.
    public var isAvailable: Bool { setupErrno == 0 }
    /// `IORING_FEAT_FAST_POLL` (5.7): socket operations poll internally instead of
    /// blocking a worker thread. The io_uring backend needs it.
    public var fastPoll: Bool { featureBits & UInt32(COGEN_FEAT_FAST_POLL) != 0 }
    /// `IORING_FEAT_NODROP` (5.5): completions are never dropped on CQ overflow.
    public var noDrop: Bool { featureBits & UInt32(COGEN_FEAT_NODROP) != 0 }
    /// `IORING_FEAT_EXT_ARG` (5.11): waiting with a timeout in one system call.
    public var extendedArgument: Bool { featureBits & UInt32(COGEN_FEAT_EXT_ARG) != 0 }

    /// Whether the kernel supports an opcode (`IORING_OP_*` number).
    /// - Parameter opcode: The opcode's number, e.g. 0 for `IORING_OP_NOP`.
    /// - Returns: `true` when the probe lists it as supported.
    public func supportsOpcode(_ opcode: Int) -> Bool {
        opcode >= 0 && opcode < opcodes.count && opcodes[opcode]
    }

    /// The probed features of this kernel, cached for the life of the process.
    public static let current = KernelFeatures()

    private init() {
        var raw = cogen_probe_result()
        cogen_probe(&raw)
        setupErrno = raw.setup_errno
        featureBits = raw.features
        singleIssuer = raw.single_issuer
        deferTaskrun = raw.defer_taskrun
        coopTaskrun = raw.coop_taskrun
        taskrunFlag = raw.taskrun_flag
        ringDisabled = raw.ring_disabled
        submitAll = raw.submit_all
        bufferRings = raw.buffer_rings
        multishotAccept = raw.multishot_accept
        multishotReceive = raw.multishot_recv
        let count = Int(raw.last_op)
        opcodes = withUnsafeBytes(of: raw.opcodes) { bytes in
            (0..<min(count, bytes.count)).map { bytes[$0] != 0 }
        }
    }

    public var description: String {
        guard isAvailable else { return "io_uring unavailable (errno \(setupErrno))" }
        var parts: [String] = []
        if fastPoll { parts.append("FAST_POLL") }
        if noDrop { parts.append("NODROP") }
        if extendedArgument { parts.append("EXT_ARG") }
        if singleIssuer { parts.append("SINGLE_ISSUER") }
        if deferTaskrun { parts.append("DEFER_TASKRUN") }
        if coopTaskrun { parts.append("COOP_TASKRUN") }
        if taskrunFlag { parts.append("TASKRUN_FLAG") }
        if bufferRings { parts.append("buffer rings") }
        if multishotAccept { parts.append("multishot accept") }
        if multishotReceive { parts.append("multishot recv") }
        return parts.joined(separator: ", ") + ", \(opcodes.filter { $0 }.count) opcodes"
    }
}

/// The setup a scheduler's ring ended up with.
public struct RingSetup: Sendable, CustomStringConvertible {
    /// Submission queue entries.
    public let submissionEntries: UInt32
    /// Completion queue entries (at least twice the submission entries).
    public let completionEntries: UInt32
    /// The ring was created with `IORING_SETUP_SINGLE_ISSUER`.
    public let singleIssuer: Bool
    /// The ring was created with `IORING_SETUP_DEFER_TASKRUN`.
    public let deferTaskrun: Bool
    /// The ring was created with `IORING_SETUP_COOP_TASKRUN`.
    public let coopTaskrun: Bool
    /// The ring raises `IORING_SQ_TASKRUN` when task work is pending.
    public let taskrunFlag: Bool

    public var description: String {
        var flags: [String] = []
        if singleIssuer { flags.append("SINGLE_ISSUER") }
        if deferTaskrun { flags.append("DEFER_TASKRUN") }
        if coopTaskrun { flags.append("COOP_TASKRUN") }
        if taskrunFlag { flags.append("TASKRUN_FLAG") }
        return "SQ \(submissionEntries), CQ \(completionEntries), flags: "
            + (flags.isEmpty ? "none" : flags.joined(separator: "|"))
    }
}
