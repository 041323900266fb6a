"""What each operating system offers: the one Python module that knows about OSes.

For every knob kaext drives (``idle``, ``interval``, ``count``, ``user_timeout``)
this module says, per OS family, which socket option sets it, in which unit, and
which range the kernel accepts.  The C shim (``ext/kaext_shim.h``) makes the same
choice of option from the platform headers at build time; the tests check that
both agree.

Sources for each fact are in the project's test data (``tests/data/reference.json``)
and in the comments below.
"""

from __future__ import annotations

import os
import sys

from ._record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

#: Knob names, in the order the C shim numbers them (KAEXT_IDLE .. KAEXT_CONNECT_TIMEOUT).
KNOBS: Final = ("idle", "interval", "count", "user_timeout", "connect_timeout")
IDLE: Final = 0
INTERVAL: Final = 1
COUNT: Final = 2
USER_TIMEOUT: Final = 3
CONNECT_TIMEOUT: Final = 4

#: Steps of a plan that are not a knob (the C shim's KAEXT_STEP_*): an error names the step
#: whose call failed, which is a knob index (0..4) or one of these.
STEP_KEEPALIVE: Final = 5  # SO_KEEPALIVE
STEP_PROBE: Final = 6  # the TCP_NODELAY read that proves the socket is TCP

#: Bits of a read's "want" mask: bit k is knob k, bit STEP_KEEPALIVE is SO_KEEPALIVE.
WANT_KEEPALIVE: Final = 1 << STEP_KEEPALIVE
WANT_ALL: Final = WANT_KEEPALIVE | ((1 << len(KNOBS)) - 1)

INT_MAX: Final = 2**31 - 1
_POINTER_BYTES: Final = 8 if sys.maxsize > 2**32 else 4


#: How a knob is written: the C shim's KAEXT_MECH_* (the extension's ``MECH_*`` are the same
#: numbers).  ``setsockopt(IPPROTO_TCP, option)``, or Windows' ``WSAIoctl(SIO_KEEPALIVE_VALS)``,
#: which sets idle and interval together; ``MECH_NONE``: the knob cannot be set here.
MECH_NONE: Final = 0
MECH_SETSOCKOPT: Final = 1
MECH_SIO: Final = 2


class Mechanism(str):
    """How kaext sets a knob: the call as text (``"setsockopt(IPPROTO_TCP, TCP_KEEPIDLE)"``,
    ``"WSAIoctl(SIO_KEEPALIVE_VALS)"``), with ``kind`` the ``MECH_*`` number.

    A ``str``, so it prints, compares and serialises as the call; ``is_setsockopt`` tells
    whether a ``(level, optname, value)`` socket option can carry the knob.
    """

    kind: int
    option: str

    def __new__(cls, kind: int, option: str) -> Mechanism:
        text = "WSAIoctl(SIO_KEEPALIVE_VALS)" if kind == MECH_SIO else f"setsockopt(IPPROTO_TCP, {option})"
        self = super().__new__(cls, text)
        self.kind = kind
        self.option = option
        return self

    @property
    def is_setsockopt(self) -> bool:
        """True when the knob is a plain ``setsockopt(IPPROTO_TCP, option)``."""
        return self.kind == MECH_SETSOCKOPT

    def __reduce__(self) -> tuple[type[Mechanism], tuple[int, str]]:
        return (Mechanism, (self.kind, self.option))


class KnobSpec(Record):
    """How one OS sets one knob."""

    __slots__ = ("option", "unit", "min", "max", "readable", "fallback", "note", "mechanism")
    _fields = __slots__

    option: str  # header name of the socket option
    unit: str  # "s", "ms", "ticks" (UNITS_PER_SECOND), "probes" or "syns" (SYN_UNIT): what the kernel takes
    min: int  # in ``unit``
    max: int  # in ``unit``
    readable: bool  # getsockopt returns it
    fallback: int | None  # option number where old SDK headers lack the name
    note: str
    mechanism: int  # MECH_*

    def __init__(
        self,
        option: str,
        unit: str,
        min: int,
        max: int,
        readable: bool,
        fallback: int | None = None,
        note: str = "",
        mechanism: int = MECH_SETSOCKOPT,
    ) -> None:
        self._init(option, unit, min, max, readable, fallback, note, mechanism)

    @property
    def ioctl(self) -> bool:
        """Set with ``WSAIoctl(SIO_KEEPALIVE_VALS)``, not a socket option."""
        return self.mechanism == MECH_SIO

    def describe(self) -> Mechanism:
        """The call kaext makes, e.g. ``setsockopt(IPPROTO_TCP, TCP_KEEPIDLE)``."""
        return Mechanism(self.mechanism, self.option)


#: ``sys.platform`` strings of a Linux kernel: CPython 3.13+ reports "android" on Android
#: (gh-71052, PEP 738), whose kernel is Linux with Linux's option numbers and units.
LINUX_KERNEL_PLATFORMS: Final = ("linux", "android")
#: ``sys.platform`` strings of an xnu kernel: "ios" (CPython 3.13+, PEP 730) and the other
#: Apple platforms CPython names ("tvos", "watchos", "visionos", 3.14+): one kernel, one
#: netinet/tcp.h, so the Darwin family.
XNU_PLATFORMS: Final = ("darwin", "ios", "tvos", "watchos", "visionos")
#: ``sys.platform`` strings of builds whose socket module may be missing or unusable
#: (WASI, Emscripten): kaext imports there, offers no knob, and every setter raises OSError.
NO_SOCKETS_PLATFORMS: Final = ("wasi", "emscripten")


def _family(platform: str) -> str:
    """The OS family of a ``sys.platform`` string ("other": unknown, nothing offered)."""
    if platform.startswith(LINUX_KERNEL_PLATFORMS):
        return "linux"
    if platform in XNU_PLATFORMS:
        return "darwin"
    if platform in ("win32", "cygwin"):
        # Cygwin: Linux's option names (with Winsock's numbers) in its headers, mapped onto
        # Winsock (PLATFORM_SPECS below; no /proc tables, so no connections())
        return "windows" if platform == "win32" else "linux"
    for name in ("freebsd", "netbsd", "openbsd", "dragonfly"):
        if platform.startswith(name):
            return name
    if platform.startswith("sunos"):
        return "sunos"
    return "other"


FAMILY: Final = _family(sys.platform)


#: The largest socket handle either backend accepts (the C shim's KAEXT_SOCK_MAX): a file
#: descriptor is an int on POSIX; a Windows SOCKET is a UINT_PTR (32 bits on win32, 64 on
#: win64) whose all-ones value is INVALID_SOCKET.
def fd_max(family: str, pointer_bytes: int) -> int:
    """The largest socket handle on ``family`` with pointers of ``pointer_bytes`` bytes."""
    return 2 ** (8 * pointer_bytes) - 2 if family == "windows" else INT_MAX


FD_MAX: Final = fd_max(FAMILY, _POINTER_BYTES)

#: Windows fills the half of SIO_KEEPALIVE_VALS a plan does not give with its defaults
#: (SIO_KEEPALIVE_VALS remarks: keepalivetime 2 h, keepaliveinterval 1 s), in ms.
WINDOWS_SIO_DEFAULT_IDLE_MS: Final = 7_200_000
WINDOWS_SIO_DEFAULT_INTERVAL_MS: Final = 1_000


def release_before(release: str, major: int, minor: int) -> bool:
    """``"5.6-RELEASE"`` before (5, 8)?  Unparsable releases count as new."""
    parts = release.split("-")[0].split(".")
    try:
        return (int(parts[0]), int(parts[1]) if len(parts) > 1 else 0) < (major, minor)
    except ValueError:
        return False


#: The unit of Linux's TCP_SYNCNT: SYN retransmissions, not a time.  The kernel gives a connect
#: up once the time its model of n retransmissions takes has passed since the first SYN
#: (net/ipv4/tcp_timer.c: tcp_write_timeout -> retransmits_timed_out(sk, n, user_timeout) ->
#: tcp_model_timeout(sk, n, TCP_TIMEOUT_INIT)): with the initial RTO of 1 s
#: (include/net/tcp.h TCP_TIMEOUT_INIT = HZ) doubling up to TCP_RTO_MAX = 120 s, that is
#: (2**(n+1) - 1) s for n <= 6 (ilog2(TCP_RTO_MAX / TCP_TIMEOUT_INIT)) and 127 + 120 * (n - 6) s
#: after.  The check runs when the SYN retransmit timer fires: with Linux 6.5+'s linear SYN
#: timeouts (net.ipv4.tcp_syn_linear_timeouts, default 4: the first 4 retransmissions 1 s
#: apart) the timers fire at 1, 2, 3, 4, 5, 7, 11, 19, 35, 67, 131 s, so n = 1 and 2 end at 3
#: and 7 s exactly and n >= 3 at the first timer after the model's time (19 s for 15 s).
SYN_UNIT: Final = "syns"
SYN_RTO_INIT_S: Final = 1
SYN_RTO_MAX_S: Final = 120
_SYN_LINEAR_LIMIT: Final = 6  # ilog2(TCP_RTO_MAX / TCP_TIMEOUT_INIT)


def syn_seconds(retries: int) -> int:
    """Seconds after the first SYN at which Linux gives a connect with TCP_SYNCNT ``retries`` up
    (tcp_model_timeout with the initial RTO of 1 s)."""
    if retries <= _SYN_LINEAR_LIMIT:
        return ((2 << retries) - 1) * SYN_RTO_INIT_S
    return ((2 << _SYN_LINEAR_LIMIT) - 1) * SYN_RTO_INIT_S + (retries - _SYN_LINEAR_LIMIT) * SYN_RTO_MAX_S


def syn_retries(seconds: float) -> int:
    """The largest TCP_SYNCNT whose give-up time ``syn_seconds`` is at most ``seconds`` (0: none is:
    below 3 s)."""
    n = 0
    while n < MAX_TCP_SYNCNT and syn_seconds(n + 1) <= seconds:
        n += 1
    return n


#: include/net/tcp.h MAX_TCP_SYNCNT: net/ipv4/tcp.c refuses TCP_SYNCNT outside 1 .. 127 (EINVAL).
MAX_TCP_SYNCNT: Final = 127


# Linux: include/net/tcp.h MAX_TCP_KEEPIDLE / MAX_TCP_KEEPINTVL = 32767 s,
# MAX_TCP_KEEPCNT = 127; net/ipv4/tcp.c rejects 0 and larger values with EINVAL.
# TCP_USER_TIMEOUT is an int in ms, negative is EINVAL, 0 = system default.
LINUX = {
    "idle": KnobSpec("TCP_KEEPIDLE", "s", 1, 32767, True),
    "interval": KnobSpec("TCP_KEEPINTVL", "s", 1, 32767, True),
    "count": KnobSpec("TCP_KEEPCNT", "probes", 1, 127, True),
    "user_timeout": KnobSpec("TCP_USER_TIMEOUT", "ms", 0, INT_MAX, True),
    "connect_timeout": KnobSpec(
        "TCP_SYNCNT",
        SYN_UNIT,
        1,
        MAX_TCP_SYNCNT,
        True,
        fallback=7,
        note="SYN retransmissions: a connect gives up after 3, 7, 15, 31, 63, 127 s, then 120 s more per "
        "retransmission; kaext takes the largest that ends within connect_timeout (at least 3 s); "
        "a TCP_USER_TIMEOUT set before connect() also ends it, to the millisecond",
    ),
}

# macOS / iOS (xnu bsd/netinet/tcp.h, tcp_usrreq.c): seconds up to UINT32_MAX /
# TCP_RETRANSHZ (1000); idle is TCP_KEEPALIVE (0x10), not TCP_KEEPIDLE; TCP_KEEPINTVL /
# TCP_KEEPCNT (0x101 / 0x102) from OS X 10.9.  The user timeout is TCP_RXT_CONNDROPTIME
# (0x80, seconds of retransmission before the connection is dropped; 0 = off).
# setsockopt takes idle and interval up to UINT32_MAX / TCP_RETRANSHZ s, but the timers arm
# deadlines as int32 milliseconds (bsd/netinet/tcp_timer.h OFFSET_FROM_START, tcp_timer.c):
# above INT32_MAX / 1000 = 2147483 s a timer is already due and fires at once, so kaext
# offers idle and interval up to 2147483 s.
_DARWIN_MAX_S = 4294967
_DARWIN_TIMER_MAX_S = 2147483
DARWIN = {
    "idle": KnobSpec("TCP_KEEPALIVE", "s", 1, _DARWIN_TIMER_MAX_S, True, fallback=0x10),
    "interval": KnobSpec("TCP_KEEPINTVL", "s", 1, _DARWIN_TIMER_MAX_S, True, fallback=0x101),
    "count": KnobSpec("TCP_KEEPCNT", "probes", 1, INT_MAX, True, fallback=0x102),
    "user_timeout": KnobSpec(
        "TCP_RXT_CONNDROPTIME",
        "s",
        0,
        _DARWIN_MAX_S,
        True,
        fallback=0x80,
        note="drops an ESTABLISHED connection once this long has passed since the first "
        "retransmission timeout, checked when the retransmit timer fires (up to about one "
        "RTO + 64 s late); it can only shorten the drop: the retransmission limit "
        "(TCP_MAXRXTSHIFT) ends the connection first when it comes sooner; keepalive never "
        "consults it; 0 = off",
    ),
    # bsd/netinet/tcp_usrreq.c tcp_ctloutput: TCP_CONNECTIONTIMEOUT (0x20) in s, 0 .. UINT32_MAX /
    # TCP_RETRANSHZ, stored as t_keepinit in ms; the connection-establishment timer TCPT_KEEP is
    # armed with TCP_CONN_KEEPINIT(tp) (t_keepinit, or the sysctl when 0) in tcp_connect (tcp_usrreq.c)
    # and tcp_timers drops a connection still in SYN_SENT when it fires: the bound is the value itself.
    "connect_timeout": KnobSpec(
        "TCP_CONNECTIONTIMEOUT",
        "s",
        1,
        _DARWIN_TIMER_MAX_S,
        True,
        fallback=0x20,
        note="the connection-establishment timer (t_keepinit): a connect not established within it is dropped",
    ),
}

#: Per OS, the knobs an accepted socket does NOT take over from its listening socket.
#: macOS: xnu bsd/netinet/tcp_input.c copies SO_KEEPALIVE (uipc_socket2.c), t_keepintvl,
#: t_keepcnt and t_keepinit to the new connection, not the idle time (TCP_KEEPALIVE) nor
#: TCP_RXT_CONNDROPTIME.  NetBSD: sys/netinet/tcp_syncache.c syn_cache_get copies only
#: TF_NODELAY of the listener's tcpcb (``tp->t_flags = sototcpcb(oso)->t_flags & TF_NODELAY``);
#: the new tcpcb starts from the system-wide tcp_keepidle / tcp_keepintvl / tcp_keepcnt
#: (tcp_subr.c tcp_newtcpcb), SO_KEEPALIVE alone is copied (sonewconn).  Linux, FreeBSD,
#: DragonFly: all of them are inherited.
NOT_INHERITED_BY_ACCEPT: Final[dict[str, tuple[str, ...]]] = {
    "darwin": ("idle", "user_timeout"),
    "netbsd": ("idle", "interval", "count"),
}

#: Per OS, the knobs whose kernel may refuse a value this table allows: illumos checks
#: TCP_KEEPIDLE / TCP_KEEPINTVL / TCP_KEEPCNT against tunable bounds (retransmit limits,
#: tcp_keepalive_abort_interval; Oracle Solaris: idle from 10 s), FreeBSD and NetBSD
#: bound the times by hz (UINT_MAX / hz; INT_MAX / (hz / PR_SLOWHZ)), Windows may refuse
#: TCP_MAXRT and the SIO_KEEPALIVE_VALS ioctl.  A plan written there first reads the
#: readable knobs written before such a knob, to put them back if it is refused
#: (ROLLBACK_SHIFT); Linux and macOS check exactly kaext's ranges, so nothing is read.
KERNEL_MAY_REFUSE: Final[dict[str, tuple[str, ...]]] = {
    "sunos": ("idle", "interval", "count"),
    "freebsd": ("idle", "interval", "user_timeout", "connect_timeout"),
    "netbsd": ("idle", "interval", "connect_timeout"),
    "dragonfly": ("idle", "interval", "connect_timeout"),
    "windows": ("idle", "interval", "user_timeout"),
    "other": KNOBS,
}
#: Bit ROLLBACK_SHIFT + k of a plan's set_mask: read knob k first, put it back if a later
#: call fails (the C shim's KAEXT_ROLLBACK_SHIFT).
ROLLBACK_SHIFT: Final = 8

#: Windows builds from which the kernel accepts each option (Microsoft, "IPPROTO_TCP
#: socket options"): TCP_KEEPIDLE / TCP_KEEPINTVL from 10 version 1709, TCP_KEEPCNT from
#: 1703; TCP_MAXRT on every supported Windows.  Used only when the probe says nothing.
WINDOWS_MIN_BUILD: Final[dict[str, int]] = {
    "idle": 16299,
    "interval": 16299,
    "count": 15063,
    "user_timeout": 0,
    "connect_timeout": 2**31,
}


def windows_build() -> int:
    """The running Windows' build number (0 elsewhere)."""
    getwindowsversion = getattr(sys, "getwindowsversion", None)
    return int(getwindowsversion().build) if getwindowsversion is not None else 0


#: Per OS, the largest idle + interval * count (ms) the kernel keeps without wrapping:
#: xnu compares the idle time with TCP_CONN_KEEPIDLE + TCP_CONN_MAXIDLE in 32-bit
#: milliseconds (TCP_RETRANSHZ = 1000), so past (2**32 - 1) ms, about 49.7 days, it wraps
#: to a short timer; FreeBSD compares TP_KEEPIDLE + TP_MAXIDLE in unsigned ticks
#: (sys/netinet/tcp_timer.c tcp_timer_keep), which with hz = 1000 is the same bound.
#: DragonFly keeps the idle time and ``t_maxidle = t_keepintvl * t_keepcnt`` in int ticks
#: (sys/netinet/tcp_usrreq.c tcp_ctloutput, tcp_subr.c tcp_newtcpcb): with hz up to 1000
#: both fit while idle + interval * count stays within INT_MAX ms (about 24.8 days; the
#: running kernel's hz, 100 by default, would allow ten times more: only it can say).  The
#: sum counts the socket's current knobs for those a call leaves (``_capabilities``).
KEEPALIVE_TOTAL_MAX_MS: Final[dict[str, int]] = {"darwin": 2**32 - 1, "freebsd": 2**32 - 1, "dragonfly": INT_MAX}

#: Per OS, the probe count the kernel uses where no option sets it: Windows without
#: TCP_KEEPCNT (before 10 version 1703) sends 10 probes, fixed (Microsoft, SIO_KEEPALIVE_VALS
#: remarks: "the number of keep-alive probes (data retransmissions) is set to 10 and cannot
#: be changed"), so a dead-peer budget must be split over 10 intervals there.
FIXED_PROBE_COUNT: Final[dict[str, int]] = {"windows": 10}

#: Units the kernels take a time in, and how many of each make a second.  NetBSD counts
#: TCP_KEEPIDLE / TCP_KEEPINTVL / TCP_KEEPINIT in slow ticks: PR_SLOWHZ = 2 a second
#: (NetBSD sys/sys/protosw.h; sys/netinet/tcp_timer.h TCP_TIMER_ARM).
UNITS_PER_SECOND: Final[dict[str, int]] = {"s": 1, "ms": 1000, "ticks": 2}

# FreeBSD / DragonFly: seconds; FreeBSD rejects ui > UINT_MAX / hz (4294967 s with
# hz = 1000; a kernel with a higher hz refuses less, which kaext rolls back).
# DragonFly before 5.8 (__DragonFly_version < 500702) took milliseconds.
_BSD_MAX_S = 4294967
# TCP_KEEPINIT: the connection-establishment timer (TCPT_KEEP armed with TP_KEEPINIT in tcp_connect,
# sys/netinet/tcp_usrreq.c; tcp_timer_keep drops a connection not yet ESTABLISHED when it fires), set
# like TCP_KEEPIDLE (same case of tcp_default_ctloutput: seconds, ui > UINT_MAX / hz refused).
_KEEPINIT_NOTE = "the connection-establishment timer: a connect not established within it is dropped"
BSD = {
    "idle": KnobSpec("TCP_KEEPIDLE", "s", 1, _BSD_MAX_S, True),
    "interval": KnobSpec("TCP_KEEPINTVL", "s", 1, _BSD_MAX_S, True),
    "count": KnobSpec("TCP_KEEPCNT", "probes", 1, INT_MAX, True),
    "connect_timeout": KnobSpec("TCP_KEEPINIT", "s", 1, _BSD_MAX_S, True, note=_KEEPINIT_NOTE),
}
# FreeBSD's user timeout: TCP_MAXUNACKTIME (netinet/tcp.h, 68), seconds like the keepalive
# times; the base stack's retransmit and persist timers drop a connection that made no
# progress for that long (tcp_timer.c tcp_maxunacktime_check); FreeBSD's Linux emulation
# maps Linux TCP_USER_TIMEOUT onto it.  0 = off.
FREEBSD = {
    **BSD,
    "user_timeout": KnobSpec(
        "TCP_MAXUNACKTIME",
        "s",
        0,
        _BSD_MAX_S,
        True,
        fallback=68,
        note="drops the connection after this long without progress (retransmit and persist timers); 0 = off",
    ),
}
# DragonFly 5.8+ (seconds): tcp_ctloutput computes the ticks in 64 bits but stores them in
# the int t_keepidle / t_keepintvl (sys/netinet/tcp_usrreq.c, tcp_var.h), which hold
# INT_MAX // 1000 = 2147483 s at hz = 1000 (ten times more at the default hz = 100).
_DRAGONFLY_MAX_S = INT_MAX // 1000
DRAGONFLY = {
    "idle": KnobSpec("TCP_KEEPIDLE", "s", 1, _DRAGONFLY_MAX_S, True),
    "interval": KnobSpec("TCP_KEEPINTVL", "s", 1, _DRAGONFLY_MAX_S, True),
    "count": BSD["count"],
    # t_keepinit is an int of ticks too (tcp_usrreq.c tcp_ctloutput, TCP_KEEPINIT)
    "connect_timeout": KnobSpec("TCP_KEEPINIT", "s", 1, _DRAGONFLY_MAX_S, True, note=_KEEPINIT_NOTE),
}
_DRAGONFLY_MS_NOTE = "DragonFly before 5.8 takes milliseconds"
DRAGONFLY_OLD = {
    "idle": KnobSpec("TCP_KEEPIDLE", "ms", 1, INT_MAX, True, note=_DRAGONFLY_MS_NOTE),
    "interval": KnobSpec("TCP_KEEPINTVL", "ms", 1, INT_MAX, True, note=_DRAGONFLY_MS_NOTE),
    "count": BSD["count"],
    "connect_timeout": KnobSpec("TCP_KEEPINIT", "ms", 1, INT_MAX, True, note=_DRAGONFLY_MS_NOTE),
}
# NetBSD (sys/netinet/tcp_usrreq.c): the values are stored as given and armed with
# TCP_TIMER_ARM, which counts slow ticks (half a second), so kaext converts seconds to
# ticks; the upper bound TCP_TIMER_MAXTICKS = INT_MAX / (hz / PR_SLOWHZ) is 4294967 ticks
# with hz = 1000 (more with the default hz = 100).  PRCO_GETOPT has no TCP_KEEP* case:
# nothing reads back.
_NETBSD_NOTE = (
    "NetBSD counts it in slow ticks of 0.5 s (PR_SLOWHZ = 2): seconds are converted, "
    "rounded up to 0.5 s; NetBSD cannot read it back (None)"
)
NETBSD = {
    "idle": KnobSpec("TCP_KEEPIDLE", "ticks", 1, 4294967, False, note=_NETBSD_NOTE),
    "interval": KnobSpec("TCP_KEEPINTVL", "ticks", 1, 4294967, False, note=_NETBSD_NOTE),
    "count": KnobSpec("TCP_KEEPCNT", "probes", 1, INT_MAX, False, note="NetBSD cannot read it back (None)"),
    # TCP_KEEPINIT: stored in t_keepinit like TCP_KEEPIDLE and armed (slow ticks) by tcp_connect's
    # TCP_TIMER_ARM(tp, TCPT_KEEP, tp->t_keepinit) (sys/netinet/tcp_usrreq.c)
    "connect_timeout": KnobSpec("TCP_KEEPINIT", "ticks", 1, 4294967, False, note=_NETBSD_NOTE),
}

# illumos and Solaris 11.4 (numbers differ: 0x22/0x24/0x23 vs 0x1D/0x1E/0x1F, always
# from the headers, never a fallback): TCP_KEEPIDLE in seconds, checked (x 1000) against
# the tcp_keepalive_interval bounds, 1 s .. 10 days on illumos since 2016
# (inet/tcp/tcp_tunables.c; Oracle Solaris: 10 s, which it refuses, rolled back);
# TCP_KEEPINTVL x 1000 must lie within the retransmit bounds, by default 400 ms .. 60 s.
# The abort threshold is TCP_KEEPCNT x the interval in ms, multiplied in 32 bits
# (inet/tcp/tcp_opt_data.c tcp_opt_set: ``*i1 * tcp->tcp_ka_rinterval``, uint32_t): a larger
# count wraps (interval 1 s, count 4294968: 704 ms), so the count stops where the largest
# interval kaext offers (60 s) still fits: (2**32 - 1) // 60000 = 71582.
_SUNOS_COUNT_MAX = (2**32 - 1) // (60 * 1000)
SUNOS = {
    "idle": KnobSpec("TCP_KEEPIDLE", "s", 1, 864000, True),
    "interval": KnobSpec(
        "TCP_KEEPINTVL",
        "s",
        1,
        60,
        True,
        note="bounded by the retransmit limits tcp_rexmit_interval_min/max (default 0.4 .. 60 s)",
    ),
    "count": KnobSpec(
        "TCP_KEEPCNT",
        "probes",
        1,
        _SUNOS_COUNT_MAX,
        True,
        note="count x interval is kept in 32-bit milliseconds: at most 71582 probes",
    ),
    # TCP_CONN_ABORT_THRESHOLD (netinet/tcp.h): ms, tcp_second_ctimer_threshold, the time a connect
    # retransmits its SYN before it is given up (inet/tcp/tcp_opt_data.c, tcp_timers.c); from the
    # headers only (Solaris and illumos number their options differently).
    "connect_timeout": KnobSpec(
        "TCP_CONN_ABORT_THRESHOLD",
        "ms",
        1,
        INT_MAX,
        True,
        note="how long a connect retransmits its SYN before it is given up (checked at each retransmission)",
    ),
}
# Solaris before 11.4: only the thresholds, in ms; the abort threshold is interval x
# count with exponential back-off, which no single knob here expresses.
SOLARIS_OLD_IDLE = KnobSpec(
    "TCP_KEEPALIVE_THRESHOLD",
    "ms",
    10000,
    864000000,
    True,
    note="Solaris before 11.4: idle threshold in ms; no interval/count knobs",
)

# Windows 10 1709+: TCP_KEEPIDLE / TCP_KEEPINTVL in seconds, TCP_KEEPCNT (1703+) <= 255;
# TCP_MAXRT in seconds.  Numbers from ws2ipdef.h; old mingw-w64 headers lack them.
WINDOWS = {
    "idle": KnobSpec("TCP_KEEPIDLE", "s", 1, INT_MAX, True, fallback=3),
    "interval": KnobSpec("TCP_KEEPINTVL", "s", 1, INT_MAX, True, fallback=17),
    "count": KnobSpec("TCP_KEEPCNT", "probes", 1, 255, True, fallback=16),
    "user_timeout": KnobSpec(
        "TCP_MAXRT",
        "s",
        1,
        INT_MAX,
        True,
        fallback=5,
        note="maximum retransmission time; Windows' -1 (retransmit forever) is not offered",
    ),
}
# Windows before 10 1709 (and wine): the kernel refuses TCP_KEEPIDLE/TCP_KEEPINTVL, so
# both go through WSAIoctl(SIO_KEEPALIVE_VALS) (mstcpip.h: struct tcp_keepalive,
# u_long ms), write-only.  Idle 0 makes some Windows versions send a keepalive storm.
_SIO_NOTE = (
    "WSAIoctl(SIO_KEEPALIVE_VALS) sets idle and interval together, in ms, write-only "
    "(reads back as None); setting one resets the other to the Windows default "
    "(idle 2 h, interval 1 s)"
)
WINDOWS_SIO = {
    "idle": KnobSpec("SIO_KEEPALIVE_VALS", "ms", 1, INT_MAX, False, note=_SIO_NOTE, mechanism=MECH_SIO),
    "interval": KnobSpec("SIO_KEEPALIVE_VALS", "ms", 1, INT_MAX, False, note=_SIO_NOTE, mechanism=MECH_SIO),
}


#: The knob specs of each OS family, by the name ``FAMILY`` gives it ("other": none known).
#: DragonFly before 5.8 is ``DRAGONFLY_OLD`` (see ``specs``).
FAMILY_SPECS: Final[dict[str, dict[str, KnobSpec]]] = {
    "linux": LINUX,
    "darwin": DARWIN,
    "freebsd": FREEBSD,
    "netbsd": NETBSD,
    "dragonfly": DRAGONFLY,
    "openbsd": {},
    "sunos": SUNOS,
    "windows": WINDOWS,
}

#: Per OS family, the specs of other mechanisms or older releases of the same OS, which
#: the running system may use instead (the backend's probe decides).
ALTERNATIVES: Final[dict[str, dict[str, tuple[KnobSpec, ...]]]] = {
    "windows": {"idle": (WINDOWS_SIO["idle"],), "interval": (WINDOWS_SIO["interval"],)},
    "sunos": {"idle": (SOLARIS_OLD_IDLE,)},
}


# Cygwin (Linux family: Linux's option names, with Winsock's numbers in its netinet/tcp.h,
# winsup/cygwin/include/netinet/tcp.h).  winsup/cygwin/fhandler/socket_inet.cc: on Windows
# with Linux-style keepalive options (10 1709+) TCP_KEEPIDLE / TCP_KEEPINTVL / TCP_KEEPCNT go
# to Winsock; before, Cygwin emulates them with SIO_KEEPALIVE_VALS and checks idle and
# interval against 1 .. 32767 s (MAX_TCP_KEEPIDLE / MAX_TCP_KEEPINTVL) and the count against
# 1 .. 255 (MAX_TCP_KEEPCNT; Winsock's own TCP_KEEPCNT limit too), so the count goes to 255,
# not Linux's 127; a fresh socket holds Winsock's defaults (7200 s, 1 s, 10).
# TCP_USER_TIMEOUT is mapped onto Windows' TCP_MAXRTMS (ms); what its 0 ("system default"
# on Linux) does there is undocumented, so 0 is not offered: 1 ms .. 2**31-1 ms.  On Windows
# without TCP_MAXRTMS (before 10 1703) Cygwin passes value / 1000 to TCP_MAXRT instead: the
# milliseconds are truncated to whole seconds (below 1000 ms: 0 s) and read back x 1000.
# Which Windows runs underneath only it can tell (sys.platform and platform.release() name
# Cygwin): the note says so.
PLATFORM_SPECS: Final[dict[str, dict[str, KnobSpec]]] = {
    "cygwin": {
        "count": KnobSpec(
            "TCP_KEEPCNT",
            "probes",
            1,
            255,
            True,
            note="Cygwin: Winsock's TCP_KEEPCNT, or its own emulation before Windows 10 1709 (both 1 .. 255)",
        ),
        "user_timeout": KnobSpec(
            "TCP_USER_TIMEOUT",
            "ms",
            1,
            INT_MAX,
            True,
            note="Cygwin maps it to Windows' TCP_MAXRTMS; 0 (the system default on Linux) is not "
            "offered: what it does there is undocumented; on Windows before 10 1703 (no TCP_MAXRTMS) "
            "Cygwin truncates it to whole seconds (TCP_MAXRT), below 1 s to 0",
        ),
    },
}


#: Per ``sys.platform`` within a family, the knobs it does not offer, and why.
PLATFORM_UNSUPPORTED: Final[dict[str, dict[str, str]]] = {
    "cygwin": {
        "connect_timeout": "kaext sets no connect timeout on Cygwin: its socket layer maps the options "
        "onto Winsock (winsup/cygwin/fhandler/socket_inet.cc), which has no TCP_SYNCNT",
    },
}


def specs(family: str, release: str = "", platform: str = "") -> dict[str, KnobSpec]:
    """The setsockopt spec of each knob on ``family`` (``release``: the kernel's, for DragonFly;
    ``platform``: ``sys.platform``, for Cygwin's own user timeout)."""
    if family == "dragonfly" and release_before(release, 5, 8):
        return DRAGONFLY_OLD
    table = FAMILY_SPECS.get(family, {})
    if platform in PLATFORM_SPECS:
        table = {**table, **PLATFORM_SPECS[platform]}
    if platform in PLATFORM_UNSUPPORTED:
        table = {knob: spec for knob, spec in table.items() if knob not in PLATFORM_UNSUPPORTED[platform]}
    return table


def _running_release() -> str:
    import platform

    return platform.release()


#: The setsockopt option of each knob on this OS (the one the headers name).
SPECS: Final[dict[str, KnobSpec]] = specs(FAMILY, _running_release() if FAMILY == "dragonfly" else "", sys.platform)


def spec_for(knob: str, option: str, mechanism: int) -> KnobSpec | None:
    """The spec of ``knob`` as the backend sets it: by ``option`` name and ``mechanism``.

    ``mechanism`` is the backend's run-time answer (``MECH_SETSOCKOPT``, ``MECH_SIO``, or
    ``MECH_NONE`` when the kernel refused the knob); ``option`` is the header name it uses.
    """
    if not mechanism:
        return None
    for spec in (SPECS.get(knob), *ALTERNATIVES.get(FAMILY, {}).get(knob, ())):
        if spec is not None and spec.mechanism == mechanism and (mechanism == MECH_SIO or spec.option == option):
            return spec
    return None


#: Why a knob cannot be set, per OS family, for the ENOPROTOOPT message.
UNSUPPORTED: Final[dict[str, dict[str, str]]] = {
    "openbsd": dict.fromkeys(
        KNOBS,
        "OpenBSD has no per-socket keepalive options: only SO_KEEPALIVE (set_keepalive() with "
        "no knobs works) and the system-wide sysctls net.inet.tcp.keepidle / keepintvl",
    ),
    "windows": {
        "count": "this Windows (before 10 version 1703) has no TCP_KEEPCNT: the probe count is fixed at 10",
        "user_timeout": "this Windows refused TCP_MAXRT",
        "connect_timeout": "kaext sets no connect timeout on Windows yet: its documented connect knobs are "
        "SYN counts (TCP_NOSYNRETRIES, SIO_TCP_INITIAL_RTO), which kaext does not drive",
    },
    "darwin": {"interval": "macOS before 10.9 has no TCP_KEEPINTVL", "count": "macOS before 10.9 has no TCP_KEEPCNT"},
    "freebsd": {"user_timeout": "this FreeBSD's headers have no TCP_MAXUNACKTIME (an older release)"},
    "linux": {"connect_timeout": "the kernel refused TCP_SYNCNT"},
    "netbsd": {"user_timeout": "NetBSD has no per-socket user timeout"},
    "dragonfly": {"user_timeout": "DragonFly has no per-socket user timeout"},
    "sunos": {
        "interval": "Solaris before 11.4 has no TCP_KEEPINTVL (only TCP_KEEPALIVE_ABORT_THRESHOLD)",
        "count": "Solaris before 11.4 has no TCP_KEEPCNT (only TCP_KEEPALIVE_ABORT_THRESHOLD)",
        "user_timeout": "illumos/Solaris have no TCP_USER_TIMEOUT (TCP_ABORT_THRESHOLD differs)",
        "connect_timeout": "this build's headers have no TCP_CONN_ABORT_THRESHOLD (the pure-Python backend: "
        "Python's socket module does not name it)",
    },
}


def unsupported_reason(knob: str, family: str | None = None) -> str:
    """Why ``knob`` is not available here (for the ENOPROTOOPT error)."""
    if family is None and knob in PLATFORM_UNSUPPORTED.get(sys.platform, {}):
        return PLATFORM_UNSUPPORTED[sys.platform][knob]
    return UNSUPPORTED.get(family or FAMILY, {}).get(
        knob, "no socket option for it in this build, or the running kernel refused it"
    )


#: Per OS family, constants the pure-Python backend offers where Python's socket module
#: lacks them (values from each OS's headers: see tests/data/reference.json).
FAMILY_FALLBACK_CONSTANTS: Final[dict[str, dict[str, int]]] = {
    "darwin": {"TCP_CONNECTIONTIMEOUT": 0x20, "TCP_RXT_CONNDROPTIME": 0x80},
    "freebsd": {"TCP_KEEPINIT": 128, "TCP_MAXUNACKTIME": 68},
    "netbsd": {"TCP_KEEPINIT": 7},
    "dragonfly": {"TCP_KEEPINIT": 32},
    "windows": {"TCP_KEEPALIVE": 3, "TCP_MAXRT": 5, "TCP_MAXRTMS": 14, "SIO_KEEPALIVE_VALS": 0x98000004},
}
FALLBACK_CONSTANTS: Final[dict[str, int]] = FAMILY_FALLBACK_CONSTANTS.get(FAMILY, {})


#: Per OS family, the files that hold the system-wide keepalive defaults (seconds /
#: probes, one integer each); elsewhere a fresh, unconfigured socket tells.
FAMILY_DEFAULT_FILES: Final[dict[str, dict[str, str]]] = {
    "linux": {
        "idle": "/proc/sys/net/ipv4/tcp_keepalive_time",
        "interval": "/proc/sys/net/ipv4/tcp_keepalive_intvl",
        "count": "/proc/sys/net/ipv4/tcp_keepalive_probes",
    },
}
DEFAULT_FILES: Final[dict[str, str]] = FAMILY_DEFAULT_FILES.get(FAMILY, {})


#: Whether the pure-Python implementation reaches a descriptor it was handed (an int, an
#: object with ``fileno()``, another process's descriptor from ``pidfd_getfd``) through the C
#: library's getsockopt/setsockopt/getsockname/getpeername (ctypes) rather than a
#: ``socket.socket(fileno=fd)`` over it: that object would apply ``socket.setdefaulttimeout()``
#: (O_NONBLOCK on the open file description the owner shares) and its finalizer could close
#: the descriptor.  Every POSIX system, where a socket is a file descriptor of the C library;
#: not Windows (a SOCKET handle of Winsock, where kaext keeps the socket object and never
#: touches the blocking mode) nor the builds without sockets.
RAW_SOCKOPT: Final = FAMILY not in ("windows", "other") and sys.platform not in NO_SOCKETS_PLATFORMS
#: Whether ``struct sockaddr`` begins with a one-byte ``sa_len`` before a one-byte
#: ``sa_family`` (4.4BSD's layout: <sys/socket.h> of macOS, FreeBSD, NetBSD, OpenBSD and
#: DragonFly); elsewhere ``sa_family`` is the first field, 16 bits (Linux
#: include/linux/socket.h, illumos sys/socket_impl.h).  The port and address follow at the
#: same offsets in both (sin_port 2, sin_addr 4; sin6_addr 8).
SOCKADDR_HAS_LEN: Final = FAMILY in ("darwin", "freebsd", "netbsd", "openbsd", "dragonfly")

#: How ``kaext.connections()`` finds a process's TCP sockets, per OS family:
#: ``"proc"``: Linux, any process: ``/proc/<pid>/fd``, the kernel's TCP tables (sock_diag
#: netlink, or ``/proc/<pid>/net/tcp{,6}``) and ``pidfd_getfd`` (Linux 5.6+) for another
#: process's descriptors; ``"fds"``: this process only, by trying each descriptor number
#: (the other POSIX systems); ``""``: not available (Windows: sockets are handles, not
#: numbered descriptors that can be enumerated).  Linux's tables themselves (sock_diag,
#: /proc/net/tcp) are its ABI: ``kaext._linux_abi``.
FAMILY_CONNECTIONS: Final[dict[str, str]] = {"linux": "proc", "windows": "", "other": ""}

#: Why ``kaext.connections()`` is not available on a platform of a family that has it:
#: Cygwin has no ``/proc/<pid>/net/tcp``, no ``/proc/<pid>/ns`` and no AF_NETLINK
#: (winsup/cygwin/fhandler/process.cc, fhandler/procnet.cc list no such entries), and
#: its descriptors are Winsock handles underneath: an empty list would be a lie.
PLATFORM_NO_CONNECTIONS: Final[dict[str, str]] = {
    "cygwin": "Cygwin has no /proc/<pid>/net/tcp, no /proc/<pid>/ns and no sock_diag netlink, "
    "so kaext cannot find a process's TCP sockets there",
}


def connections_mode(platform: str, family: str) -> str:
    """``CONNECTIONS`` for a ``sys.platform`` string and its family."""
    if platform in PLATFORM_NO_CONNECTIONS:
        return ""
    return FAMILY_CONNECTIONS.get(family, "fds")


CONNECTIONS: Final[str] = connections_mode(sys.platform, FAMILY)


def connections_unavailable(mode: str) -> str:
    """Why ``kaext.connections()`` cannot do what it was asked, for a ``CONNECTIONS`` mode."""
    if sys.platform in PLATFORM_NO_CONNECTIONS:
        return PLATFORM_NO_CONNECTIONS[sys.platform]
    if mode == "fds":
        return f"only this process's own sockets can be listed on {FAMILY} (no /proc and no pidfd_getfd)"
    return f"listing a process's sockets is not available on {FAMILY}"


def sys_pidfd_getfd() -> int:
    """pidfd_getfd(2)'s system call number on Linux (5.6+; asm-generic/unistd.h: 438 on
    every architecture but alpha, 548), for the pure-Python implementation, which calls
    it through ctypes: Python's os module has pidfd_open but not pidfd_getfd."""
    return 548 if os.uname().machine.startswith("alpha") else 438


#: pidfd_open(2)'s flag for a pidfd of one thread rather than of a process
#: (include/uapi/linux/pidfd.h: ``#define PIDFD_THREAD O_EXCL``, Linux 6.9+): the way to a
#: process's descriptors (pidfd_getfd) once its main thread has exited (pthread_exit), when
#: its thread group leader is a zombie with no files; 0 where the OS has no O_EXCL.
PIDFD_THREAD: Final = int(getattr(os, "O_EXCL", 0)) if FAMILY == "linux" else 0


#: Whether this OS shows the kernel's own view of a TCP socket as Linux's ``TCP_INFO``
#: (kaext.verify --live, kaext.probe; its layout: ``kaext._linux_abi``); Cygwin does not.
TCP_INFO: Final = FAMILY == "linux" and sys.platform != "cygwin"


# kaext.enforce: a cgroup v2 directory's connections, through BPF programs (Linux only).
#: Whether this OS has the mechanism at all (elsewhere: OSError ENOSYS); Cygwin has no BPF.
ENFORCE: Final = FAMILY == "linux" and sys.platform != "cygwin"
#: The options the BPF programs set, in the order of the policy map's mask bits and values
#: (struct kaext_bpf_config in ext/kaext_bpf.h).
ENFORCE_OPTIONS: Final = (
    "SO_KEEPALIVE",
    "TCP_KEEPIDLE",
    "TCP_KEEPINTVL",
    "TCP_KEEPCNT",
    "TCP_USER_TIMEOUT",
    "TCP_SYNCNT",
)
#: Where the BPF file system is (mounted by kaext.enforce when it is not), and the
#: directory on it that holds kaext's pins, one subdirectory per enforced cgroup.
BPF_FS: Final = "/sys/fs/bpf"
ENFORCE_PIN_DIR: Final = "kaext"
#: A cgroup v2 directory has this file (v1 directories do not).
CGROUP2_MARKER: Final = "cgroup.controllers"
