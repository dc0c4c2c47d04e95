// c-epoll-echo: the classic epoll echo server, as a baseline.
//
// One thread, level-triggered epoll, non-blocking sockets. Readable: read and write the
// bytes straight back; what the socket does not take goes to the connection's pending
// buffer, and only then is EPOLLOUT asked for (it is dropped again once the buffer is
// drained), so a connection that keeps up costs no epoll_ctl at all.
//
//   c-epoll-echo [--port N]     prints "listening on 127.0.0.1:PORT"; SIGTERM/SIGINT stop it
#include "echo_common.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

enum { READ_SIZE = 65536 };

struct conn {  // its first member is the descriptor: echo_epoll_serve sets it
    int fd;
    int want_out;          // EPOLLOUT is in the interest set
    struct obuf pending;   // accepted from the peer, not yet taken by the socket
};

static void close_conn(struct conn *c) {
    close(c->fd);  // also removes it from the epoll set (no dup'd descriptors)
    obuf_free(&c->pending);
    free(c);
}

static void set_interest(struct conn *c, int want_out) {
    if (c->want_out == want_out) return;
    struct epoll_event ev = { .events = EPOLLIN | (want_out ? EPOLLOUT : 0), .data.ptr = c };
    epoll_ctl(echo_epfd, EPOLL_CTL_MOD, c->fd, &ev);
    c->want_out = want_out;
}

// Writes as much of the pending buffer as the socket takes. Returns -1 if the connection
// failed.
static int flush_pending(struct conn *c) {
    while (!obuf_empty(&c->pending)) {
        ssize_t n = send(c->fd, obuf_bytes(&c->pending), c->pending.len, MSG_NOSIGNAL);
        if (n > 0) { obuf_consume(&c->pending, (size_t)n); continue; }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) break;
        return -1;
    }
    set_interest(c, !obuf_empty(&c->pending));
    return 0;
}

// Echoes `n` bytes: straight to the socket when nothing is pending (keeping order), the
// remainder into the pending buffer.
static int echo(struct conn *c, const char *bytes, size_t n) {
    if (!obuf_empty(&c->pending)) {
        obuf_append(&c->pending, bytes, n);
        return 0;
    }
    size_t sent = 0;
    while (sent < n) {
        ssize_t w = send(c->fd, bytes + sent, n - sent, MSG_NOSIGNAL);
        if (w > 0) { sent += (size_t)w; continue; }
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && errno == EAGAIN) break;
        return -1;
    }
    if (sent < n) {
        obuf_append(&c->pending, bytes + sent, n - sent);
        set_interest(c, 1);
    }
    return 0;
}

// Reads until EAGAIN or a short read. A short read means the socket was drained when it
// was read; with level triggering anything that arrived since is reported by the next
// epoll_wait, so the extra read() that would only return EAGAIN is skipped.
static void on_readable(struct conn *c, char *buffer) {
    for (;;) {
        ssize_t n = recv(c->fd, buffer, READ_SIZE, 0);
        if (n > 0) {
            if (echo(c, buffer, (size_t)n) < 0) { close_conn(c); return; }
            if (n < READ_SIZE) return;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) return;
        close_conn(c);  // end of stream or an error (a reset peer): drop it
        return;
    }
}

static void on_event(void *conn, uint32_t e) {
    static char buffer[READ_SIZE];
    struct conn *c = conn;
    // EPOLLOUT first: pending bytes go before anything read now. A connection closed here
    // is not touched again (one event per descriptor per wait).
    if ((e & EPOLLOUT) && flush_pending(c) < 0) { close_conn(c); return; }
    if (e & (EPOLLIN | EPOLLERR | EPOLLHUP)) on_readable(c, buffer);
}

static void drop(void *conn) { close_conn(conn); }

int main(int argc, char **argv) {
    return echo_epoll_serve(argc, argv, EPOLLIN, sizeof(struct conn), on_event, drop);
}
