/// Where a resumed coroutine goes in its scheduler's run queue.
///
/// Every resume passes through one hook that applies a placement: the completion of an
/// operation, a wake-up by a signal or a join, a spawn, a cooperative yield, a deadline.
/// The scheduler always takes the next job from the front. Several coroutines placed at the
/// front in one batch therefore run last-first, as in cogen.
public enum Placement: Sendable, Hashable, CustomStringConvertible {
    /// Runs next, ahead of everything already queued.
    case front
    /// Runs after everything already queued.
    case back

    public var description: String { self == .front ? "front" : "back" }
}
