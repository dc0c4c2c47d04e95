import CogenCompat
import CogenUring
import Foundation
import Testing

/// Issue 11: calls the documentation allows never stop the program; what cannot work is
/// thrown into the coroutine (decisions.md #18: no coroutine is silently lost).
@Suite("misuse throws, never traps")
struct MisuseTests {
    /// Yielding an `AddCoro` or an `OldCall` a second time throws `RuntimeError` into the
    /// yielding coroutine, which goes on.
    @Test("AddCoro and OldCall yielded twice throw RuntimeError", arguments: allBackends)
    func yieldedTwice(engine: Engine) async throws {
        let log = Log([])
        try await runCompat(engine) { sched in
            sched.add {
                let add = AddCoro { log.value.append("added ran"); return nil }
                _ = try await yield(add)
                do {
                    _ = try await yield(add)
                    log.value.append("AddCoro: no error")
                } catch let error as RuntimeError {
                    log.value.append("AddCoro: \(error.message.contains("yielded once"))")
                }
                let call = OldCall { 7 }
                log.value.append("OldCall: \(try await yield(call))")
                do {
                    _ = try await yield(call)
                    log.value.append("OldCall again: no error")
                } catch let error as RuntimeError {
                    log.value.append("OldCall again: \(error.message.contains("yielded once"))")
                }
                log.value.append("caller goes on")
                return nil
            }
        }
        #expect(log.value.filter { $0 != "added ran" } == [
            "AddCoro: true", "OldCall: 7", "OldCall again: true", "caller goes on",
        ])
        #expect(log.value.filter { $0 == "added ran" }.count == 1)
    }

    /// `yield(op)` outside a coroutine throws; a bare `yield()` just yields the task.
    @Test("yield outside a coroutine")
    func yieldOutsideACoroutine() async {
        await #expect(throws: RuntimeError.self) { _ = try await yield(Sleep(0.001)) }
        await yield()
    }

    @Test("a DEFAULT default priority throws ValueError")
    func defaultPriorityDefault() {
        #expect(throws: ValueError.self) { _ = try CogenCompat.Scheduler(defaultPriority: priority.DEFAULT, backend: .epoll) }
    }

    @Test("Priority(rawValue:) is nil out of range")
    func priorityOutOfRange() {
        #expect(Priority(rawValue: 4) == nil && Priority(rawValue: -2) == nil)
        #expect(Priority(rawValue: 2) == priority.OP)
    }

    /// Timeouts from numbers and dates no `Int64` of nanoseconds holds: no overflow trap.
    @Test("huge, infinite and NaN timeouts")
    func extremeTimeouts() {
        #expect(Timeout(seconds: .infinity) == .never)
        #expect(Timeout(seconds: .nan) == .none)
        #expect(Timeout(seconds: 1e30) == .after(.nanoseconds(Int64.max)))
        if case .at = Timeout(Date.distantFuture) {} else { Issue.record("distantFuture is not a date") }
        if case .at = Timeout(Date.distantPast) {} else { Issue.record("distantPast is not a date") }
    }

    /// `Recv` with room for no byte throws `ValueError` into the coroutine; the socket
    /// still works.
    @Test("Recv(sock, 0) throws ValueError", arguments: allBackends)
    func recvOfNothing(engine: Engine) async throws {
        let log = Log([])
        try await runCompat(engine) { sched in
            let listener = try sockets.Socket(on: sched)
            try listener.bind("127.0.0.1", 0)
            try listener.listen(8)
            let address = try listener.getsockname()
            sched.add("server") {
                let (conn, _) = try await yield(Accept(listener, timeout: .never))
                try await listener.close()
                do {
                    _ = try await yield(Recv(conn, 0))
                    log.value.append("no error")
                } catch let error as ValueError {
                    log.value.append(error.message)
                }
                log.value.append(String(decoding: try await yield(conn.recv(100)), as: UTF8.self))
                try await conn.close()
                return nil
            }
            sched.add("client") {
                let sock = try sockets.Socket(timeout: .never)
                _ = try await yield(sock.connect(address))
                _ = try await yield(sock.sendall(Array("x".utf8)))
                try await sock.close()
                return nil
            }
        }
        #expect(log.value == ["Recv: bufsize must be at least 1, got 0", "x"])
    }
}
