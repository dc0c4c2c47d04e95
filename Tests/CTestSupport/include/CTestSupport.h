#ifndef CTESTSUPPORT_H
#define CTESTSUPPORT_H
/// Installs a seccomp filter that makes io_uring_setup, io_uring_enter and
/// io_uring_register fail with EPERM, as Docker's default profile does. Returns 0 or -errno.
int cogen_test_refuse_io_uring(void);
/// mallopt(M_MMAP_THRESHOLD, bytes): allocations from this size on are mapped on their own
/// (resident only where written, unmapped when freed). Returns mallopt's result.
int cogen_test_mmap_threshold(int bytes);
#endif
