#define _GNU_SOURCE
#include "CURing.h"

#include <liburing.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <pthread.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>

_Static_assert(COGEN_SETUP_CQSIZE == IORING_SETUP_CQSIZE, "setup flag");
_Static_assert(COGEN_SETUP_R_DISABLED == IORING_SETUP_R_DISABLED, "setup flag");
_Static_assert(COGEN_SETUP_SUBMIT_ALL == IORING_SETUP_SUBMIT_ALL, "setup flag");
_Static_assert(COGEN_SETUP_COOP_TASKRUN == IORING_SETUP_COOP_TASKRUN, "setup flag");
_Static_assert(COGEN_SETUP_TASKRUN_FLAG == IORING_SETUP_TASKRUN_FLAG, "setup flag");
_Static_assert(COGEN_SETUP_SINGLE_ISSUER == IORING_SETUP_SINGLE_ISSUER, "setup flag");
_Static_assert(COGEN_SETUP_DEFER_TASKRUN == IORING_SETUP_DEFER_TASKRUN, "setup flag");
_Static_assert(COGEN_FEAT_NODROP == IORING_FEAT_NODROP, "feature");
_Static_assert(COGEN_FEAT_FAST_POLL == IORING_FEAT_FAST_POLL, "feature");
_Static_assert(COGEN_FEAT_EXT_ARG == IORING_FEAT_EXT_ARG, "feature");
_Static_assert(COGEN_SQ_CQ_OVERFLOW == IORING_SQ_CQ_OVERFLOW, "sq flag");
_Static_assert(COGEN_SQ_TASKRUN == IORING_SQ_TASKRUN, "sq flag");
_Static_assert(COGEN_CQE_F_BUFFER == IORING_CQE_F_BUFFER, "cqe flag");
_Static_assert(COGEN_CQE_F_MORE == IORING_CQE_F_MORE, "cqe flag");
_Static_assert(COGEN_ASYNC_CANCEL_ALL == IORING_ASYNC_CANCEL_ALL, "cancel flag");
_Static_assert(COGEN_ASYNC_CANCEL_FD == IORING_ASYNC_CANCEL_FD, "cancel flag");
_Static_assert(COGEN_OP_NOP == IORING_OP_NOP, "opcode");
_Static_assert(COGEN_OP_POLL_ADD == IORING_OP_POLL_ADD, "opcode");
_Static_assert(COGEN_OP_TIMEOUT == IORING_OP_TIMEOUT, "opcode");
_Static_assert(COGEN_OP_ACCEPT == IORING_OP_ACCEPT, "opcode");
_Static_assert(COGEN_OP_ASYNC_CANCEL == IORING_OP_ASYNC_CANCEL, "opcode");
_Static_assert(COGEN_OP_CONNECT == IORING_OP_CONNECT, "opcode");
_Static_assert(COGEN_OP_CLOSE == IORING_OP_CLOSE, "opcode");
_Static_assert(COGEN_OP_READ == IORING_OP_READ, "opcode");
_Static_assert(COGEN_OP_WRITE == IORING_OP_WRITE, "opcode");
_Static_assert(COGEN_OP_SEND == IORING_OP_SEND, "opcode");
_Static_assert(COGEN_OP_RECV == IORING_OP_RECV, "opcode");
_Static_assert(COGEN_OP_SPLICE == IORING_OP_SPLICE, "opcode");
_Static_assert(COGEN_OP_PROVIDE_BUFFERS == IORING_OP_PROVIDE_BUFFERS, "opcode");
_Static_assert(COGEN_OP_SHUTDOWN == IORING_OP_SHUTDOWN, "opcode");
_Static_assert(COGEN_OP_MSG_RING == IORING_OP_MSG_RING, "opcode");
_Static_assert(COGEN_OP_SOCKET == IORING_OP_SOCKET, "opcode");
_Static_assert(COGEN_OP_SEND_ZC == IORING_OP_SEND_ZC, "opcode");

struct cogen_ring {
    struct io_uring ring;
};

// Why a lock around mapping and unmapping rings: liburing 2.3 maps a ring's queues with
// raw mmap/munmap system calls (it imports neither from libc), so ThreadSanitizer never
// sees a ring's memory go away. When a new ring, on another thread, is mapped where an
// old one was, TSan takes the new ring's accesses for races with the old ring's. The
// lock orders every unmap before the mapping that can reuse its addresses (the kernel
// orders them anyway); TSan sees that order. Rings are set up once per scheduler: the
// lock costs nothing that matters.
static pthread_mutex_t ring_mapping_lock = PTHREAD_MUTEX_INITIALIZER;

static int ring_init(unsigned entries, struct io_uring *ring, struct io_uring_params *p) {
    pthread_mutex_lock(&ring_mapping_lock);
    int ret = io_uring_queue_init_params(entries, ring, p);
    pthread_mutex_unlock(&ring_mapping_lock);
    return ret;
}

static void ring_exit(struct io_uring *ring) {
    pthread_mutex_lock(&ring_mapping_lock);
    io_uring_queue_exit(ring);
    pthread_mutex_unlock(&ring_mapping_lock);
}

int cogen_ring_create(unsigned sq_entries, unsigned cq_entries, unsigned flags,
                      cogen_ring **out_ring, unsigned *out_features) {
    cogen_ring *r = calloc(1, sizeof(*r));
    if (!r) return -ENOMEM;
    struct io_uring_params p;
    memset(&p, 0, sizeof(p));
    p.flags = flags;
    if (cq_entries) {
        p.flags |= IORING_SETUP_CQSIZE;
        p.cq_entries = cq_entries;
    }
    int ret = ring_init(sq_entries, &r->ring, &p);
    if (ret < 0) {
        free(r);
        return ret;
    }
    *out_ring = r;
    if (out_features) *out_features = p.features;
    return 0;
}

void cogen_ring_destroy(cogen_ring *ring) {
    if (!ring) return;
    ring_exit(&ring->ring);
    free(ring);
}

// liburing 2.3 declares io_uring_enable_rings but its shared library does not export it.
static int enable_rings(struct io_uring *ring) {
    long ret = syscall(__NR_io_uring_register, ring->ring_fd, IORING_REGISTER_ENABLE_RINGS, NULL, 0);
    return ret < 0 ? -errno : 0;
}

int cogen_ring_enable(cogen_ring *ring) { return enable_rings(&ring->ring); }
int cogen_ring_fd(const cogen_ring *ring) { return ring->ring.ring_fd; }
unsigned cogen_ring_sq_entries(const cogen_ring *ring) { return ring->ring.sq.ring_entries; }
unsigned cogen_ring_cq_entries(const cogen_ring *ring) { return ring->ring.cq.ring_entries; }

const unsigned *cogen_ring_sq_flags_pointer(const cogen_ring *ring) { return ring->ring.sq.kflags; }
const unsigned *cogen_ring_cq_head_pointer(const cogen_ring *ring) { return ring->ring.cq.khead; }
const unsigned *cogen_ring_cq_tail_pointer(const cogen_ring *ring) { return ring->ring.cq.ktail; }

cogen_sqe *cogen_ring_get_sqe(cogen_ring *ring) {
    return (cogen_sqe *)io_uring_get_sqe(&ring->ring);
}

unsigned cogen_ring_sq_ready(const cogen_ring *ring) { return io_uring_sq_ready(&ring->ring); }
int cogen_ring_submit(cogen_ring *ring) { return io_uring_submit(&ring->ring); }
int cogen_ring_submit_and_get_events(cogen_ring *ring) {
    return io_uring_submit_and_get_events(&ring->ring);
}

int cogen_ring_submit_and_wait(cogen_ring *ring, int64_t timeout_ns) {
    struct io_uring_cqe *cqe = NULL;
    if (timeout_ns < 0) {
        int ret = io_uring_submit_and_wait(&ring->ring, 1);
        return ret < 0 ? ret : 0;
    }
    struct __kernel_timespec ts;
    ts.tv_sec = timeout_ns / 1000000000;
    ts.tv_nsec = timeout_ns % 1000000000;
    int ret = io_uring_submit_and_wait_timeout(&ring->ring, &cqe, 1, &ts, NULL);
    return ret < 0 ? ret : 0;
}

unsigned cogen_ring_sq_flags(const cogen_ring *ring) {
    return IO_URING_READ_ONCE(*ring->ring.sq.kflags);
}

unsigned cogen_ring_cq_ready(const cogen_ring *ring) { return io_uring_cq_ready(&ring->ring); }

unsigned cogen_ring_reap(cogen_ring *ring, uint64_t *user_data, int32_t *res,
                         uint32_t *flags, unsigned max) {
    struct io_uring *r = &ring->ring;
    unsigned head = *r->cq.khead;
    unsigned tail = io_uring_smp_load_acquire(r->cq.ktail);
    unsigned mask = r->cq.ring_mask;
    unsigned n = 0, seen = 0;
    while (head != tail && n < max) {
        struct io_uring_cqe *cqe = &r->cq.cqes[head & mask];
        head++;
        seen++;
        // liburing's own wait timeout on kernels without EXT_ARG (before 5.11).
        if (cqe->user_data == LIBURING_UDATA_TIMEOUT) continue;
        user_data[n] = cqe->user_data;
        res[n] = cqe->res;
        flags[n] = cqe->flags;
        n++;
    }
    if (seen) io_uring_cq_advance(r, seen);
    return n;
}

void cogen_sqe_set_flags(cogen_sqe *sqe, uint8_t flags) {
    io_uring_sqe_set_flags((struct io_uring_sqe *)sqe, flags);
}

unsigned cogen_sqe_len(const cogen_sqe *sqe) {
    return ((const struct io_uring_sqe *)sqe)->len;
}

void cogen_sqe_set_len(cogen_sqe *sqe, unsigned len) {
    ((struct io_uring_sqe *)sqe)->len = len;
}

void cogen_prep_nop(cogen_sqe *s, uint64_t user_data) {
    struct io_uring_sqe *sqe = (struct io_uring_sqe *)s;
    io_uring_prep_nop(sqe);
    sqe->user_data = user_data;
}

void cogen_prep_poll_add(cogen_sqe *s, int fd, uint32_t mask, uint64_t user_data) {
    struct io_uring_sqe *sqe = (struct io_uring_sqe *)s;
    io_uring_prep_poll_add(sqe, fd, mask);
    sqe->user_data = user_data;
}

void cogen_prep_read(cogen_sqe *s, int fd, void *buf, unsigned len, uint64_t offset,
                     uint64_t user_data) {
    struct io_uring_sqe *sqe = (struct io_uring_sqe *)s;
    io_uring_prep_read(sqe, fd, buf, len, offset);
    sqe->user_data = user_data;
}

void cogen_prep_cancel(cogen_sqe *s, uint64_t target, int flags, uint64_t user_data) {
    struct io_uring_sqe *sqe = (struct io_uring_sqe *)s;
    io_uring_prep_cancel64(sqe, target, flags);
    sqe->user_data = user_data;
}

// Exported by libswift_Concurrency with the Swift calling convention.
extern void *swift_task_getCurrent(void) __attribute__((swiftcall));
const void *cogen_current_task(void) { return swift_task_getCurrent(); }

extern void swift_task_cancel(void *task) __attribute__((swiftcall));
void cogen_task_cancel(const void *task) { swift_task_cancel((void *)task); }

int cogen_accept4(int fd, void *addr, unsigned *addrlen) {
    return accept4(fd, (struct sockaddr *)addr, (socklen_t *)addrlen, SOCK_CLOEXEC | SOCK_NONBLOCK);
}

int cogen_eventfd(void) { return eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK); }

int cogen_set_thread_name(unsigned long thread, const char *name) {
    return pthread_setname_np((pthread_t)thread, name);
}

// initial-exec: a plain %fs-relative load instead of a __tls_get_addr call.
// Provided-buffer rings. liburing 2.3 has no io_uring_setup_buf_ring (2.4): map the ring
// memory here and register it.
int cogen_buf_ring_create(cogen_ring *ring, unsigned entries, uint16_t group, cogen_buf_ring **out) {
    size_t size = (size_t)entries * sizeof(struct io_uring_buf);
    void *mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) return -errno;
    struct io_uring_buf_reg reg;
    memset(&reg, 0, sizeof(reg));
    reg.ring_addr = (uint64_t)(uintptr_t)mem;
    reg.ring_entries = entries;
    reg.bgid = group;
    struct io_uring_buf_ring *br = mem;
    io_uring_buf_ring_init(br);
    int ret = io_uring_register_buf_ring(&ring->ring, &reg, 0);
    if (ret != 0) {
        munmap(mem, size);
        return ret;
    }
    *out = (cogen_buf_ring *)br;
    return 0;
}

void cogen_buf_ring_destroy(cogen_ring *ring, cogen_buf_ring *br, unsigned entries, uint16_t group) {
    io_uring_unregister_buf_ring(&ring->ring, group);
    munmap(br, (size_t)entries * sizeof(struct io_uring_buf));
}

void cogen_buf_ring_add(cogen_buf_ring *br, void *addr, unsigned len, uint16_t bid, unsigned entries,
                        unsigned offset) {
    io_uring_buf_ring_add((struct io_uring_buf_ring *)br, addr, len, bid, io_uring_buf_ring_mask(entries),
                          (int)offset);
}

void cogen_buf_ring_advance(cogen_buf_ring *br, unsigned count) {
    io_uring_buf_ring_advance((struct io_uring_buf_ring *)br, (int)count);
}

int cogen_epoll_create(void) { return epoll_create1(EPOLL_CLOEXEC); }

int cogen_epoll_ctl(int epfd, int op, int fd, uint32_t events, uint64_t data) {
    struct epoll_event event;
    event.events = events;
    event.data.u64 = data;
    return epoll_ctl(epfd, op, fd, &event) == 0 ? 0 : -errno;
}

int cogen_epoll_wait(int epfd, uint64_t *data, uint32_t *events, int max, int64_t timeout_ns) {
    struct epoll_event buffer[256];
    if (max > 256) max = 256;
    int n;
    static int no_pwait2;
    if (timeout_ns >= 0 && !no_pwait2) {
        struct timespec ts = {.tv_sec = timeout_ns / 1000000000, .tv_nsec = timeout_ns % 1000000000};
        n = epoll_pwait2(epfd, buffer, max, &ts, NULL);
        if (n < 0 && errno == ENOSYS) {
            no_pwait2 = 1;
            n = epoll_wait(epfd, buffer, max, (int)((timeout_ns + 999999) / 1000000));
        }
    } else {
        n = epoll_wait(epfd, buffer, max, timeout_ns < 0 ? -1 : (int)((timeout_ns + 999999) / 1000000));
    }
    if (n < 0) return -errno;
    for (int i = 0; i < n; i++) {
        data[i] = buffer[i].data.u64;
        events[i] = buffer[i].events;
    }
    return n;
}

static __thread void *current_scheduler __attribute__((tls_model("initial-exec")));
void *cogen_current_scheduler(void) { return current_scheduler; }
void cogen_set_current_scheduler(void *scheduler) { current_scheduler = scheduler; }

void cogen_prep_accept(cogen_sqe *s, int fd, void *addr, unsigned *addrlen, uint64_t user_data) {
    struct io_uring_sqe *sqe = (struct io_uring_sqe *)s;
    io_uring_prep_accept(sqe, fd, (struct sockaddr *)addr, (socklen_t *)addrlen, SOCK_CLOEXEC);
    sqe->user_data = user_data;
}

void cogen_prep_multishot_accept(cogen_sqe *s, int fd, uint64_t user_data) {
    struct io_uring_sqe *sqe = (struct io_uring_sqe *)s;
    io_uring_prep_multishot_accept(sqe, fd, NULL, NULL, SOCK_CLOEXEC);
    sqe->user_data = user_data;
}

void cogen_prep_recv_multishot(cogen_sqe *s, int fd, uint16_t group, uint64_t user_data) {
    struct io_uring_sqe *sqe = (struct io_uring_sqe *)s;
    io_uring_prep_recv_multishot(sqe, fd, NULL, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = group;
    sqe->user_data = user_data;
}

void cogen_prep_recv_select(cogen_sqe *s, int fd, uint16_t group, unsigned len, unsigned total, bool multishot,
                            uint64_t user_data) {
    struct io_uring_sqe *sqe = (struct io_uring_sqe *)s;
    if (multishot) {
        io_uring_prep_recv_multishot(sqe, fd, NULL, len, 0);
        // The multishot's byte limit (sqe->optlen, Linux 6.17) shares its place with
        // file_index, the name liburing 2.3 knows; earlier kernels refuse it with EINVAL.
        sqe->file_index = total;
    } else {
        io_uring_prep_recv(sqe, fd, NULL, len, 0);
    }
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = group;
    sqe->user_data = user_data;
}

void cogen_prep_connect(cogen_sqe *s, int fd, const void *addr, unsigned addrlen, uint64_t user_data) {
    struct io_uring_sqe *sqe = (struct io_uring_sqe *)s;
    io_uring_prep_connect(sqe, fd, (const struct sockaddr *)addr, addrlen);
    sqe->user_data = user_data;
}

void cogen_prep_recv(cogen_sqe *s, int fd, void *buf, size_t len, int flags, uint64_t user_data) {
    struct io_uring_sqe *sqe = (struct io_uring_sqe *)s;
    io_uring_prep_recv(sqe, fd, buf, len, flags);
    sqe->user_data = user_data;
}

void cogen_prep_send(cogen_sqe *s, int fd, const void *buf, size_t len, int flags, uint64_t user_data) {
    struct io_uring_sqe *sqe = (struct io_uring_sqe *)s;
    io_uring_prep_send(sqe, fd, buf, len, flags | MSG_NOSIGNAL);
    sqe->user_data = user_data;
}

void cogen_prep_sendmsg(cogen_sqe *s, int fd, const void *msg, int flags, uint64_t user_data) {
    struct io_uring_sqe *sqe = (struct io_uring_sqe *)s;
    io_uring_prep_sendmsg(sqe, fd, (const struct msghdr *)msg, (unsigned)(flags | MSG_NOSIGNAL));
    sqe->user_data = user_data;
}

void cogen_prep_shutdown(cogen_sqe *s, int fd, int how, uint64_t user_data) {
    struct io_uring_sqe *sqe = (struct io_uring_sqe *)s;
    io_uring_prep_shutdown(sqe, fd, how);
    sqe->user_data = user_data;
}

void cogen_prep_close(cogen_sqe *s, int fd, uint64_t user_data) {
    struct io_uring_sqe *sqe = (struct io_uring_sqe *)s;
    io_uring_prep_close(sqe, fd);
    sqe->user_data = user_data;
}

// ---------------------------------------------------------------------------------------
// Probing. Flags and registrations are not listed by IORING_REGISTER_PROBE: each is tried
// once on a throw-away ring. Probe rings never use SINGLE_ISSUER except to test it, so the
// probing thread is never bound to anything that outlives this function.

static int try_setup(unsigned flags) {
    struct io_uring ring;
    struct io_uring_params p;
    memset(&p, 0, sizeof(p));
    p.flags = flags;
    int ret = ring_init(4, &ring, &p);
    if (ret == 0) ring_exit(&ring);
    return ret;
}

// Waits for the CQE tagged `ud`, at most ~1 s; returns its res or -ETIMEDOUT.
static int wait_for(struct io_uring *ring, uint64_t ud) {
    for (int i = 0; i < 8; i++) {
        struct io_uring_cqe *cqe = NULL;
        struct __kernel_timespec ts = {.tv_sec = 0, .tv_nsec = 125000000};
        int ret = io_uring_wait_cqe_timeout(ring, &cqe, &ts);
        if (ret == -EINTR || ret == -ETIME) continue;
        if (ret < 0) return ret;
        uint64_t got = cqe->user_data;
        int res = cqe->res;
        io_uring_cqe_seen(ring, cqe);
        if (got == ud) return res;
    }
    return -ETIMEDOUT;
}

// Arms the SQE the caller prepared (tagged 1), cancels it, and reports whether the kernel
// accepted it (its CQE is anything but -EINVAL).
static bool arm_and_cancel(struct io_uring *ring) {
    if (io_uring_submit(ring) < 0) return false;
    struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
    if (!sqe) return false;
    io_uring_prep_cancel64(sqe, 1, 0);
    sqe->user_data = 2;
    if (io_uring_submit(ring) < 0) return false;
    int res = wait_for(ring, 1);
    return res != -EINVAL && res != -ETIMEDOUT;
}

static bool probe_multishot_accept(struct io_uring *ring) {
    int ls = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (ls < 0) return false;
    struct sockaddr_un addr;
    memset(&addr, 0, sizeof(addr));
    addr.sun_family = AF_UNIX;
    bool ok = false;
    // Binding only the family autobinds an abstract address: nothing touches the file system.
    if (bind(ls, (struct sockaddr *)&addr, sizeof(sa_family_t)) == 0 && listen(ls, 1) == 0) {
        struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
        if (sqe) {
            io_uring_prep_multishot_accept(sqe, ls, NULL, NULL, SOCK_CLOEXEC);
            sqe->user_data = 1;
            ok = arm_and_cancel(ring);
        }
    }
    close(ls);
    return ok;
}

static bool probe_buffer_ring_and_recv(struct io_uring *ring, bool *multishot_recv) {
    *multishot_recv = false;
    size_t len = 4096;
    void *mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) return false;
    struct io_uring_buf_reg reg;
    memset(&reg, 0, sizeof(reg));
    reg.ring_addr = (uint64_t)(uintptr_t)mem;
    reg.ring_entries = 1;
    reg.bgid = 7;
    struct io_uring_buf_ring *br = mem;
    io_uring_buf_ring_init(br);
    int ret = io_uring_register_buf_ring(ring, &reg, 0);
    if (ret != 0) {
        munmap(mem, len);
        return false;
    }
    static char data[64];
    io_uring_buf_ring_add(br, data, sizeof(data), 0, io_uring_buf_ring_mask(1), 0);
    io_uring_buf_ring_advance(br, 1);

    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) == 0) {
        struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
        if (sqe) {
            io_uring_prep_recv_multishot(sqe, sv[0], NULL, 0, 0);
            sqe->flags |= IOSQE_BUFFER_SELECT;
            sqe->buf_group = 7;
            sqe->user_data = 1;
            *multishot_recv = arm_and_cancel(ring);
        }
        close(sv[0]);
        close(sv[1]);
    }
    io_uring_unregister_buf_ring(ring, 7);
    munmap(mem, len);
    return true;
}

void cogen_probe(cogen_probe_result *out) {
    memset(out, 0, sizeof(*out));
    struct io_uring ring;
    struct io_uring_params p;
    memset(&p, 0, sizeof(p));
    int ret = ring_init(8, &ring, &p);
    if (ret < 0) {
        out->setup_errno = -ret;
        return;
    }
    out->features = p.features;

    struct io_uring_probe *probe = io_uring_get_probe_ring(&ring);
    if (probe) {
        out->last_op = probe->last_op + 1u;
        for (unsigned op = 0; op <= probe->last_op && op < 256; op++)
            out->opcodes[op] = io_uring_opcode_supported(probe, (int)op) ? 1 : 0;
        io_uring_free_probe(probe);
    }

    out->single_issuer = try_setup(IORING_SETUP_SINGLE_ISSUER) == 0;
    out->defer_taskrun =
        out->single_issuer &&
        try_setup(IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN) == 0;
    out->coop_taskrun = try_setup(IORING_SETUP_COOP_TASKRUN) == 0;
    out->taskrun_flag = try_setup(IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG) == 0;
    out->submit_all = try_setup(IORING_SETUP_SUBMIT_ALL) == 0;
    {
        struct io_uring r2;
        struct io_uring_params p2;
        memset(&p2, 0, sizeof(p2));
        p2.flags = IORING_SETUP_R_DISABLED;
        if (ring_init(4, &r2, &p2) == 0) {
            out->ring_disabled = enable_rings(&r2) == 0;
            ring_exit(&r2);
        }
    }
    out->multishot_accept = probe_multishot_accept(&ring);
    out->buffer_rings = probe_buffer_ring_and_recv(&ring, &out->multishot_recv);
    ring_exit(&ring);
}

int cogen_available_cpus(void) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) != 0) return 1;
    int count = CPU_COUNT(&set);
    return count > 0 ? count : 1;
}
