/*
 * kaext_windows.h -- Winsock: the per-OS half of kaext_shim.h on Windows.
 * Include kaext_shim.h, not this file.
 *
 * Windows 10 1709 and later set idle and interval with TCP_KEEPIDLE /
 * TCP_KEEPINTVL (seconds), TCP_KEEPCNT from 1703, the user timeout with
 * TCP_MAXRT (seconds).  Earlier Windows (and wine) refuse TCP_KEEPIDLE, so idle
 * and interval then go together through WSAIoctl(SIO_KEEPALIVE_VALS), in ms.
 */
#ifndef KAEXT_WINDOWS_H
#define KAEXT_WINDOWS_H

#ifndef WIN32_LEAN_AND_MEAN
#  define WIN32_LEAN_AND_MEAN
#endif
#include <winsock2.h>
#include <ws2tcpip.h>
#include <mstcpip.h>

/* SOCKET is a UINT_PTR: 32 bits on win32, 64 on win64; INVALID_SOCKET is ~0. */
typedef SOCKET kaext_sock;
typedef int kaext_optlen;
#define KAEXT_SOCK_MAX ((unsigned long long)INVALID_SOCKET - 1ULL)
#define KAEXT_BAD_SOCK(s) ((s) == INVALID_SOCKET)
#define kaext_close(s) closesocket(s)

/* CPython (PC/errmap.h) keeps Winsock codes as errno values, except the six
 * that are "Winsock definitions of errno values" (WSAEBADF = 10000 + EBADF). */
#define KAEXT_ENOPROTOOPT WSAENOPROTOOPT
#define KAEXT_EOPNOTSUPP WSAEOPNOTSUPP
#define KAEXT_ENOTSOCK WSAENOTSOCK
#define KAEXT_EINVAL EINVAL
#define KAEXT_EBADF EBADF

/* The last socket error as Python's errno module numbers it on Windows. */
KAEXT_FUNC int kaext_last_error(void)
{
    int e = WSAGetLastError();
    switch (e) {
    case WSAEINTR: case WSAEBADF: case WSAEACCES:
    case WSAEFAULT: case WSAEINVAL: case WSAEMFILE:
        return e - 10000;  /* "Winsock definitions of errno values" */
    default:
        return e;          /* errno.ENOPROTOOPT == WSAENOPROTOOPT in Python */
    }
}

/* ------------------------------------------------------------------------ */
/* Option numbers, with fallbacks where old SDK headers lack the name        */
/* ------------------------------------------------------------------------ */

/*
 * ws2ipdef.h (TCP_*), mstcpip.h (SIO_KEEPALIVE_VALS, struct tcp_keepalive).
 * mingw-w64 before 12 lacks every TCP_KEEP* and TCP_MAXRT* name; the numbers
 * are Microsoft's ("IPPROTO_TCP socket options").
 */
#ifdef TCP_KEEPALIVE
#  define KAEXT_V_TCP_KEEPALIVE TCP_KEEPALIVE
#  define KAEXT_FB_TCP_KEEPALIVE 0
#else
#  define KAEXT_V_TCP_KEEPALIVE 3
#  define KAEXT_FB_TCP_KEEPALIVE 1
#endif
#ifdef TCP_KEEPIDLE
#  define KAEXT_V_TCP_KEEPIDLE TCP_KEEPIDLE
#  define KAEXT_FB_TCP_KEEPIDLE 0
#else
#  define KAEXT_V_TCP_KEEPIDLE 3
#  define KAEXT_FB_TCP_KEEPIDLE 1
#endif
#ifdef TCP_KEEPINTVL
#  define KAEXT_V_TCP_KEEPINTVL TCP_KEEPINTVL
#  define KAEXT_FB_TCP_KEEPINTVL 0
#else
#  define KAEXT_V_TCP_KEEPINTVL 17
#  define KAEXT_FB_TCP_KEEPINTVL 1
#endif
#ifdef TCP_KEEPCNT
#  define KAEXT_V_TCP_KEEPCNT TCP_KEEPCNT
#  define KAEXT_FB_TCP_KEEPCNT 0
#else
#  define KAEXT_V_TCP_KEEPCNT 16
#  define KAEXT_FB_TCP_KEEPCNT 1
#endif
#ifdef TCP_MAXRT
#  define KAEXT_V_TCP_MAXRT TCP_MAXRT
#  define KAEXT_FB_TCP_MAXRT 0
#else
#  define KAEXT_V_TCP_MAXRT 5
#  define KAEXT_FB_TCP_MAXRT 1
#endif
#ifdef TCP_MAXRTMS
#  define KAEXT_V_TCP_MAXRTMS TCP_MAXRTMS
#  define KAEXT_FB_TCP_MAXRTMS 0
#else
#  define KAEXT_V_TCP_MAXRTMS 14
#  define KAEXT_FB_TCP_MAXRTMS 1
#endif
#ifdef SIO_KEEPALIVE_VALS
#  define KAEXT_V_SIO_KEEPALIVE_VALS SIO_KEEPALIVE_VALS
#  define KAEXT_FB_SIO_KEEPALIVE_VALS 0
#else
#  define KAEXT_V_SIO_KEEPALIVE_VALS _WSAIOW(IOC_VENDOR, 4)
#  define KAEXT_FB_SIO_KEEPALIVE_VALS 1
#endif
/* The ioctl code and the struct layout are ABI: check them at build time. */
typedef char kaext_check_sio_keepalive_vals[
    ((unsigned long)KAEXT_V_SIO_KEEPALIVE_VALS == 0x98000004UL) ? 1 : -1];
typedef char kaext_check_tcp_keepalive_size[(sizeof(struct tcp_keepalive) == 12) ? 1 : -1];

/* ------------------------------------------------------------------------ */
/* Knobs                                                                     */
/* ------------------------------------------------------------------------ */

#define KAEXT_IDLE_OPT KAEXT_V_TCP_KEEPIDLE
#define KAEXT_IDLE_NAME "TCP_KEEPIDLE"
#define KAEXT_IDLE_UNIT "s"
#define KAEXT_INTERVAL_OPT KAEXT_V_TCP_KEEPINTVL
#define KAEXT_INTERVAL_NAME "TCP_KEEPINTVL"
#define KAEXT_INTERVAL_UNIT "s"
#define KAEXT_COUNT_OPT KAEXT_V_TCP_KEEPCNT
#define KAEXT_COUNT_NAME "TCP_KEEPCNT"
#define KAEXT_USER_TIMEOUT_OPT KAEXT_V_TCP_MAXRT
#define KAEXT_USER_TIMEOUT_NAME "TCP_MAXRT"
#define KAEXT_USER_TIMEOUT_UNIT "s"

/* The half of SIO_KEEPALIVE_VALS a plan does not give gets Windows' default
 * (SIO_KEEPALIVE_VALS remarks: keepalivetime 2 h, keepaliveinterval 1 s). */
#define KAEXT_WIN_DEFAULT_IDLE_MS 7200000
#define KAEXT_WIN_DEFAULT_INTERVAL_MS 1000

/* ------------------------------------------------------------------------ */
/* Constants table                                                           */
/* ------------------------------------------------------------------------ */

#define KAEXT_SOCK_H "winsock2.h"
#define KAEXT_TCP_H "ws2ipdef.h"

static const kaext_constant kaext_constants[] = {
    KAEXT_CONST(SOL_SOCKET, KAEXT_SOCK_H)
    KAEXT_CONST(SO_KEEPALIVE, KAEXT_SOCK_H)
    KAEXT_CONST(IPPROTO_TCP, KAEXT_SOCK_H)
    KAEXT_CONST_FB(TCP_KEEPALIVE, KAEXT_TCP_H)
    KAEXT_CONST_FB(TCP_KEEPIDLE, KAEXT_TCP_H)
    KAEXT_CONST_FB(TCP_KEEPINTVL, KAEXT_TCP_H)
    KAEXT_CONST_FB(TCP_KEEPCNT, KAEXT_TCP_H)
    KAEXT_CONST_FB(TCP_MAXRT, KAEXT_TCP_H)
    KAEXT_CONST_FB(TCP_MAXRTMS, KAEXT_TCP_H)
    KAEXT_CONST_FB(SIO_KEEPALIVE_VALS, "mstcpip.h")
#ifdef TCP_NOSYNRETRIES
    KAEXT_CONST(TCP_NOSYNRETRIES, KAEXT_TCP_H)
#endif
#ifdef TCP_FAIL_CONNECT_ON_ICMP_ERROR
    KAEXT_CONST(TCP_FAIL_CONNECT_ON_ICMP_ERROR, KAEXT_TCP_H)
#endif
    { 0, 0, 0, 0 }
};

/* ------------------------------------------------------------------------ */
/* Mechanisms                                                                */
/* ------------------------------------------------------------------------ */

/* Winsock must be started before the probe can make a socket.  Python's
 * socket module starts it when imported, but kaext may be imported (and probe)
 * first; WSAStartup counts its callers, so starting it here too is harmless.
 * It is never cleaned up: the process keeps it, as CPython's _socket does
 * until exit. */
KAEXT_FUNC void kaext_os_start(void)
{
    WSADATA wsa;
    (void)WSAStartup(MAKEWORD(2, 2), &wsa);
}

/* Windows builds that first accept each option (Microsoft, "IPPROTO_TCP socket
 * options"; Go's internal/syscall/windows, libuv, CPython remove_unusable_flags):
 * TCP_KEEPIDLE / TCP_KEEPINTVL 10 version 1709 = build 16299, TCP_KEEPCNT 1703
 * = build 15063; TCP_MAXRT since Vista. */
#define KAEXT_WIN_BUILD_KEEPIDLE 16299
#define KAEXT_WIN_BUILD_KEEPCNT 15063

/* Knob k's mechanism on Windows build "build", for when a probe said nothing. */
KAEXT_FUNC int kaext_mechanism_from_build(int k, unsigned long build)
{
    switch (k) {
    case KAEXT_IDLE:
    case KAEXT_INTERVAL:
        return build >= KAEXT_WIN_BUILD_KEEPIDLE ? KAEXT_MECH_SETSOCKOPT : KAEXT_MECH_SIO;
    case KAEXT_COUNT:
        return build >= KAEXT_WIN_BUILD_KEEPCNT ? KAEXT_MECH_SETSOCKOPT : KAEXT_MECH_NONE;
    case KAEXT_USER_TIMEOUT:
        return KAEXT_MECH_SETSOCKOPT;
    default:
        return KAEXT_MECH_NONE;
    }
}

/* The running Windows' build number, from ntdll's RtlGetVersion (which, unlike
 * GetVersionEx, is not capped by the program's manifest), 0 if unknown. */
KAEXT_FUNC unsigned long kaext_windows_build(void)
{
    typedef LONG(WINAPI * rtl_get_version)(OSVERSIONINFOW *);
    OSVERSIONINFOW info;
    HMODULE ntdll = GetModuleHandleW(L"ntdll.dll");
    FARPROC proc = ntdll ? GetProcAddress(ntdll, "RtlGetVersion") : NULL;
    rtl_get_version get;
    if (proc == NULL)
        return 0;
    memcpy(&get, &proc, sizeof get);  /* no function-pointer cast warning */
    memset(&info, 0, sizeof info);
    info.dwOSVersionInfoSize = sizeof info;
    if (get(&info) != 0)
        return 0;
    return info.dwBuildNumber;
}

/* A probe that said nothing (no socket could be made, or an error other than
 * WSAENOPROTOOPT): decide by the build number, as Go does. */
KAEXT_FUNC int kaext_os_unknown_mechanism(int k, int have)
{
    return have ? kaext_mechanism_from_build(k, kaext_windows_build()) : KAEXT_MECH_NONE;
}

/* Windows before 10 1709 (and wine) refuse TCP_KEEPIDLE/TCP_KEEPINTVL;
 * SIO_KEEPALIVE_VALS exists on every Windows since 2000 and sets idle and
 * interval at once, so unless the running Windows accepts both options, both
 * go through it. */
KAEXT_FUNC void kaext_os_mechanisms(int mech[KAEXT_NKNOBS])
{
    if (mech[KAEXT_IDLE] != KAEXT_MECH_SETSOCKOPT || mech[KAEXT_INTERVAL] != KAEXT_MECH_SETSOCKOPT)
        mech[KAEXT_IDLE] = mech[KAEXT_INTERVAL] = KAEXT_MECH_SIO;
}

/* Idle and interval (ms) together; the one the plan does not set gets
 * Windows' default.  The caller has proved the socket is TCP. */
KAEXT_FUNC int kaext_apply_sio(kaext_sock fd, const kaext_plan *plan, int *step)
{
    struct tcp_keepalive ka;
    DWORD returned = 0;
    int set_idle = (plan->set_mask >> KAEXT_IDLE) & 1;
    int set_interval = (plan->set_mask >> KAEXT_INTERVAL) & 1;
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

#endif /* KAEXT_WINDOWS_H */
