/*
 * kaext_shim.h -- the one place where operating systems differ.
 *
 * Plain C, no Python: the Cython extension includes it, and so can a small C
 * test program.  Every constant comes from the platform's own headers; a
 * numeric fallback exists only where an old SDK header lacks a name, and is
 * marked KAEXT_FALLBACK in the constants table.
 *
 * Model
 * -----
 * A "plan" says, for each knob, whether to set it and to what, in the OS's own
 * unit (seconds, milliseconds or probes; the Python layer converts and checks
 * ranges before anything reaches this file).  kaext_apply() writes a plan:
 *
 *   1. the TCP-level knobs first (idle, interval, count, user timeout): the
 *      first of them is the call that a closed fd (EBADF), a non-socket
 *      (ENOTSOCK) or a non-TCP socket (ENOPROTOOPT / EOPNOTSUPP) refuses,
 *      before anything was changed;
 *   2. SO_KEEPALIVE last, because the kernel accepts it on UDP and AF_UNIX
 *      sockets too; when a plan has no TCP-level knob, a read of TCP_NODELAY
 *      first proves the socket is TCP.
 *
 * The Python layer range-checks every value and refuses knobs that this
 * kernel rejected in a one-time probe (kaext_knob_supported) before the first
 * call, so once the first call succeeded the only failure left is the fd
 * being closed under us by another thread -- and then there is no socket left
 * to be half-configured.  This keeps the fast path at one syscall per knob.
 */
#ifndef KAEXT_SHIM_H
#define KAEXT_SHIM_H

#include <errno.h>
#include <string.h>

#if defined(_WIN32)
#  ifndef WIN32_LEAN_AND_MEAN
#    define WIN32_LEAN_AND_MEAN
#  endif
#  include <winsock2.h>
#  include <ws2tcpip.h>
#  include <mstcpip.h>
typedef SOCKET kaext_sock;
typedef int kaext_optlen;
#  define KAEXT_SOCK_MAX 0x7fffffffffffffffULL /* INVALID_SOCKET is ~0 */
#else
#  include <sys/types.h>
#  include <sys/socket.h>
#  include <netinet/in.h>
#  include <netinet/tcp.h>
#  include <unistd.h>
#  include <limits.h>
typedef int kaext_sock;
typedef socklen_t kaext_optlen;
#  define KAEXT_SOCK_MAX ((unsigned long long)INT_MAX)
#endif

/* ------------------------------------------------------------------------ */
/* Knobs                                                                     */
/* ------------------------------------------------------------------------ */

enum {
    KAEXT_IDLE = 0,      /* time idle before the first probe                */
    KAEXT_INTERVAL = 1,  /* time between unanswered probes                  */
    KAEXT_COUNT = 2,     /* unanswered probes before the connection drops   */
    KAEXT_USER_TIMEOUT = 3, /* max time data may stay unacknowledged        */
    KAEXT_NKNOBS = 4,
    KAEXT_KEEPALIVE = 4, /* SO_KEEPALIVE itself (step index in errors)      */
    KAEXT_PROBE = 5      /* the "is this TCP?" probe (step index in errors) */
};

/*
 * Per-OS mapping of each knob to (level, optname, header name).
 * KAEXT_HAVE_<KNOB> is 1 when this OS has the knob at all.
 */

/* idle */
#if defined(__APPLE__) && defined(TCP_KEEPALIVE)
#  define KAEXT_HAVE_IDLE 1
#  define KAEXT_IDLE_OPT TCP_KEEPALIVE
#  define KAEXT_IDLE_NAME "TCP_KEEPALIVE"
#elif defined(TCP_KEEPIDLE)
#  define KAEXT_HAVE_IDLE 1
#  define KAEXT_IDLE_OPT TCP_KEEPIDLE
#  define KAEXT_IDLE_NAME "TCP_KEEPIDLE"
#else
#  define KAEXT_HAVE_IDLE 0
#  define KAEXT_IDLE_OPT (-1)
#  define KAEXT_IDLE_NAME ""
#endif

/* interval */
#if defined(TCP_KEEPINTVL)
#  define KAEXT_HAVE_INTERVAL 1
#  define KAEXT_INTERVAL_OPT TCP_KEEPINTVL
#  define KAEXT_INTERVAL_NAME "TCP_KEEPINTVL"
#else
#  define KAEXT_HAVE_INTERVAL 0
#  define KAEXT_INTERVAL_OPT (-1)
#  define KAEXT_INTERVAL_NAME ""
#endif

/* count */
#if defined(TCP_KEEPCNT)
#  define KAEXT_HAVE_COUNT 1
#  define KAEXT_COUNT_OPT TCP_KEEPCNT
#  define KAEXT_COUNT_NAME "TCP_KEEPCNT"
#else
#  define KAEXT_HAVE_COUNT 0
#  define KAEXT_COUNT_OPT (-1)
#  define KAEXT_COUNT_NAME ""
#endif

/* user timeout: Linux TCP_USER_TIMEOUT (ms) */
#if defined(TCP_USER_TIMEOUT)
#  define KAEXT_HAVE_USER_TIMEOUT 1
#  define KAEXT_USER_TIMEOUT_OPT TCP_USER_TIMEOUT
#  define KAEXT_USER_TIMEOUT_NAME "TCP_USER_TIMEOUT"
#else
#  define KAEXT_HAVE_USER_TIMEOUT 0
#  define KAEXT_USER_TIMEOUT_OPT (-1)
#  define KAEXT_USER_TIMEOUT_NAME ""
#endif

static const int kaext_knob_have[KAEXT_NKNOBS] = {
    KAEXT_HAVE_IDLE, KAEXT_HAVE_INTERVAL, KAEXT_HAVE_COUNT, KAEXT_HAVE_USER_TIMEOUT
};
static const int kaext_knob_opt[KAEXT_NKNOBS] = {
    KAEXT_IDLE_OPT, KAEXT_INTERVAL_OPT, KAEXT_COUNT_OPT, KAEXT_USER_TIMEOUT_OPT
};
static const char *const kaext_knob_name[KAEXT_NKNOBS] = {
    KAEXT_IDLE_NAME, KAEXT_INTERVAL_NAME, KAEXT_COUNT_NAME, KAEXT_USER_TIMEOUT_NAME
};
#define KAEXT_KNOB_LEVEL IPPROTO_TCP

/* ------------------------------------------------------------------------ */
/* Constants table: exactly the names this platform's headers define.        */
/* ------------------------------------------------------------------------ */

typedef struct {
    const char *name;
    long long value;
    const char *header;  /* where the value came from */
} kaext_constant;

#if defined(_WIN32)
#  define KAEXT_SOCK_H "winsock2.h"
#  define KAEXT_TCP_H "ws2ipdef.h"
#  define KAEXT_IN_H "winsock2.h"
#else
#  define KAEXT_SOCK_H "sys/socket.h"
#  define KAEXT_TCP_H "netinet/tcp.h"
#  define KAEXT_IN_H "netinet/in.h"
#endif

#define KAEXT_CONST(name, header) { #name, (long long)(name), header },

static const kaext_constant kaext_constants[] = {
    KAEXT_CONST(SOL_SOCKET, KAEXT_SOCK_H)
    KAEXT_CONST(SO_KEEPALIVE, KAEXT_SOCK_H)
    KAEXT_CONST(IPPROTO_TCP, KAEXT_IN_H)
#ifdef TCP_KEEPIDLE
    KAEXT_CONST(TCP_KEEPIDLE, KAEXT_TCP_H)
#endif
#ifdef TCP_KEEPINTVL
    KAEXT_CONST(TCP_KEEPINTVL, KAEXT_TCP_H)
#endif
#ifdef TCP_KEEPCNT
    KAEXT_CONST(TCP_KEEPCNT, KAEXT_TCP_H)
#endif
#ifdef TCP_KEEPALIVE
    KAEXT_CONST(TCP_KEEPALIVE, KAEXT_TCP_H)
#endif
#ifdef TCP_KEEPINIT
    KAEXT_CONST(TCP_KEEPINIT, KAEXT_TCP_H)
#endif
#ifdef TCP_USER_TIMEOUT
    KAEXT_CONST(TCP_USER_TIMEOUT, KAEXT_TCP_H)
#endif
#ifdef TCP_SYNCNT
    KAEXT_CONST(TCP_SYNCNT, KAEXT_TCP_H)
#endif
#ifdef TCP_CONNECTIONTIMEOUT
    KAEXT_CONST(TCP_CONNECTIONTIMEOUT, KAEXT_TCP_H)
#endif
#ifdef TCP_RXT_CONNDROPTIME
    KAEXT_CONST(TCP_RXT_CONNDROPTIME, KAEXT_TCP_H)
#endif
#ifdef TCP_KEEPALIVE_THRESHOLD
    KAEXT_CONST(TCP_KEEPALIVE_THRESHOLD, KAEXT_TCP_H)
#endif
#ifdef TCP_KEEPALIVE_ABORT_THRESHOLD
    KAEXT_CONST(TCP_KEEPALIVE_ABORT_THRESHOLD, KAEXT_TCP_H)
#endif
#ifdef TCP_MAXRT
    KAEXT_CONST(TCP_MAXRT, KAEXT_TCP_H)
#endif
#ifdef TCP_MAXRTMS
    KAEXT_CONST(TCP_MAXRTMS, KAEXT_TCP_H)
#endif
#ifdef SIO_KEEPALIVE_VALS
    KAEXT_CONST(SIO_KEEPALIVE_VALS, "mstcpip.h")
#endif
    { 0, 0, 0 }
};

/* ------------------------------------------------------------------------ */
/* System calls                                                              */
/* ------------------------------------------------------------------------ */

/* The last socket error as a POSIX errno value. */
static int kaext_last_error(void)
{
#if defined(_WIN32)
    int e = WSAGetLastError();
    switch (e) {
    case WSAEBADF: return EBADF;
    case WSAENOTSOCK: return ENOTSOCK;
    case WSAEINVAL: return EINVAL;
    case WSAEFAULT: return EFAULT;
    case WSAENOPROTOOPT: return ENOPROTOOPT;
    case WSAEOPNOTSUPP: return EOPNOTSUPP;
    case WSAENOTCONN: return ENOTCONN;
    case WSANOTINITIALISED: return EBADF;
    default: return e;
    }
#else
    return errno;
#endif
}

static int kaext_setint(kaext_sock fd, int level, int opt, int value)
{
    if (setsockopt(fd, level, opt, (const char *)&value, (kaext_optlen)sizeof value) != 0)
        return kaext_last_error();
    return 0;
}

/* Reads an int option, honouring the returned length (Windows may write one
 * byte for a boolean). */
static int kaext_getint(kaext_sock fd, int level, int opt, int *value)
{
    unsigned char buf[sizeof(int)];
    kaext_optlen len = (kaext_optlen)sizeof buf;
    memset(buf, 0, sizeof buf);
    if (getsockopt(fd, level, opt, (char *)buf, &len) != 0)
        return kaext_last_error();
    if (len == (kaext_optlen)sizeof(int)) {
        memcpy(value, buf, sizeof(int));
    } else if (len == 1) {
        *value = buf[0];
    } else {
        return EINVAL;
    }
    return 0;
}

/* Proves that fd is a TCP socket without changing anything. */
static int kaext_probe_tcp(kaext_sock fd)
{
    int v;
    return kaext_getint(fd, IPPROTO_TCP, TCP_NODELAY, &v);
}

typedef struct {
    unsigned set;               /* bit k: knob k is to be written           */
    int value[KAEXT_NKNOBS];    /* in the OS unit                           */
    int keepalive;              /* -1 leave, 0 off, 1 on                     */
} kaext_plan;

typedef struct {
    unsigned have;              /* bit k: knob k was read                   */
    int value[KAEXT_NKNOBS];
    int keepalive;
} kaext_state;

/* Writes a plan; on error returns an errno value and sets *step to the
 * knob index (or KAEXT_KEEPALIVE / KAEXT_PROBE) whose call failed.  On error
 * the socket is as it was. */
static int kaext_apply(kaext_sock fd, const kaext_plan *plan, int *step)
{
    int k, err, first = 1;

    for (k = 0; k < KAEXT_NKNOBS; k++) {
        if (!(plan->set & (1u << k)))
            continue;
        if (!kaext_knob_have[k]) {
            *step = k;
            return ENOPROTOOPT;
        }
        err = kaext_setint(fd, KAEXT_KNOB_LEVEL, kaext_knob_opt[k], plan->value[k]);
        if (err) {
            *step = k;
            return err;
        }
        first = 0;
    }
    if (plan->keepalive >= 0) {
        if (first) {
            err = kaext_probe_tcp(fd);
            if (err) {
                *step = KAEXT_PROBE;
                return err;
            }
        }
        err = kaext_setint(fd, SOL_SOCKET, SO_KEEPALIVE, plan->keepalive ? 1 : 0);
        if (err) {
            *step = KAEXT_KEEPALIVE;
            return err;
        }
    } else if (first) {
        /* an empty plan still says whether this is a TCP socket */
        err = kaext_probe_tcp(fd);
        if (err) {
            *step = KAEXT_PROBE;
            return err;
        }
    }
    return 0;
}

/* Does this kernel accept knob k?  Writes the value a fresh socket already
 * has (read first) on a throwaway TCP socket, as Go does on Windows: a header
 * may define a name that the running kernel refuses (old Windows, WSL,
 * gVisor).  Returns 1 if accepted, 0 if refused, -1 if no socket could be
 * made. */
static int kaext_knob_supported(int k)
{
    kaext_sock s;
    int v = 0, ok;
    if (k < 0 || k >= KAEXT_NKNOBS || !kaext_knob_have[k])
        return 0;
    s = socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
#if defined(_WIN32)
    if (s == INVALID_SOCKET)
        s = socket(AF_INET6, SOCK_STREAM, IPPROTO_TCP);
    if (s == INVALID_SOCKET)
        return -1;
#else
    if (s < 0)
        s = socket(AF_INET6, SOCK_STREAM, IPPROTO_TCP);
    if (s < 0)
        return -1;
#endif
    if (kaext_getint(s, KAEXT_KNOB_LEVEL, kaext_knob_opt[k], &v) != 0 || v <= 0)
        v = 1;
    ok = kaext_setint(s, KAEXT_KNOB_LEVEL, kaext_knob_opt[k], v) == 0;
#if defined(_WIN32)
    closesocket(s);
#else
    close(s);
#endif
    return ok;
}

/* Reads SO_KEEPALIVE and every knob this OS can read back.  SO_KEEPALIVE and
 * the TCP probe must succeed; a knob whose read fails is left out of ->have. */
static int kaext_read(kaext_sock fd, kaext_state *st, int *step)
{
    int k, err;
    st->have = 0;
    err = kaext_getint(fd, SOL_SOCKET, SO_KEEPALIVE, &st->keepalive);
    if (err) {
        *step = KAEXT_KEEPALIVE;
        return err;
    }
    err = kaext_probe_tcp(fd);
    if (err) {
        *step = KAEXT_PROBE;
        return err;
    }
    for (k = 0; k < KAEXT_NKNOBS; k++) {
        if (!kaext_knob_have[k])
            continue;
        if (kaext_getint(fd, KAEXT_KNOB_LEVEL, kaext_knob_opt[k], &st->value[k]) == 0)
            st->have |= 1u << k;
    }
    return 0;
}

#endif /* KAEXT_SHIM_H */
