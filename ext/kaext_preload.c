/*
 * kaext_preload.c -- a keepalive policy on every TCP connect() of a process.
 *
 * Linux only.  Loaded with LD_PRELOAD by `python -m kaext.run`, which sets
 *
 *   KAEXT_PRELOAD_PLAN="set,idle,interval,count,user_timeout,keepalive,accepted,force,connect_timeout"
 *
 * the policy as kaext_shim.h's plan (set: bit k = knob k is written; values
 * in each knob's OS unit, already range-checked by kaext in Python; keepalive
 * 1 on, 0 off; accepted 1 = also accept() / accept4(); force 1 = the policy
 * wins over the program's own setsockopt; connect_timeout last, and may be
 * left out with its bit).  Without that variable, or with anything malformed
 * in it, every call passes straight through.
 *
 * connect() to an IPv4 / IPv6 address: when the socket is TCP (SO_TYPE
 * SOCK_STREAM and SO_PROTOCOL IPPROTO_TCP: not SOCK_RAW), each knob of the plan
 * is written with setsockopt *before* the real connect() -- before the SYN, so
 * that the connect timeout (Linux TCP_SYNCNT) and the user timeout bound the
 * handshake too -- (the shim's option numbers, in its order: idle, interval,
 * count, user timeout, connect timeout, then SO_KEEPALIVE).  Each call stands
 * alone and its result is ignored: a knob the kernel refuses leaves the others
 * in place, the connection goes on, and errno and the result are the real
 * connect()'s.  accept() / accept4(): the same on the new socket.
 *
 * setsockopt(), with force: a call for SO_KEEPALIVE (SOL_SOCKET) or for the
 * option of a knob the plan writes (IPPROTO_TCP: TCP_KEEPIDLE, TCP_KEEPINTVL,
 * TCP_KEEPCNT, TCP_USER_TIMEOUT, TCP_SYNCNT) on a TCP socket, with an int-sized value,
 * writes the plan's value instead of the program's; its result and errno are
 * the real call's.  Every other call passes straight through.
 *
 * No state beyond the plan read at load time; no probe.  Programs that make
 * system calls without libc (Go, static binaries) are not covered.
 */
#ifndef _GNU_SOURCE
#  define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <sys/socket.h>

#include "kaext_shim.h"

#define KAEXT_EXPORT __attribute__((visibility("default")))

typedef int (*connect_fn)(int, const struct sockaddr *, socklen_t);
typedef int (*accept_fn)(int, struct sockaddr *, socklen_t *);
typedef int (*accept4_fn)(int, struct sockaddr *, socklen_t *, int);
typedef int (*setsockopt_fn)(int, int, int, const void *, socklen_t);

static unsigned plan_set;             /* bit k: knob k is written */
static int plan_value[KAEXT_NKNOBS];  /* in the knob's OS unit     */
static int plan_keepalive;            /* 0 off, 1 on               */
static int active;                    /* 1: a valid plan was given */
static int accepted;                  /* 1: accept() / accept4() too */
static int force;                     /* 1: the plan wins in setsockopt() */

#define PLAN_FIELDS 9      /* with connect_timeout */
#define PLAN_FIELDS_OLD 8  /* without: its bit must be clear */

/* Parses "n,n,n,n,n,n,n,n[,n]"; 0 if malformed. */
static int parse_plan(const char *s)
{
    long v[PLAN_FIELDS] = {0};
    int i, n = 0;
    char *end;
    for (i = 0; i < PLAN_FIELDS; i++) {
        errno = 0;
        v[i] = strtol(s, &end, 10);
        if (end == s || errno != 0 || v[i] < 0 || v[i] > 0x7fffffffL)
            return 0;
        s = end;
        n = i + 1;
        if (*s != ',')
            break;
        s++;
    }
    if (*s != '\0' || n < PLAN_FIELDS_OLD || v[0] >= (1L << KAEXT_NKNOBS) || v[5] > 1 || v[6] > 1 || v[7] > 1)
        return 0;
    if (n == PLAN_FIELDS_OLD && (v[0] & (1L << KAEXT_CONNECT_TIMEOUT)))
        return 0;
    plan_set = (unsigned)v[0];
    plan_value[KAEXT_IDLE] = (int)v[1];
    plan_value[KAEXT_INTERVAL] = (int)v[2];
    plan_value[KAEXT_COUNT] = (int)v[3];
    plan_value[KAEXT_USER_TIMEOUT] = (int)v[4];
    plan_value[KAEXT_CONNECT_TIMEOUT] = (int)v[8];
    plan_keepalive = (int)v[5];
    accepted = (int)v[6];
    force = (int)v[7];
    return 1;
}

__attribute__((constructor)) static void kaext_preload_init(void)
{
    const char *s = getenv("KAEXT_PRELOAD_PLAN");
    int saved = errno;
    active = s != NULL && parse_plan(s);
    errno = saved;
}

static void *next_symbol(void *volatile *slot, const char *name)
{
    void *f = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
    if (f == NULL) {
        f = dlsym(RTLD_NEXT, name);
        __atomic_store_n(slot, f, __ATOMIC_RELEASE);
    }
    return f;
}

static void *volatile real_connect;
static void *volatile real_accept;
static void *volatile real_accept4;
static void *volatile real_setsockopt;

/* 1 if fd is a TCP socket: SOCK_STREAM (a SOCK_RAW socket can be IPPROTO_TCP too)
 * and IPPROTO_TCP (not AF_UNIX, not MPTCP).  Keeps errno. */
static int is_tcp(int fd)
{
    int saved = errno, type = 0, proto = 0, tcp;
    socklen_t len = sizeof type;
    tcp = getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0 && type == SOCK_STREAM;
    len = sizeof proto;
    tcp = tcp && getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &proto, &len) == 0 && proto == IPPROTO_TCP;
    errno = saved;
    return tcp;
}

/* The real setsockopt() with an int; its result ignored. */
static void set_int(int fd, int level, int opt, int value)
{
    setsockopt_fn f = (setsockopt_fn)next_symbol(&real_setsockopt, "setsockopt");
    if (f != NULL)
        (void)f(fd, level, opt, &value, (socklen_t)sizeof value);
}

/* Writes the plan on fd if it is a TCP socket, knob by knob; keeps errno. */
static void apply_plan(int fd)
{
    int saved = errno, k;
    if (is_tcp(fd)) {
        for (k = 0; k < KAEXT_NKNOBS; k++)
            if ((plan_set & (1u << k)) && kaext_knob_have[k])
                set_int(fd, KAEXT_KNOB_LEVEL, kaext_knob_opt[k], plan_value[k]);
        set_int(fd, SOL_SOCKET, SO_KEEPALIVE, plan_keepalive);
    }
    errno = saved;
}

/* With force: the plan's value for (level, opt), if the plan writes that option. */
static int forced_value(int level, int opt, int *value)
{
    int k;
    if (level == SOL_SOCKET && opt == SO_KEEPALIVE) {
        *value = plan_keepalive;
        return 1;
    }
    if (level != KAEXT_KNOB_LEVEL)
        return 0;
    for (k = 0; k < KAEXT_NKNOBS; k++)
        if ((plan_set & (1u << k)) && kaext_knob_have[k] && kaext_knob_opt[k] == opt) {
            *value = plan_value[k];
            return 1;
        }
    return 0;
}

KAEXT_EXPORT int connect(int fd, const struct sockaddr *addr, socklen_t addrlen)
{
    connect_fn f = (connect_fn)next_symbol(&real_connect, "connect");
    int rc;
    if (f == NULL) {
        errno = ENOSYS;
        return -1;
    }
    /* before the SYN: the connect timeout and the user timeout bound the handshake too */
    if (active && addr != NULL && addrlen >= (socklen_t)sizeof(sa_family_t)
        && (addr->sa_family == AF_INET || addr->sa_family == AF_INET6))
        apply_plan(fd);
    rc = f(fd, addr, addrlen);
    return rc;
}

KAEXT_EXPORT int accept(int fd, struct sockaddr *addr, socklen_t *addrlen)
{
    accept_fn f = (accept_fn)next_symbol(&real_accept, "accept");
    int rc;
    if (f == NULL) {
        errno = ENOSYS;
        return -1;
    }
    rc = f(fd, addr, addrlen);
    if (rc >= 0 && active && accepted)
        apply_plan(rc);
    return rc;
}

KAEXT_EXPORT int accept4(int fd, struct sockaddr *addr, socklen_t *addrlen, int flags)
{
    accept4_fn f = (accept4_fn)next_symbol(&real_accept4, "accept4");
    int rc;
    if (f == NULL) {
        errno = ENOSYS;
        return -1;
    }
    rc = f(fd, addr, addrlen, flags);
    if (rc >= 0 && active && accepted)
        apply_plan(rc);
    return rc;
}

KAEXT_EXPORT int setsockopt(int fd, int level, int opt, const void *optval, socklen_t optlen)
{
    setsockopt_fn f = (setsockopt_fn)next_symbol(&real_setsockopt, "setsockopt");
    int value;
    if (f == NULL) {
        errno = ENOSYS;
        return -1;
    }
    /* the kernel reads an int from these options' values (and refuses a shorter one:
     * left to it, as without kaext) */
    if (active && force && optval != NULL && optlen >= (socklen_t)sizeof(int) && forced_value(level, opt, &value)
        && is_tcp(fd))
        return f(fd, level, opt, &value, (socklen_t)sizeof value);
    return f(fd, level, opt, optval, optlen);
}
