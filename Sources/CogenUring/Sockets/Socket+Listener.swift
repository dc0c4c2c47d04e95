import Glibc

// What a server needs of its listeners beyond `Socket`'s own API: one listening socket
// shared by several schedulers through duplicates of its descriptor, pausing a multishot
// accept at a connection cap, and the life of a Unix socket's file.

extension Socket {
    /// A duplicate of this listening socket's descriptor (`fcntl(F_DUPFD_CLOEXEC)`),
    /// served by another scheduler: both descriptors refer to the same listening socket,
    /// whose queue of connections the schedulers then share. How a Unix path, which cannot
    /// be bound twice, is served by several schedulers.
    ///
    /// Both schedulers must use the same engine: the descriptors share their file status
    /// flags, and the epoll engine sets `O_NONBLOCK`, for which io_uring returns `EAGAIN`
    /// instead of waiting. Each epoll instance registers its own descriptor; each ring
    /// arms its own (multishot) accept on its own.
    /// - Throws: ``SocketError`` from `fcntl` (`EMFILE`…), `EINVAL` when the engines differ.
    func duplicate(on scheduler: Scheduler) throws(SocketError) -> Socket {
        guard scheduler.backendKind == self.scheduler.backendKind else {
            throw Self.invalid(
                "share a listener",
                "the schedulers run different engines (\(self.scheduler.backendKind), \(scheduler.backendKind))")
        }
        let copy = fcntl(descriptor, F_DUPFD_CLOEXEC, 0)
        guard copy >= 0 else { throw SocketError(errno: Glibc.errno, operation: "dup the listener") }
        return Socket(descriptor: copy, family: family, scheduler: scheduler)
    }

    /// Stops the listener's multishot accept, if one is armed, so that the kernel's
    /// backlog holds further connections (an `IORING_OP_ASYNC_CANCEL` of the
    /// `IORING_OP_ACCEPT`). Connections it accepted before its final completion stay
    /// queued for the next ``accept(deadline:placement:)``, which arms it again. The
    /// single-shot paths (epoll, io_uring without multishot) need nothing: nothing is
    /// accepted while no coroutine calls `accept`.
    func pauseAccepting() {
        multishotAccept?.requestCancel(.paused)
    }
}

extension SocketAddress {
    /// The file-system path of a Unix-domain address; nil for IP and abstract addresses.
    var unixFilePath: String? {
        guard family == .unix else { return nil }
        return withUnsafeBytes(of: storage) { raw -> String? in
            let offset = MemoryLayout<sa_family_t>.size
            guard Int(length) > offset, raw[offset] != 0 else { return nil }  // abstract: leading NUL
            let bytes = raw[offset..<Int(length)].prefix { $0 != 0 }
            return String(decoding: bytes, as: UTF8.self)
        }
    }
}

/// The file a Unix listener created: removed at the end if it is still that file.
struct UnixSocketFile: Sendable {
    let path: String
    let device: UInt64
    let inode: UInt64

    /// Removes a stale socket file at `path`: a socket nobody listens on (a connect is
    /// refused), left by a server that did not end cleanly. A live socket, or a file of
    /// another kind, is left alone (the `bind` that follows then fails with `EADDRINUSE`).
    static func removeIfStale(_ path: String) {
        var status = stat()
        guard lstat(path, &status) == 0, status.st_mode & S_IFMT == S_IFSOCK else { return }
        guard let address = try? SocketAddress(unixPath: path) else { return }
        // Non-blocking: a listener with a full backlog answers EAGAIN, not a wait.
        let probe = Glibc.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
            | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard probe >= 0 else { return }
        defer { Glibc.close(probe) }
        var storage = address.storage
        let result = withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(probe, $0, address.length) }
        }
        if result != 0 && Glibc.errno == ECONNREFUSED { unlink(path) }
    }

    /// The file now at `path`, as the `bind` that just made it left it.
    init?(path: String) {
        var status = stat()
        guard stat(path, &status) == 0 else { return nil }
        self.path = path
        device = UInt64(status.st_dev)
        inode = UInt64(status.st_ino)
    }

    /// Removes the file if it is still the one this listener created (not one a later
    /// server bound at the same path).
    func remove() {
        var status = stat()
        guard stat(path, &status) == 0, UInt64(status.st_dev) == device, UInt64(status.st_ino) == inode else { return }
        unlink(path)
    }
}
