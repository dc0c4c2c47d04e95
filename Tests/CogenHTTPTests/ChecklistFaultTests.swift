@testable import CogenHTTP
@testable import CogenUring
import Foundation
import HTTPTypes
import Testing

/// Issue 13's "under issue 6's short-receive and reset faults": every checklist suite runs on
/// `checklistEngines`, which include every engine with the fault injector on (see
/// `CheckEngine.probabilities`). Resets are the client's doing: this suite resets
/// connections mid-head, mid-body, mid-response, with requests unread, after an error, after
/// a 100 Continue and while the handler runs.
@Suite("Checklist: client resets")
struct ChecklistFaultTests {
    /// One way to reset a connection.
    enum ResetPoint: String, CaseIterable, Sendable {
        case midHead, midBody, midStreamedResponse, midWholeResponse, unreadPipeline, afterError
        case afterContinue, duringHandler
    }

    @Test("Issue 6: a client reset mid-request or mid-response leaves the server serving others", arguments: checklistEngines)
    func resetsLeaveTheServerServing(engine: CheckEngine) async throws {
        try await withChecklistServer(engine) { server in
            let address = server.address
            let outcome = try await offThePool { () -> Result<[String], any Error> in
                Result {
                    var problems: [String] = []
                    let keeper = try RawClient(connectingTo: address, timeout: .seconds(5))
                    for round in 0..<3 {
                        for point in ResetPoint.allCases {
                            do {
                                let victim = try RawClient(connectingTo: address, timeout: .seconds(5))
                                victim.resetOnClose()
                                switch point {
                                case .midHead:
                                    victim.sendIgnoringErrors("GET /reset HTTP/1.1\r\nHo")
                                case .midBody:
                                    victim.sendIgnoringErrors(
                                        "POST /read HTTP/1.1\r\nHost: test\r\nContent-Length: 10000\r\n\r\n"
                                            + String(repeating: "b", count: 100))
                                case .midStreamedResponse:
                                    victim.sendIgnoringErrors(get("/stream-big/2000000"))
                                    _ = try? victim.receiveMore()
                                case .midWholeResponse:
                                    victim.sendIgnoringErrors(get("/big/1000000"))
                                    _ = try? victim.receiveMore()
                                case .unreadPipeline:
                                    victim.sendIgnoringErrors((0..<10).map { get("/u\($0)") }.joined())
                                case .afterContinue:
                                    victim.sendIgnoringErrors(
                                        "POST /read HTTP/1.1\r\nHost: test\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n")
                                    _ = try? victim.receiveMore()
                                case .duringHandler:
                                    victim.sendIgnoringErrors(get("/sleep/100"))
                                case .afterError:
                                    victim.sendIgnoringErrors("GET / HTTP/1.1\r\nHost : x\r\n\r\n" + String(repeating: "j", count: 5000))
                                }
                            }  // the victim is dropped here: its close, with SO_LINGER 0, sends a reset
                            try keeper.send(get("/k\(round)-\(point)"))
                            let answer = try keeper.readResponse().bodyText
                            if answer != "GET /k\(round)-\(point)" { problems.append("keeper after \(point): \(answer)") }
                        }
                    }
                    let fresh = try RawClient(connectingTo: address, timeout: .seconds(5))
                    for index in 0..<10 {
                        try fresh.send(get("/f\(index)"))
                        let answer = try fresh.readResponse().bodyText
                        if answer != "GET /f\(index)" { problems.append("fresh: \(answer)") }
                    }
                    return problems
                }
            }.get()
            #expect(outcome.isEmpty, "\(outcome)")
            // Every reset connection ends on the server's side (bounded wait).
            var open = server.statistics.connectionsOpen
            for _ in 0..<100 where open > 0 {
                try await Task.sleep(for: .milliseconds(100))
                open = server.statistics.connectionsOpen
            }
            #expect(open == 0, "connections still open on the server after their clients reset: \(open)")
            #expect(server.statistics.connectionsAccepted >= 3 * ResetPoint.allCases.count + 2, "\(server.statistics)")
        }
    }
}

#if DEBUG
/// The faults the checklist runs under do fire: a checklist run "under faults" that never
/// met one would prove nothing.
@Suite("Checklist: the faults fire")
struct ChecklistFaultsFireTests {
    @Test("Issue 6: every fault the checklist runs under fires under checklist traffic",
          arguments: checklistEngines.filter(\.faults))
    func faultsFire(engine: CheckEngine) async throws {
        let schedulers = try await withChecklistServer(engine) { server in
            let address = server.address
            // Pipelined small requests, and four connections at a time sending 40 KB bodies
            // (three ring buffers each, more than the 16 buffers of a faulted io_uring
            // scheduler hold at once).
            let outcome = try await offThePool { () -> Result<(Int, Int), any Error> in
                Result {
                    var small = 0
                    var large = 0
                    let pipelined = try RawClient(connectingTo: address, timeout: .seconds(10))
                    let body = String(repeating: "p", count: 40000)
                    for round in 0..<30 {
                        try pipelined.send((0..<8).map { get("/r\(round)-\($0)") }.joined())
                        let clients = try (0..<4).map { _ in try RawClient(connectingTo: address, timeout: .seconds(10)) }
                        for client in clients { try client.send(post("/read", body)) }
                        for index in 0..<8 where try pipelined.readResponse().bodyText == "GET /r\(round)-\(index)" {
                            small += 1
                        }
                        for client in clients where try client.readResponse().body.count == 40000 { large += 1 }
                    }
                    return (small, large)
                }
            }.get()
            #expect(outcome.0 == 240 && outcome.1 == 120, "\(outcome)")
            return server.server.schedulers
        }
        // The loops have stopped: the injectors' counts can be read.
        var fires: [Fault: Int] = [:]
        for scheduler in schedulers {
            for (fault, count) in scheduler.faultInjector?.fires ?? [:] { fires[fault, default: 0] += count }
        }
        for fault in engine.probabilities.keys {
            #expect(fires[fault, default: 0] > 0, "\(fault) never fired: \(fires)")
        }
    }
}
#endif
