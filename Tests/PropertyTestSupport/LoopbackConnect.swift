import Glibc

/// `connect(2)` of the TCP socket `fd` to 127.0.0.1:`port`: a plain, blocking POSIX call
/// for test clients (no scheduler involved).
/// - Returns: `connect`'s status: 0, or -1 with `errno` set by it.
public func connectToLoopback(_ fd: Int32, port: UInt16) -> Int32 {
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = port.bigEndian
    address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
    return withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
        }
    }
}
