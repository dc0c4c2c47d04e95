import Glibc

/// A socket address: IPv4, IPv6 or a Unix-domain path, stored as the kernel reads it
/// (`sockaddr_storage` and its length).
public struct SocketAddress: Sendable, Hashable, CustomStringConvertible {
    /// The address family.
    public enum Family: Sendable, Hashable {
        /// `AF_INET`.
        case ipv4
        /// `AF_INET6`.
        case ipv6
        /// `AF_UNIX`.
        case unix
    }

    var storage = sockaddr_storage()
    var length: socklen_t

    /// An IPv4 address.
    /// - Parameters:
    ///   - host: Dotted-quad text, e.g. "127.0.0.1".
    ///   - port: The port; 0 lets `bind` choose one.
    /// - Throws: ``SocketError`` (`EINVAL`) when `host` is not an IPv4 address.
    public init(ipv4 host: String, port: UInt16) throws(SocketError) {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        guard inet_pton(AF_INET, host, &address.sin_addr) == 1 else {
            throw SocketError(errno: EINVAL, operation: "parse IPv4 address \"\(host)\"")
        }
        length = socklen_t(MemoryLayout<sockaddr_in>.size)
        withUnsafeMutableBytes(of: &storage) { $0.storeBytes(of: address, as: sockaddr_in.self) }
    }

    /// An IPv6 address.
    /// - Parameters:
    ///   - host: Text form, e.g. "::1".
    ///   - port: The port; 0 lets `bind` choose one.
    /// - Throws: ``SocketError`` (`EINVAL`) when `host` is not an IPv6 address.
    public init(ipv6 host: String, port: UInt16) throws(SocketError) {
        var address = sockaddr_in6()
        address.sin6_family = sa_family_t(AF_INET6)
        address.sin6_port = port.bigEndian
        guard inet_pton(AF_INET6, host, &address.sin6_addr) == 1 else {
            throw SocketError(errno: EINVAL, operation: "parse IPv6 address \"\(host)\"")
        }
        length = socklen_t(MemoryLayout<sockaddr_in6>.size)
        withUnsafeMutableBytes(of: &storage) { $0.storeBytes(of: address, as: sockaddr_in6.self) }
    }

    /// A Unix-domain socket path.
    /// - Parameter path: A file-system path (at most 107 bytes).
    /// - Throws: ``SocketError`` (`ENAMETOOLONG`) for a longer path.
    public init(unixPath path: String) throws(SocketError) {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard bytes.count < capacity else {
            throw SocketError(errno: ENAMETOOLONG, operation: "make Unix socket address \"\(path)\"")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        length = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count + 1)
        withUnsafeMutableBytes(of: &storage) { $0.storeBytes(of: address, as: sockaddr_un.self) }
    }

    /// 127.0.0.1 at a port (0: chosen by `bind`).
    public static func loopback(port: UInt16 = 0) -> SocketAddress {
        // invariant: a constant dotted quad that inet_pton always parses.
        try! SocketAddress(ipv4: "127.0.0.1", port: port)
    }

    /// ::1 at a port (0: chosen by `bind`).
    public static func loopbackIPv6(port: UInt16 = 0) -> SocketAddress {
        // invariant: a constant IPv6 literal that inet_pton always parses.
        try! SocketAddress(ipv6: "::1", port: port)
    }

    init(storage: sockaddr_storage, length: socklen_t) {
        self.storage = storage
        self.length = length
    }

    /// The family.
    public var family: Family {
        switch Int32(storage.ss_family) {
        case AF_INET: .ipv4
        case AF_INET6: .ipv6
        default: .unix
        }
    }

    var domain: Int32 { Int32(storage.ss_family) }

    /// The port, for IP addresses; 0 for Unix paths.
    public var port: UInt16 {
        withUnsafeBytes(of: storage) { raw in
            switch family {
            case .ipv4: UInt16(bigEndian: raw.load(as: sockaddr_in.self).sin_port)
            case .ipv6: UInt16(bigEndian: raw.load(as: sockaddr_in6.self).sin6_port)
            case .unix: 0
            }
        }
    }

    public var description: String {
        withUnsafeBytes(of: storage) { raw in
            var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
            switch family {
            case .ipv4:
                var address = raw.load(as: sockaddr_in.self).sin_addr
                inet_ntop(AF_INET, &address, &text, socklen_t(text.count))
                return "\(Self.text(text)):\(port)"
            case .ipv6:
                var address = raw.load(as: sockaddr_in6.self).sin6_addr
                inet_ntop(AF_INET6, &address, &text, socklen_t(text.count))
                return "[\(Self.text(text))]:\(port)"
            case .unix:
                let pathOffset = MemoryLayout<sa_family_t>.size
                let bytes = raw[pathOffset..<Int(max(length, socklen_t(pathOffset)))].prefix { $0 != 0 }
                return "unix:" + String(decoding: bytes, as: UTF8.self)
            }
        }
    }

    private static func text(_ characters: [CChar]) -> String {
        String(decoding: characters.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    public static func == (lhs: SocketAddress, rhs: SocketAddress) -> Bool {
        lhs.length == rhs.length
            && withUnsafeBytes(of: lhs.storage) { l in
                withUnsafeBytes(of: rhs.storage) { r in l.prefix(Int(lhs.length)).elementsEqual(r.prefix(Int(rhs.length))) }
            }
    }

    public func hash(into hasher: inout Hasher) {
        withUnsafeBytes(of: storage) { hasher.combine(bytes: UnsafeRawBufferPointer(rebasing: $0.prefix(Int(length)))) }
    }
}
