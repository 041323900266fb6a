"""A per-OS model of what each kernel does with kaext's socket options, run on Linux.

kaext's per-OS knowledge (option, unit, range kaext allows, read-back) lives in
``kaext._platform`` and is *not* repeated here: a model takes the option of each knob
from ``_platform.specs(family)`` and its number from the OS's headers
(``tests/data/reference.json``, checked against the real headers by the zig
cross-compiles: tests/native/test_cross_targets.py).  What a model adds is only what the
kernel decides, each with its source:

* ``fresh``: what a new socket reads back;
* ``check``: which values ``setsockopt`` refuses, with which errno (the kernel's own
  test, which may differ from kaext's table: that is what rollback is for);
* ``readable``: whether ``getsockopt`` answers at all;
* ``not_inherited``: what an accepted socket does not take over from its listener;
* ``python_names``: the constants CPython's socket module defines there
  (Modules/socketmodule.c defines TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT,
  TCP_USER_TIMEOUT, TCP_SYNCNT and, from 3.10, TCP_KEEPALIVE where the headers do; on
  Windows SIO_KEEPALIVE_VALS; never TCP_MAXUNACKTIME, TCP_RXT_CONNDROPTIME, TCP_MAXRT,
  TCP_KEEPINIT, TCP_CONNECTIONTIMEOUT or TCP_CONN_ABORT_THRESHOLD);
* ``connect_bound``: when a connect to a host that never answers is given up, in seconds
  after the first SYN, for the value the connect-timeout option holds (the kernel's
  connection-establishment timer, each with its source).

``install(name)`` (before ``import kaext``, in a fresh interpreter) sets
``sys.platform``, puts the OS's numbers into the socket module and replaces
the methods of ``socket.socket`` so that its TCP-level ``setsockopt``/``getsockopt`` (and
Windows' ``ioctl``) the model answers.  Sockets are real Linux sockets (connect,
accept, SO_KEEPALIVE, TCP_NODELAY go to the real kernel); the SOL_SOCKET-level numbers
stay Linux's: the model is about the TCP-level knobs.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import stat
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parents[2] / "data"
HEADERS: dict[str, dict[str, int]] = json.loads((DATA / "reference.json").read_text())["constants"]
UINT_MAX = 2**32 - 1
INT_MAX = 2**31 - 1

#: CPython's Modules/socketmodule.c: the knob constants it exports where the headers define them.
PYTHON_NAMES = ("TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT", "TCP_USER_TIMEOUT", "TCP_KEEPALIVE")

Check = Callable[[int], int]  # value -> 0 (accepted) or an errno


def _between(lo: int, hi: int) -> Check:
    return lambda v: 0 if lo <= v <= hi else errno.EINVAL


@dataclass
class Kernel:
    """One OS's kernel, as far as these options go."""

    name: str  # the model's name
    platform: str  # sys.platform there
    family: str  # kaext._platform's family (the model's claim: tests check kaext agrees)
    headers: str  # key in reference.json
    fresh: dict[str, int]  # option name -> value on a new socket
    check: dict[str, Check]  # option name -> the kernel's test of a value
    readable: bool = True
    not_inherited: tuple[str, ...] = ()
    python_names: tuple[str, ...] = PYTHON_NAMES
    sources: dict[str, str] = field(default_factory=dict)
    sum_bits: int | None = None  # idle + interval * count kept in this many bits of ms
    # the kernel's setsockopt where one option changes others: (state by option name, with
    # hidden fields, option, value) -> errno; the state is changed only on 0
    on_set: Callable[[dict[str, int], str, int], int] | None = None
    hidden: dict[str, int] = field(default_factory=dict)  # fields no option reads
    windows_sio: bool = False  # SIO_KEEPALIVE_VALS instead of TCP_KEEPIDLE / TCP_KEEPINTVL
    no_socket_module: bool = False
    fixed_count: int | None = None  # probes the kernel sends where no option sets the count
    sockets_fail: bool = False  # a socket module whose sockets cannot be made (Emscripten)
    # option value of the connect timeout -> seconds after the first SYN at which the kernel gives
    # the connect up (None: the model has no connect-timeout option)
    connect_bound: Callable[[int], float] | None = None

    def numbers(self) -> dict[str, int]:
        """Option name -> number: this OS's headers."""
        return dict(HEADERS.get(self.headers, {}))


def _linux_syn_give_up(syncnt: int, linear: int = 4) -> float:
    """When Linux gives a connect up with TCP_SYNCNT ``syncnt``, in s after the first SYN.

    net/ipv4/tcp_timer.c: in SYN_SENT tcp_write_timeout expires the connect once
    ``icsk_retransmits >= syncnt + linear`` or ``retransmits_timed_out(sk, syncnt, 0)``: the
    time since the first SYN reaches tcp_model_timeout(sk, syncnt, TCP_TIMEOUT_INIT), the
    time ``syncnt`` doubling RTOs from 1 s (capped at TCP_RTO_MAX 120 s) take.  Both are
    checked only when the SYN retransmit timer fires; tcp_retransmit_timer keeps the RTO at
    1 s for the first ``linear`` retransmissions (net.ipv4.tcp_syn_linear_timeouts, 4 by
    default since Linux 6.5; 0 before), then doubles it.
    """
    model, rto = 0, 1
    for _ in range(syncnt + 1):
        model += rto
        rto = min(2 * rto, 120)
    fired, retransmits, rto = 0, 0, 1
    while True:
        fired += rto  # the timer fires
        if retransmits >= syncnt + linear or fired >= model:
            return float(fired)
        retransmits += 1
        if retransmits > linear:
            rto = min(2 * rto, 120)


def _linux(name: str = "linux", platform: str = "linux") -> Kernel:
    return Kernel(
        name,
        platform,
        "linux",
        "linux",
        # net.ipv4.tcp_keepalive_time / _intvl / _probes defaults (include/net/tcp.h TCP_KEEPALIVE_TIME
        # 7200 s, TCP_KEEPALIVE_INTVL 75 s, TCP_KEEPALIVE_PROBES 9); icsk_user_timeout starts at 0
        # TCP_SYNCNT reads icsk_syn_retries, or net.ipv4.tcp_syn_retries (TCP_SYN_RETRIES 6) while unset
        # (net/ipv4/tcp.c do_tcp_getsockopt: icsk_syn_retries ? : sysctl_tcp_syn_retries)
        fresh={"TCP_KEEPIDLE": 7200, "TCP_KEEPINTVL": 75, "TCP_KEEPCNT": 9, "TCP_USER_TIMEOUT": 0, "TCP_SYNCNT": 6},
        # net/ipv4/tcp.c do_tcp_setsockopt: val < 1 || val > MAX_TCP_KEEPIDLE/KEEPINTVL/KEEPCNT -> EINVAL;
        # TCP_USER_TIMEOUT: val < 0 -> EINVAL; TCP_SYNCNT: val < 1 || val > MAX_TCP_SYNCNT -> EINVAL
        check={
            "TCP_KEEPIDLE": _between(1, HEADERS["linux"]["MAX_TCP_KEEPIDLE"]),
            "TCP_KEEPINTVL": _between(1, HEADERS["linux"]["MAX_TCP_KEEPINTVL"]),
            "TCP_KEEPCNT": _between(1, HEADERS["linux"]["MAX_TCP_KEEPCNT"]),
            "TCP_USER_TIMEOUT": _between(0, INT_MAX),
            "TCP_SYNCNT": _between(1, HEADERS["linux"]["MAX_TCP_SYNCNT"]),
        },
        python_names=(*PYTHON_NAMES, "TCP_SYNCNT"),
        connect_bound=_linux_syn_give_up,
        sources={
            "all": "torvalds/linux net/ipv4/tcp.c do_tcp_setsockopt, include/net/tcp.h",
            "connect_bound": "net/ipv4/tcp_timer.c tcp_write_timeout, retransmits_timed_out, tcp_model_timeout; "
            "tcp_retransmit_timer (linear SYN timeouts, net.ipv4.tcp_syn_linear_timeouts, default 4, 6.5+)",
        },
    )


def _darwin(name: str = "darwin", platform: str = "darwin") -> Kernel:
    return Kernel(
        name,
        platform,
        "darwin",
        "darwin",
        # xnu bsd/netinet/tcp_timer.h TCPTV_KEEP_IDLE 2 h, TCPTV_KEEPINTVL 75 s, TCPTV_KEEPCNT 8;
        # tcp_usrreq.c tcp_ctloutput reports the system value while the socket's is unset
        # TCP_CONNECTIONTIMEOUT reads t_keepinit / TCP_RETRANSHZ: 0 until set (tcp_newtcpcb leaves it;
        # TCP_CONN_KEEPINIT(tp) then uses the sysctl net.inet.tcp.keepinit, 75 s)
        fresh={
            "TCP_KEEPALIVE": 7200,
            "TCP_KEEPINTVL": 75,
            "TCP_KEEPCNT": 8,
            "TCP_RXT_CONNDROPTIME": 0,
            "TCP_CONNECTIONTIMEOUT": 0,
        },
        # xnu bsd/netinet/tcp_usrreq.c tcp_ctloutput: optval < 0 || optval > UINT32_MAX / TCP_RETRANSHZ
        # -> EINVAL (TCP_KEEPALIVE, TCP_KEEPINTVL, TCP_RXT_CONNDROPTIME, TCP_CONNECTIONTIMEOUT);
        # TCP_KEEPCNT: optval < 0 -> EINVAL
        check={
            "TCP_KEEPALIVE": _between(0, UINT_MAX // 1000),
            "TCP_KEEPINTVL": _between(0, UINT_MAX // 1000),
            "TCP_KEEPCNT": _between(0, INT_MAX),
            "TCP_RXT_CONNDROPTIME": _between(0, UINT_MAX // 1000),
            "TCP_CONNECTIONTIMEOUT": _between(0, UINT_MAX // 1000),
        },
        # tcp_usrreq.c tcp_connect arms TCPT_KEEP with TCP_CONN_KEEPINIT(tp) = t_keepinit (ms); tcp_timer.c
        # tcp_timers, TCPT_KEEP: a connection still below ESTABLISHED is dropped (ETIMEDOUT) when it fires
        connect_bound=float,
        # xnu bsd/netinet/tcp_input.c (SYN received on a listener): t_keepintvl, t_keepcnt copied;
        # t_keepidle and t_rxt_conndroptime are not
        not_inherited=("TCP_KEEPALIVE", "TCP_RXT_CONNDROPTIME"),
        # tcp_timer.c: idle_time >= TCP_CONN_KEEPIDLE(tp) + TCP_CONN_MAXIDLE(tp), u_int32_t ms
        sum_bits=32,
        sources={"all": "apple-oss-distributions/xnu bsd/netinet/tcp_usrreq.c, tcp_input.c, tcp_timer.h, tcp_timer.c"},
    )


def _freebsd(hz: int = 1000) -> Kernel:
    limit = UINT_MAX // hz
    return Kernel(
        "freebsd" if hz == 1000 else f"freebsd-hz{hz}",
        "freebsd14",
        "freebsd",
        "freebsd",
        # sys/netinet/tcp_timer.h TCPTV_KEEP_IDLE 2 h, TCPTV_KEEPINTVL 75 s, TCPTV_KEEPCNT 8;
        # t_maxunacktime starts at 0 (off)
        # TCP_KEEPINIT reads TP_KEEPINIT(tp) / hz: the sysctl net.inet.tcp.keepinit (TCPTV_KEEP_INIT 75 s)
        fresh={"TCP_KEEPIDLE": 7200, "TCP_KEEPINTVL": 75, "TCP_KEEPCNT": 8, "TCP_MAXUNACKTIME": 0, "TCP_KEEPINIT": 75},
        # sys/netinet/tcp_usrreq.c tcp_default_ctloutput: case TCP_KEEPIDLE/KEEPINTVL/KEEPINIT/
        # MAXUNACKTIME: if (ui > (UINT_MAX / hz)) error = EINVAL; TCP_KEEPCNT: any u_int
        check={
            "TCP_KEEPIDLE": _between(0, limit),
            "TCP_KEEPINTVL": _between(0, limit),
            "TCP_KEEPCNT": _between(0, UINT_MAX),
            "TCP_MAXUNACKTIME": _between(0, limit),
            "TCP_KEEPINIT": _between(0, limit),
        },
        # tcp_usrreq.c tcp_connect: tcp_timer_activate(tp, TT_KEEP, TP_KEEPINIT(tp)); tcp_timer.c
        # tcp_timer_keep: below ESTABLISHED -> tcp_drop(tp, ETIMEDOUT) when it fires
        connect_bound=float,
        python_names=("TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT"),
        # tcp_timer.c tcp_timer_keep: TP_KEEPIDLE(tp) + TP_MAXIDLE(tp) in u_int ticks (ms at hz 1000)
        sum_bits=32 if hz == 1000 else None,
        sources={"all": "freebsd/freebsd-src sys/netinet/tcp_usrreq.c, tcp_timer.c, tcp_timer.h"},
    )


def _netbsd(hz: int = 100) -> Kernel:
    maxticks = INT_MAX // (hz // 2)  # TCP_TIMER_MAXTICKS = INT_MAX / (hz / PR_SLOWHZ)
    return Kernel(
        "netbsd",
        "netbsd10",
        "netbsd",
        "netbsd",
        # never read back (below); TCP_KEEPINIT: tcp_keepinit, TCPTV_KEEP_INIT = 75 s = 150 slow ticks
        fresh={"TCP_KEEPIDLE": 14400, "TCP_KEEPINTVL": 150, "TCP_KEEPCNT": 8, "TCP_KEEPINIT": 150},
        # sys/netinet/tcp_usrreq.c tcp_ctloutput PRCO_SETOPT: if (ui > 0 && ui <= TCP_TIMER_MAXTICKS)
        # (TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPINIT) / if (ui > 0) (TCP_KEEPCNT), else EINVAL
        check={
            "TCP_KEEPIDLE": _between(1, maxticks),
            "TCP_KEEPINTVL": _between(1, maxticks),
            "TCP_KEEPCNT": _between(1, UINT_MAX),
            "TCP_KEEPINIT": _between(1, maxticks),
        },
        # tcp_usrreq.c tcp_connect: TCP_TIMER_ARM(tp, TCPT_KEEP, tp->t_keepinit), slow ticks (PR_SLOWHZ 2);
        # tcp_timer.c tcp_timer_keep: below ESTABLISHED -> dropit (ETIMEDOUT)
        connect_bound=lambda ticks: ticks / 2,
        # PRCO_GETOPT has no TCP_KEEP* case: default -> ENOPROTOOPT
        readable=False,
        # sys/netinet/tcp_syncache.c syn_cache_get: the accepted tcpcb copies only TF_NODELAY of
        # the listener's (``tp->t_flags = sototcpcb(oso)->t_flags & TF_NODELAY``); its keepalive
        # times are tcp_newtcpcb's system-wide ones
        not_inherited=("TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT"),
        python_names=("TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT"),
        sources={"all": "NetBSD/src sys/netinet/tcp_usrreq.c tcp_ctloutput, tcp_syncache.c syn_cache_get"},
    )


def _dragonfly() -> Kernel:
    return Kernel(
        "dragonfly",
        "dragonfly6",
        "dragonfly",
        "dragonfly",
        fresh={"TCP_KEEPIDLE": 7200, "TCP_KEEPINTVL": 75, "TCP_KEEPCNT": 8, "TCP_KEEPINIT": 75},
        # sys/netinet/tcp_usrreq.c tcp_ctloutput: opt_val <= 0 -> EINVAL (seconds since 5.8; the same case
        # for TCP_KEEPINIT, which sets t_keepinit)
        check={
            "TCP_KEEPIDLE": _between(1, INT_MAX),
            "TCP_KEEPINTVL": _between(1, INT_MAX),
            "TCP_KEEPCNT": _between(1, INT_MAX),
            "TCP_KEEPINIT": _between(1, INT_MAX),
        },
        # tcp_usrreq.c tcp_connect arms the keep timer with t_keepinit; tcp_timer.c tcp_timer_keep
        # drops a connection below ESTABLISHED when it fires
        connect_bound=float,
        python_names=("TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT"),
        # tcp_usrreq.c tcp_ctloutput / tcp_subr.c tcp_newtcpcb: t_keepidle and
        # t_maxidle = t_keepintvl * t_keepcnt are int ticks (hz up to 1000: within 31 bits of ms)
        sum_bits=31,
        sources={"all": "DragonFlyBSD sys/netinet/tcp_usrreq.c, tcp_subr.c"},
    )


def _openbsd() -> Kernel:
    # sys/netinet/tcp_usrreq.c tcp_ctloutput: no TCP_KEEP* case at all -> ENOPROTOOPT
    return Kernel(
        "openbsd",
        "openbsd7",
        "openbsd",
        "openbsd",
        fresh={},
        check={},
        python_names=(),
        sources={"all": "openbsd/src sys/netinet/tcp_usrreq.c"},
    )


def _illumos_set(st: dict[str, int], option: str, value: int) -> int:
    """illumos usr/src/uts/common/inet/tcp/tcp_opt_data.c tcp_opt_set (values here in seconds,
    the kernel's tcp_ka_rinterval in ms; tcp_rto_min/max 400 ms / 60 s by default; the abort
    threshold tcp_ka_abort_thres starts at tcp_keepalive_abort_interval, 8 min, bounded 0 ..
    UINT32_MAX ms by tcp_tunables.c):

    * TCP_KEEPIDLE x 1000 within tcps_keepalive_interval_low/high (1 s .. 10 days);
    * TCP_KEEPINTVL x 1000 within rto_min .. rto_max, else EINVAL; with the count unset (0)
      the count becomes abort / interval, else abort = interval x count;
    * TCP_KEEPCNT 0 is EINVAL; with the interval unset (0) the interval becomes abort / count,
      clamped to rto_min .. rto_max, else abort = count x interval;
    * TCP_CONN_ABORT_THRESHOLD (ms) is stored as given (tcp_second_ctimer_threshold).

    The products are uint32_t arithmetic (``*i1 * tcp->tcp_ka_rinterval``, ``*i1 *
    tcp->tcp_ka_cnt * 1000``): they wrap modulo 2**32 before the bounds check, which the
    0 .. UINT32_MAX bounds then always pass.
    """
    if option == "TCP_KEEPIDLE":
        if not 1 <= value <= 864000:
            return errno.EINVAL
        st[option] = value
    elif option == "TCP_KEEPINTVL":
        if not 400 <= value * 1000 <= 60_000:
            return errno.EINVAL
        if st["TCP_KEEPCNT"] == 0:
            st["TCP_KEEPCNT"] = st["abort_ms"] // (value * 1000)
        else:
            st["abort_ms"] = (value * st["TCP_KEEPCNT"] * 1000) % 2**32
        st["interval_ms"] = value * 1000
        st[option] = value
    elif option == "TCP_KEEPCNT":
        if value == 0:
            return errno.EINVAL
        if st["interval_ms"] == 0:
            st["interval_ms"] = min(max(st["abort_ms"] // value, 400), 60_000)
            st["TCP_KEEPINTVL"] = st["interval_ms"] // 1000  # tcp_opt_get: tcp_ka_rinterval / 1000
        else:
            st["abort_ms"] = (value * st["interval_ms"]) % 2**32
        st[option] = value
    elif option == "TCP_CONN_ABORT_THRESHOLD":
        st[option] = value
    else:
        return errno.ENOPROTOOPT
    return 0


def _illumos() -> Kernel:
    return Kernel(
        "illumos",
        "sunos5",
        "sunos",
        "illumos",
        # usr/src/uts/common/inet/tcp/tcp.c tcp_init_values: tcp_ka_interval = tcps_keepalive_interval
        # (2 h); tcp_ka_rinterval and tcp_ka_cnt stay 0 ("unset"); tcp_opt_data.c tcp_opt_get returns
        # them as they are: a fresh socket reads interval 0 and count 0
        # TCP_CONN_ABORT_THRESHOLD reads tcp_second_ctimer_threshold, which starts at
        # tcps_ip_abort_cinterval (tcp_tunables.c _ip_abort_cinterval: 3 minutes, in ms)
        fresh={"TCP_KEEPIDLE": 7200, "TCP_KEEPINTVL": 0, "TCP_KEEPCNT": 0, "TCP_CONN_ABORT_THRESHOLD": 180_000},
        # tcp_opt_data.c tcp_opt_set: TCP_KEEPIDLE x 1000 within tcps_keepalive_interval_low/high
        # (1 s .. 10 days); TCP_KEEPINTVL x 1000 within tcps_rexmit_interval_min/max (400 ms .. 60 s);
        # TCP_KEEPCNT 0 -> EINVAL; TCP_CONN_ABORT_THRESHOLD: stored as given, no check
        check={
            "TCP_KEEPIDLE": _between(1, 864000),
            "TCP_KEEPINTVL": _between(1, 60),
            "TCP_KEEPCNT": _between(1, INT_MAX),
            "TCP_CONN_ABORT_THRESHOLD": _between(-(2**31), INT_MAX),
        },
        # tcp_timers.c tcp_timer: in SYN_SENT the second threshold is tcp_second_ctimer_threshold (ms);
        # once the time retransmitting passes it the connect is given up (checked at a retransmission)
        connect_bound=lambda ms: ms / 1000,
        on_set=_illumos_set,
        hidden={"abort_ms": 480_000, "interval_ms": 0},
        python_names=("TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT"),
        sources={"all": "illumos/illumos-gate usr/src/uts/common/inet/tcp/tcp_opt_data.c, tcp.c"},
    )


def _cygwin() -> Kernel:
    # Cygwin: Linux's names with Winsock's numbers (winsup/cygwin/include/netinet/tcp.h:
    # TCP_KEEPIDLE 3, TCP_USER_TIMEOUT 14, TCP_KEEPCNT 16, TCP_KEEPINTVL 17).
    # winsup/cygwin/fhandler/socket_inet.cc: a fresh socket holds Winsock's defaults (7200 s,
    # 1 s, 10: fhandler_socket_inet's constructor); before Windows 10 1709 Cygwin checks idle and
    # interval against 1 .. 32767 and the count against 1 .. 255 (MAX_TCP_KEEP*), and Winsock's
    # own TCP_KEEPCNT refuses more than 255 after; TCP_USER_TIMEOUT becomes Windows'
    # TCP_MAXRTMS, which takes ms; its 0 is undocumented, so the model refuses it (kaext must
    # never send it)
    kernel = _linux("cygwin", "cygwin")
    kernel.headers = "cygwin"
    kernel.fresh = {"TCP_KEEPIDLE": 7200, "TCP_KEEPINTVL": 1, "TCP_KEEPCNT": 10, "TCP_USER_TIMEOUT": -1}
    kernel.check = {
        "TCP_KEEPIDLE": _between(1, 32767),
        "TCP_KEEPINTVL": _between(1, 32767),
        "TCP_KEEPCNT": _between(1, 255),
        "TCP_USER_TIMEOUT": _between(1, INT_MAX),
    }
    kernel.python_names = ("TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT", "TCP_USER_TIMEOUT")
    kernel.sources = {"all": "cygwin/cygwin winsup/cygwin/fhandler/socket_inet.cc, include/netinet/tcp.h"}
    return kernel


def _windows_sio() -> Kernel:
    # Windows 10 1703 (build 15063): TCP_KEEPCNT and TCP_MAXRT, but no TCP_KEEPIDLE / TCP_KEEPINTVL
    # (Microsoft: from 1709), which CPython then removes from its socket module; idle and interval
    # go through WSAIoctl(SIO_KEEPALIVE_VALS): struct tcp_keepalive {onoff, keepalivetime,
    # keepaliveinterval}, u_long ms (mstcpip.h), write-only, and it sets SO_KEEPALIVE to onoff
    kernel = _windows()
    kernel.name = "windows-sio"
    for option in ("TCP_KEEPIDLE", "TCP_KEEPINTVL"):
        del kernel.fresh[option], kernel.check[option]
    kernel.python_names = ("TCP_KEEPCNT",)
    kernel.windows_sio = True
    kernel.hidden = {"sio_idle": 7_200_000, "sio_interval": 1_000}
    return kernel


def _windows_nocount() -> Kernel:
    # Windows before 10 1703 (build 15063): no TCP_KEEPCNT either (Microsoft, "IPPROTO_TCP
    # socket options"); SIO_KEEPALIVE_VALS remarks: "the number of keep-alive probes (data
    # retransmissions) is set to 10 and cannot be changed" (Vista and later)
    kernel = _windows_sio()
    kernel.name = "windows-nocount"
    del kernel.fresh["TCP_KEEPCNT"], kernel.check["TCP_KEEPCNT"]
    kernel.python_names = ()
    kernel.fixed_count = 10
    return kernel


def _windows(maxrt: int = -1) -> Kernel:
    return Kernel(
        "windows" if maxrt == -1 else f"windows-maxrt{maxrt}",
        "win32",
        "windows",
        "windows",
        # Microsoft, "IPPROTO_TCP socket options" and SIO_KEEPALIVE_VALS remarks: 2 h idle, 1 s
        # interval, 10 probes; TCP_MAXRT on a fresh socket is undocumented: modelled as -1
        # (retransmit forever) or 0, neither of which kaext sets nor may reject when it reads it
        fresh={"TCP_KEEPIDLE": 7200, "TCP_KEEPINTVL": 1, "TCP_KEEPCNT": 10, "TCP_MAXRT": maxrt},
        # TCP_KEEPCNT: 0..255 (the document's range); TCP_MAXRT: -1 or a positive number of seconds
        # (0 is undocumented: the model refuses it, so kaext must never send it)
        check={
            "TCP_KEEPIDLE": _between(0, INT_MAX),
            "TCP_KEEPINTVL": _between(0, INT_MAX),
            "TCP_KEEPCNT": _between(0, 255),
            "TCP_MAXRT": lambda v: 0 if v == -1 or 1 <= v <= INT_MAX else errno.EINVAL,
        },
        python_names=("TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT"),
        sources={"all": "learn.microsoft.com: IPPROTO_TCP socket options; SIO_KEEPALIVE_VALS"},
    )


MODELS: dict[str, Callable[[], Kernel]] = {
    "linux": _linux,
    "android": lambda: _linux("android", "android"),
    "darwin": _darwin,
    "ios": lambda: _darwin("ios", "ios"),
    "visionos": lambda: _darwin("visionos", "visionos"),
    "freebsd": _freebsd,
    "freebsd-hz4000": lambda: _freebsd(4000),
    "netbsd": _netbsd,
    "dragonfly": _dragonfly,
    "openbsd": _openbsd,
    "illumos": _illumos,
    "windows": _windows,
    "cygwin": _cygwin,
    "windows-maxrt0": lambda: _windows(maxrt=0),
    "windows-sio": _windows_sio,
    "windows-nocount": _windows_nocount,
    "haiku": lambda: Kernel("haiku", "haiku1", "other", "", fresh={}, check={}, python_names=()),
    "wasi": lambda: Kernel("wasi", "wasi", "other", "", fresh={}, check={}, python_names=(), no_socket_module=True),
    "emscripten": lambda: Kernel(
        "emscripten", "emscripten", "other", "", fresh={}, check={}, python_names=(), sockets_fail=True
    ),
}

#: Per model, the sockets' state: inode -> {option number: value}
STATE: dict[int, dict[int, int]] = {}


def install(name: str) -> Kernel:
    """Make this interpreter look like ``name``'s OS to ``import kaext`` (call before it)."""
    kernel = MODELS[name]()
    if "kaext" in sys.modules:
        raise RuntimeError("install the kernel model before importing kaext")
    os.environ["KAEXT_NO_EXTENSIONS"] = "1"
    if kernel.no_socket_module:
        sys.modules["socket"] = None  # type: ignore[assignment]
        sys.platform = kernel.platform  # type: ignore[misc]
        return kernel
    if kernel.sockets_fail:

        def no_socket(self: socket.socket, *args: Any, **kwargs: Any) -> None:
            raise OSError(errno.ENOSYS, "sockets are not available in this runtime")

        socket.socket.__init__ = no_socket  # type: ignore[method-assign]
        sys.platform = kernel.platform  # type: ignore[misc]
        return kernel
    numbers = kernel.numbers()
    for attr in (
        "TCP_KEEPIDLE",
        "TCP_KEEPINTVL",
        "TCP_KEEPCNT",
        "TCP_USER_TIMEOUT",
        "TCP_KEEPALIVE",
        "TCP_KEEPINIT",
        "TCP_SYNCNT",
        "TCP_MAXRT",
        "SIO_KEEPALIVE_VALS",
    ):
        if hasattr(socket, attr):
            delattr(socket, attr)
    for attr in kernel.python_names:
        if attr in numbers:
            setattr(socket, attr, numbers[attr])
    if kernel.windows_sio:
        socket.SIO_KEEPALIVE_VALS = numbers["SIO_KEEPALIVE_VALS"]  # type: ignore[attr-defined]
    by_number = {numbers[o]: o for o in set(kernel.fresh) | set(kernel.check) if o in numbers}
    tcp = socket.IPPROTO_TCP

    def state(sock: socket.socket) -> dict[int, int]:
        key = os.fstat(sock.fileno()).st_ino
        st = STATE.get(key)
        if st is None:
            st = STATE[key] = {numbers[o]: v for o, v in kernel.fresh.items() if o in numbers}
            st.update(kernel.hidden)  # type: ignore[arg-type]
        return st

    def is_tcp(sock: socket.socket) -> bool:
        return (
            base.getsockopt(sock, socket.SOL_SOCKET, socket.SO_TYPE) == socket.SOCK_STREAM
            and base.getsockopt(sock, socket.SOL_SOCKET, socket.SO_PROTOCOL) == tcp
        )

    def refuse(err: int) -> OSError:
        return OSError(err, os.strerror(err))

    base = socket.socket.__mro__[1]  # _socket.socket, the C type
    real_accept = socket.socket.accept

    def setsockopt(self: socket.socket, level: int, opt: int, value: Any, *rest: Any) -> None:
        if level != tcp or opt == socket.TCP_NODELAY:
            return base.setsockopt(self, level, opt, value, *rest)  # type: ignore[no-any-return]
        if base.fileno(self) < 0:
            raise refuse(errno.EBADF)
        if not is_tcp(self) or opt not in by_number:
            raise refuse(errno.ENOPROTOOPT)
        err = kernel.check[by_number[opt]](int(value))
        if err:
            raise refuse(err)
        st = state(self)
        if kernel.on_set is None:
            st[opt] = int(value)
            return None
        named: dict[str, int] = {o: st[n] for o, n in numbers.items() if n in st and o in kernel.fresh}
        named.update({h: st[h] for h in kernel.hidden})  # type: ignore[index]
        err = kernel.on_set(named, by_number[opt], int(value))
        if err:
            raise refuse(err)
        for o, v in named.items():
            st[numbers[o] if o in kernel.fresh else o] = v  # type: ignore[index]
        return None

    def getsockopt(self: socket.socket, level: int, opt: int, *rest: Any) -> int:
        if level != tcp or opt == socket.TCP_NODELAY:
            return int(base.getsockopt(self, level, opt, *rest))
        if base.fileno(self) < 0:
            raise refuse(errno.EBADF)
        if not is_tcp(self) or opt not in by_number or not kernel.readable:
            raise refuse(errno.ENOPROTOOPT)
        return state(self)[opt]

    def accept(self: socket.socket) -> tuple[socket.socket, Any]:
        conn, addr = real_accept(self)
        inherited = dict(state(self))
        for option in kernel.not_inherited:
            if option in numbers:
                inherited[numbers[option]] = kernel.fresh[option]
        STATE[os.fstat(conn.fileno()).st_ino] = inherited
        return conn, addr

    def ioctl(self: socket.socket, control: int, value: tuple[int, int, int]) -> None:
        if not kernel.windows_sio or control != numbers["SIO_KEEPALIVE_VALS"]:
            raise refuse(errno.EINVAL)
        if base.fileno(self) < 0:
            raise refuse(errno.EBADF)
        if not is_tcp(self):
            raise refuse(errno.EOPNOTSUPP)
        onoff, idle_ms, interval_ms = value
        if not (0 <= idle_ms <= UINT_MAX and 0 <= interval_ms <= UINT_MAX):
            raise refuse(errno.EINVAL)
        st = state(self)
        st["sio_idle"], st["sio_interval"] = idle_ms, interval_ms  # type: ignore[index]
        base.setsockopt(self, socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1 if onoff else 0)

    socket.socket.ioctl = ioctl  # type: ignore[attr-defined]
    socket.socket.setsockopt = setsockopt  # type: ignore[assignment, method-assign]
    socket.socket.getsockopt = getsockopt  # type: ignore[assignment, method-assign]
    socket.socket.accept = accept  # type: ignore[method-assign]
    sys.platform = kernel.platform  # type: ignore[misc]
    return kernel


def answer_raw_descriptors() -> None:
    """After ``import kaext``: the pure implementation's C library calls on a descriptor
    number (``kaext._pure_fd._RawFd``, where ``_platform.RAW_SOCKOPT``) answered by the model
    too, through a socket object over a duplicate of the number (whose methods the model
    replaced).  The running kernel is Linux: its ``struct sockaddr`` layout is not the
    modelled OS's, and its TCP-level options are not the model's."""
    from kaext import _pure_fd

    def over(fd: int) -> socket.socket:
        return socket.socket(fileno=os.dup(fd))

    def getsockopt(self: Any, level: int, opt: int) -> int:
        with over(self.fd) as s:
            return int(s.getsockopt(level, opt))

    def setsockopt(self: Any, level: int, opt: int, value: int) -> None:
        with over(self.fd) as s:
            s.setsockopt(level, opt, value)

    def getsockname(self: Any) -> tuple[str, int]:
        with over(self.fd) as s:
            host, port = s.getsockname()[:2]
            return str(host), int(port)

    def getpeername(self: Any) -> tuple[str, int]:
        with over(self.fd) as s:
            host, port = s.getpeername()[:2]
            return str(host), int(port)

    def family(self: Any) -> int:
        with over(self.fd) as s:
            return int(s.family)

    raw_fd: Any = _pure_fd._RawFd
    raw_fd.getsockopt, raw_fd.setsockopt = getsockopt, setsockopt
    raw_fd.getsockname, raw_fd.getpeername = getsockname, getpeername
    raw_fd.family = property(family)


def raw(kernel: Kernel, sock: socket.socket) -> dict[str, int]:
    """The model's stored values of ``sock``, by option name (what the kernel holds)."""
    numbers = kernel.numbers()
    st = STATE.get(os.fstat(sock.fileno()).st_ino)
    if st is None:
        return {**{o: v for o, v in kernel.fresh.items() if o in numbers}, **kernel.hidden}
    return {**{o: st[numbers[o]] for o in kernel.fresh if o in numbers}, **{h: st[h] for h in kernel.hidden}}  # type: ignore[index]


def is_socket(fd: int) -> bool:
    return stat.S_ISSOCK(os.fstat(fd).st_mode)
