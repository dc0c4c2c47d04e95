// c-uring-echo: an io_uring echo server written the way liburing's current examples
// recommend, as the baseline cogen-echo is measured against.
//
// - One ring, SINGLE_ISSUER|DEFER_TASKRUN (plain setup where the kernel refuses them):
//   task work runs only when we enter the kernel to reap, in batches.
// - A multishot accept, and per connection one multishot recv drawing from a provided-
//   buffer ring: no receive buffer per connection, one SQE per connection lifetime.
// - At most one send in flight per connection, so bytes leave in order. The common case
//   sends straight from the provided buffer the data arrived in (the buffer goes back to
//   the ring when the send completes); data arriving while a send is in flight is copied
//   into the connection's queue and its buffer returned at once, and the queue goes out
//   as one send when the current one completes.
// - One io_uring_submit_and_wait per loop pass: every SQE prepared while handling a
//   batch of CQEs is submitted by the same system call that waits for the next batch.
//
//   c-uring-echo [--port N]     prints "listening on 127.0.0.1:PORT"; SIGTERM/SIGINT stop it
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
    // The provided-buffer ring. A connection holds at most one buffer beyond the CQE
    // batch being handled (the one its send is in flight from), so 2048 buffers serve
    // ~2000 busy connections before ENOBUFS; 16 KiB keeps bulk transfers at a few CQEs
    // per 64 KiB. (Memory is touched only as far as data is written into each buffer.)
    BUF_COUNT = 2048,      // a power of two
    BUF_SIZE = 16384,
    BUF_GROUP = 1,
};

// user_data: a connection pointer (8-byte aligned) with the operation in the low bits.
enum op { OP_ACCEPT = 1, OP_RECV = 2, OP_SEND = 3, OP_SIGNAL = 4, OP_CANCEL = 5 };
#define OP_MASK 7u

struct conn {
    int fd;
    unsigned recv_armed : 1;     // a multishot recv is in the kernel
    unsigned send_inflight : 1;
    unsigned eof : 1;            // the peer finished sending: close once the queue is out
    unsigned failed : 1;         // an error: drop everything, close when nothing is in flight
    unsigned starved : 1;        // recv ended with ENOBUFS; on the starved list
    struct conn *next_starved;
    // The send in flight: from provided buffer `send_bid`, or (bid -1) from `sending`.
    int send_bid;
    const char *send_ptr;
    size_t send_left;
    struct obuf sending;
    struct obuf queued;          // arrived while a send was in flight
};

static struct io_uring ring;
static struct io_uring_buf_ring *buf_ring;
static char *buf_base;
static int buf_returns;          // buffers added to the ring since the last advance
static int bufs_free = BUF_COUNT;  // buffers the kernel can pick from (after the advance)
static struct conn *starved_head;
static int listener, sfd;
static int stopping;

static inline uint64_t tag(void *p, enum op op) { return (uint64_t)(uintptr_t)p | op; }

static struct io_uring_sqe *get_sqe(void) {
    struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
    while (!sqe) {
        // The SQ is full: hand it to the kernel now and take a fresh entry.
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
    io_uring_prep_send(sqe, c->fd, c->send_ptr, c->send_left, MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe, tag(c, OP_SEND));
    c->send_inflight = 1;
}

// Frees the connection once the kernel holds nothing of it.
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
        // The multishot recv ends with -ECANCELED, and maybe_free runs then.
        struct io_uring_sqe *sqe = get_sqe();
        io_uring_prep_cancel64(sqe, tag(c, OP_RECV), 0);
        io_uring_sqe_set_data64(sqe, tag(NULL, OP_CANCEL));
    }
    maybe_free(c);
}

static void on_recv(struct conn *c, int res, unsigned flags) {
    if (res > 0) {
        int bid = (int)(flags >> IORING_CQE_BUFFER_SHIFT);
        char *data = buf_base + (size_t)bid * BUF_SIZE;
        bufs_free--;
        if (c->failed) {
            return_buffer(bid);
        } else if (!c->send_inflight) {
            c->send_bid = bid;  // zero copy: send from the provided buffer itself
            c->send_ptr = data;
            c->send_left = (size_t)res;
            submit_send(c);
        } else {
            obuf_append(&c->queued, data, (size_t)res);
            return_buffer(bid);
        }
    }
    if (flags & IORING_CQE_F_MORE) return;
    // The multishot recv is over: re-arm it, park it until buffers come back, or end.
    c->recv_armed = 0;
    if (c->failed) {
        maybe_free(c);
    } else if (res == -ENOBUFS) {
        c->starved = 1;
        c->next_starved = starved_head;
        starved_head = c;
    } else if (res > 0) {
        arm_recv(c);  // ended for another reason (e.g. CQ overflow): carry on
    } else if (res == 0) {
        c->eof = 1;   // echo what is still queued, then close
        maybe_free(c);
    } else {
        fail(c);      // ECONNRESET…
    }
}

static void on_send(struct conn *c, int res) {
    c->send_inflight = 0;
    if (res > 0 && (size_t)res < c->send_left && !c->failed) {
        c->send_ptr += res;  // short send: the rest, before anything queued
        c->send_left -= (size_t)res;
        submit_send(c);
        return;
    }
    if (c->send_bid >= 0) {
        return_buffer(c->send_bid);
        c->send_bid = -1;
    } else {
        obuf_consume(&c->sending, c->sending.len);
    }
    if (res <= 0) { fail(c); return; }  // EPIPE, ECONNRESET
    if (!c->failed && !obuf_empty(&c->queued)) {
        // Everything that arrived during the send goes out as one send.
        struct obuf t = c->sending;
        c->sending = c->queued;
        c->queued = t;
        c->send_bid = -1;
        c->send_ptr = obuf_bytes(&c->sending);
        c->send_left = c->sending.len;
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
            c->send_bid = -1;
            arm_recv(c);
        }
    } else if (res != -ECONNABORTED) {
        fprintf(stderr, "c-uring-echo: accept: %s\n", strerror(-res));
    }
    if (!(flags & IORING_CQE_F_MORE)) arm_accept();
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
        // Before Linux 6.1 (DEFER_TASKRUN) or 6.0 (SINGLE_ISSUER).
        memset(&params, 0, sizeof params);
        params.flags = IORING_SETUP_CQSIZE;
        params.cq_entries = CQ_ENTRIES;
        ret = io_uring_queue_init_params(SQ_ENTRIES, &ring, &params);
    }
    if (ret < 0) {
        fprintf(stderr, "c-uring-echo: io_uring_queue_init: %s\n", strerror(-ret));
        exit(1);
    }

    // liburing 2.3 has no io_uring_setup_buf_ring: map the ring ourselves (page-aligned,
    // as IORING_REGISTER_PBUF_RING requires) and register it.
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
        fprintf(stderr, "c-uring-echo: io_uring_register_buf_ring: %s (needs Linux 5.19)\n", strerror(-ret));
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
    // Blocking sockets on purpose: io_uring polls internally (FAST_POLL) and would
    // return -EAGAIN to us for an O_NONBLOCK one.
    listener = echo_listen(port, 0);
    setup_ring();

    arm_accept();
    struct io_uring_sqe *sqe = get_sqe();
    io_uring_prep_poll_add(sqe, sfd, POLLIN);
    io_uring_sqe_set_data64(sqe, tag(NULL, OP_SIGNAL));

    while (!stopping) {
        int ret = io_uring_submit_and_wait(&ring, 1);
        if (ret < 0 && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY) {
            fprintf(stderr, "c-uring-echo: io_uring_submit_and_wait: %s\n", strerror(-ret));
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
        // Connections whose recv ran out of buffers resume once some are back.
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
