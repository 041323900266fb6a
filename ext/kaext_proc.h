/*
 * kaext_proc.h -- read (and reach) the TCP sockets of a running process.
 *
 * Linux only.  pidfd_open(2) (Linux 5.3) gives a handle on a process;
 * pidfd_getfd(2) (Linux 5.6) duplicates one of its file descriptors into this
 * process, which then shares the open socket: getsockopt/setsockopt on the
 * duplicate read and write the other process's socket.  pidfd_getfd needs the
 * right to ptrace the target (PTRACE_MODE_ATTACH_REALCREDS: same real uid and
 * Yama's rules, or CAP_SYS_PTRACE).  C libraries before glibc 2.36 do not wrap
 * either call, so both go through syscall(2) with the numbers from
 * <sys/syscall.h> (434 and 438 on every architecture that has them).
 *
 * kaext_proc_read() reads, for many descriptors at once, everything
 * `kaext.connections()` shows: the socket's inode (which the kernel's TCP tables
 * are keyed by), SO_KEEPALIVE, TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT and
 * TCP_USER_TIMEOUT (kernel units: seconds, seconds, probes, milliseconds).  With
 * a pidfd the descriptors are the target's, each duplicated with pidfd_getfd;
 * with pidfd -1 they are this process's own, each duplicated with dup (fcntl
 * F_DUPFD_CLOEXEC).  Everything is read from the duplicate, which is closed
 * again: inode and options come from the same open file, so a descriptor closed
 * and reused meanwhile cannot mix two sockets.
 *
 * kaext_diag_next() walks one read of a sock_diag (NETLINK_SOCK_DIAG) dump of
 * TCP sockets, message by message, without copying: the kernel's view of each
 * socket (state, addresses, pending timer, inode) for kaext.connections().
 *
 * On other systems the functions exist and fail with ENOSYS, so the extension
 * builds everywhere.
 */
#ifndef KAEXT_PROC_H
#define KAEXT_PROC_H

#include <errno.h>
#include <stddef.h>
#include <string.h>

/* What was read from one descriptor.  err is 0, or the errno of the step that
 * failed (pidfd_getfd: EPERM without ptrace rights, EBADF when the descriptor is
 * gone; ENOTSOCK: not a socket; EOPNOTSUPP/ENOPROTOOPT: not TCP); inode is the
 * socket's inode when it is a socket (else 0); the values are kernel units. */
typedef struct {
    int err;
    unsigned long long inode;
    int keepalive;
    int idle;
    int interval;
    int count;
    int user_timeout; /* -1: TCP_USER_TIMEOUT not readable here */
} kaext_proc_opts;

/* One socket of a sock_diag dump (struct inet_diag_msg), ports in host order,
 * addresses as the kernel stores them (network order; IPv4: the first 4 bytes). */
typedef struct {
    int err; /* the errno of an NLMSG_ERROR */
    int ipv6;
    int state;
    int timer;
    int retrans;
    unsigned sport;
    unsigned dport;
    unsigned char src[16];
    unsigned char dst[16];
    unsigned expires; /* ms */
    unsigned long long inode;
} kaext_diag_msg;

#define KAEXT_DIAG_SOCKET 1    /* a socket, in *m */
#define KAEXT_DIAG_END 0       /* the end of this read */
#define KAEXT_DIAG_DONE (-1)   /* the end of the dump */
#define KAEXT_DIAG_ERROR (-2)  /* the kernel refused the dump: m->err */
#define KAEXT_DIAG_BAD (-3)    /* a malformed message */
#define KAEXT_ADDRSTRLEN 64

#if defined(__linux__)

#include <sys/types.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <unistd.h>

/* The kernel's uapi headers (linux-headers / linux-libc-dev) for the sock_diag
 * structures; without them kaext_diag_next() reports ENOSYS and the Python
 * parser is used. */
#if defined(__has_include)
#  if __has_include(<linux/inet_diag.h>)
#    define KAEXT_HAVE_DIAG 1
#  else
#    define KAEXT_HAVE_DIAG 0
#  endif
#else
#  define KAEXT_HAVE_DIAG 1
#endif
#if KAEXT_HAVE_DIAG
#  include <linux/netlink.h>
#  include <linux/inet_diag.h>
#endif

#define KAEXT_HAVE_PROC 1

#if defined(SYS_pidfd_open)
#  define KAEXT_SYS_PIDFD_OPEN SYS_pidfd_open
#elif defined(__NR_pidfd_open)
#  define KAEXT_SYS_PIDFD_OPEN __NR_pidfd_open
#else
#  define KAEXT_SYS_PIDFD_OPEN 434 /* the same on every architecture (asm-generic) */
#endif
#if defined(SYS_pidfd_getfd)
#  define KAEXT_SYS_PIDFD_GETFD SYS_pidfd_getfd
#elif defined(__NR_pidfd_getfd)
#  define KAEXT_SYS_PIDFD_GETFD __NR_pidfd_getfd
#else
#  define KAEXT_SYS_PIDFD_GETFD 438
#endif

/* A pidfd for process pid, or -1 with errno (ESRCH: no such process; ENOSYS: before 5.3).
 * flags: 0, or PIDFD_THREAD (O_EXCL, Linux 6.9+) for a pidfd of thread pid, which
 * pidfd_getfd reaches the process's descriptors through when its main thread has
 * exited (EINVAL before 6.9). */
static inline int kaext_pidfd_open(int pid, unsigned flags)
{
    return (int)syscall(KAEXT_SYS_PIDFD_OPEN, pid, flags);
}

/* A new descriptor in this process for descriptor fd of the process behind pidfd,
 * close-on-exec, or -1 with errno (EPERM: no ptrace right; EBADF: no such fd;
 * ENOSYS: before 5.6). */
static inline int kaext_pidfd_getfd(int pidfd, int fd)
{
    return (int)syscall(KAEXT_SYS_PIDFD_GETFD, pidfd, fd, 0);
}

static inline int kaext_proc_getint(int fd, int level, int opt, int *value)
{
    socklen_t len = sizeof *value;
    *value = 0;
    return getsockopt(fd, level, opt, value, &len) == 0 ? 0 : errno;
}

static inline int kaext_proc_read_one(int fd, kaext_proc_opts *o)
{
    struct stat st;
    int err;
    if (fstat(fd, &st) != 0)
        return errno;
    if (!S_ISSOCK(st.st_mode))
        return ENOTSOCK;
    o->inode = (unsigned long long)st.st_ino;
    if ((err = kaext_proc_getint(fd, SOL_SOCKET, SO_KEEPALIVE, &o->keepalive)) != 0)
        return err;
    if ((err = kaext_proc_getint(fd, IPPROTO_TCP, TCP_KEEPIDLE, &o->idle)) != 0)
        return err;
    if ((err = kaext_proc_getint(fd, IPPROTO_TCP, TCP_KEEPINTVL, &o->interval)) != 0)
        return err;
    if ((err = kaext_proc_getint(fd, IPPROTO_TCP, TCP_KEEPCNT, &o->count)) != 0)
        return err;
#if defined(TCP_USER_TIMEOUT)
    if (kaext_proc_getint(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &o->user_timeout) != 0)
        o->user_timeout = -1;
#else
    o->user_timeout = -1;
#endif
    o->keepalive = o->keepalive != 0;
    return 0;
}

/* For each of the n descriptors fds[i], fill out[i].  pidfd >= 0: descriptors of
 * that process, each duplicated with pidfd_getfd; pidfd -1: this process's own,
 * each duplicated with dup; the duplicate is read and closed.  Never fails as a
 * whole: each entry carries its own err. */
static inline void kaext_proc_read(int pidfd, const int *fds, kaext_proc_opts *out, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) {
        kaext_proc_opts *o = &out[i];
        int fd;
        o->inode = 0;
        o->keepalive = o->idle = o->interval = o->count = 0;
        o->user_timeout = -1;
        /* one duplicate per descriptor, everything read from it: a number closed and
         * reused (dup2) meanwhile cannot give one socket's inode and another's options */
        fd = pidfd >= 0 ? kaext_pidfd_getfd(pidfd, fds[i]) : fcntl(fds[i], F_DUPFD_CLOEXEC, 0);
        if (fd < 0) {
            o->err = errno;
            if (pidfd >= 0 && (o->err == EPERM || o->err == EACCES || o->err == ENOSYS)) {
                /* the same for every descriptor of the process: fill in the rest */
                for (i++; i < n; i++) {
                    out[i] = *o;
                }
                return;
            }
            continue;
        }
        o->err = kaext_proc_read_one(fd, o);
        close(fd);
    }
}

#if KAEXT_HAVE_DIAG
/* The next message of one read (buf[0..n)) of a sock_diag dump, from *off on. */
static inline int kaext_diag_next(const unsigned char *buf, size_t n, size_t *off, kaext_diag_msg *m)
{
    const struct nlmsghdr *h;
    const struct inet_diag_msg *d;
    if (*off + sizeof *h > n)
        return KAEXT_DIAG_END;
    h = (const struct nlmsghdr *)(const void *)(buf + *off);
    if (h->nlmsg_len < sizeof *h || *off + h->nlmsg_len > n)
        return KAEXT_DIAG_BAD;
    *off += NLMSG_ALIGN(h->nlmsg_len);
    if (h->nlmsg_type == NLMSG_DONE)
        return KAEXT_DIAG_DONE;
    if (h->nlmsg_type == NLMSG_ERROR) {
        const struct nlmsgerr *e = (const struct nlmsgerr *)NLMSG_DATA(h);
        m->err = h->nlmsg_len >= NLMSG_LENGTH(sizeof(int)) ? -e->error : EPROTO;
        return KAEXT_DIAG_ERROR;
    }
    if (h->nlmsg_len < NLMSG_LENGTH(sizeof *d))
        return KAEXT_DIAG_BAD;
    d = (const struct inet_diag_msg *)NLMSG_DATA(h);
    m->err = 0;
    m->ipv6 = d->idiag_family == AF_INET6;
    m->state = d->idiag_state;
    m->timer = d->idiag_timer;
    m->retrans = d->idiag_retrans;
    m->sport = ntohs(d->id.idiag_sport);
    m->dport = ntohs(d->id.idiag_dport);
    memcpy(m->src, d->id.idiag_src, 16);
    memcpy(m->dst, d->id.idiag_dst, 16);
    m->expires = d->idiag_expires;
    m->inode = d->idiag_inode;
    return KAEXT_DIAG_SOCKET;
}
#else
static inline int kaext_diag_next(const unsigned char *buf, size_t n, size_t *off, kaext_diag_msg *m)
{
    (void)buf;
    (void)n;
    (void)off;
    m->err = ENOSYS;
    return KAEXT_DIAG_ERROR;
}
#endif

/* An address of a kaext_diag_msg as text ("127.0.0.1", "::1") in out[KAEXT_ADDRSTRLEN]. */
static inline const char *kaext_diag_ntop(int ipv6, const unsigned char *addr, char *out)
{
    if (inet_ntop(ipv6 ? AF_INET6 : AF_INET, addr, out, KAEXT_ADDRSTRLEN) == NULL)
        out[0] = '\0';
    return out;
}

#else /* not Linux: no pidfds, no /proc */

#define KAEXT_HAVE_PROC 0

static inline int kaext_pidfd_open(int pid, unsigned flags)
{
    (void)pid;
    (void)flags;
    errno = ENOSYS;
    return -1;
}

static inline int kaext_pidfd_getfd(int pidfd, int fd)
{
    (void)pidfd;
    (void)fd;
    errno = ENOSYS;
    return -1;
}

static inline void kaext_proc_read(int pidfd, const int *fds, kaext_proc_opts *out, size_t n)
{
    size_t i;
    (void)pidfd;
    (void)fds;
    for (i = 0; i < n; i++) {
        out[i].err = ENOSYS;
        out[i].inode = 0;
        out[i].keepalive = out[i].idle = out[i].interval = out[i].count = 0;
        out[i].user_timeout = -1;
    }
}

static inline int kaext_diag_next(const unsigned char *buf, size_t n, size_t *off, kaext_diag_msg *m)
{
    (void)buf;
    (void)n;
    (void)off;
    m->err = ENOSYS;
    return KAEXT_DIAG_ERROR;
}

static inline const char *kaext_diag_ntop(int ipv6, const unsigned char *addr, char *out)
{
    (void)ipv6;
    (void)addr;
    out[0] = '\0';
    return out;
}

#endif /* __linux__ */

#endif /* KAEXT_PROC_H */
