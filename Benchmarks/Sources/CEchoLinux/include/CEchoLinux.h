// What echo-load and echo-matrix need from Linux that Glibc's Swift module leaves out:
// <sys/epoll.h>, and CPU affinity (a GNU extension, and the CPU_* macros do not import).
#ifndef CECHOLINUX_H
#define CECHOLINUX_H

#include <sys/epoll.h>

/// Pins the calling thread to `cpu`, or lets it run on every CPU when `cpu` < 0.
/// Children spawned afterwards inherit the mask, which is how echo-matrix pins its
/// servers and the load generator. Returns 0, or -1 with errno.
int echo_pin_thread(int cpu);

/// How many CPUs the calling thread may run on.
int echo_usable_cpus(void);

/// glibc's mallopt: keep freed memory in the process (trim threshold 128 MiB, top pad
/// 16 MiB, mmap threshold 1 MiB) instead of returning it to the kernel at once.
void echo_keep_freed_memory(void);

#endif
