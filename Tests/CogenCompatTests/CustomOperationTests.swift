// Only the public API: a user's own operation, as the documentation invites.
import CogenCompat
import Testing

/// A counter coroutines can wait on; loop-confined.
final class Counter: @unchecked Sendable {
    var value = 0
    var waiters: [Parked<Int>] = []
}

/// Waits until a counter reaches a value (parks), or continues at once when it already has.
final class WaitForCount: TimedOperation<Int>, @unchecked Sendable {
    let counter: Counter
    let target: Int
    private var parked: Parked<Int>?

    init(_ counter: Counter, reaching target: Int, timeout: Timeout? = nil) {
        self.counter = counter
        self.target = target
        super.init(timeout: timeout)
    }

    override func process(_ scheduler: Scheduler, _ coroutine: CoroutineInstance) async throws -> Int {
        if counter.value >= target { return counter.value }
        return try await scheduler.park(timed: self) { (handle: Parked<Int>) in
            parked = handle
            counter.waiters.append(handle)
        }
    }

    override func timedOut(_ scheduler: Scheduler) {
        counter.waiters.removeAll { $0 == parked }
    }
}

/// Increments the counter and wakes every waiter (front with the OP bit, else back); the
/// incrementer continues at once.
final class Increment: Operation<Int>, @unchecked Sendable {
    let counter: Counter
    init(_ counter: Counter, prio: Priority = priority.DEFAULT) {
        self.counter = counter
        super.init(prio: prio)
    }

    override func process(_ scheduler: Scheduler, _ coroutine: CoroutineInstance) async throws -> Int {
        counter.value += 1
        let waiters = counter.waiters
        counter.waiters = []
        for waiter in waiters {
            scheduler.resume(waiter, returning: counter.value, placement: scheduler.placement(prio.favoursOperation))
        }
        return counter.value
    }
}

@Suite("custom operations (public API only)")
struct CustomOperationTests {
    @Test("a user-defined operation parks, resumes by priority and times out", arguments: backendsAndPriorities)
    func customOperation(engine: Engine, prio: Priority) async throws {
        let log = Log([])
        let counter = Counter()
        try await runCompat(engine, defaultPriority: prio) { sched in
            sched.add {
                let v = try await yield(WaitForCount(counter, reaching: 1))
                log.value.append("waiter saw \(v)")
                do {
                    _ = try await yield(WaitForCount(counter, reaching: 100, timeout: 0.02))
                } catch let timeout as OperationTimeout {
                    log.value.append("timed out: \(timeout.operation is WaitForCount), \(counter.waiters.count) waiting")
                }
                return nil
            }
            sched.add {
                log.value.append("O")
                await yield()
                log.value.append("O again")
                return nil
            }
            sched.add {
                let v = try await yield(Increment(counter))
                log.value.append("incremented to \(v)")
                await yield()
                log.value.append("incrementer again")
                return nil
            }
        }
        // Increment continues at once; the waiter goes to the front with the OP bit (before
        // O's next turn), to the back without (after it).
        let expected = prio.favoursOperation
            ? ["O", "incremented to 1", "waiter saw 1", "O again", "incrementer again", "timed out: true, 0 waiting"]
            : ["O", "incremented to 1", "O again", "waiter saw 1", "incrementer again", "timed out: true, 0 waiting"]
        #expect(log.value == expected)
    }
}
