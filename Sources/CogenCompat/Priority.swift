/// A cogen operation priority: two bits, tested per operation.
///
/// `CORO` (bit 0) favours the coroutine that yielded the operation, `OP` (bit 1) the
/// coroutine(s) the operation affects. Where each operation puts whom is cogen's placement
/// table (see the "Porting from cogen" article); ``priority`` holds the constants.
public struct Priority: Sendable, Hashable, CustomStringConvertible, ExpressibleByIntegerLiteral {
    /// cogen's integer value: -1 (`DEFAULT`), 0 (`LAST`) … 3 (`FIRST`).
    public let rawValue: Int

    /// A priority from cogen's integer value; `nil` outside -1…3.
    /// - Parameter rawValue: -1 to 3.
    public init?(rawValue: Int) {
        guard (-1...3).contains(rawValue) else { return nil }
        self.rawValue = rawValue
    }

    fileprivate init(unchecked rawValue: Int) { self.rawValue = rawValue }

    /// A priority from cogen's integer value, as in `prio: 2`.
    /// - Parameter value: -1 to 3; a literal outside stops the program (a value known only
    ///   at run time goes through ``init(rawValue:)``).
    public init(integerLiteral value: Int) {
        guard (-1...3).contains(value) else {
            // invariant: a priority literal written in source is -1...3 (documented).
            fatalError("a cogen priority is -1 (DEFAULT) to 3 (FIRST), got the literal \(value)")
        }
        self.rawValue = value
    }

    /// Whether the `CORO` bit is set: the yielding coroutine is favoured.
    public var favoursCoroutine: Bool { rawValue & 1 != 0 }
    /// Whether the `OP` bit is set: the other party of the operation is favoured.
    public var favoursOperation: Bool { rawValue & 2 != 0 }
    /// Whether this is `DEFAULT` (resolved to the scheduler's default when processed).
    public var isDefault: Bool { rawValue < 0 }

    /// Replaces `DEFAULT` by the scheduler's default priority.
    @inlinable
    func resolved(_ defaultPriority: Priority) -> Priority { rawValue < 0 ? defaultPriority : self }

    public var description: String {
        switch rawValue {
        case -1: "DEFAULT"
        case 0: "LAST"
        case 1: "CORO"
        case 2: "OP"
        default: "FIRST"
        }
    }
}

/// cogen's priority constants (`cogen.core.util.priority`).
public enum priority {
    /// Use the scheduler's default priority (resolved when the operation is processed).
    public static let DEFAULT = Priority(unchecked: -1)
    /// Always put things at the back of the run queue.
    public static let LAST = Priority(unchecked: 0)
    /// cogen's other name for ``LAST``.
    public static let NOPRIO = LAST
    /// Favour the coroutine that yields the operation.
    public static let CORO = Priority(unchecked: 1)
    /// Favour the other party of the operation (the coroutines it wakes).
    public static let OP = Priority(unchecked: 2)
    /// Always schedule with priority: both bits.
    public static let FIRST = Priority(unchecked: 3)
    /// cogen's other name for ``FIRST``.
    public static let PRIO = FIRST
}
