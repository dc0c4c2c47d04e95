import CogenUring
public import FoundationEssentials

/// A timeout as cogen takes it: seconds, a `Duration`, an absolute date, or "none".
///
/// Numbers are seconds: `timeout: 0.5`. `nil`, `0` and ``none`` mean "no timeout of its
/// own" (the scheduler's default timeout may apply); `-1` and ``never`` mean "no timeout,
/// not even the scheduler's default". A relative timeout counts from the moment the
/// operation is yielded; a date is used as is.
public enum Timeout: Sendable, Hashable, ExpressibleByFloatLiteral, ExpressibleByIntegerLiteral,
    CustomStringConvertible
{
    /// No timeout of its own: the scheduler's default applies.
    case none
    /// No timeout at all, not even the scheduler's default (cogen's `-1`).
    case never
    /// A timeout relative to the moment the operation is processed.
    case after(Duration)
    /// An absolute deadline.
    case at(ContinuousClock.Instant)

    /// Seconds, cogen's usual form: `0` is ``none``, `-1` (any negative) is ``never``.
    /// `infinity` is ``never`` too, NaN is ``none``, and more than ~292 years is ~292 years.
    /// - Parameter seconds: How many seconds.
    public init(seconds: Double) {
        if seconds == 0 || seconds.isNaN {
            self = .none
        } else if seconds < 0 || seconds == .infinity {
            self = .never
        } else {
            self = .after(.nanoseconds(Self.nanoseconds(seconds)))
        }
    }

    /// Whole nanoseconds, clamped to the range of `Int64` (no trap for huge values).
    static func nanoseconds(_ seconds: Double) -> Int64 {
        let nanoseconds = (seconds * 1e9).rounded()
        if nanoseconds.isNaN { return 0 }
        return Int64(exactly: nanoseconds) ?? (nanoseconds > 0 ? .max : .min)
    }

    /// A `Duration`; zero or less is ``none``.
    /// - Parameter duration: How long.
    public init(_ duration: Duration) {
        self = duration > .zero ? .after(duration) : .none
    }

    /// An absolute date (cogen's `datetime`).
    /// - Parameter date: When.
    public init(_ date: Date) {
        let seconds = date.timeIntervalSinceNow
        self = .at(ContinuousClock.now.advanced(by: .nanoseconds(Self.nanoseconds(seconds))))
    }

    public init(floatLiteral value: Double) { self.init(seconds: value) }
    public init(integerLiteral value: Int) { self.init(seconds: Double(value)) }

    /// A timeout of `seconds` seconds.
    /// - Parameter seconds: How many.
    /// - Returns: The timeout.
    public static func seconds(_ seconds: Double) -> Timeout { Timeout(seconds: seconds) }

    /// A timeout of `duration`.
    /// - Parameter duration: How long.
    /// - Returns: The timeout.
    public static func duration(_ duration: Duration) -> Timeout { Timeout(duration) }

    /// A deadline at `date`.
    /// - Parameter date: When.
    /// - Returns: The timeout.
    public static func date(_ date: Date) -> Timeout { Timeout(date) }

    /// Whether a timeout of its own is set (not ``none``).
    var isSet: Bool {
        if case .none = self { false } else { true }
    }

    /// The deadline this timeout gives when processed now, with the scheduler's default
    /// applied for ``none``.
    @inline(__always)
    func deadline(default defaultTimeout: Timeout) -> Deadline? {
        switch self {
        case .none: defaultTimeout.isSet ? defaultTimeout.deadline(default: .never) : nil
        case .never: nil
        case .after(let duration): .after(duration)
        case .at(let instant): .at(instant)
        }
    }

    /// The length of a relative timeout (a weak timeout's inactivity window).
    var length: Duration? {
        if case .after(let duration) = self { duration } else { nil }
    }

    public var description: String {
        switch self {
        case .none: "none"
        case .never: "never"
        case .after(let duration): "\(duration)"
        case .at(let instant): "at \(instant)"
        }
    }
}
