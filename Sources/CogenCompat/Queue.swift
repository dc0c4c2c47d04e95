import CogenUring

/// A FIFO queue for coroutines of one scheduler (cogen's `cogen.core.queue.Queue`, a port
/// of Python's `Queue.Queue`): its blocking methods return operations to yield.
///
/// ```swift
/// let q = Queue(maxsize: 1)                 // items are `any Sendable`, as in cogen
/// sched.add { try await yield(q.put("job")); return nil }
/// sched.add {
///     let job = try await yield(q.get())
///     try await yield(q.taskDone())
///     return job
/// }
/// ```
///
/// `Queue(maxsize:)` without a type makes the dynamic queue of cogen code, whose items are
/// `any Sendable`; `Queue<Int>(maxsize:)` makes a typed one whose `get` returns an `Int`
/// without a cast. One generic class serves both, so ported code keeps cogen's shape and
/// new code keeps its types; the run order is the same.
///
/// Who runs first when a `put` meets a parked `get` (or a `get` frees a parked `put`)
/// follows cogen's placement table: see ``put(_:block:timeout:prio:)`` and
/// ``get(block:timeout:prio:)``. A timed `put` or `get` that expires leaves the wait list
/// and raises ``OperationTimeout``; the non-blocking forms raise ``Full`` and ``Empty``.
/// Unlike cogen, a blocking `put` that times out is not counted as an unfinished task (a
/// `join` left waiting on nothing else is released, to the back of the run queue), and
/// coroutines waiting in ``join()`` are forgotten once woken.
///
/// No kernel operation: a queue is a pure scheduler structure. Use it on its scheduler's
/// thread (from its coroutines).
public final class Queue<Element: Sendable>: @unchecked Sendable {
    // @unchecked Sendable: loop-confined; only its scheduler's coroutines touch it.

    /// The bound; 0 or less means unbounded.
    public let maxsize: Int
    /// Items put and not yet marked done with ``taskDone(prio:)`` (blocking puts still
    /// waiting count too).
    public internal(set) var unfinishedTasks = 0

    var items = FIFO<Element>()
    var waitingPuts = FIFO<QPut<Element>>()
    var waitingGets = FIFO<QGet<Element>>()
    var joinees: [Parked<Void>] = []

    init(bound: Int) {
        maxsize = bound
    }

    /// Creates a queue whose elements have a static type.
    /// - Parameter maxsize: The most items it holds; 0 or less (the default) for no bound.
    ///
    /// No kernel operation.
    public convenience init(maxsize: Int = 0) {
        self.init(bound: maxsize)
    }

    /// The number of items in the queue (cogen's `qsize()`).
    /// - Returns: The count.
    ///
    /// No kernel operation.
    public func qsize() -> Int { items.count }

    /// Whether the queue holds no item (cogen's `empty()`).
    /// - Returns: `true` when empty.
    ///
    /// No kernel operation.
    public func empty() -> Bool { items.isEmpty }

    /// Whether the queue is bounded and holds `maxsize` items (cogen's `full()`).
    /// - Returns: `true` when a put would block.
    ///
    /// No kernel operation.
    public func full() -> Bool { maxsize > 0 && items.count >= maxsize }

    /// Puts an item in the queue; yield the operation.
    ///
    /// When a getter is parked the item goes straight to the oldest one. With a priority
    /// other than `LAST` the getter continues at once and the putter goes to the front with
    /// the `CORO` bit, to the back without; with `LAST` the putter continues at once and the
    /// getter goes to the front if its own get's priority is not `LAST`, to the back
    /// otherwise. With room and no getter, the putter continues at once. On a full queue a
    /// blocking put waits (counted as an unfinished task while it waits).
    /// - Parameters:
    ///   - item: What to put.
    ///   - block: Wait for room on a full queue (the default); `false` raises ``Full``.
    ///   - timeout: How long to wait for room; see ``Timeout``. The scheduler's default
    ///     applies when none.
    ///   - prio: The placement priority; `DEFAULT` uses the scheduler's.
    /// - Returns: The operation; `yield` returns nothing.
    ///
    /// Yielding it throws ``Full`` (non-blocking, full queue) or ``OperationTimeout``
    /// (carrying the operation). No kernel operation.
    public func put(
        _ item: Element, block: Bool = true, timeout: Timeout? = nil, prio: Priority = priority.DEFAULT
    ) -> QPut<Element> {
        QPut(self, item, block: block, timeout: timeout, prio: prio)
    }

    /// Puts an item only if there is room (cogen's `put_nowait`); yield the operation.
    /// - Parameter item: What to put.
    /// - Returns: The operation; yielding it throws ``Full`` on a full queue.
    ///
    /// No kernel operation.
    public func putNowait(_ item: Element) -> QPut<Element> {
        put(item, block: false)
    }

    /// Takes the oldest item; yield the operation, which returns the item.
    ///
    /// When taking an item frees room for a parked putter, the oldest putter's item enters
    /// the queue and the *putter's* priority decides: with its `CORO` bit the putter
    /// continues at once and the getter goes to the front (putter's `OP` bit) or the back;
    /// without it the getter continues at once and the putter goes to the front (`OP` bit)
    /// or the back. Otherwise the getter continues at once; on an empty queue a blocking
    /// get waits.
    /// - Parameters:
    ///   - block: Wait for an item on an empty queue (the default); `false` raises
    ///     ``Empty``.
    ///   - timeout: How long to wait; see ``Timeout``. The scheduler's default applies when
    ///     none.
    ///   - prio: This get's priority: it decides where the getter goes when a `LAST` put
    ///     hands it an item.
    /// - Returns: The operation; `yield` returns the item.
    ///
    /// Yielding it throws ``Empty`` (non-blocking, empty queue) or ``OperationTimeout``
    /// (carrying the operation). No kernel operation.
    public func get(block: Bool = true, timeout: Timeout? = nil, prio: Priority = priority.DEFAULT) -> QGet<Element> {
        QGet(self, block: block, timeout: timeout, prio: prio)
    }

    /// Takes an item only if there is one (cogen's `get_nowait`); yield the operation.
    /// - Returns: The operation; yielding it throws ``Empty`` on an empty queue.
    ///
    /// No kernel operation.
    public func getNowait() -> QGet<Element> {
        get(block: false)
    }

    /// Marks one item as processed (cogen's `task_done`), **at call time**, and returns an
    /// operation to yield.
    ///
    /// While unfinished tasks remain, the operation is a bare cooperative yield (cogen
    /// returns `None`). When the count reaches zero it is a ``QDone``: the coroutines
    /// waiting in ``join()`` wake up (front, last first, with the `OP` bit; back, in order,
    /// without) and the caller continues at once.
    /// - Parameter prio: The ``QDone`` operation's priority.
    /// - Returns: The operation to yield.
    /// - Throws: ``ValueError`` "task_done() called too many times" when no task is
    ///   unfinished; the count is unchanged.
    ///
    /// No kernel operation.
    public func taskDone(prio: Priority = priority.DEFAULT) throws(ValueError) -> Operation<Void> {
        let unfinished = unfinishedTasks - 1
        guard unfinished >= 0 else { throw ValueError("task_done() called too many times") }
        unfinishedTasks = unfinished
        return unfinished == 0 ? QDone(self, prio: prio) : CooperativeYield()
    }

    /// Waits until every item put has been marked done (cogen's `join`), evaluated **at
    /// call time**: with unfinished tasks the operation is a ``QJoin`` (which parks unless
    /// the count has dropped to zero by the time it is yielded); without, it is a bare
    /// cooperative yield (cogen returns `None`).
    /// - Returns: The operation to yield.
    ///
    /// No kernel operation.
    public func join() -> Operation<Void> {
        unfinishedTasks > 0 ? QJoin(self) : CooperativeYield()
    }

    /// Resumes every coroutine waiting in ``join()`` and forgets them.
    func wakeJoinees(_ scheduler: Scheduler, placement: Placement) {
        let waking = joinees
        joinees = []
        for joinee in waking { scheduler.resume(joinee, returning: (), placement: placement) }
    }

    /// The oldest putter still parked. One whose deadline has passed but which has not
    /// run yet is dropped: its item must not enter the queue (it leaves when it runs).
    func nextPutter() -> QPut<Element>? {
        let putter = waitingPuts.popFirst { $0.parked?.isParked == true }
        putter?.waiting = false
        return putter
    }

    /// The oldest getter still parked (one whose deadline has passed is dropped: the item
    /// would be lost).
    func nextGetter() -> QGet<Element>? {
        let getter = waitingGets.popFirst { $0.parked?.isParked == true }
        getter?.waiting = false
        return getter
    }
}

extension Queue where Element == any Sendable {
    /// Creates a queue of `any Sendable` items, as cogen's dynamic queue.
    /// - Parameter maxsize: The most items it holds; 0 or less (the default) for no bound.
    ///
    /// No kernel operation.
    public convenience init(maxsize: Int = 0) {
        self.init(bound: maxsize)
    }
}

/// The operation of ``Queue/put(_:block:timeout:prio:)`` (cogen's `QPut`).
///
/// No kernel operation.
public final class QPut<Element: Sendable>: TimedOperation<Void>, @unchecked Sendable {
    /// The queue.
    public let queue: Queue<Element>
    /// The item to put.
    public let item: Element
    /// Whether it waits on a full queue.
    public let block: Bool
    var parked: Parked<Void>?
    /// Parked in the wait list and counted in `unfinishedTasks`, item not delivered.
    var waiting = false

    init(_ queue: Queue<Element>, _ item: Element, block: Bool, timeout: Timeout?, prio: Priority) {
        self.queue = queue
        self.item = item
        self.block = block
        super.init(timeout: timeout, prio: prio)
    }

    public override func process(_ scheduler: Scheduler, _ coroutine: CoroutineInstance) async throws {
        if queue.full() {
            guard block else { throw Full() }
            queue.unfinishedTasks += 1
            waiting = true
            do {
                try await scheduler.park(timed: self) { (handle: Parked<Void>) in
                    parked = handle
                    queue.waitingPuts.append(self)
                }
            } catch {
                withdraw(scheduler)
                throw error
            }
            return
        }
        queue.unfinishedTasks += 1
        guard let getter = queue.nextGetter(), let handle = getter.parked else {
            queue.items.append(item)
            return
        }
        let item = self.item
        if prio.rawValue != 0 {
            // The getter continues at once: it goes to the front after the putter is queued.
            await scheduler.requeue(scheduler.placement(prio.favoursCoroutine)) {
                scheduler.resume(handle, returning: item, placement: .front)
            }
        } else {
            scheduler.resume(handle, returning: item, placement: scheduler.placement(getter.prio.rawValue != 0))
        }
    }

    /// Leaves the wait list after a timeout (or a shutdown): not an unfinished task any
    /// more (decision 23); joiners left waiting on nothing are released.
    private func withdraw(_ scheduler: Scheduler) {
        guard waiting else { return }
        waiting = false
        queue.waitingPuts.removeAll { $0 === self }
        queue.unfinishedTasks -= 1
        if queue.unfinishedTasks == 0 { queue.wakeJoinees(scheduler, placement: .back) }
    }

    public override var description: String {
        "QPut(\(item), block: \(block), timeout: \(timeout), prio: \(prio))"
    }
}

/// The operation of ``Queue/get(block:timeout:prio:)`` (cogen's `QGet`); `yield` returns
/// the item.
///
/// No kernel operation.
public final class QGet<Element: Sendable>: TimedOperation<Element>, @unchecked Sendable {
    /// The queue.
    public let queue: Queue<Element>
    /// Whether it waits on an empty queue.
    public let block: Bool
    var parked: Parked<Element>?
    /// Parked in the wait list, no item received.
    var waiting = false

    init(_ queue: Queue<Element>, block: Bool, timeout: Timeout?, prio: Priority) {
        self.queue = queue
        self.block = block
        super.init(timeout: timeout, prio: prio)
    }

    public override func process(_ scheduler: Scheduler, _ coroutine: CoroutineInstance) async throws -> Element {
        guard let item = queue.items.popFirst() else {
            guard block else { throw Empty() }
            waiting = true
            do {
                return try await scheduler.park(timed: self) { (handle: Parked<Element>) in
                    parked = handle
                    queue.waitingGets.append(self)
                }
            } catch {
                if waiting {
                    waiting = false
                    queue.waitingGets.removeAll { $0 === self }
                }
                throw error
            }
        }
        // A parked putter waits only on a full queue; taking an item made room for one.
        guard let putter = queue.nextPutter(), let handle = putter.parked else { return item }
        queue.items.append(putter.item)
        let putPrio = putter.prio
        if putPrio.favoursCoroutine {
            // The putter continues at once: it goes to the front after the getter is queued.
            await scheduler.requeue(scheduler.placement(putPrio.favoursOperation)) {
                scheduler.resume(handle, returning: (), placement: .front)
            }
        } else {
            scheduler.resume(handle, returning: (), placement: scheduler.placement(putPrio.favoursOperation))
        }
        return item
    }

    public override var description: String {
        "QGet(block: \(block), timeout: \(timeout), prio: \(prio))"
    }
}

/// The operation of the ``Queue/taskDone(prio:)`` call that brings the unfinished count to
/// zero (cogen's `QDone`): wakes the coroutines waiting in ``Queue/join()``.
///
/// They go to the front (the last one to join runs first) with the `OP` bit, to the back
/// in order without; the caller continues at once. No kernel operation.
public final class QDone<Element: Sendable>: Operation<Void>, @unchecked Sendable {
    /// The queue.
    public let queue: Queue<Element>

    init(_ queue: Queue<Element>, prio: Priority) {
        self.queue = queue
        super.init(prio: prio)
    }

    public override func process(_ scheduler: Scheduler, _ coroutine: CoroutineInstance) async throws {
        queue.wakeJoinees(scheduler, placement: scheduler.placement(prio.favoursOperation))
    }
}

/// The operation of ``Queue/join()`` when tasks are unfinished (cogen's `QJoin`): parks
/// until the unfinished count reaches zero, or continues at once if it already has.
///
/// No kernel operation.
public final class QJoin<Element: Sendable>: Operation<Void>, @unchecked Sendable {
    /// The queue.
    public let queue: Queue<Element>

    init(_ queue: Queue<Element>) {
        self.queue = queue
        super.init()
    }

    public override func process(_ scheduler: Scheduler, _ coroutine: CoroutineInstance) async throws {
        if queue.unfinishedTasks == 0 { return }
        try await scheduler.park(for: self) { (handle: Parked<Void>) in
            queue.joinees.append(handle)
        }
    }
}

/// cogen's `yield None` as an operation: back of the run queue (what ``yield()`` does).
final class CooperativeYield: Operation<Void>, @unchecked Sendable {
    override func process(_ scheduler: Scheduler, _ coroutine: CoroutineInstance) async throws {
        await scheduler.core.yield()
    }

    override var description: String { "None" }
}

/// A non-blocking ``Queue/putNowait(_:)`` (or `put(block: false)`) found the queue full
/// (cogen's `Full`).
public struct Full: Error, Sendable, CustomStringConvertible {
    /// Creates the error.
    public init() {}
    public var description: String { "Full" }
}

/// A non-blocking ``Queue/getNowait()`` (or `get(block: false)`) found the queue empty
/// (cogen's `Empty`).
public struct Empty: Error, Sendable, CustomStringConvertible {
    /// Creates the error.
    public init() {}
    public var description: String { "Empty" }
}

/// A call got a value it cannot accept (Python's `ValueError`): ``Queue/taskDone(prio:)``
/// called more times than items were put.
public struct ValueError: Error, Sendable, CustomStringConvertible {
    /// What was wrong.
    public let message: String

    /// Creates the error.
    /// - Parameter message: What was wrong.
    public init(_ message: String) {
        self.message = message
    }

    public var description: String { "ValueError: \(message)" }
}

/// cogen's `cogen.core.queue`, so that ported code keeps its shape:
/// `let q = queue.Queue(maxsize: 1)`. Its queue holds `any Sendable` items.
public enum queue {
    /// cogen's `Queue`: ``CogenCompat/Queue`` of `any Sendable` items.
    public typealias Queue = CogenCompat.Queue<any Sendable>
    /// cogen's `QPut`: see ``CogenCompat/QPut``.
    public typealias QPut = CogenCompat.QPut<any Sendable>
    /// cogen's `QGet`: see ``CogenCompat/QGet``.
    public typealias QGet = CogenCompat.QGet<any Sendable>
    /// cogen's `QDone`: see ``CogenCompat/QDone``.
    public typealias QDone = CogenCompat.QDone<any Sendable>
    /// cogen's `QJoin`: see ``CogenCompat/QJoin``.
    public typealias QJoin = CogenCompat.QJoin<any Sendable>
    /// cogen's `Full`: see ``CogenCompat/Full``.
    public typealias Full = CogenCompat.Full
    /// cogen's `Empty`: see ``CogenCompat/Empty``.
    public typealias Empty = CogenCompat.Empty
}

/// A first-in first-out buffer: appends at the back, pops from the front in O(1).
struct FIFO<Element> {
    private var storage: [Element?] = []
    private var head = 0

    var count: Int { storage.count - head }
    var isEmpty: Bool { head == storage.count }

    mutating func append(_ element: Element) {
        storage.append(element)
    }

    mutating func popFirst() -> Element? {
        guard head < storage.count else { return nil }
        let element = storage[head].take()
        head += 1
        if head == storage.count {
            storage.removeAll(keepingCapacity: true)
            head = 0
        } else if head >= 32 && head * 2 >= storage.count {
            storage.removeFirst(head)
            head = 0
        }
        return element
    }

    /// Pops elements until one satisfies `isWanted`; the others are dropped.
    mutating func popFirst(_ isWanted: (Element) -> Bool) -> Element? {
        while let element = popFirst() {
            if isWanted(element) { return element }
        }
        return nil
    }

    mutating func removeAll(where shouldRemove: (Element) -> Bool) {
        storage.removeSubrange(..<head)
        head = 0
        storage.removeAll { $0.map(shouldRemove) ?? true }  // (no taken slot is left past `head`)
    }
}
