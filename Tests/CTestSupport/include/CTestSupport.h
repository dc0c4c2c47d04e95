#ifndef CTESTSUPPORT_H
#define CTESTSUPPORT_H
/// Installs a seccomp filter that makes io_uring_setup, io_uring_enter and
/// io_uring_register fail with EPERM, as Docker's default profile does. Returns 0 or -errno.
int cogen_test_refuse_io_uring(void);
#endif
