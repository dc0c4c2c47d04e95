// c-uring-http: the floor of the HTTP benchmark. A small io_uring server that answers every
// `\r\n\r\n` it receives with one canned plaintext response, on one thread: what serving
// TechEmpower's plaintext test costs in the kernel alone, with next to nothing in user space
// (no parsing beyond the end-of-head scan, no allocation per request, no Date formatting).
//
// - One ring, SINGLE_ISSUER|DEFER_TASKRUN (plain setup where the kernel refuses them).
// - A multishot accept; per connection one multishot recv from a provided-buffer ring
//   (registered by hand: liburing 2.3 has no io_uring_setup_buf_ring). Each chunk is scanned
//   for `\r\n\r\n` (a 4-state matcher, so a terminator split across chunks counts) and its
//   buffer goes back at once: request bytes are never stored.
// - All the responses of one receive are appended to the connection's output and go out in
//   one send; at most one send in flight per connection, and what is answered meanwhile
//   goes out as one send when it completes.
// - Bounded: a head longer than MAX_HEAD bytes without its terminator, or output past
//   MAX_OUTPUT bytes not yet sent (a client that does not read), closes the connection.
//
//   c-uring-http [--port N]     prints "listening on 127.0.0.1:PORT"; SIGTERM/SIGINT stop it
#include "echo_common.h"

#include <errno.h>
#include <liburing.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

enum {
    SQ_ENTRIES = 1024,
    CQ_ENTRIES = 8192,
    BUF_COUNT = 1024,      // a power of two
    BUF_SIZE = 16384,
    BUF_GROUP = 1,
    MAX_OUTPUT = 1 << 20,  // unsent response bytes per connection
};

#define RESPONSE http_floor_response
#define RESPONSE_LENGTH http_floor_response_length

enum op { OP_ACCEPT = 1, OP_RECV = 2, OP_SEND = 3, OP_SIGNAL = 4, OP_CANCEL = 5 };
#define OP_MASK 7u

struct conn {
    int fd;
    unsigned recv_armed : 1;
    unsigned send_inflight : 1;
    unsigned eof : 1;
    unsigned failed : 1;
    unsigned starved : 1;
    struct conn *next_starved;
    struct http_scan scan;
    struct obuf sending;   // what the send in flight reads
    struct obuf queued;    // answered while a send was in flight
};

static struct io_uring ring;
static struct io_uring_buf_ring *buf_ring;
static char *buf_base;
static int buf_returns;
static int bufs_free = BUF_COUNT;
static struct conn *starved_head;
static int listener, sfd;
static int stopping;

static inline uint64_t tag(void *p, enum op op) { return (uint64_t)(uintptr_t)p | op; }

static struct io_uring_sqe *get_sqe(void) {
    struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
    while (!sqe) {
        io_uring_submit(&ring);
        sqe = io_uring_get_sqe(&ring);
    }
    return sqe;
}

static void return_buffer(int bid) {
    io_uring_buf_ring_add(buf_ring, buf_base + (size_t)bid * BUF_SIZE, BUF_SIZE, (unsigned short)bid,
                          io_uring_buf_ring_mask(BUF_COUNT), buf_returns++);
}

static void arm_accept(void) {
    struct io_uring_sqe *sqe = get_sqe();
    io_uring_prep_multishot_accept(sqe, listener, NULL, NULL, SOCK_CLOEXEC);
    io_uring_sqe_set_data64(sqe, tag(NULL, OP_ACCEPT));
}

static void arm_recv(struct conn *c) {
    struct io_uring_sqe *sqe = get_sqe();
    io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = BUF_GROUP;
    io_uring_sqe_set_data64(sqe, tag(c, OP_RECV));
    c->recv_armed = 1;
}

static void submit_send(struct conn *c) {
    struct io_uring_sqe *sqe = get_sqe();
    io_uring_prep_send(sqe, c->fd, obuf_bytes(&c->sending), c->sending.len, MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe, tag(c, OP_SEND));
    c->send_inflight = 1;
}

static void maybe_free(struct conn *c) {
    if (c->recv_armed || c->send_inflight || c->starved) return;
    if (!c->failed && !(c->eof && obuf_empty(&c->queued))) return;
    close(c->fd);
    obuf_free(&c->sending);
    obuf_free(&c->queued);
    free(c);
}

static void fail(struct conn *c) {
    c->failed = 1;
    if (c->recv_armed) {
        struct io_uring_sqe *sqe = get_sqe();
        io_uring_prep_cancel64(sqe, tag(c, OP_RECV), 0);
        io_uring_sqe_set_data64(sqe, tag(NULL, OP_CANCEL));
    }
    maybe_free(c);
}

static void on_recv(struct conn *c, int res, unsigned flags) {
    if (res > 0) {
        int bid = (int)(flags >> IORING_CQE_BUFFER_SHIFT);
        bufs_free--;
        int heads = c->failed ? 0 : http_scan_heads(&c->scan, buf_base + (size_t)bid * BUF_SIZE, (size_t)res);
        return_buffer(bid);
        if (heads < 0 || c->queued.len + (size_t)heads * RESPONSE_LENGTH > MAX_OUTPUT) {
            fail(c);
        } else if (heads > 0) {
            for (int i = 0; i < heads; i++) obuf_append(&c->queued, RESPONSE, RESPONSE_LENGTH);
            if (!c->send_inflight) {
                struct obuf t = c->sending;
                c->sending = c->queued;
                c->queued = t;
                submit_send(c);
            }
        }
    }
    if (flags & IORING_CQE_F_MORE) return;
    c->recv_armed = 0;
    if (c->failed) {
        maybe_free(c);
    } else if (res == -ENOBUFS) {
        c->starved = 1;
        c->next_starved = starved_head;
        starved_head = c;
    } else if (res > 0) {
        arm_recv(c);
    } else if (res == 0) {
        c->eof = 1;
        maybe_free(c);
    } else {
        fail(c);
    }
}

static void on_send(struct conn *c, int res) {
    c->send_inflight = 0;
    if (res <= 0) { fail(c); return; }
    obuf_consume(&c->sending, (size_t)res);
    if (c->failed) { maybe_free(c); return; }
    if (!obuf_empty(&c->sending)) { submit_send(c); return; }  // short send: the rest first
    if (!obuf_empty(&c->queued)) {
        struct obuf t = c->sending;
        c->sending = c->queued;
        c->queued = t;
        submit_send(c);
        return;
    }
    maybe_free(c);
}

static void on_accept(int res, unsigned flags) {
    if (res >= 0) {
        struct conn *c = calloc(1, sizeof *c);
        if (!c) {
            close(res);
        } else {
            echo_set_nodelay(res);
            c->fd = res;
            arm_recv(c);
        }
    } else if (res != -ECONNABORTED) {
        fprintf(stderr, "c-uring-http: accept: %s\n", strerror(-res));
    }
    if (!(flags & IORING_CQE_F_MORE) && !stopping) arm_accept();
}

static void handle(struct io_uring_cqe *cqe) {
    uint64_t data = io_uring_cqe_get_data64(cqe);
    struct conn *c = (struct conn *)(uintptr_t)(data & ~(uint64_t)OP_MASK);
    switch ((enum op)(data & OP_MASK)) {
    case OP_ACCEPT: on_accept(cqe->res, cqe->flags); break;
    case OP_RECV: on_recv(c, cqe->res, cqe->flags); break;
    case OP_SEND: on_send(c, cqe->res); break;
    case OP_SIGNAL: stopping = 1; break;
    case OP_CANCEL: break;
    }
}

static void setup_ring(void) {
    struct io_uring_params params = {0};
    params.flags = IORING_SETUP_CQSIZE | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
    params.cq_entries = CQ_ENTRIES;
    int ret = io_uring_queue_init_params(SQ_ENTRIES, &ring, &params);
    if (ret == -EINVAL) {
        memset(&params, 0, sizeof params);
        params.flags = IORING_SETUP_CQSIZE;
        params.cq_entries = CQ_ENTRIES;
        ret = io_uring_queue_init_params(SQ_ENTRIES, &ring, &params);
    }
    if (ret < 0) {
        fprintf(stderr, "c-uring-http: io_uring_queue_init: %s\n", strerror(-ret));
        exit(1);
    }
    // liburing 2.3 has no io_uring_setup_buf_ring: map the ring (page-aligned) and register it.
    size_t ring_bytes = BUF_COUNT * sizeof(struct io_uring_buf);
    buf_ring = mmap(NULL, ring_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    buf_base = mmap(NULL, (size_t)BUF_COUNT * BUF_SIZE, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (buf_ring == MAP_FAILED || buf_base == MAP_FAILED) { perror("mmap"); exit(1); }
    struct io_uring_buf_reg reg = {
        .ring_addr = (uint64_t)(uintptr_t)buf_ring, .ring_entries = BUF_COUNT, .bgid = BUF_GROUP,
    };
    ret = io_uring_register_buf_ring(&ring, &reg, 0);
    if (ret < 0) {
        fprintf(stderr, "c-uring-http: io_uring_register_buf_ring: %s (needs Linux 5.19)\n", strerror(-ret));
        exit(1);
    }
    io_uring_buf_ring_init(buf_ring);
    for (int bid = 0; bid < BUF_COUNT; bid++) return_buffer(bid);
    io_uring_buf_ring_advance(buf_ring, buf_returns);
    buf_returns = 0;
}

int main(int argc, char **argv) {
    int port = echo_parse_port(argc, argv);
    echo_raise_fd_limit();
    sfd = echo_signalfd();
    listener = echo_listen(port, 0);  // blocking: io_uring polls internally
    setup_ring();

    arm_accept();
    struct io_uring_sqe *sqe = get_sqe();
    io_uring_prep_poll_add(sqe, sfd, POLLIN);
    io_uring_sqe_set_data64(sqe, tag(NULL, OP_SIGNAL));

    while (!stopping) {
        int ret = io_uring_submit_and_wait(&ring, 1);
        if (ret < 0 && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY) {
            fprintf(stderr, "c-uring-http: io_uring_submit_and_wait: %s\n", strerror(-ret));
            return 1;
        }
        struct io_uring_cqe *cqe;
        unsigned head, seen = 0;
        io_uring_for_each_cqe(&ring, head, cqe) {
            handle(cqe);
            seen++;
        }
        io_uring_cq_advance(&ring, seen);
        if (buf_returns > 0) {
            io_uring_buf_ring_advance(buf_ring, buf_returns);
            bufs_free += buf_returns;
            buf_returns = 0;
        }
        while (starved_head && bufs_free > 0) {
            struct conn *c = starved_head;
            starved_head = c->next_starved;
            c->starved = 0;
            if (c->failed || c->eof) maybe_free(c);
            else arm_recv(c);
        }
    }
    return 0;
}
