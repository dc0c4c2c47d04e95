/// A point in time after which an operation gives up, fixed when the deadline is made.
///
/// `Deadline.after(.milliseconds(50))` is measured from the moment it is created, which is
/// the moment the operation is started when written inline.
public struct Deadline: Sendable, Hashable, Comparable {
    /// Nanoseconds on the scheduler's monotonic time base (CLOCK_MONOTONIC).
    let nanoseconds: UInt64

    init(nanoseconds: UInt64) { self.nanoseconds = nanoseconds }

    /// A deadline `duration` from now; zero or negative durations are already due.
    /// - Parameter duration: How long from now.
    /// - Returns: The deadline.
    public static func after(_ duration: Duration) -> Deadline {
        Deadline(nanoseconds: internalDeadline(after: duration))
    }

    /// ``after(_:)`` with the duration given in nanoseconds (``nanoseconds(of:)``): a hot
    /// path that sets the same timeout over and over converts it once.
    package static func after(nanoseconds: UInt64) -> Deadline {
        Deadline(nanoseconds: monotonicNanoseconds() &+ nanoseconds)
    }

    /// `duration` in nanoseconds, as ``after(nanoseconds:)`` takes it (clamped to 0...Int64.max).
    package static func nanoseconds(of duration: Duration) -> UInt64 { duration.clampedNanoseconds }

    /// A deadline at an instant of the continuous clock.
    /// - Parameter instant: When the deadline passes.
    /// - Returns: The deadline.
    public static func at(_ instant: ContinuousClock.Instant) -> Deadline {
        Deadline(nanoseconds: internalDeadline(instant))
    }

    /// The time left until the deadline, zero when it has passed.
    public var remaining: Duration {
        let now = monotonicNanoseconds()
        return nanoseconds > now ? .nanoseconds(Int64(nanoseconds - now)) : .zero
    }

    public static func < (lhs: Deadline, rhs: Deadline) -> Bool { lhs.nanoseconds < rhs.nanoseconds }
}
