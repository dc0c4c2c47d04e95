import Glibc

/// A value behind a pthread mutex: what cross-thread hand-offs go through instead of
/// `Synchronization.Mutex`.
///
/// Why not `Mutex`: on Linux (Swift 6.3) only its uncontended path is an atomic inlined
/// into our (instrumented) code. A contended `Mutex` is taken and released in the standard
/// library's uninstrumented slow path, through a futex the kernel hands over, so
/// ThreadSanitizer misses that hand-off: whatever went through it (a job posted to the
/// inbox, a coroutine handle made on another thread) then reads as a data race on the loop
/// thread, in some runs and not others. TSan intercepts `pthread_mutex_lock`/`unlock` and
/// sees every hand-off. Uncontended, both are one atomic each, like `Mutex`; the mutex
/// lives in its own allocation because a `pthread_mutex_t` must not move.
package final class PthreadLock<Value: ~Copyable>: @unchecked Sendable {
    // @unchecked Sendable: `value` is only touched between lock and unlock.
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private var value: Value

    /// - Parameter value: The initial value.
    package init(_ value: consuming Value) {
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        // glibc's pthread_mutex_init cannot fail for a default (nil) attribute.
        _ = pthread_mutex_init(mutex, nil)
        self.value = value
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deinitialize(count: 1)
        mutex.deallocate()
    }

    /// Runs `body` with the value while holding the lock.
    /// - Parameter body: Reads or changes the value; it must not block or take this lock.
    /// - Returns: What `body` returns.
    @inline(__always)
    package func withLock<Result, Failure: Error>(
        _ body: (inout Value) throws(Failure) -> Result
    ) throws(Failure) -> Result {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body(&value)
    }
}
