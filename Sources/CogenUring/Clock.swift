import Glibc

/// Monotonic nanoseconds (CLOCK_MONOTONIC), the scheduler's internal time base.
@inline(__always)
func monotonicNanoseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
}

extension Duration {
    /// Whole nanoseconds, clamped to 0 below and to ~292 years above.
    var clampedNanoseconds: UInt64 {
        let (seconds, attoseconds) = components
        if seconds < 0 || (seconds == 0 && attoseconds <= 0) { return 0 }
        if seconds >= 9_000_000_000 { return UInt64(Int64.max) }
        return UInt64(seconds) * 1_000_000_000 + UInt64(attoseconds / 1_000_000_000)
    }
}

/// Converts a public deadline to the internal time base.
@inline(__always)
func internalDeadline(_ instant: ContinuousClock.Instant) -> UInt64 {
    let now = monotonicNanoseconds()
    let remaining = ContinuousClock.now.duration(to: instant)
    return now &+ remaining.clampedNanoseconds
}

@inline(__always)
func internalDeadline(after duration: Duration) -> UInt64 {
    monotonicNanoseconds() &+ duration.clampedNanoseconds
}
