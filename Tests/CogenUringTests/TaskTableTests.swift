@testable import CogenUring
import Testing

/// The task table is a hand-rolled hash table on the hot path: exercised on its own.
@Suite struct TaskTableTests {
    @Test func insertsLooksUpAndRemovesWithGrowthAndCollisions() throws {
        let scheduler = try Scheduler()
        defer { scheduler.shutdown() }
        var table = TaskTable(capacity: 8)
        let coroutines = (0..<500).map { _ in Coroutine<Int>(scheduler: scheduler, name: nil, reportsErrors: false) }
        // Keys 16 bytes apart, like neighbouring allocations: many share a home slot.
        let keys = (1...500).map { UnsafeRawPointer(bitPattern: $0 * 16)! }
        for (key, coroutine) in zip(keys, coroutines) { table.insert(key, coroutine) }
        #expect(table.count == 500)
        for (key, coroutine) in zip(keys, coroutines) { #expect(table.lookup(key) === coroutine) }
        for (i, key) in keys.enumerated() where i % 3 == 0 { table.remove(key) }
        for (i, key) in keys.enumerated() {
            #expect((table.lookup(key) === coroutines[i]) == (i % 3 != 0))
        }
        #expect(table.lookup(UnsafeRawPointer(bitPattern: 999_999 * 16)!) == nil)
        for (i, key) in keys.enumerated() where i % 3 != 0 { table.remove(key) }
        #expect(table.count == 0)
        for key in keys { #expect(table.lookup(key) == nil) }
    }
}
