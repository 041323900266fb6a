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

import sys
from dataclasses import dataclass
from typing import Final

#: Knob names, in the order the C shim numbers them.
KNOBS: Final = ("idle", "interval", "count", "user_timeout")

INT_MAX: Final = 2**31 - 1


@dataclass(frozen=True)
class KnobSpec:
    """How one OS sets one knob."""

    option: str  # header name of the socket option
    unit: str  # "s", "ms" or "probes": what the kernel takes
    min: int  # in ``unit``
    max: int  # in ``unit``
    readable: bool  # getsockopt returns it
    fallback: int | None = None  # option number where old SDK headers lack the name
    note: str = ""


def _family(platform: str) -> str:
    if platform.startswith("linux"):
        return "linux"
    if platform == "darwin" or platform == "ios":
        return "darwin"
    if platform in ("win32", "cygwin"):
        return "windows" if platform == "win32" else "linux"
    for name in ("freebsd", "netbsd", "openbsd", "dragonfly"):
        if platform.startswith(name):
            return name
    if platform.startswith("sunos"):
        return "sunos"
    return "other"


FAMILY: Final = _family(sys.platform)

# Linux: include/net/tcp.h MAX_TCP_KEEPIDLE / MAX_TCP_KEEPINTVL = 32767 s,
# MAX_TCP_KEEPCNT = 127; net/ipv4/tcp.c rejects 0 and larger values with EINVAL.
# TCP_USER_TIMEOUT is an int in ms, negative is EINVAL, 0 = system default.
_LINUX = {
    "idle": KnobSpec("TCP_KEEPIDLE", "s", 1, 32767, True),
    "interval": KnobSpec("TCP_KEEPINTVL", "s", 1, 32767, True),
    "count": KnobSpec("TCP_KEEPCNT", "probes", 1, 127, True),
    "user_timeout": KnobSpec("TCP_USER_TIMEOUT", "ms", 0, INT_MAX, True),
}

# macOS / iOS (xnu bsd/netinet/tcp_usrreq.c): seconds up to UINT32_MAX / TCP_RETRANSHZ
# (1000); idle is TCP_KEEPALIVE (0x10), not TCP_KEEPIDLE.
_DARWIN_MAX_S = 4294967
_DARWIN = {
    "idle": KnobSpec("TCP_KEEPALIVE", "s", 1, _DARWIN_MAX_S, True, fallback=0x10),
    "interval": KnobSpec("TCP_KEEPINTVL", "s", 1, _DARWIN_MAX_S, True, fallback=0x101),
    "count": KnobSpec("TCP_KEEPCNT", "probes", 1, INT_MAX, True, fallback=0x102),
}

# FreeBSD / DragonFly (>= 5.8) / NetBSD: seconds; FreeBSD rejects ui > UINT_MAX / hz.
_BSD_MAX_S = 4294967
_BSD = {
    "idle": KnobSpec("TCP_KEEPIDLE", "s", 1, _BSD_MAX_S, True),
    "interval": KnobSpec("TCP_KEEPINTVL", "s", 1, _BSD_MAX_S, True),
    "count": KnobSpec("TCP_KEEPCNT", "probes", 1, INT_MAX, True),
}

# illumos: TCP_KEEPIDLE in seconds, checked against 10 s .. 10 days.
_SUNOS = {
    "idle": KnobSpec("TCP_KEEPIDLE", "s", 10, 864000, True),
    "interval": KnobSpec("TCP_KEEPINTVL", "s", 1, 600, True),
    "count": KnobSpec("TCP_KEEPCNT", "probes", 1, INT_MAX, True),
}

# Windows 10 1709+: TCP_KEEPIDLE / TCP_KEEPINTVL in seconds, TCP_KEEPCNT (1703+) <= 255.
_WINDOWS = {
    "idle": KnobSpec("TCP_KEEPIDLE", "s", 1, INT_MAX, True, fallback=3),
    "interval": KnobSpec("TCP_KEEPINTVL", "s", 1, INT_MAX, True, fallback=17),
    "count": KnobSpec("TCP_KEEPCNT", "probes", 1, 255, True, fallback=16),
}

SPECS: Final[dict[str, KnobSpec]] = {
    "linux": _LINUX,
    "darwin": _DARWIN,
    "freebsd": _BSD,
    "dragonfly": _BSD,
    "netbsd": _BSD,
    "sunos": _SUNOS,
    "windows": _WINDOWS,
}.get(FAMILY, {})

#: Where the system-wide defaults live, per knob, and the unit they are kept in.
_LINUX_DEFAULTS = {
    "idle": "/proc/sys/net/ipv4/tcp_keepalive_time",
    "interval": "/proc/sys/net/ipv4/tcp_keepalive_intvl",
    "count": "/proc/sys/net/ipv4/tcp_keepalive_probes",
}


def read_system_defaults() -> dict[str, int | None]:
    """The system-wide keepalive defaults in seconds / probes, where this OS lets us read them.

    Linux: ``/proc/sys/net/ipv4/tcp_keepalive_{time,intvl,probes}``.  Elsewhere
    the caller falls back to what a fresh, unconfigured socket reports.
    """
    if FAMILY != "linux":
        return {}
    values: dict[str, int | None] = {}
    for knob, path in _LINUX_DEFAULTS.items():
        try:
            with open(path, encoding="ascii") as f:
                values[knob] = int(f.read().strip())
        except (OSError, ValueError):
            values[knob] = None
    return values
