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
 * `kaext.connections()` shows: SO_KEEPALIVE, TCP_KEEPIDLE, TCP_KEEPINTVL,
 * TCP_KEEPCNT and TCP_USER_TIMEOUT (kernel units: seconds, seconds, probes,
 * milliseconds).  With a pidfd the descriptors are the target's and each one is
 * duplicated, read and closed again; with pidfd -1 they are this process's own.
 * Each descriptor's inode is compared with the one the caller found in /proc,
 * so that a descriptor closed and reused in the meantime is reported, not read.
 *
 * On other systems the functions exist and fail with ENOSYS, so the extension
 * builds everywhere.
 */
#ifndef KAEXT_PROC_H
#define KAEXT_PROC_H

#include <errno.h>
#include <stddef.h>

/* What was read from one descriptor.  err is 0, or the errno of the step that
 * failed (pidfd_getfd: EPERM without ptrace rights, EBADF when the descriptor is
 * gone; ESTALE when it now names another file); the values are kernel units. */
typedef struct {
    int err;
    int keepalive;
    int idle;
    int interval;
    int count;
    int user_timeout; /* -1: TCP_USER_TIMEOUT not readable here */
} kaext_proc_opts;

#if defined(__linux__)

#include <sys/types.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <unistd.h>

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

/* A pidfd for process pid, or -1 with errno (ESRCH: no such process; ENOSYS: before 5.3). */
static inline int kaext_pidfd_open(int pid)
{
    return (int)syscall(KAEXT_SYS_PIDFD_OPEN, pid, 0);
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

static inline int kaext_proc_read_one(int fd, unsigned long long inode, kaext_proc_opts *o)
{
    struct stat st;
    int err;
    if (fstat(fd, &st) != 0)
        return errno;
    if (!S_ISSOCK(st.st_mode) || (unsigned long long)st.st_ino != inode)
        return ESTALE; /* closed and reused since /proc was read */
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

/* For each of the n descriptors fds[i] (with the inode /proc showed for it), fill
 * out[i].  pidfd >= 0: descriptors of that process, each duplicated with
 * pidfd_getfd and closed after reading; pidfd -1: this process's own.  Never
 * fails as a whole: each entry carries its own err. */
static inline void kaext_proc_read(int pidfd, const int *fds, const unsigned long long *inodes,
                                   kaext_proc_opts *out, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) {
        kaext_proc_opts *o = &out[i];
        int fd = fds[i];
        o->keepalive = o->idle = o->interval = o->count = 0;
        o->user_timeout = -1;
        if (pidfd >= 0) {
            fd = kaext_pidfd_getfd(pidfd, fds[i]);
            if (fd < 0) {
                o->err = errno;
                continue;
            }
        }
        o->err = kaext_proc_read_one(fd, inodes[i], o);
        if (pidfd >= 0)
            close(fd);
    }
}

#else /* not Linux: no pidfds, no /proc */

#define KAEXT_HAVE_PROC 0

static inline int kaext_pidfd_open(int pid)
{
    (void)pid;
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

static inline void kaext_proc_read(int pidfd, const int *fds, const unsigned long long *inodes,
                                   kaext_proc_opts *out, size_t n)
{
    size_t i;
    (void)pidfd;
    (void)fds;
    (void)inodes;
    for (i = 0; i < n; i++) {
        out[i].err = ENOSYS;
        out[i].keepalive = out[i].idle = out[i].interval = out[i].count = 0;
        out[i].user_timeout = -1;
    }
}

#endif /* __linux__ */

#endif /* KAEXT_PROC_H */
