/*
 * kaext_posix.h -- BSD sockets (Linux, macOS/iOS, the BSDs, illumos/Solaris):
 * the per-OS half of kaext_shim.h.  Include kaext_shim.h, not this file.
 *
 * One section per OS family says which option sets each knob and in which
 * unit (kaext/_platform.py states the same facts for Python; the tests check
 * that both agree).  A knob a section does not define is not available there.
 */
#ifndef KAEXT_POSIX_H
#define KAEXT_POSIX_H

#include <sys/types.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <unistd.h>
#include <limits.h>

typedef int kaext_sock;
typedef socklen_t kaext_optlen;
#define KAEXT_SOCK_MAX ((unsigned long long)INT_MAX)
#define KAEXT_BAD_SOCK(s) ((s) < 0)
#define kaext_close(s) close(s)

#define KAEXT_ENOPROTOOPT ENOPROTOOPT
#define KAEXT_EOPNOTSUPP EOPNOTSUPP
#define KAEXT_ENOTSOCK ENOTSOCK
#define KAEXT_EINVAL EINVAL
#define KAEXT_EBADF EBADF

/* The last socket error as an errno value. */
KAEXT_FUNC int kaext_last_error(void)
{
    return errno;
}

/* ------------------------------------------------------------------------ */
/* Knobs, per OS family                                                      */
/* ------------------------------------------------------------------------ */

#if defined(__linux__)
/* Linux (include/uapi/linux/tcp.h): seconds; TCP_USER_TIMEOUT in ms (2.6.37). */
#  define KAEXT_IDLE_OPT TCP_KEEPIDLE
#  define KAEXT_IDLE_NAME "TCP_KEEPIDLE"
#  define KAEXT_IDLE_UNIT "s"
#  define KAEXT_INTERVAL_OPT TCP_KEEPINTVL
#  define KAEXT_INTERVAL_NAME "TCP_KEEPINTVL"
#  define KAEXT_INTERVAL_UNIT "s"
#  define KAEXT_COUNT_OPT TCP_KEEPCNT
#  define KAEXT_COUNT_NAME "TCP_KEEPCNT"
#  ifdef TCP_USER_TIMEOUT
#    define KAEXT_USER_TIMEOUT_OPT TCP_USER_TIMEOUT
#    define KAEXT_USER_TIMEOUT_NAME "TCP_USER_TIMEOUT"
#    define KAEXT_USER_TIMEOUT_UNIT "ms"
#  endif
/* The connect timeout is TCP_SYNCNT, a count of SYN retransmissions ("syns"):
 * the kernel gives a connect up once its model of that many retransmissions
 * has passed since the first SYN (net/ipv4/tcp_timer.c tcp_write_timeout,
 * tcp_model_timeout); kaext/_platform.py converts seconds. */
#  ifdef TCP_SYNCNT
#    define KAEXT_CONNECT_TIMEOUT_OPT TCP_SYNCNT
#    define KAEXT_CONNECT_TIMEOUT_NAME "TCP_SYNCNT"
#    define KAEXT_CONNECT_TIMEOUT_UNIT "syns"
#  endif

#elif defined(__APPLE__)
/* macOS / iOS (xnu bsd/netinet/tcp.h): idle is TCP_KEEPALIVE, seconds;
 * TCP_KEEPINTVL / TCP_KEEPCNT from OS X 10.9 (xnu-2422) -- Go hard-codes the
 * same numbers for SDKs that lack them; the user timeout is
 * TCP_RXT_CONNDROPTIME, seconds. */
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
#  ifdef TCP_KEEPALIVE
#    define KAEXT_IDLE_OPT TCP_KEEPALIVE
#    define KAEXT_IDLE_NAME "TCP_KEEPALIVE"
#    define KAEXT_IDLE_UNIT "s"
#  endif
#  define KAEXT_INTERVAL_OPT KAEXT_V_TCP_KEEPINTVL
#  define KAEXT_INTERVAL_NAME "TCP_KEEPINTVL"
#  define KAEXT_INTERVAL_UNIT "s"
#  define KAEXT_COUNT_OPT KAEXT_V_TCP_KEEPCNT
#  define KAEXT_COUNT_NAME "TCP_KEEPCNT"
#  ifdef TCP_RXT_CONNDROPTIME
#    define KAEXT_USER_TIMEOUT_OPT TCP_RXT_CONNDROPTIME
#    define KAEXT_USER_TIMEOUT_NAME "TCP_RXT_CONNDROPTIME"
#    define KAEXT_USER_TIMEOUT_UNIT "s"
#  endif
/* The connect timeout is TCP_CONNECTIONTIMEOUT (0x20), seconds: t_keepinit,
 * the connection-establishment timer (bsd/netinet/tcp_usrreq.c). */
#  ifdef TCP_CONNECTIONTIMEOUT
#    define KAEXT_V_TCP_CONNECTIONTIMEOUT TCP_CONNECTIONTIMEOUT
#    define KAEXT_FB_TCP_CONNECTIONTIMEOUT 0
#  else
#    define KAEXT_V_TCP_CONNECTIONTIMEOUT 0x20
#    define KAEXT_FB_TCP_CONNECTIONTIMEOUT 1
#  endif
#  define KAEXT_CONNECT_TIMEOUT_OPT KAEXT_V_TCP_CONNECTIONTIMEOUT
#  define KAEXT_CONNECT_TIMEOUT_NAME "TCP_CONNECTIONTIMEOUT"
#  define KAEXT_CONNECT_TIMEOUT_UNIT "s"

#elif defined(__FreeBSD__) || defined(__DragonFly__)
/* FreeBSD / DragonFly: seconds -- except DragonFly before 5.8
 * (__DragonFly_version < 500702), which took milliseconds.  FreeBSD's user
 * timeout is TCP_MAXUNACKTIME (netinet/tcp.h), seconds: the base stack's
 * retransmit and persist timers drop a connection that made no progress for
 * that long (tcp_timer.c tcp_maxunacktime_check); DragonFly has none. */
#  if defined(__DragonFly__) && defined(__DragonFly_version) && __DragonFly_version < 500702
#    define KAEXT_KEEP_UNIT "ms"
#  else
#    define KAEXT_KEEP_UNIT "s"
#  endif
#  define KAEXT_IDLE_OPT TCP_KEEPIDLE
#  define KAEXT_IDLE_NAME "TCP_KEEPIDLE"
#  define KAEXT_IDLE_UNIT KAEXT_KEEP_UNIT
#  define KAEXT_INTERVAL_OPT TCP_KEEPINTVL
#  define KAEXT_INTERVAL_NAME "TCP_KEEPINTVL"
#  define KAEXT_INTERVAL_UNIT KAEXT_KEEP_UNIT
#  define KAEXT_COUNT_OPT TCP_KEEPCNT
#  define KAEXT_COUNT_NAME "TCP_KEEPCNT"
#  if defined(__FreeBSD__) && defined(TCP_MAXUNACKTIME)
#    define KAEXT_USER_TIMEOUT_OPT TCP_MAXUNACKTIME
#    define KAEXT_USER_TIMEOUT_NAME "TCP_MAXUNACKTIME"
#    define KAEXT_USER_TIMEOUT_UNIT "s"
#  endif
/* The connect timeout is TCP_KEEPINIT, the connection-establishment timer,
 * in the unit of the keepalive times (sys/netinet/tcp_usrreq.c). */
#  ifdef TCP_KEEPINIT
#    define KAEXT_CONNECT_TIMEOUT_OPT TCP_KEEPINIT
#    define KAEXT_CONNECT_TIMEOUT_NAME "TCP_KEEPINIT"
#    define KAEXT_CONNECT_TIMEOUT_UNIT KAEXT_KEEP_UNIT
#  endif

#elif defined(__NetBSD__)
/* NetBSD (sys/netinet/tcp_usrreq.c): TCP_KEEPIDLE / TCP_KEEPINTVL are stored
 * as given and armed with TCP_TIMER_ARM, which counts slow ticks, PR_SLOWHZ a
 * second (sys/protosw.h: 2, half a second) -- so the unit is "ticks" and the
 * Python layer converts seconds with the same PR_SLOWHZ (checked at build
 * time below).  There is no PRCO_GETOPT case for them: nothing reads back.
 * No per-socket user timeout. */
#  include <sys/protosw.h>
typedef char kaext_check_netbsd_slowhz[(PR_SLOWHZ == 2) ? 1 : -1];
#  define KAEXT_IDLE_OPT TCP_KEEPIDLE
#  define KAEXT_IDLE_NAME "TCP_KEEPIDLE"
#  define KAEXT_IDLE_UNIT "ticks"
#  define KAEXT_INTERVAL_OPT TCP_KEEPINTVL
#  define KAEXT_INTERVAL_NAME "TCP_KEEPINTVL"
#  define KAEXT_INTERVAL_UNIT "ticks"
#  define KAEXT_COUNT_OPT TCP_KEEPCNT
#  define KAEXT_COUNT_NAME "TCP_KEEPCNT"
/* TCP_KEEPINIT: t_keepinit, armed in slow ticks by tcp_connect like idle. */
#  ifdef TCP_KEEPINIT
#    define KAEXT_CONNECT_TIMEOUT_OPT TCP_KEEPINIT
#    define KAEXT_CONNECT_TIMEOUT_NAME "TCP_KEEPINIT"
#    define KAEXT_CONNECT_TIMEOUT_UNIT "ticks"
#  endif

#elif defined(__sun)
/* illumos and Solaris 11.4: TCP_KEEPIDLE / TCP_KEEPINTVL in seconds,
 * TCP_KEEPCNT.  Solaris before 11.4: only the idle threshold, in ms. */
#  if defined(TCP_KEEPIDLE)
#    define KAEXT_IDLE_OPT TCP_KEEPIDLE
#    define KAEXT_IDLE_NAME "TCP_KEEPIDLE"
#    define KAEXT_IDLE_UNIT "s"
#  elif defined(TCP_KEEPALIVE_THRESHOLD)
#    define KAEXT_IDLE_OPT TCP_KEEPALIVE_THRESHOLD
#    define KAEXT_IDLE_NAME "TCP_KEEPALIVE_THRESHOLD"
#    define KAEXT_IDLE_UNIT "ms"
#  endif
#  ifdef TCP_KEEPINTVL
#    define KAEXT_INTERVAL_OPT TCP_KEEPINTVL
#    define KAEXT_INTERVAL_NAME "TCP_KEEPINTVL"
#    define KAEXT_INTERVAL_UNIT "s"
#  endif
#  ifdef TCP_KEEPCNT
#    define KAEXT_COUNT_OPT TCP_KEEPCNT
#    define KAEXT_COUNT_NAME "TCP_KEEPCNT"
#  endif
/* TCP_CONN_ABORT_THRESHOLD: ms a connect retransmits its SYN before it is
 * given up (tcp_second_ctimer_threshold). */
#  ifdef TCP_CONN_ABORT_THRESHOLD
#    define KAEXT_CONNECT_TIMEOUT_OPT TCP_CONN_ABORT_THRESHOLD
#    define KAEXT_CONNECT_TIMEOUT_NAME "TCP_CONN_ABORT_THRESHOLD"
#    define KAEXT_CONNECT_TIMEOUT_UNIT "ms"
#  endif

#else
/* OpenBSD (no per-socket keepalive options at all) and other systems:
 * whatever the headers name, in seconds. */
#  ifdef TCP_KEEPIDLE
#    define KAEXT_IDLE_OPT TCP_KEEPIDLE
#    define KAEXT_IDLE_NAME "TCP_KEEPIDLE"
#    define KAEXT_IDLE_UNIT "s"
#  endif
#  ifdef TCP_KEEPINTVL
#    define KAEXT_INTERVAL_OPT TCP_KEEPINTVL
#    define KAEXT_INTERVAL_NAME "TCP_KEEPINTVL"
#    define KAEXT_INTERVAL_UNIT "s"
#  endif
#  ifdef TCP_KEEPCNT
#    define KAEXT_COUNT_OPT TCP_KEEPCNT
#    define KAEXT_COUNT_NAME "TCP_KEEPCNT"
#  endif
#  ifdef TCP_USER_TIMEOUT
#    define KAEXT_USER_TIMEOUT_OPT TCP_USER_TIMEOUT
#    define KAEXT_USER_TIMEOUT_NAME "TCP_USER_TIMEOUT"
#    define KAEXT_USER_TIMEOUT_UNIT "ms"
#  endif
#endif

/* ------------------------------------------------------------------------ */
/* Constants table: exactly the names this platform's headers define, plus   */
/* the fallbacks above (fallback = 1).                                       */
/* ------------------------------------------------------------------------ */

#define KAEXT_SOCK_H "sys/socket.h"
#define KAEXT_TCP_H "netinet/tcp.h"
#define KAEXT_IN_H "netinet/in.h"

static const kaext_constant kaext_constants[] = {
    KAEXT_CONST(SOL_SOCKET, KAEXT_SOCK_H)
    KAEXT_CONST(SO_KEEPALIVE, KAEXT_SOCK_H)
    KAEXT_CONST(IPPROTO_TCP, KAEXT_IN_H)
#ifdef TCP_KEEPIDLE
    KAEXT_CONST(TCP_KEEPIDLE, KAEXT_TCP_H)
#endif
#if defined(__APPLE__)
    KAEXT_CONST_FB(TCP_KEEPINTVL, KAEXT_TCP_H)
    KAEXT_CONST_FB(TCP_KEEPCNT, KAEXT_TCP_H)
#else
#  ifdef TCP_KEEPINTVL
    KAEXT_CONST(TCP_KEEPINTVL, KAEXT_TCP_H)
#  endif
#  ifdef TCP_KEEPCNT
    KAEXT_CONST(TCP_KEEPCNT, KAEXT_TCP_H)
#  endif
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
#if defined(__APPLE__)
    KAEXT_CONST_FB(TCP_CONNECTIONTIMEOUT, KAEXT_TCP_H)
#elif defined(TCP_CONNECTIONTIMEOUT)
    KAEXT_CONST(TCP_CONNECTIONTIMEOUT, KAEXT_TCP_H)
#endif
#ifdef TCP_RXT_CONNDROPTIME
    KAEXT_CONST(TCP_RXT_CONNDROPTIME, KAEXT_TCP_H)
#endif
#ifdef PERSIST_TIMEOUT
    KAEXT_CONST(PERSIST_TIMEOUT, KAEXT_TCP_H)
#endif
#ifdef TCP_KEEPALIVE_THRESHOLD
    KAEXT_CONST(TCP_KEEPALIVE_THRESHOLD, KAEXT_TCP_H)
#endif
#ifdef TCP_KEEPALIVE_ABORT_THRESHOLD
    KAEXT_CONST(TCP_KEEPALIVE_ABORT_THRESHOLD, KAEXT_TCP_H)
#endif
#ifdef TCP_ABORT_THRESHOLD
    KAEXT_CONST(TCP_ABORT_THRESHOLD, KAEXT_TCP_H)
#endif
#ifdef TCP_CONN_ABORT_THRESHOLD
    KAEXT_CONST(TCP_CONN_ABORT_THRESHOLD, KAEXT_TCP_H)
#endif
#ifdef TCP_MAXUNACKTIME
    KAEXT_CONST(TCP_MAXUNACKTIME, KAEXT_TCP_H)
#endif
    { 0, 0, 0, 0 }
};

/* ------------------------------------------------------------------------ */
/* Mechanisms                                                                */
/* ------------------------------------------------------------------------ */

/* Nothing to start: the socket calls work from the first one. */
KAEXT_FUNC void kaext_os_start(void)
{
}

/* A probe that said nothing (no socket to probe with: fd limit?): trust the
 * headers ("have": they define knob k's option). */
KAEXT_FUNC int kaext_os_unknown_mechanism(int k, int have)
{
    (void)k;
    return have ? KAEXT_MECH_SETSOCKOPT : KAEXT_MECH_NONE;
}

/* Every knob is a plain socket option here: the probe's answer stands. */
KAEXT_FUNC void kaext_os_mechanisms(int mech[KAEXT_NKNOBS])
{
    (void)mech;
}

/* SIO_KEEPALIVE_VALS is Windows only: no mechanism here ever asks for it. */
KAEXT_FUNC int kaext_apply_sio(kaext_sock fd, const kaext_plan *plan, int *step)
{
    (void)fd;
    (void)plan;
    *step = KAEXT_IDLE;
    return KAEXT_ENOPROTOOPT;
}

#endif /* KAEXT_POSIX_H */
