#include "echo_common.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

static void usage(const char *program) {
    fprintf(stderr, "usage: %s [--port N]   (default 7000; 0 picks a free port)\n", program);
    exit(2);
}

int echo_parse_port(int argc, char **argv) {
    int port = 7000;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--port") == 0 && i + 1 < argc) {
            char *end;
            long value = strtol(argv[++i], &end, 10);
            if (*end != '\0' || value < 0 || value > 65535) usage(argv[0]);
            port = (int)value;
        } else {
            usage(argv[0]);
        }
    }
    return port;
}

void echo_raise_fd_limit(void) {
    struct rlimit limit;
    if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
        limit.rlim_cur = limit.rlim_max;
        setrlimit(RLIMIT_NOFILE, &limit);
    }
}

int echo_listen(int port, int nonblocking) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | (nonblocking ? SOCK_NONBLOCK : 0), 0);
    if (fd < 0) { perror("socket"); exit(1); }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in address = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&address, sizeof address) < 0) { perror("bind"); exit(1); }
    if (listen(fd, 4096) < 0) { perror("listen"); exit(1); }
    socklen_t length = sizeof address;
    getsockname(fd, (struct sockaddr *)&address, &length);
    printf("listening on 127.0.0.1:%d\n", ntohs(address.sin_port));
    fflush(stdout);
    return fd;
}

int echo_signalfd(void) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    if (sigprocmask(SIG_BLOCK, &set, NULL) < 0) { perror("sigprocmask"); exit(1); }
    int fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (fd < 0) { perror("signalfd"); exit(1); }
    return fd;
}

void echo_set_nodelay(int fd) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

void obuf_append(struct obuf *b, const void *bytes, size_t n) {
    if (b->head + b->len + n > b->cap) {
        if (b->head > 0) {
            memmove(b->data, b->data + b->head, b->len);
            b->head = 0;
        }
        if (b->len + n > b->cap) {
            size_t cap = b->cap ? b->cap : 4096;
            while (cap < b->len + n) cap *= 2;
            b->data = realloc(b->data, cap);
            if (!b->data) { perror("realloc"); abort(); }
            b->cap = cap;
        }
    }
    memcpy(b->data + b->head + b->len, bytes, n);
    b->len += n;
}

void obuf_free(struct obuf *b) {
    free(b->data);
    *b = (struct obuf){0};
}

const char http_floor_response[] =
    "HTTP/1.1 200 OK\r\n"
    "Server: floor\r\n"
    "Date: Sat, 05 Dec 2026 12:00:00 GMT\r\n"
    "Content-Type: text/plain\r\n"
    "Content-Length: 13\r\n"
    "\r\n"
    "Hello, World!";
const size_t http_floor_response_length = sizeof http_floor_response - 1;

int http_scan_heads(struct http_scan *scan, const char *p, size_t n) {
    static const char terminator[4] = {'\r', '\n', '\r', '\n'};
    int heads = 0, match = scan->match;
    size_t since = scan->head_bytes;
    for (size_t i = 0; i < n; i++) {
        char byte = p[i];
        since++;
        if (byte == terminator[match]) {
            if (++match == 4) {
                heads++;
                match = 0;
                since = 0;
            }
        } else {
            match = byte == '\r';
        }
    }
    scan->match = match;
    scan->head_bytes = since;
    return since > HTTP_FLOOR_MAX_HEAD ? -1 : heads;
}

int echo_epfd = -1;

int echo_epoll_serve(int argc, char **argv, uint32_t events, size_t conn_size,
                     void (*on_event)(void *conn, uint32_t events), void (*drop)(void *conn)) {
    static char listener_tag, signal_tag;  // epoll data of the two descriptors that are not connections
    int port = echo_parse_port(argc, argv);
    echo_raise_fd_limit();
    int sfd = echo_signalfd();
    int listener = echo_listen(port, 1);

    echo_epfd = epoll_create1(EPOLL_CLOEXEC);
    if (echo_epfd < 0) { perror("epoll_create1"); return 1; }
    struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &listener_tag };
    if (epoll_ctl(echo_epfd, EPOLL_CTL_ADD, listener, &ev) < 0) { perror("epoll_ctl"); return 1; }
    ev.data.ptr = &signal_tag;
    if (epoll_ctl(echo_epfd, EPOLL_CTL_ADD, sfd, &ev) < 0) { perror("epoll_ctl"); return 1; }

    struct epoll_event ready[256];
    for (;;) {
        int n = epoll_wait(echo_epfd, ready, 256, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            perror("epoll_wait");
            return 1;
        }
        for (int i = 0; i < n; i++) {
            void *tag = ready[i].data.ptr;
            if (tag == &signal_tag) return 0;
            if (tag != &listener_tag) {
                on_event(tag, ready[i].events);
                continue;
            }
            for (;;) {
                int fd = accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (fd < 0) {
                    if (errno == EINTR || errno == ECONNABORTED) continue;
                    if (errno != EAGAIN) perror("accept4");  // EMFILE…: retried on the next wakeup
                    break;
                }
                echo_set_nodelay(fd);
                int *conn = calloc(1, conn_size);  // its first member: the descriptor
                if (!conn) { close(fd); continue; }
                *conn = fd;
                struct epoll_event add = { .events = events, .data.ptr = conn };
                if (epoll_ctl(echo_epfd, EPOLL_CTL_ADD, fd, &add) < 0) { perror("epoll_ctl"); drop(conn); }
            }
        }
    }
}
