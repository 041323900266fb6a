/*
 * kaext_shim.h -- the C side of kaext: the system calls, and the option numbers
 * and per-OS choices taken from the platform's own headers.
 *
 * Plain C, no Python: the Cython extension includes it, and so does the C test
 * program ext/test_shim.c.  What differs between operating systems lives in one
 * file per API, the way socket2 keeps sys/unix.rs and sys/windows.rs apart:
 *
 *   kaext_posix.h    BSD sockets: one section per OS family (Linux, macOS/iOS,
 *                    FreeBSD/NetBSD/DragonFly, illumos/Solaris, other)
 *   kaext_windows.h  Winsock: fallbacks for old SDK headers, the errno mapping,
 *                    WSAIoctl(SIO_KEEPALIVE_VALS) for Windows before 10 1709
 *
 * This file holds what is the same everywhere.  It has no state: what the
 * running kernel accepts is probed once by the caller (kaext_probe_mechanisms())
 * into an array the caller keeps -- the Python extension in its module state --
 * and passes to kaext_apply() / kaext_read_some().
 *
 * Model
 * -----
 * A plan (kaext_plan) says, for each knob, whether to set it and to what, in the
 * unit of the knob's mechanism (seconds, milliseconds, NetBSD's slow ticks or
 * probes, see kaext_knob_unit(); the Python layer converts and checks ranges
 * before anything reaches this file).  kaext_apply() writes a plan:
 *
 *   1. the TCP-level knobs first (idle, interval, count, user timeout,
 *      connect timeout; then
 *      Windows' SIO_KEEPALIVE_VALS): the first of them is the call that a
 *      closed fd (EBADF), a non-socket (ENOTSOCK) or a non-TCP socket
 *      (ENOPROTOOPT / EOPNOTSUPP) refuses, before anything was changed; a
 *      later refusal puts back the knobs the plan asked to keep
 *      (KAEXT_ROLLBACK_SHIFT);
 *   2. SO_KEEPALIVE last, because the kernel accepts it on UDP and AF_UNIX
 *      sockets too; when a plan has no TCP-level knob, a read of TCP_NODELAY
 *      first proves the socket is TCP.
 *
 * Mechanisms
 * ----------
 * Each knob is set by one mechanism:
 *
 *   KAEXT_MECH_SETSOCKOPT  setsockopt(IPPROTO_TCP, <option>) -- every OS that
 *                          has the option and whose kernel accepts it;
 *   KAEXT_MECH_SIO         Windows before 10 version 1709 (and wine): the
 *                          running kernel refuses TCP_KEEPIDLE/TCP_KEEPINTVL,
 *                          so idle and interval go together through
 *                          WSAIoctl(SIO_KEEPALIVE_VALS), in milliseconds,
 *                          write-only (kaext_windows.h);
 *   KAEXT_MECH_NONE        this OS has no such knob (OpenBSD: none at all),
 *                          or the running kernel refused it.
 *
 * The choice is made at run time by a probe on a throwaway socket
 * (kaext_knob_supported(), as Go does on Windows): headers say what a build
 * *may* use, only the running kernel says what it accepts.
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

/* Functions are static inline: a user that calls only some of them gets no
 * unused-function warning. */
#if defined(_MSC_VER) && !defined(__cplusplus)
#  define KAEXT_FUNC static __inline
#else
#  define KAEXT_FUNC static inline
#endif

/* ------------------------------------------------------------------------ */
/* Knobs, steps, mechanisms (kaext._platform states the same numbers)        */
/* ------------------------------------------------------------------------ */

enum {
    KAEXT_IDLE = 0,         /* time idle before the first probe                */
    KAEXT_INTERVAL = 1,     /* time between unanswered probes                  */
    KAEXT_COUNT = 2,        /* unanswered probes before the connection drops   */
    KAEXT_USER_TIMEOUT = 3, /* max time data may stay unacknowledged           */
    KAEXT_CONNECT_TIMEOUT = 4, /* bound on connection establishment (the SYN) */
    KAEXT_NKNOBS = 5
};

/* The step whose call failed, in errors: a knob index, or one of these. */
enum {
    KAEXT_STEP_KEEPALIVE = KAEXT_NKNOBS, /* SO_KEEPALIVE itself            */
    KAEXT_STEP_PROBE = KAEXT_NKNOBS + 1  /* the "is this TCP?" probe       */
};

enum {
    KAEXT_MECH_NONE = 0,
    KAEXT_MECH_SETSOCKOPT = 1,
    KAEXT_MECH_SIO = 2
};

/* What to write: bit k of set_mask says knob k is to be written, with
 * value[k] in the knob's unit; keepalive is -1 (leave), 0 (off) or 1 (on). */
typedef struct {
    unsigned set_mask;
    int value[KAEXT_NKNOBS];
    int keepalive;
} kaext_plan;

/* What was read: bit k of have says value[k] holds knob k. */
typedef struct {
    unsigned have;
    int value[KAEXT_NKNOBS];
    int keepalive;
} kaext_state;

/* Bits of the "want" mask of kaext_read_some(): knob k is bit k, SO_KEEPALIVE
 * is bit KAEXT_STEP_KEEPALIVE. */
#define KAEXT_WANT_KEEPALIVE (1u << KAEXT_STEP_KEEPALIVE)
#define KAEXT_WANT_ALL (KAEXT_WANT_KEEPALIVE | ((1u << KAEXT_NKNOBS) - 1u))

/* One entry of the constants table: a name the platform headers define. */
typedef struct {
    const char *name;
    long long value;
    const char *header;  /* where the value came from */
    int fallback;        /* 1: the header lacks the name; number from kaext */
} kaext_constant;

#define KAEXT_FALLBACK_SOURCE(header) "kaext_shim.h (fallback: " header " lacks it)"
#define KAEXT_CONST(name, header) { #name, (long long)(name), header, 0 },
/* A name that may be a fallback: KAEXT_V_<name> is the number, KAEXT_FB_<name>
 * is 1 when the header lacks the name. */
#define KAEXT_CONST_FB(name, header)                                              \
    { #name, (long long)(KAEXT_V_##name),                                         \
      KAEXT_FB_##name ? KAEXT_FALLBACK_SOURCE(header) : header, KAEXT_FB_##name },

/*
 * The per-OS file provides:
 *   kaext_sock, kaext_optlen, KAEXT_SOCK_MAX (largest valid handle),
 *   KAEXT_BAD_SOCK(s), kaext_close(s), KAEXT_E* errno values,
 *   kaext_last_error(), the constants table kaext_constants[],
 *   KAEXT_<KNOB>_OPT / _NAME / _UNIT for each knob this OS has,
 *   kaext_os_start() (starts the socket library where needed),
 *   kaext_os_unknown_mechanism() (a knob whose probe said nothing),
 *   kaext_os_mechanisms() (adjusts the probe's answer) and kaext_apply_sio().
 */
#if defined(_WIN32)
#  include "kaext_windows.h"
#else
#  include "kaext_posix.h"
#endif

/* ------------------------------------------------------------------------ */
/* Knob table: (have, optname, header name, unit) per knob                   */
/* ------------------------------------------------------------------------ */

#ifdef KAEXT_IDLE_OPT
#  define KAEXT_HAVE_IDLE 1
#else
#  define KAEXT_HAVE_IDLE 0
#  define KAEXT_IDLE_OPT (-1)
#  define KAEXT_IDLE_NAME ""
#  define KAEXT_IDLE_UNIT ""
#endif
#ifdef KAEXT_INTERVAL_OPT
#  define KAEXT_HAVE_INTERVAL 1
#else
#  define KAEXT_HAVE_INTERVAL 0
#  define KAEXT_INTERVAL_OPT (-1)
#  define KAEXT_INTERVAL_NAME ""
#  define KAEXT_INTERVAL_UNIT ""
#endif
#ifdef KAEXT_COUNT_OPT
#  define KAEXT_HAVE_COUNT 1
#  define KAEXT_COUNT_UNIT "probes"
#else
#  define KAEXT_HAVE_COUNT 0
#  define KAEXT_COUNT_OPT (-1)
#  define KAEXT_COUNT_NAME ""
#  define KAEXT_COUNT_UNIT ""
#endif
#ifdef KAEXT_USER_TIMEOUT_OPT
#  define KAEXT_HAVE_USER_TIMEOUT 1
#else
#  define KAEXT_HAVE_USER_TIMEOUT 0
#  define KAEXT_USER_TIMEOUT_OPT (-1)
#  define KAEXT_USER_TIMEOUT_NAME ""
#  define KAEXT_USER_TIMEOUT_UNIT ""
#endif
#ifdef KAEXT_CONNECT_TIMEOUT_OPT
#  define KAEXT_HAVE_CONNECT_TIMEOUT 1
#else
#  define KAEXT_HAVE_CONNECT_TIMEOUT 0
#  define KAEXT_CONNECT_TIMEOUT_OPT (-1)
#  define KAEXT_CONNECT_TIMEOUT_NAME ""
#  define KAEXT_CONNECT_TIMEOUT_UNIT ""
#endif

static const int kaext_knob_have[KAEXT_NKNOBS] = {
    KAEXT_HAVE_IDLE, KAEXT_HAVE_INTERVAL, KAEXT_HAVE_COUNT, KAEXT_HAVE_USER_TIMEOUT, KAEXT_HAVE_CONNECT_TIMEOUT
};
static const int kaext_knob_opt[KAEXT_NKNOBS] = {
    KAEXT_IDLE_OPT, KAEXT_INTERVAL_OPT, KAEXT_COUNT_OPT, KAEXT_USER_TIMEOUT_OPT, KAEXT_CONNECT_TIMEOUT_OPT
};
static const char *const kaext_knob_name[KAEXT_NKNOBS] = {
    KAEXT_IDLE_NAME, KAEXT_INTERVAL_NAME, KAEXT_COUNT_NAME, KAEXT_USER_TIMEOUT_NAME, KAEXT_CONNECT_TIMEOUT_NAME
};
/* Unit of each knob's setsockopt option ("" where the OS has none). */
static const char *const kaext_knob_opt_unit[KAEXT_NKNOBS] = {
    KAEXT_IDLE_UNIT, KAEXT_INTERVAL_UNIT, KAEXT_COUNT_UNIT, KAEXT_USER_TIMEOUT_UNIT, KAEXT_CONNECT_TIMEOUT_UNIT
};
#define KAEXT_KNOB_LEVEL IPPROTO_TCP

/* ------------------------------------------------------------------------ */
/* System calls                                                              */
/* ------------------------------------------------------------------------ */

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

/* What a probe's error says (as Go decides on Windows): 1 = the option was
 * accepted, 0 = this kernel does not have it (ENOPROTOOPT; WSAENOPROTOOPT on
 * Windows), -1 = nothing known (any other error, e.g. no buffer space): the
 * caller then decides from what else it knows (kaext_os_unknown_mechanism()). */
KAEXT_FUNC int kaext_probe_verdict(int err)
{
    if (err == 0)
        return 1;
    return err == KAEXT_ENOPROTOOPT ? 0 : -1;
}

/* Does this kernel accept knob k's socket option?  Writes the value a fresh
 * socket already has (read first) on a throwaway TCP socket, as Go does on
 * Windows: a header may define a name that the running kernel refuses (old
 * Windows, wine, WSL, gVisor).  Returns kaext_probe_verdict(), or -1 if no
 * socket could be made. */
KAEXT_FUNC int kaext_knob_supported(int k)
{
    kaext_sock s;
    int v = 0, verdict;
    if (k < 0 || k >= KAEXT_NKNOBS || !kaext_knob_have[k])
        return 0;
    s = socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
    if (KAEXT_BAD_SOCK(s))
        s = socket(AF_INET6, SOCK_STREAM, IPPROTO_TCP);
    if (KAEXT_BAD_SOCK(s))
        return -1;
    if (kaext_getint(s, KAEXT_KNOB_LEVEL, kaext_knob_opt[k], &v) != 0 || v <= 0)
        v = 1;
    verdict = kaext_probe_verdict(kaext_setint(s, KAEXT_KNOB_LEVEL, kaext_knob_opt[k], v));
    kaext_close(s);
    return verdict;
}

/* Fills mech[k] with how knob k is set on the running system (KAEXT_MECH_*).
 * Call once, before any other thread uses the array; keep the array and pass
 * it to kaext_apply() and kaext_read_some().  Starts the socket library first
 * where the OS needs that (Windows: WSAStartup, so that a caller that has not
 * started Winsock yet still gets a real probe).  A probe that says nothing
 * (no socket, or an error other than ENOPROTOOPT) is not taken for "refused":
 * kaext_os_unknown_mechanism() decides (the headers; Windows: the build
 * number).  Returns how many knobs were decided that way. */
KAEXT_FUNC int kaext_probe_mechanisms(int mech[KAEXT_NKNOBS])
{
    int k, verdict, unknown = 0;
    kaext_os_start();
    for (k = 0; k < KAEXT_NKNOBS; k++) {
        verdict = kaext_knob_supported(k);
        if (verdict < 0) {
            mech[k] = kaext_os_unknown_mechanism(k, kaext_knob_have[k]);
            unknown++;
        } else {
            mech[k] = verdict ? KAEXT_MECH_SETSOCKOPT : KAEXT_MECH_NONE;
        }
    }
    kaext_os_mechanisms(mech);
    return unknown;
}

/* Unit of knob k under mechanism m: "s", "ms", "ticks" (NetBSD), "probes",
 * "syns" (Linux TCP_SYNCNT: SYN retransmissions) or "". */
KAEXT_FUNC const char *kaext_knob_unit(int k, int m)
{
    if (k < 0 || k >= KAEXT_NKNOBS)
        return "";
    if (m == KAEXT_MECH_SIO)
        return "ms";
    if (m == KAEXT_MECH_SETSOCKOPT)
        return kaext_knob_opt_unit[k];
    return "";
}

/* The knobs SIO_KEEPALIVE_VALS sets together. */
#define KAEXT_SIO_KNOBS ((1u << KAEXT_IDLE) | (1u << KAEXT_INTERVAL))

/* Bit KAEXT_ROLLBACK_SHIFT + k of a plan's set_mask: read knob k before
 * writing anything, and write that value back if a later call fails.  The
 * Python layer asks for it where the kernel may refuse a value that kaext's
 * table allows (kaext._platform.KERNEL_MAY_REFUSE: illumos' retransmit bounds,
 * FreeBSD with hz > 1000, Windows TCP_MAXRT), for the knobs written before
 * such a knob -- elsewhere it costs nothing. */
#define KAEXT_ROLLBACK_SHIFT 8

/* Puts back the knobs in "restore" (values read before the first write). */
KAEXT_FUNC void kaext_restore(kaext_sock fd, unsigned restore, const int saved[KAEXT_NKNOBS])
{
    int k;
    for (k = 0; k < KAEXT_NKNOBS; k++)
        if (restore & (1u << k))
            (void)kaext_setint(fd, KAEXT_KNOB_LEVEL, kaext_knob_opt[k], saved[k]);
}

/* Writes a plan with the mechanisms of kaext_probe_mechanisms(); on error
 * returns an errno value and sets *step to the knob index (or
 * KAEXT_STEP_KEEPALIVE / KAEXT_STEP_PROBE) whose call failed.
 *
 * Order: the setsockopt knobs (idle, interval, count, user timeout), then
 * Windows' SIO_KEEPALIVE_VALS (write-only, so last of the TCP-level calls; it
 * also turns keepalive on, which must not happen before the other knobs were
 * accepted), then SO_KEEPALIVE.  The first call is the one a closed fd, a
 * non-socket or a non-TCP socket refuses, before anything changed; a later
 * refusal puts back the knobs already written that the plan asked to keep
 * (KAEXT_ROLLBACK_SHIFT), so on error the socket is as it was. */
KAEXT_FUNC int kaext_apply(kaext_sock fd, const kaext_plan *plan, const int mech[KAEXT_NKNOBS], int *step)
{
    int k, err, first = 1;
    int saved[KAEXT_NKNOBS] = {0};
    unsigned sio = 0, written = 0, have_saved = 0;
    unsigned rollback = (plan->set_mask >> KAEXT_ROLLBACK_SHIFT) & ((1u << KAEXT_NKNOBS) - 1u);

    /* A knob this OS lacks, or the running kernel refused in the probe, is
     * refused before any call, so the socket stays as it was. */
    for (k = 0; k < KAEXT_NKNOBS; k++) {
        if ((plan->set_mask & (1u << k)) && mech[k] == KAEXT_MECH_NONE) {
            *step = k;
            return KAEXT_ENOPROTOOPT;
        }
    }
    if ((plan->set_mask & KAEXT_SIO_KNOBS) && mech[KAEXT_IDLE] == KAEXT_MECH_SIO)
        sio = plan->set_mask & KAEXT_SIO_KNOBS;
    /* The values to put back should a later call fail (a read that fails,
     * e.g. on a socket that is not TCP, just leaves nothing to put back: the
     * first write then fails before anything changed). */
    for (k = 0; k < KAEXT_NKNOBS; k++) {
        if ((rollback & (1u << k)) && (plan->set_mask & (1u << k)) && !(sio & (1u << k))
            && kaext_getint(fd, KAEXT_KNOB_LEVEL, kaext_knob_opt[k], &saved[k]) == 0)
            have_saved |= 1u << k;
    }
    for (k = 0; k < KAEXT_NKNOBS; k++) {
        if (!(plan->set_mask & (1u << k)) || (sio & (1u << k)))
            continue;
        err = kaext_setint(fd, KAEXT_KNOB_LEVEL, kaext_knob_opt[k], plan->value[k]);
        if (err) {
            kaext_restore(fd, written & have_saved, saved);
            *step = k;
            return err;
        }
        written |= 1u << k;
        first = 0;
    }
    if (first) {
        /* no TCP-level call yet: prove this is TCP before SO_KEEPALIVE or the
         * ioctl, which do not (an empty plan still says whether this is TCP) */
        err = kaext_probe_tcp(fd);
        if (err) {
            *step = KAEXT_STEP_PROBE;
            return err;
        }
    }
    if (sio) {
        err = kaext_apply_sio(fd, plan, step);
        if (err) {
            kaext_restore(fd, written & have_saved, saved);
            return err;
        }
    }
    if (plan->keepalive >= 0) {
        err = kaext_setint(fd, SOL_SOCKET, SO_KEEPALIVE, plan->keepalive ? 1 : 0);
        if (err) {
            kaext_restore(fd, written & have_saved, saved);
            *step = KAEXT_STEP_KEEPALIVE;
            return err;
        }
    }
    return 0;
}

/* Reads what "want" asks for, one getsockopt each.  A failed SO_KEEPALIVE read
 * is an error; a knob whose read fails, or that is set write-only
 * (SIO_KEEPALIVE_VALS), is left out of ->have.  Only when no knob could be read
 * does a TCP_NODELAY probe decide between "this TCP socket cannot read these
 * knobs back" (0) and "this is not a TCP socket" (error), so a TCP socket costs
 * no extra call. */
KAEXT_FUNC int kaext_read_some(kaext_sock fd, unsigned want, const int mech[KAEXT_NKNOBS], kaext_state *st,
                               int *step)
{
    int k, err;
    st->have = 0;
    st->keepalive = 0;
    if (want & KAEXT_WANT_KEEPALIVE) {
        err = kaext_getint(fd, SOL_SOCKET, SO_KEEPALIVE, &st->keepalive);
        if (err) {
            *step = KAEXT_STEP_KEEPALIVE;
            return err;
        }
    }
    for (k = 0; k < KAEXT_NKNOBS; k++) {
        st->value[k] = 0;
        if (!(want & (1u << k)) || !kaext_knob_have[k] || mech[k] == KAEXT_MECH_SIO)
            continue;
        if (kaext_getint(fd, KAEXT_KNOB_LEVEL, kaext_knob_opt[k], &st->value[k]) == 0)
            st->have |= 1u << k;
    }
    if (st->have == 0) {
        err = kaext_probe_tcp(fd);
        if (err) {
            *step = KAEXT_STEP_PROBE;
            return err;
        }
    }
    return 0;
}

/* Reads SO_KEEPALIVE and every knob this OS can read back. */
KAEXT_FUNC int kaext_read(kaext_sock fd, const int mech[KAEXT_NKNOBS], kaext_state *st, int *step)
{
    return kaext_read_some(fd, KAEXT_WANT_ALL, mech, st, step);
}

#endif /* KAEXT_SHIM_H */
