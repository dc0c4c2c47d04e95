// CURing: the only place that sees liburing.h.
//
// Swift never imports liburing.h: its macros built from enum bits do not import, its
// iteration macros do not import, and its feature macros clash with Glibc's module in debug
// builds. Everything Swift needs is a small, prefixed, non-inline function here, and the
// kernel's constants are restated as plain enums (checked against the kernel header in
// shim.c with static asserts).
#ifndef CURING_H
#define CURING_H

#include <stdint.h>
#include <stddef.h>
#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Opaque: a heap-allocated `struct io_uring`.
typedef struct cogen_ring cogen_ring;
/// Opaque: a submission queue entry (`struct io_uring_sqe`).
typedef struct cogen_sqe cogen_sqe;

enum {
    COGEN_SETUP_CQSIZE = 1u << 3,
    COGEN_SETUP_R_DISABLED = 1u << 6,
    COGEN_SETUP_SUBMIT_ALL = 1u << 7,
    COGEN_SETUP_COOP_TASKRUN = 1u << 8,
    COGEN_SETUP_TASKRUN_FLAG = 1u << 9,
    COGEN_SETUP_SINGLE_ISSUER = 1u << 12,
    COGEN_SETUP_DEFER_TASKRUN = 1u << 13,
};

enum {
    COGEN_FEAT_NODROP = 1u << 1,
    COGEN_FEAT_FAST_POLL = 1u << 5,
    COGEN_FEAT_EXT_ARG = 1u << 8,
};

enum {
    COGEN_SQ_CQ_OVERFLOW = 1u << 1,
    COGEN_SQ_TASKRUN = 1u << 2,
};

enum {
    COGEN_CQE_F_BUFFER = 1u << 0,
    COGEN_CQE_F_MORE = 1u << 1,
};

enum {
    COGEN_ASYNC_CANCEL_ALL = 1u << 0,
    COGEN_ASYNC_CANCEL_FD = 1u << 1,
};

enum {
    COGEN_OP_NOP = 0,
    COGEN_OP_POLL_ADD = 6,
    COGEN_OP_TIMEOUT = 11,
    COGEN_OP_ACCEPT = 13,
    COGEN_OP_ASYNC_CANCEL = 14,
    COGEN_OP_CONNECT = 16,
    COGEN_OP_CLOSE = 19,
    COGEN_OP_READ = 22,
    COGEN_OP_WRITE = 23,
    COGEN_OP_SEND = 26,
    COGEN_OP_RECV = 27,
    COGEN_OP_SPLICE = 30,
    COGEN_OP_PROVIDE_BUFFERS = 31,
    COGEN_OP_SHUTDOWN = 34,
    COGEN_OP_MSG_RING = 40,
    COGEN_OP_SOCKET = 45,
    COGEN_OP_SEND_ZC = 47,
};

/// Creates a ring. `cq_entries` of 0 lets the kernel pick (twice the SQ).
/// Returns 0, or -errno from io_uring_setup (EPERM, ENOMEM, ENOSYS, EINVAL…).
int cogen_ring_create(unsigned sq_entries, unsigned cq_entries, unsigned flags,
                      cogen_ring **out_ring, unsigned *out_features);
void cogen_ring_destroy(cogen_ring *ring);
/// IORING_REGISTER_ENABLE_RINGS: binds a SINGLE_ISSUER ring to the calling thread.
int cogen_ring_enable(cogen_ring *ring);
int cogen_ring_fd(const cogen_ring *ring);
unsigned cogen_ring_sq_entries(const cogen_ring *ring);
unsigned cogen_ring_cq_entries(const cogen_ring *ring);

/// The kernel's SQ flags word and CQ head/tail, for the loop's lock-free "anything to do?"
/// check (read with the inline loads below, never written from Swift).
const unsigned *cogen_ring_sq_flags_pointer(const cogen_ring *ring);
const unsigned *cogen_ring_cq_head_pointer(const cogen_ring *ring);
const unsigned *cogen_ring_cq_tail_pointer(const cogen_ring *ring);

static inline unsigned cogen_load_relaxed(const unsigned *p) {
    return __atomic_load_n(p, __ATOMIC_RELAXED);
}
static inline unsigned cogen_load_acquire(const unsigned *p) {
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

/// A spin-wait hint to the CPU (x86 `pause`, Arm `yield`): the loop's spin before it
/// sleeps (`Scheduler.Configuration.spinBeforeWait`).
static inline void cogen_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/// A free SQE, or NULL when the SQ is full (the caller flushes and retries).
cogen_sqe *cogen_ring_get_sqe(cogen_ring *ring);
/// SQEs prepared but not yet handed to the kernel.
unsigned cogen_ring_sq_ready(const cogen_ring *ring);
/// io_uring_submit. Returns the number submitted or -errno (EBUSY, EAGAIN, EINTR).
int cogen_ring_submit(cogen_ring *ring);
/// io_uring_submit_and_get_events: submits and runs pending task work without waiting.
int cogen_ring_submit_and_get_events(cogen_ring *ring);
/// Submits and waits for at least one completion, at most `timeout_ns` (< 0: no limit).
/// Returns 0, -ETIME on timeout, or -errno.
int cogen_ring_submit_and_wait(cogen_ring *ring, int64_t timeout_ns);
/// SQ ring flags (acquire load): COGEN_SQ_TASKRUN, COGEN_SQ_CQ_OVERFLOW.
unsigned cogen_ring_sq_flags(const cogen_ring *ring);
/// Completions ready in the CQ ring.
unsigned cogen_ring_cq_ready(const cogen_ring *ring);
/// Copies up to `max` completions out of the CQ ring and marks them seen. Completions of
/// liburing's internal wait timeout (pre-5.11 kernels) are skipped.
unsigned cogen_ring_reap(cogen_ring *ring, uint64_t *user_data, int32_t *res,
                         uint32_t *flags, unsigned max);

void cogen_sqe_set_flags(cogen_sqe *sqe, uint8_t flags);
/// The SQE's length field (bytes for a receive or send); fault injection shortens it.
unsigned cogen_sqe_len(const cogen_sqe *sqe);
void cogen_sqe_set_len(cogen_sqe *sqe, unsigned len);
void cogen_prep_nop(cogen_sqe *sqe, uint64_t user_data);
void cogen_prep_poll_add(cogen_sqe *sqe, int fd, uint32_t mask, uint64_t user_data);
void cogen_prep_read(cogen_sqe *sqe, int fd, void *buf, unsigned len, uint64_t offset,
                     uint64_t user_data);
void cogen_prep_cancel(cogen_sqe *sqe, uint64_t target, int flags, uint64_t user_data);
/// IORING_OP_ACCEPT; the new descriptor is created SOCK_CLOEXEC.
void cogen_prep_accept(cogen_sqe *sqe, int fd, void *addr, unsigned *addrlen, uint64_t user_data);
/// IORING_OP_ACCEPT with IORING_ACCEPT_MULTISHOT (5.19): one CQE per connection.
void cogen_prep_multishot_accept(cogen_sqe *sqe, int fd, uint64_t user_data);
/// IORING_OP_RECV with IORING_RECV_MULTISHOT and IOSQE_BUFFER_SELECT (6.0): one CQE per
/// chunk received, each into a buffer of group `group`.
void cogen_prep_recv_multishot(cogen_sqe *sqe, int fd, uint16_t group, uint64_t user_data);
/// IORING_OP_RECV with IOSQE_BUFFER_SELECT from group `group`, each receive taking at most
/// `len` bytes (0: a whole buffer). `multishot` (IORING_RECV_MULTISHOT, 6.0) with `total`
/// > 0: the kernel ends the receive once `total` bytes arrived (the multishot limit in
/// `sqe->optlen`, 6.17; earlier kernels answer EINVAL). Without `multishot`: one receive,
/// one buffer (5.7).
void cogen_prep_recv_select(cogen_sqe *sqe, int fd, uint16_t group, unsigned len, unsigned total, bool multishot,
                            uint64_t user_data);
void cogen_prep_connect(cogen_sqe *sqe, int fd, const void *addr, unsigned addrlen, uint64_t user_data);
void cogen_prep_recv(cogen_sqe *sqe, int fd, void *buf, size_t len, int flags, uint64_t user_data);
/// IORING_OP_SEND with MSG_NOSIGNAL added: a closed peer is an error, never SIGPIPE.
void cogen_prep_send(cogen_sqe *sqe, int fd, const void *buf, size_t len, int flags, uint64_t user_data);
/// IORING_OP_SENDMSG (5.3) of `msg` (a `struct msghdr`, read by the kernel until the CQE,
/// its iovecs included) with MSG_NOSIGNAL added: a closed peer is an error, never SIGPIPE.
void cogen_prep_sendmsg(cogen_sqe *sqe, int fd, const void *msg, int flags, uint64_t user_data);
void cogen_prep_shutdown(cogen_sqe *sqe, int fd, int how, uint64_t user_data);
void cogen_prep_close(cogen_sqe *sqe, int fd, uint64_t user_data);

/// Opaque: a provided-buffer ring (`struct io_uring_buf_ring`).
typedef struct cogen_buf_ring cogen_buf_ring;

/// Maps a ring of `entries` (a power of two) buffer slots and registers it as buffer group
/// `group` (IORING_REGISTER_PBUF_RING, 5.19). Returns 0 or -errno.
int cogen_buf_ring_create(cogen_ring *ring, unsigned entries, uint16_t group, cogen_buf_ring **out);
/// Unregisters and unmaps the ring.
void cogen_buf_ring_destroy(cogen_ring *ring, cogen_buf_ring *br, unsigned entries, uint16_t group);
/// Stages buffer `bid` at `addr` (`len` bytes) `offset` slots past the ring's tail.
void cogen_buf_ring_add(cogen_buf_ring *br, void *addr, unsigned len, uint16_t bid, unsigned entries,
                        unsigned offset);
/// Publishes `count` staged buffers to the kernel.
void cogen_buf_ring_advance(cogen_buf_ring *br, unsigned count);

// epoll, for the readiness backend. `struct epoll_event` is packed on x86-64, which Swift
// does not import faithfully: these take plain arrays.

enum {
    COGEN_EPOLLIN = 0x001,
    COGEN_EPOLLOUT = 0x004,
    COGEN_EPOLLERR = 0x008,
    COGEN_EPOLLHUP = 0x010,
    COGEN_EPOLLRDHUP = 0x2000,
};

/// epoll_create1(EPOLL_CLOEXEC).
int cogen_epoll_create(void);
/// epoll_ctl; `op` 1 add, 2 delete, 3 modify. Returns 0 or -errno.
int cogen_epoll_ctl(int epfd, int op, int fd, uint32_t events, uint64_t data);
/// Waits up to `timeout_ns` (< 0: no limit; nanosecond precision through epoll_pwait2,
/// Linux 5.11, else rounded up to milliseconds). Returns the number of events or -errno.
int cogen_epoll_wait(int epfd, uint64_t *data, uint32_t *events, int max, int64_t timeout_ns);

/// The scheduler running on the calling thread (a thread-local), or NULL.
void *cogen_current_scheduler(void);
void cogen_set_current_scheduler(void *scheduler);

/// The Swift task running on this thread (`swift_task_getCurrent`), as a raw pointer used
/// only for identity comparisons; NULL outside a task.
const void *cogen_current_task(void);

/// `swift_task_cancel` on a task known to be alive (a running coroutine's own task).
void cogen_task_cancel(const void *task);

/// accept4(fd, addr, addrlen, SOCK_CLOEXEC | SOCK_NONBLOCK) (accept4 is not visible to
/// Swift through Glibc).
int cogen_accept4(int fd, void *addr, unsigned *addrlen);

/// eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK): the loop's cross-thread wake-up.
int cogen_eventfd(void);

/// The CPUs the calling thread may run on (sched_getaffinity, CPU_COUNT), at least 1.
int cogen_available_cpus(void);

/// pthread_setname_np (not visible to Swift through Glibc).
int cogen_set_thread_name(unsigned long thread, const char *name);

/// What the kernel offers, found by trying each thing once on throw-away rings.
typedef struct cogen_probe_result {
    int setup_errno;          ///< 0, or the errno of the plainest io_uring_setup
    unsigned features;        ///< IORING_FEAT_* of a plain ring
    bool single_issuer;       ///< IORING_SETUP_SINGLE_ISSUER (6.0)
    bool defer_taskrun;       ///< IORING_SETUP_DEFER_TASKRUN (6.1)
    bool coop_taskrun;        ///< IORING_SETUP_COOP_TASKRUN (5.19)
    bool taskrun_flag;        ///< IORING_SETUP_TASKRUN_FLAG (5.19)
    bool ring_disabled;       ///< IORING_SETUP_R_DISABLED + ENABLE_RINGS (5.10)
    bool submit_all;          ///< IORING_SETUP_SUBMIT_ALL (5.18)
    bool buffer_rings;        ///< IORING_REGISTER_PBUF_RING (5.19)
    bool multishot_accept;    ///< IORING_ACCEPT_MULTISHOT (5.19)
    bool multishot_recv;      ///< IORING_RECV_MULTISHOT (6.0)
    unsigned last_op;         ///< one past the highest opcode the kernel knows
    uint8_t opcodes[256];     ///< 1 when the probe lists the opcode as supported
} cogen_probe_result;

/// Probes the kernel. Never fails: a refused io_uring is reported in `setup_errno`.
void cogen_probe(cogen_probe_result *out);

#ifdef __cplusplus
}
#endif
#endif
