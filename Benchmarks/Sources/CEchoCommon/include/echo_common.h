// Shared by the C echo servers (c-uring-echo, c-epoll-echo): flags, the listener, the
// termination signals and a growable output buffer. Nothing here is on the per-message
// path except `obuf_append`/`obuf_consume`.
#ifndef ECHO_COMMON_H
#define ECHO_COMMON_H

#include <stddef.h>
#include <stdint.h>

/// Parses `--port N` (default 7000; 0 picks a free port). Exits with status 2 on anything
/// else, naming the program.
int echo_parse_port(int argc, char **argv);

/// Raises RLIMIT_NOFILE's soft limit to the hard limit (a thousand connections and more).
void echo_raise_fd_limit(void);

/// A non-blocking (when `nonblocking`), CLOEXEC TCP listener on 127.0.0.1:`port`, with
/// SO_REUSEADDR and a backlog of 4096. Prints `listening on 127.0.0.1:PORT` on stdout
/// and flushes it: the benchmark driver waits for that line. Exits on failure.
int echo_listen(int port, int nonblocking);

/// Blocks SIGTERM and SIGINT and returns a non-blocking CLOEXEC signalfd that reads
/// them, so the event loop sees termination as one more readable descriptor.
int echo_signalfd(void);

/// The event loop of the C epoll servers (c-epoll-echo, c-epoll-http), to SIGTERM or SIGINT:
/// parses `--port`, raises the descriptor limit, listens (non-blocking), accepts every
/// connection (non-blocking, CLOEXEC, TCP_NODELAY), gives it `conn_size` zeroed bytes of
/// state whose first member is its descriptor (an `int`), and registers it for `events`;
/// then hands each readiness report to `on_event(conn, events)`. `drop(conn)` closes and
/// frees a connection whose registration failed. Returns the process's exit status.
int echo_epoll_serve(int argc, char **argv, uint32_t events, size_t conn_size,
                     void (*on_event)(void *conn, uint32_t events), void (*drop)(void *conn));

/// The epoll instance of `echo_epoll_serve` (for EPOLL_CTL_MOD from `on_event`).
extern int echo_epfd;

/// Sets TCP_NODELAY (an echo of small messages must not wait for Nagle).
void echo_set_nodelay(int fd);

/// A byte queue for output the socket did not take yet: appended at the tail, consumed
/// from the head. It compacts instead of wrapping around, which is cheap because it is
/// usually drained whole.
struct obuf {
    char *data;
    size_t head;      // first unsent byte
    size_t len;       // bytes after head
    size_t cap;
};

static inline int obuf_empty(const struct obuf *b) { return b->len == 0; }
static inline const char *obuf_bytes(const struct obuf *b) { return b->data + b->head; }

/// Appends `n` bytes, growing (doubling) as needed. Aborts on allocation failure.
void obuf_append(struct obuf *b, const void *bytes, size_t n);

/// Drops `n` bytes from the head (they were sent).
static inline void obuf_consume(struct obuf *b, size_t n) {
    b->head += n;
    b->len -= n;
    if (b->len == 0) b->head = 0;
}

/// Frees the storage.
void obuf_free(struct obuf *b);

// The HTTP floors (c-uring-http, c-epoll-http): one canned plaintext response per request
// head, a head being whatever ends in CRLFCRLF.

/// The response every head gets.
extern const char http_floor_response[];
/// Its length in bytes.
extern const size_t http_floor_response_length;

/// The longest head accepted without its CRLFCRLF.
enum { HTTP_FLOOR_MAX_HEAD = 16384 };

/// A connection's place in the CRLFCRLF scan, kept across reads.
struct http_scan {
    int match;          // how much of "\r\n\r\n" the last bytes matched
    size_t head_bytes;  // bytes since the last complete head
};

/// Counts the request heads that end in these `n` bytes (a terminator split across reads
/// counts); -1 when a head grew past HTTP_FLOOR_MAX_HEAD.
int http_scan_heads(struct http_scan *scan, const char *p, size_t n);

#endif
