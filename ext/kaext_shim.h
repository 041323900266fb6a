/*
 * kaext_shim.h -- the one place where operating systems differ.
 *
 * Plain C, no Python: the Cython extension includes it, and so does the C
 * test program ext/test_shim.c.  Every constant comes from the platform's own
 * headers; a numeric fallback exists only where an old SDK header lacks a name
 * (old mingw-w64 and Windows SDK headers, old macOS SDKs), and is marked as a
 * fallback in the constants table.
 *
 * Model
 * -----
 * A "plan" says, for each knob, whether to set it and to what, in the unit of
 * the knob's mechanism (seconds, milliseconds or probes, see
 * kaext_knob_unit(); the Python layer converts and checks ranges before
 * anything reaches this file).  kaext_apply() writes a plan:
 *
 *   1. the TCP-level knobs first (idle, interval, count, user timeout): the
 *      first of them is the call that a closed fd (EBADF), a non-socket
 *      (ENOTSOCK) or a non-TCP socket (ENOPROTOOPT / EOPNOTSUPP) refuses,
 *      before anything was changed;
 *   2. SO_KEEPALIVE last, because the kernel accepts it on UDP and AF_UNIX
 *      sockets too; when a plan has no TCP-level knob, a read of TCP_NODELAY
 *      first proves the socket is TCP.
 *
 * Mechanisms
 * ----------
 * Each knob is set by one mechanism (kaext_knob_mechanism()):
 *
 *   KAEXT_MECH_SETSOCKOPT  setsockopt(IPPROTO_TCP, <option>) -- every OS that
 *                          has the option and whose kernel accepts it;
 *   KAEXT_MECH_SIO         Windows before 10 version 1709 (and wine): the
 *                          running kernel refuses TCP_KEEPIDLE/TCP_KEEPINTVL
 *                          with WSAENOPROTOOPT, so idle and interval go
 *                          together through WSAIoctl(SIO_KEEPALIVE_VALS), in
 *                          milliseconds, write-only; a missing one is filled
 *                          with the Windows default (idle 2 h, interval 1 s);
 *   KAEXT_MECH_NONE        this OS has no such knob (OpenBSD: none at all),
 *                          or the running kernel refused it.
 *
 * The choice is made at run time, once per process, by a probe on a throwaway
 * socket (kaext_knob_supported(), as Go does on Windows): headers say what a
 * build *may* use, only the running kernel says what it accepts.
 *
 * Errors are errno values as Python's errno module numbers them on this OS
 * (kaext_last_error()): on Windows that is CPython's winerror_to_errno()
 * mapping, so that an OSError from here compares equal to errno.ENOPROTOOPT
 * there too.
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
#  define KAEXT_BAD_SOCK(s) ((s) == INVALID_SOCKET)
#  define kaext_close(s) closesocket(s)
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
#  define KAEXT_BAD_SOCK(s) ((s) < 0)
#  define kaext_close(s) close(s)
#endif

/* Functions are static inline: a user that calls only some of them gets no
 * unused-function warning. */
#if defined(_MSC_VER) && !defined(__cplusplus)
#  define KAEXT_FUNC static __inline
#else
#  define KAEXT_FUNC static inline
#endif

/* ------------------------------------------------------------------------ */
/* errno values, as Python's errno module has them on this OS                */
/* ------------------------------------------------------------------------ */

#if defined(_WIN32)
/* CPython (PC/errmap.h) keeps Winsock codes as errno values, except the six
 * that are "Winsock definitions of errno values" (WSAEBADF = 10000 + EBADF). */
#  define KAEXT_ENOPROTOOPT WSAENOPROTOOPT
#  define KAEXT_EOPNOTSUPP WSAEOPNOTSUPP
#  define KAEXT_ENOTSOCK WSAENOTSOCK
#  define KAEXT_EINVAL EINVAL
#  define KAEXT_EBADF EBADF
#else
#  define KAEXT_ENOPROTOOPT ENOPROTOOPT
#  define KAEXT_EOPNOTSUPP EOPNOTSUPP
#  define KAEXT_ENOTSOCK ENOTSOCK
#  define KAEXT_EINVAL EINVAL
#  define KAEXT_EBADF EBADF
#endif

/* ------------------------------------------------------------------------ */
/* Option numbers, with fallbacks where old SDK headers lack the name        */
/* ------------------------------------------------------------------------ */

/*
 * KAEXT_V_<NAME> is the number, KAEXT_FB_<NAME> is 1 when it is a fallback.
 *
 * Windows: ws2ipdef.h (TCP_*), mstcpip.h (SIO_KEEPALIVE_VALS, struct
 * tcp_keepalive).  mingw-w64 before 12 lacks every TCP_KEEP* and TCP_MAXRT*
 * name; the numbers are Microsoft's ("IPPROTO_TCP socket options").
 */
#if defined(_WIN32)
#  ifdef TCP_KEEPALIVE
#    define KAEXT_V_TCP_KEEPALIVE TCP_KEEPALIVE
#    define KAEXT_FB_TCP_KEEPALIVE 0
#  else
#    define KAEXT_V_TCP_KEEPALIVE 3
#    define KAEXT_FB_TCP_KEEPALIVE 1
#  endif
#  ifdef TCP_KEEPIDLE
#    define KAEXT_V_TCP_KEEPIDLE TCP_KEEPIDLE
#    define KAEXT_FB_TCP_KEEPIDLE 0
#  else
#    define KAEXT_V_TCP_KEEPIDLE 3
#    define KAEXT_FB_TCP_KEEPIDLE 1
#  endif
#  ifdef TCP_KEEPINTVL
#    define KAEXT_V_TCP_KEEPINTVL TCP_KEEPINTVL
#    define KAEXT_FB_TCP_KEEPINTVL 0
#  else
#    define KAEXT_V_TCP_KEEPINTVL 17
#    define KAEXT_FB_TCP_KEEPINTVL 1
#  endif
#  ifdef TCP_KEEPCNT
#    define KAEXT_V_TCP_KEEPCNT TCP_KEEPCNT
#    define KAEXT_FB_TCP_KEEPCNT 0
#  else
#    define KAEXT_V_TCP_KEEPCNT 16
#    define KAEXT_FB_TCP_KEEPCNT 1
#  endif
#  ifdef TCP_MAXRT
#    define KAEXT_V_TCP_MAXRT TCP_MAXRT
#    define KAEXT_FB_TCP_MAXRT 0
#  else
#    define KAEXT_V_TCP_MAXRT 5
#    define KAEXT_FB_TCP_MAXRT 1
#  endif
#  ifdef TCP_MAXRTMS
#    define KAEXT_V_TCP_MAXRTMS TCP_MAXRTMS
#    define KAEXT_FB_TCP_MAXRTMS 0
#  else
#    define KAEXT_V_TCP_MAXRTMS 14
#    define KAEXT_FB_TCP_MAXRTMS 1
#  endif
#  ifdef SIO_KEEPALIVE_VALS
#    define KAEXT_V_SIO_KEEPALIVE_VALS SIO_KEEPALIVE_VALS
#    define KAEXT_FB_SIO_KEEPALIVE_VALS 0
#  else
#    define KAEXT_V_SIO_KEEPALIVE_VALS _WSAIOW(IOC_VENDOR, 4)
#    define KAEXT_FB_SIO_KEEPALIVE_VALS 1
#  endif
/* The ioctl code and the struct layout are ABI: check them at build time. */
typedef char kaext_check_sio_keepalive_vals[
    ((unsigned long)KAEXT_V_SIO_KEEPALIVE_VALS == 0x98000004UL) ? 1 : -1];
typedef char kaext_check_tcp_keepalive_size[(sizeof(struct tcp_keepalive) == 12) ? 1 : -1];
#endif

/* macOS / iOS: tcp.h has TCP_KEEPINTVL / TCP_KEEPCNT from OS X 10.9 (xnu-2422);
 * Go hard-codes the same numbers for SDKs that lack them. */
#if defined(__APPLE__)
#  ifdef TCP_KEEPINTVL
#    define KAEXT_V_TCP_KEEPINTVL TCP_KEEPINTVL
#    define KAEXT_FB_TCP_KEEPINTVL 0
#  else
#    define KAEXT_V_TCP_KEEPINTVL 0x101
#    define KAEXT_FB_TCP_KEEPINTVL 1
#  endif
#  ifdef TCP_KEEPCNT
#    define KAEXT_V_TCP_KEEPCNT TCP_KEEPCNT
#    define KAEXT_FB_TCP_KEEPCNT 0
#  else
#    define KAEXT_V_TCP_KEEPCNT 0x102
#    define KAEXT_FB_TCP_KEEPCNT 1
#  endif
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

enum {
    KAEXT_MECH_NONE = 0,
    KAEXT_MECH_SETSOCKOPT = 1,
    KAEXT_MECH_SIO = 2
};

/*
 * Per-OS mapping of each knob to (optname, header name, unit).
 * KAEXT_HAVE_<KNOB> is 1 when this OS has the knob at all.  The unit is what
 * the option takes; "ms" where an OS takes milliseconds.
 */

/* DragonFly before 5.8 took TCP_KEEPIDLE/TCP_KEEPINTVL/TCP_KEEPINIT in ms. */
#if defined(__DragonFly__) && defined(__DragonFly_version) && __DragonFly_version < 500702
#  define KAEXT_KEEP_UNIT "ms"
#else
#  define KAEXT_KEEP_UNIT "s"
#endif

/* idle */
#if defined(__APPLE__) && defined(TCP_KEEPALIVE)
#  define KAEXT_HAVE_IDLE 1
#  define KAEXT_IDLE_OPT TCP_KEEPALIVE
#  define KAEXT_IDLE_NAME "TCP_KEEPALIVE"
#  define KAEXT_IDLE_UNIT "s"
#elif defined(_WIN32)
#  define KAEXT_HAVE_IDLE 1
#  define KAEXT_IDLE_OPT KAEXT_V_TCP_KEEPIDLE
#  define KAEXT_IDLE_NAME "TCP_KEEPIDLE"
#  define KAEXT_IDLE_UNIT "s"
#elif defined(TCP_KEEPIDLE)
#  define KAEXT_HAVE_IDLE 1
#  define KAEXT_IDLE_OPT TCP_KEEPIDLE
#  define KAEXT_IDLE_NAME "TCP_KEEPIDLE"
#  define KAEXT_IDLE_UNIT KAEXT_KEEP_UNIT
#elif defined(__sun) && defined(TCP_KEEPALIVE_THRESHOLD)
/* Solaris before 11.4: the idle time is the keepalive threshold, in ms. */
#  define KAEXT_HAVE_IDLE 1
#  define KAEXT_IDLE_OPT TCP_KEEPALIVE_THRESHOLD
#  define KAEXT_IDLE_NAME "TCP_KEEPALIVE_THRESHOLD"
#  define KAEXT_IDLE_UNIT "ms"
#else
#  define KAEXT_HAVE_IDLE 0
#  define KAEXT_IDLE_OPT (-1)
#  define KAEXT_IDLE_NAME ""
#  define KAEXT_IDLE_UNIT ""
#endif

/* interval */
#if defined(_WIN32) || defined(__APPLE__)
#  define KAEXT_HAVE_INTERVAL 1
#  define KAEXT_INTERVAL_OPT KAEXT_V_TCP_KEEPINTVL
#  define KAEXT_INTERVAL_NAME "TCP_KEEPINTVL"
#  define KAEXT_INTERVAL_UNIT "s"
#elif defined(TCP_KEEPINTVL)
#  define KAEXT_HAVE_INTERVAL 1
#  define KAEXT_INTERVAL_OPT TCP_KEEPINTVL
#  define KAEXT_INTERVAL_NAME "TCP_KEEPINTVL"
#  define KAEXT_INTERVAL_UNIT KAEXT_KEEP_UNIT
#else
#  define KAEXT_HAVE_INTERVAL 0
#  define KAEXT_INTERVAL_OPT (-1)
#  define KAEXT_INTERVAL_NAME ""
#  define KAEXT_INTERVAL_UNIT ""
#endif

/* count */
#if defined(_WIN32) || defined(__APPLE__)
#  define KAEXT_HAVE_COUNT 1
#  define KAEXT_COUNT_OPT KAEXT_V_TCP_KEEPCNT
#  define KAEXT_COUNT_NAME "TCP_KEEPCNT"
#elif defined(TCP_KEEPCNT)
#  define KAEXT_HAVE_COUNT 1
#  define KAEXT_COUNT_OPT TCP_KEEPCNT
#  define KAEXT_COUNT_NAME "TCP_KEEPCNT"
#else
#  define KAEXT_HAVE_COUNT 0
#  define KAEXT_COUNT_OPT (-1)
#  define KAEXT_COUNT_NAME ""
#endif

/* user timeout: Linux TCP_USER_TIMEOUT (ms), macOS TCP_RXT_CONNDROPTIME (s),
 * Windows TCP_MAXRT (s). */
#if defined(TCP_USER_TIMEOUT) && !defined(_WIN32)
#  define KAEXT_HAVE_USER_TIMEOUT 1
#  define KAEXT_USER_TIMEOUT_OPT TCP_USER_TIMEOUT
#  define KAEXT_USER_TIMEOUT_NAME "TCP_USER_TIMEOUT"
#  define KAEXT_USER_TIMEOUT_UNIT "ms"
#elif defined(__APPLE__) && defined(TCP_RXT_CONNDROPTIME)
#  define KAEXT_HAVE_USER_TIMEOUT 1
#  define KAEXT_USER_TIMEOUT_OPT TCP_RXT_CONNDROPTIME
#  define KAEXT_USER_TIMEOUT_NAME "TCP_RXT_CONNDROPTIME"
#  define KAEXT_USER_TIMEOUT_UNIT "s"
#elif defined(_WIN32)
#  define KAEXT_HAVE_USER_TIMEOUT 1
#  define KAEXT_USER_TIMEOUT_OPT KAEXT_V_TCP_MAXRT
#  define KAEXT_USER_TIMEOUT_NAME "TCP_MAXRT"
#  define KAEXT_USER_TIMEOUT_UNIT "s"
#else
#  define KAEXT_HAVE_USER_TIMEOUT 0
#  define KAEXT_USER_TIMEOUT_OPT (-1)
#  define KAEXT_USER_TIMEOUT_NAME ""
#  define KAEXT_USER_TIMEOUT_UNIT ""
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
/* Unit of each knob's setsockopt option ("" where the OS has none). */
static const char *const kaext_knob_opt_unit[KAEXT_NKNOBS] = {
    KAEXT_IDLE_UNIT, KAEXT_INTERVAL_UNIT, KAEXT_HAVE_COUNT ? "probes" : "", KAEXT_USER_TIMEOUT_UNIT
};
#define KAEXT_KNOB_LEVEL IPPROTO_TCP

/* Windows defaults used to fill the half of SIO_KEEPALIVE_VALS not given
 * (SIO_KEEPALIVE_VALS remarks: KeepAliveTime 2 h, KeepAliveInterval 1 s). */
#define KAEXT_WIN_DEFAULT_IDLE_MS 7200000
#define KAEXT_WIN_DEFAULT_INTERVAL_MS 1000

/* ------------------------------------------------------------------------ */
/* Constants table: exactly the names this platform's headers define, plus   */
/* the fallbacks above (fallback = 1).                                       */
/* ------------------------------------------------------------------------ */

typedef struct {
    const char *name;
    long long value;
    const char *header;  /* where the value came from */
    int fallback;        /* 1: the header lacks the name; number from kaext */
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
#define KAEXT_FALLBACK_SOURCE(header) "kaext_shim.h (fallback: " header " lacks it)"

#define KAEXT_CONST(name, header) { #name, (long long)(name), header, 0 },
/* A name that may be a fallback: KAEXT_V_<name> / KAEXT_FB_<name>. */
#define KAEXT_CONST_FB(name, header)                                              \
    { #name, (long long)(KAEXT_V_##name),                                         \
      KAEXT_FB_##name ? KAEXT_FALLBACK_SOURCE(header) : header, KAEXT_FB_##name },

static const kaext_constant kaext_constants[] = {
    KAEXT_CONST(SOL_SOCKET, KAEXT_SOCK_H)
    KAEXT_CONST(SO_KEEPALIVE, KAEXT_SOCK_H)
    KAEXT_CONST(IPPROTO_TCP, KAEXT_IN_H)
#if defined(_WIN32)
    KAEXT_CONST_FB(TCP_KEEPALIVE, KAEXT_TCP_H)
    KAEXT_CONST_FB(TCP_KEEPIDLE, KAEXT_TCP_H)
    KAEXT_CONST_FB(TCP_KEEPINTVL, KAEXT_TCP_H)
    KAEXT_CONST_FB(TCP_KEEPCNT, KAEXT_TCP_H)
    KAEXT_CONST_FB(TCP_MAXRT, KAEXT_TCP_H)
    KAEXT_CONST_FB(TCP_MAXRTMS, KAEXT_TCP_H)
    KAEXT_CONST_FB(SIO_KEEPALIVE_VALS, "mstcpip.h")
#  ifdef TCP_NOSYNRETRIES
    KAEXT_CONST(TCP_NOSYNRETRIES, KAEXT_TCP_H)
#  endif
#  ifdef TCP_FAIL_CONNECT_ON_ICMP_ERROR
    KAEXT_CONST(TCP_FAIL_CONNECT_ON_ICMP_ERROR, KAEXT_TCP_H)
#  endif
#else /* not Windows */
#  ifdef TCP_KEEPIDLE
    KAEXT_CONST(TCP_KEEPIDLE, KAEXT_TCP_H)
#  endif
#  if defined(__APPLE__)
    KAEXT_CONST_FB(TCP_KEEPINTVL, KAEXT_TCP_H)
    KAEXT_CONST_FB(TCP_KEEPCNT, KAEXT_TCP_H)
#  else
#    ifdef TCP_KEEPINTVL
    KAEXT_CONST(TCP_KEEPINTVL, KAEXT_TCP_H)
#    endif
#    ifdef TCP_KEEPCNT
    KAEXT_CONST(TCP_KEEPCNT, KAEXT_TCP_H)
#    endif
#  endif
#  ifdef TCP_KEEPALIVE
    KAEXT_CONST(TCP_KEEPALIVE, KAEXT_TCP_H)
#  endif
#  ifdef TCP_KEEPINIT
    KAEXT_CONST(TCP_KEEPINIT, KAEXT_TCP_H)
#  endif
#  ifdef TCP_USER_TIMEOUT
    KAEXT_CONST(TCP_USER_TIMEOUT, KAEXT_TCP_H)
#  endif
#  ifdef TCP_SYNCNT
    KAEXT_CONST(TCP_SYNCNT, KAEXT_TCP_H)
#  endif
#  ifdef TCP_CONNECTIONTIMEOUT
    KAEXT_CONST(TCP_CONNECTIONTIMEOUT, KAEXT_TCP_H)
#  endif
#  ifdef TCP_RXT_CONNDROPTIME
    KAEXT_CONST(TCP_RXT_CONNDROPTIME, KAEXT_TCP_H)
#  endif
#  ifdef PERSIST_TIMEOUT
    KAEXT_CONST(PERSIST_TIMEOUT, KAEXT_TCP_H)
#  endif
#  ifdef TCP_KEEPALIVE_THRESHOLD
    KAEXT_CONST(TCP_KEEPALIVE_THRESHOLD, KAEXT_TCP_H)
#  endif
#  ifdef TCP_KEEPALIVE_ABORT_THRESHOLD
    KAEXT_CONST(TCP_KEEPALIVE_ABORT_THRESHOLD, KAEXT_TCP_H)
#  endif
#  ifdef TCP_ABORT_THRESHOLD
    KAEXT_CONST(TCP_ABORT_THRESHOLD, KAEXT_TCP_H)
#  endif
#  ifdef TCP_CONN_ABORT_THRESHOLD
    KAEXT_CONST(TCP_CONN_ABORT_THRESHOLD, KAEXT_TCP_H)
#  endif
#endif
    { 0, 0, 0, 0 }
};

/* ------------------------------------------------------------------------ */
/* System calls                                                              */
/* ------------------------------------------------------------------------ */

/* The last socket error as an errno value (see the top of this file). */
KAEXT_FUNC int kaext_last_error(void)
{
#if defined(_WIN32)
    int e = WSAGetLastError();
    switch (e) {
    case WSAEINTR: case WSAEBADF: case WSAEACCES:
    case WSAEFAULT: case WSAEINVAL: case WSAEMFILE:
        return e - 10000;  /* "Winsock definitions of errno values" */
    default:
        return e;          /* errno.ENOPROTOOPT == WSAENOPROTOOPT in Python */
    }
#else
    return errno;
#endif
}

KAEXT_FUNC int kaext_setint(kaext_sock fd, int level, int opt, int value)
{
    if (setsockopt(fd, level, opt, (const char *)&value, (kaext_optlen)sizeof value) != 0)
        return kaext_last_error();
    return 0;
}

/* Reads an int option, honouring the returned length (Windows may write one
 * byte for a boolean). */
KAEXT_FUNC int kaext_getint(kaext_sock fd, int level, int opt, int *value)
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
        return KAEXT_EINVAL;
    }
    return 0;
}

/* Proves that fd is a TCP socket without changing anything. */
KAEXT_FUNC int kaext_probe_tcp(kaext_sock fd)
{
    int v;
    return kaext_getint(fd, IPPROTO_TCP, TCP_NODELAY, &v);
}

/* Does this kernel accept knob k's socket option?  Writes the value a fresh
 * socket already has (read first) on a throwaway TCP socket, as Go does on
 * Windows: a header may define a name that the running kernel refuses (old
 * Windows, wine, WSL, gVisor).  Returns 1 if accepted, 0 if refused, -1 if no
 * socket could be made. */
KAEXT_FUNC int kaext_knob_supported(int k)
{
    kaext_sock s;
    int v = 0, ok;
    if (k < 0 || k >= KAEXT_NKNOBS || !kaext_knob_have[k])
        return 0;
    s = socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
    if (KAEXT_BAD_SOCK(s))
        s = socket(AF_INET6, SOCK_STREAM, IPPROTO_TCP);
    if (KAEXT_BAD_SOCK(s))
        return -1;
    if (kaext_getint(s, KAEXT_KNOB_LEVEL, kaext_knob_opt[k], &v) != 0 || v <= 0)
        v = 1;
    ok = kaext_setint(s, KAEXT_KNOB_LEVEL, kaext_knob_opt[k], v) == 0;
    kaext_close(s);
    return ok;
}

/* Mechanism per knob from a probe result (kaext_knob_supported). */
KAEXT_FUNC int kaext_mechanism_from_probe(int k, int supported)
{
    if (supported == 1)
        return KAEXT_MECH_SETSOCKOPT;
#if defined(_WIN32)
    /* Windows before 10 1709 (and wine) refuse TCP_KEEPIDLE/TCP_KEEPINTVL;
     * SIO_KEEPALIVE_VALS exists on every Windows since 2000. */
    if (supported == 0 && (k == KAEXT_IDLE || k == KAEXT_INTERVAL))
        return KAEXT_MECH_SIO;
#endif
    (void)k;
    return KAEXT_MECH_NONE;
}

/* Mechanism per knob, probed once per process (0 = not probed yet, else
 * KAEXT_MECH_* + 1).  The Python extension fills it for every knob while its
 * module is imported, before any other thread can call in; a C program that
 * calls from several threads at once should do the same first. */
static volatile int kaext_mech_cache[KAEXT_NKNOBS];

/* How knob k is set on the running system: KAEXT_MECH_*. */
KAEXT_FUNC int kaext_knob_mechanism(int k)
{
    int m, ok;
    if (k < 0 || k >= KAEXT_NKNOBS)
        return KAEXT_MECH_NONE;
    m = kaext_mech_cache[k];
    if (m != 0)
        return m - 1;
    ok = kaext_knob_supported(k);
    if (ok < 0)  /* no socket to probe with (fd limit?): assume, do not cache */
        return kaext_knob_have[k] ? KAEXT_MECH_SETSOCKOPT : KAEXT_MECH_NONE;
    m = kaext_mechanism_from_probe(k, ok);
#if defined(_WIN32)
    /* SIO_KEEPALIVE_VALS sets idle and interval at once: unless the running
     * Windows accepts both options, both go through it. */
    if (k == KAEXT_IDLE || k == KAEXT_INTERVAL) {
        int other = k == KAEXT_IDLE ? KAEXT_INTERVAL : KAEXT_IDLE;
        int mo = kaext_mechanism_from_probe(other, kaext_knob_supported(other));
        if (m != KAEXT_MECH_SETSOCKOPT || mo != KAEXT_MECH_SETSOCKOPT)
            m = KAEXT_MECH_SIO;
        kaext_mech_cache[other] = m + 1;
    }
#endif
    kaext_mech_cache[k] = m + 1;
    return m;
}

/* Unit of knob k under its current mechanism: "s", "ms", "probes" or "". */
KAEXT_FUNC const char *kaext_knob_unit(int k)
{
    int m = kaext_knob_mechanism(k);
    if (m == KAEXT_MECH_SIO)
        return "ms";
    if (m == KAEXT_MECH_SETSOCKOPT)
        return kaext_knob_opt_unit[k];
    return "";
}

typedef struct {
    unsigned set;               /* bit k: knob k is to be written           */
    int value[KAEXT_NKNOBS];    /* in the knob's unit                       */
    int keepalive;              /* -1 leave, 0 off, 1 on                     */
} kaext_plan;

typedef struct {
    unsigned have;              /* bit k: knob k was read                   */
    int value[KAEXT_NKNOBS];
    int keepalive;
} kaext_state;

#if defined(_WIN32)
/* Windows without TCP_KEEPIDLE: write idle and interval (ms) together. */
KAEXT_FUNC int kaext_apply_sio(kaext_sock fd, const kaext_plan *plan, int *step)
{
    struct tcp_keepalive ka;
    DWORD returned = 0;
    int set_idle = (plan->set >> KAEXT_IDLE) & 1;
    int set_interval = (plan->set >> KAEXT_INTERVAL) & 1;
    int err = kaext_probe_tcp(fd);  /* WSAIoctl alone does not prove TCP */
    if (err) {
        *step = KAEXT_PROBE;
        return err;
    }
    *step = set_idle ? KAEXT_IDLE : KAEXT_INTERVAL;
    /* 0 ms idle makes some Windows versions send a keepalive storm. */
    if ((set_idle && plan->value[KAEXT_IDLE] < 1) || (set_interval && plan->value[KAEXT_INTERVAL] < 1))
        return KAEXT_EINVAL;
    ka.onoff = plan->keepalive == 0 ? 0 : 1;
    ka.keepalivetime = (u_long)(set_idle ? plan->value[KAEXT_IDLE] : KAEXT_WIN_DEFAULT_IDLE_MS);
    ka.keepaliveinterval =
        (u_long)(set_interval ? plan->value[KAEXT_INTERVAL] : KAEXT_WIN_DEFAULT_INTERVAL_MS);
    if (WSAIoctl(fd, KAEXT_V_SIO_KEEPALIVE_VALS, &ka, (DWORD)sizeof ka, NULL, 0, &returned,
                 NULL, NULL) != 0)
        return kaext_last_error();
    return 0;
}
#endif

/* Writes a plan; on error returns an errno value and sets *step to the
 * knob index (or KAEXT_KEEPALIVE / KAEXT_PROBE) whose call failed.  On error
 * the socket is as it was. */
KAEXT_FUNC int kaext_apply(kaext_sock fd, const kaext_plan *plan, int *step)
{
    int k, err, first = 1;
    unsigned done = 0;

    /* A knob this OS lacks, or the running kernel refused in the probe, is
     * refused before any call, so the socket stays as it was. */
    for (k = 0; k < KAEXT_NKNOBS; k++) {
        if ((plan->set & (1u << k)) && kaext_knob_mechanism(k) == KAEXT_MECH_NONE) {
            *step = k;
            return KAEXT_ENOPROTOOPT;
        }
    }
#if defined(_WIN32)
    if ((plan->set & ((1u << KAEXT_IDLE) | (1u << KAEXT_INTERVAL)))
        && kaext_knob_mechanism(KAEXT_IDLE) == KAEXT_MECH_SIO) {
        err = kaext_apply_sio(fd, plan, step);
        if (err)
            return err;
        done = (1u << KAEXT_IDLE) | (1u << KAEXT_INTERVAL);
        first = 0;
    }
#endif
    for (k = 0; k < KAEXT_NKNOBS; k++) {
        if (!(plan->set & (1u << k)) || (done & (1u << k)))
            continue;
        err = kaext_setint(fd, KAEXT_KNOB_LEVEL, kaext_knob_opt[k], plan->value[k]);
        if (err) {
            *step = k;
            return err;
        }
        first = 0;
    }
    if (first) {
        /* no TCP-level call yet: prove this is TCP before SO_KEEPALIVE (and
         * an empty plan still says whether this is a TCP socket) */
        err = kaext_probe_tcp(fd);
        if (err) {
            *step = KAEXT_PROBE;
            return err;
        }
    }
    if (plan->keepalive >= 0) {
        err = kaext_setint(fd, SOL_SOCKET, SO_KEEPALIVE, plan->keepalive ? 1 : 0);
        if (err) {
            *step = KAEXT_KEEPALIVE;
            return err;
        }
    }
    return 0;
}

/* Bits of the "want" mask of kaext_read_some(): knob k is bit k, SO_KEEPALIVE
 * is bit KAEXT_KEEPALIVE. */
#define KAEXT_WANT_KEEPALIVE (1u << KAEXT_KEEPALIVE)
#define KAEXT_WANT_ALL (KAEXT_WANT_KEEPALIVE | ((1u << KAEXT_NKNOBS) - 1u))

/* Reads what "want" asks for, one getsockopt each.  A failed SO_KEEPALIVE read
 * is an error; a knob whose read fails is left out of ->have.  Only when no
 * knob could be read does a TCP_NODELAY probe decide between "this TCP socket
 * cannot read these knobs back" (0) and "this is not a TCP socket" (error), so
 * a TCP socket costs no extra call. */
KAEXT_FUNC int kaext_read_some(kaext_sock fd, unsigned want, kaext_state *st, int *step)
{
    int k, err;
    st->have = 0;
    st->keepalive = 0;
    if (want & KAEXT_WANT_KEEPALIVE) {
        err = kaext_getint(fd, SOL_SOCKET, SO_KEEPALIVE, &st->keepalive);
        if (err) {
            *step = KAEXT_KEEPALIVE;
            return err;
        }
    }
    for (k = 0; k < KAEXT_NKNOBS; k++) {
        st->value[k] = 0;
        if (!(want & (1u << k)) || !kaext_knob_have[k])
            continue;
#if defined(_WIN32)
        if (kaext_knob_mechanism(k) != KAEXT_MECH_SETSOCKOPT)
            continue; /* SIO_KEEPALIVE_VALS is write-only */
#endif
        if (kaext_getint(fd, KAEXT_KNOB_LEVEL, kaext_knob_opt[k], &st->value[k]) == 0)
            st->have |= 1u << k;
    }
    if (st->have == 0) {
        err = kaext_probe_tcp(fd);
        if (err) {
            *step = KAEXT_PROBE;
            return err;
        }
    }
    return 0;
}

/* Reads SO_KEEPALIVE and every knob this OS can read back. */
KAEXT_FUNC int kaext_read(kaext_sock fd, kaext_state *st, int *step)
{
    return kaext_read_some(fd, KAEXT_WANT_ALL, st, step);
}

#endif /* KAEXT_SHIM_H */
