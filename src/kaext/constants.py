"""The socket option constants, as a drop-in namespace: exactly the names this platform's headers define.

>>> from kaext import constants
>>> sock.setsockopt(constants.IPPROTO_TCP, constants.TCP_KEEPIDLE, 60)   # doctest: +SKIP

With the C extension every value was taken from the platform's own headers when
kaext was built (``<netinet/tcp.h>``, ``<winsock2.h>``, ...); ``SOURCES`` names
the header of each.  Linux: ``SOL_SOCKET``, ``SO_KEEPALIVE``, ``IPPROTO_TCP``,
``TCP_KEEPIDLE``, ``TCP_KEEPINTVL``, ``TCP_KEEPCNT``, ``TCP_SYNCNT``,
``TCP_USER_TIMEOUT``.  A name the platform does not define is absent here too
(``AttributeError``), as in :mod:`socket`; ``hasattr`` tells.

Portable names: where this platform sets a knob with an option of another name
but the same meaning and unit, the portable name is offered too, with the same
value (macOS: ``TCP_KEEPIDLE`` = the value of ``TCP_KEEPALIVE``, idle in
seconds), and ``SOURCES`` says which header name it came from
(``{"TCP_KEEPIDLE": "TCP_KEEPALIVE (netinet/tcp.h)"}``).  Names are never
aliased across units: ``TCP_USER_TIMEOUT`` (ms) is never another platform's
option in seconds.  ``PORTABLE`` lists the portable name and unit of each knob.
"""

from __future__ import annotations

from ._backend import CONSTANT_SOURCES as _SOURCES
from ._backend import CONSTANTS as _CONSTANTS
from ._platform import SPECS as _SPECS

TYPE_CHECKING = False

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ._platform import KnobSpec

#: The portable socket option name of each knob and the unit it means under that name.
PORTABLE: dict[str, tuple[str, str]] = {
    "idle": ("TCP_KEEPIDLE", "s"),
    "interval": ("TCP_KEEPINTVL", "s"),
    "count": ("TCP_KEEPCNT", "probes"),
    "user_timeout": ("TCP_USER_TIMEOUT", "ms"),
}

#: Header (or module) each constant came from; for a portable alias, the header name first.
SOURCES: dict[str, str] = dict(_SOURCES)


def _portable_aliases(
    constants: dict[str, int], sources: dict[str, str], specs: Mapping[str, KnobSpec] = _SPECS
) -> dict[str, int]:
    """Portable name -> value, where this platform's option for a knob has another name but the same unit."""
    aliases: dict[str, int] = {}
    for knob, (portable, unit) in PORTABLE.items():
        spec = specs.get(knob)
        if spec is None or spec.option == portable or portable in constants:
            continue
        if spec.unit != unit or spec.option not in constants:
            continue
        aliases[portable] = constants[spec.option]
        sources[portable] = f"{spec.option} ({sources.get(spec.option, 'header')})"
    return aliases


_ALL = {**_CONSTANTS, **_portable_aliases(dict(_CONSTANTS), SOURCES)}
globals().update(_ALL)

__all__ = sorted(_ALL)

if TYPE_CHECKING:
    # Names that exist on at least one platform; check with hasattr() before use.
    SOL_SOCKET: int
    SO_KEEPALIVE: int
    IPPROTO_TCP: int
    TCP_KEEPIDLE: int
    TCP_KEEPINTVL: int
    TCP_KEEPCNT: int
    TCP_KEEPALIVE: int
    TCP_KEEPINIT: int
    TCP_USER_TIMEOUT: int
    TCP_SYNCNT: int
    TCP_CONNECTIONTIMEOUT: int
    TCP_RXT_CONNDROPTIME: int
    TCP_KEEPALIVE_THRESHOLD: int
    TCP_KEEPALIVE_ABORT_THRESHOLD: int
    TCP_MAXRT: int
    TCP_MAXRTMS: int
    SIO_KEEPALIVE_VALS: int
