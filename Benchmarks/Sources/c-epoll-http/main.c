// c-epoll-http: the epoll floor of the HTTP benchmark, beside c-uring-http (the io_uring
// floor). The same work, one canned plaintext response per `\r\n\r\n` received, the way a
// lean readiness-based C server does it, so that "epoll against io_uring" can be read
// for the kernel's part alone.
//
// - One thread, edge-triggered epoll (EPOLLIN | EPOLLOUT | EPOLLRDHUP, registered once
//   per connection: no epoll_ctl per request), non-blocking sockets.
// - Readable: `recv` until a read comes back short (the queue was empty; the next data
//   raises a new edge, so the extra `recv` that would only say EAGAIN is skipped), each
//   chunk scanned for request heads (`http_scan_heads`); all the responses of one read
//   go out in one `send`. What the socket does not take waits in the connection's
//   output, sent when the writable edge comes.
// - Bounded: a head longer than HTTP_FLOOR_MAX_HEAD bytes without its terminator, or
//   output past MAX_OUTPUT bytes not yet sent (a client that does not read), closes the
//   connection.
//
//   c-epoll-http [--port N]     prints "listening on 127.0.0.1:PORT"; SIGTERM/SIGINT stop it
#include "echo_common.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

enum { READ_SIZE = 16384, MAX_OUTPUT = 1 << 20 };

struct conn {  // its first member is the descriptor: echo_epoll_serve sets it
    int fd;
    struct http_scan scan;
    struct obuf output;  // answered, not yet taken by the socket
};

static void close_conn(struct conn *c) {
    close(c->fd);  // also removes it from the epoll set (no dup'd descriptors)
    obuf_free(&c->output);
    free(c);
}

// Sends what the output holds, as far as the socket takes it. -1: the connection failed.
static int flush_output(struct conn *c) {
    while (!obuf_empty(&c->output)) {
        ssize_t n = send(c->fd, obuf_bytes(&c->output), c->output.len, MSG_NOSIGNAL);
        if (n > 0) { obuf_consume(&c->output, (size_t)n); continue; }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) return 0;  // the writable edge sends the rest
        return -1;
    }
    return 0;
}

// Reads until a short read, answering every complete head. -1: the connection ends.
static int on_readable(struct conn *c, char *buffer) {
    for (;;) {
        ssize_t n = recv(c->fd, buffer, READ_SIZE, 0);
        if (n > 0) {
            int heads = http_scan_heads(&c->scan, buffer, (size_t)n);
            if (heads < 0 || c->output.len + (size_t)heads * http_floor_response_length > MAX_OUTPUT) return -1;
            if (heads > 0) {
                int was_empty = obuf_empty(&c->output);
                for (int i = 0; i < heads; i++) obuf_append(&c->output, http_floor_response, http_floor_response_length);
                // Behind bytes already waiting for the writable edge: they go first.
                if (was_empty && flush_output(c) < 0) return -1;
            }
            if (n < READ_SIZE) return 0;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) return 0;
        return -1;  // end of stream or an error (a reset peer)
    }
}

static void on_event(void *conn, uint32_t e) {
    static char buffer[READ_SIZE];
    struct conn *c = conn;
    // Output waiting goes before anything answered now. A connection closed here is not
    // touched again (one event per descriptor per wait).
    if ((e & EPOLLOUT) && flush_output(c) < 0) { close_conn(c); return; }
    if ((e & (EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP)) && on_readable(c, buffer) < 0) close_conn(c);
}

static void drop(void *conn) { close_conn(conn); }

int main(int argc, char **argv) {
    return echo_epoll_serve(argc, argv, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, sizeof(struct conn), on_event,
                            drop);
}
